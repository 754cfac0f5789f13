"""Restoration methods, one module each, registered by name."""

from vemrestore.methods import interpolate
from vemrestore.methods._base import (
    BlockRequest,
    Method,
    MethodConfig,
    available_methods,
    create_method,
    get_method,
    method_config_class,
    register_method,
)

__all__ = [
    "BlockRequest",
    "Method",
    "MethodConfig",
    "available_methods",
    "create_method",
    "get_method",
    "interpolate",
    "method_config_class",
    "register_method",
]
