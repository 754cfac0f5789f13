"""Save and load method configs (YAML/JSON) and saved methods of any kind.

A saved method is a directory with ``config.json`` (the method's config,
whose ``method`` field names the registered method) plus whatever trained
state the method writes. Methods with state define ``load_state(path)``;
``load_method`` calls it after building the method from its config. Learned
methods write their state with ``save_trained`` and read it back with
``require_files`` and ``load_weights``, so every saved model has the same
layout: ``weights.pt`` (state dicts), ``normalization.json`` and, after
training, ``training.json`` (loss history).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from vemrestore.errors import UserInputError
from vemrestore.methods._base import Method, MethodConfig, get_method, method_config_class

__all__ = [
    "apply_weights",
    "cpu_state",
    "load_config",
    "load_config_options",
    "load_json_state",
    "load_method",
    "load_weights",
    "require_files",
    "save_config",
    "save_trained",
    "train_record",
    "weights_digest",
]


def _config_from_dict(data: Any, source: Path) -> MethodConfig:
    if not isinstance(data, dict) or "method" not in data:
        raise UserInputError(
            f"{source} must hold a mapping with a 'method' key (e.g. 'method: skeleton')"
        )
    return method_config_class(str(data["method"])).model_validate(data)


def load_config(path: Path) -> MethodConfig:
    """Read a method config from a YAML (or JSON) file and validate it.

    Parameters
    ----------
    path : pathlib.Path
        File with a mapping whose ``method`` key names a registered method.

    Returns
    -------
    MethodConfig
        An instance of that method's config class.

    Raises
    ------
    UserInputError
        If the file is missing, unreadable or names an unknown method.
    pydantic.ValidationError
        If a field is unknown or out of range (the message names the field).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from vemrestore.methods._persist import load_config
    >>> path = Path(tempfile.mkdtemp()) / "cubic.yaml"
    >>> _ = path.write_text("method: cubic\\nscale_factor: 4\\n")
    >>> load_config(path).scale_factor
    4.0
    """
    return _config_from_dict(_read_mapping(path), Path(path))


def load_config_options(path: Path) -> dict[str, Any]:
    """The options written in a config file, checked like ``load_config``.

    Unlike ``load_config(path).model_dump()``, options left out stay out, so
    values derived from others (e.g. a nested ``scale_factor``) follow an
    override of the option they derive from.
    """
    data = _read_mapping(path)
    _config_from_dict(copy.deepcopy(data), Path(path))  # validators may fill the mapping
    return data


def _read_mapping(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file {path} does not exist (check the path)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"config file {path} is not valid YAML ({exc})") from exc


def save_config(config: MethodConfig, path: Path) -> None:
    """Write ``config`` as YAML that ``load_config`` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def load_method(path: Path) -> Method:
    """Rebuild a method saved with ``method.save(path)``.

    Parameters
    ----------
    path : pathlib.Path
        Directory holding ``config.json`` and the method's state files.

    Returns
    -------
    Method
        Ready for ``predict_block``.

    Raises
    ------
    UserInputError
        If the directory or its files are missing or damaged.
    """
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserInputError(f"{path} has no config.json (pass a directory written by method.save)")
    config = load_config(config_path)
    method = get_method(config.method)(config)
    if hasattr(method, "load_state"):
        method.load_state(path)
    return method


def cpu_state(weights: Any) -> Any:
    """A (nested) state dict with every tensor detached and on the CPU (to save or pickle)."""
    if isinstance(weights, dict):
        return {k: cpu_state(v) for k, v in weights.items()}
    return weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights


def train_record(result: Any, **extra: Any) -> dict[str, Any]:
    """JSON-ready summary of a ``TrainResult`` (steps, seconds, losses) plus ``extra``."""
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "losses": result.history,
        "val_losses": result.val_losses,
        **extra,
    }


def save_trained(
    path: Path,
    config: MethodConfig,
    weights: dict[str, Any],
    *,
    json_files: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``weights.pt``, the ``json_files`` (name -> JSON-ready
    object) and, if given, ``training.json`` into directory ``path`` (created if
    needed); returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.model_dump_json(indent=2))
    torch.save(cpu_state(weights), path / "weights.pt")
    for name, value in (json_files or {}).items():
        (path / name).write_text(json.dumps(value, indent=2))
    if training is not None:
        (path / "training.json").write_text(json.dumps(training))
    return path


def require_files(path: Path, names: tuple[str, ...], owner: str) -> None:
    """Raise a ``UserInputError`` naming the first of ``names`` missing from ``path``."""
    for name in names:
        if not (Path(path) / name).exists():
            raise UserInputError(f"{path} has no {name} (pass a directory written by {owner}.save)")


def load_weights(path: Path) -> Any:
    """The state dict(s) in ``path/weights.pt``, on the CPU; a damaged file is a user error."""
    file = Path(path) / "weights.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserInputError(
            f"{file} is corrupt or incomplete ({exc}); save the method again"
        ) from exc


def apply_weights(model: torch.nn.Module, weights: Any, path: Path) -> None:
    """``model.load_state_dict(weights)``; weights of another architecture are a user error."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(
            f"{Path(path) / 'weights.pt'} does not fit this config's network "
            f"({str(exc).splitlines()[0]}); save the method again"
        ) from exc


def load_json_state(file: Path) -> Any:
    """The JSON in ``file`` (a saved method's state); a damaged file is a user error."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{file} is damaged ({exc}); save the method again") from exc


def weights_digest(*modules: torch.nn.Module) -> str:
    """SHA-256 of the modules' parameters and buffers: tells trained networks apart.

    Methods return it from ``run_fingerprint`` so that the engine resumes a
    blockwise run only with the very weights that wrote its first blocks.
    """
    digest = hashlib.sha256()
    for module in modules:
        for name, value in module.state_dict().items():
            digest.update(name.encode())
            if isinstance(value, torch.Tensor):
                raw = value.detach().cpu().contiguous().flatten().view(torch.uint8)  # any dtype
                digest.update(raw.numpy().tobytes())
    return digest.hexdigest()
