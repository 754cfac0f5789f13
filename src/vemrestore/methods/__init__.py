"""Restoration methods, one module each, registered by name.

Method modules load on the first registry lookup (``get_method``,
``create_method``, ``available_methods``, ``load_method``), so importing this
package does not import torch.
"""

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
from vemrestore.methods._persist import load_config, load_config_options, load_method, save_config

__all__ = [
    "BlockRequest",
    "Method",
    "MethodConfig",
    "available_methods",
    "create_method",
    "get_method",
    "load_config",
    "load_config_options",
    "load_method",
    "method_config_class",
    "register_method",
    "save_config",
]
