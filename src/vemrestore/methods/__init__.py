"""Restoration methods, one module each, registered by name.

Method modules load on the first registry lookup (``get_method``,
``create_method``, ``available_methods``, ``load_method``), and the names
that need torch (``load_config``, ``load_config_options``, ``load_method``,
``save_config``, from ``_persist``) are imported on first access (PEP 562),
so importing this package does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from vemrestore.methods._base import (
    RESTORED,
    XZ,
    YZ,
    AxialConfig,
    BlockRequest,
    Method,
    MethodConfig,
    available_methods,
    create_method,
    get_method,
    method_config_class,
    register_method,
)

if TYPE_CHECKING:
    from vemrestore.methods._persist import (
        load_config,
        load_config_options,
        load_method,
        save_config,
    )

__all__ = [
    "RESTORED",
    "XZ",
    "YZ",
    "AxialConfig",
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

# Public names defined in ``_persist`` (which imports torch), loaded on first access.
_LAZY = ("load_config", "load_config_options", "load_method", "save_config")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module("vemrestore.methods._persist"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
