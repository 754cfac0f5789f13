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

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from vemrestore.errors import UserInputError
from vemrestore.io._common import first_sentence
from vemrestore.methods._base import Method, MethodConfig, get_method, method_config_class
from vemrestore.train import torch_load_reason

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


# Where a saved model comes from, for messages.
_SAVED_BY = "written by `vemrestore train ... --out` or `slices --model-dir`"


def _config_from_dict(data: Any, source: Path) -> MethodConfig:
    return method_config_class(_method_of(data, source)).model_validate(data)


def _method_of(data: Any, source: Path) -> str:
    """The registered method a config mapping names; anything else is a user error."""
    if not isinstance(data, dict) or "method" not in data:
        raise UserInputError(
            f"{source} must hold a mapping with a 'method' key (e.g. 'method: skeleton')"
        )
    name = str(data["method"])
    try:
        method_config_class(name)
    except UserInputError as exc:
        raise UserInputError(f"config file {source}: {exc}") from exc
    return name


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
    """The options written in a config file, not yet validated.

    The file must hold a mapping whose ``method`` names a registered method;
    its values are validated together with the options that override them
    (``vemrestore.api.configure``), so a file may leave out what an option
    gives (e.g. ``scale_factor`` with ``--factor``). Options left out stay
    out, so values derived from others (e.g. a nested ``scale_factor``)
    follow an override of the option they derive from.

    Raises
    ------
    UserInputError
        If the file is missing, unreadable, not YAML, not a mapping, or
        names no registered method.
    """
    data = _read_mapping(path)
    _method_of(data, Path(path))
    return data


def _read_mapping(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise UserInputError(f"config file {path} {problem} (check the path)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        where = "" if exc.problem_mark is None else f" at line {exc.problem_mark.line + 1}"
        raise UserInputError(
            f"config file {path} is not valid YAML ({exc.problem or exc.context}{where})"
        ) from exc
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"config file {path} cannot be read as YAML ({reason}); pass a YAML text file"
        ) from exc


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
        fix = f"pass a model folder {_SAVED_BY}"
        if not path.is_dir():
            fix = f"{path} {'is not a folder' if path.exists() else 'does not exist'}: {fix}"
        raise UserInputError(f"{path} has no config.json ({fix})")
    data = _read_mapping(config_path)
    # A model saved before a default changed keeps the value it was trained with.
    data = {**method_config_class(_method_of(data, config_path)).saved_defaults, **data}
    config = _config_from_dict(data, config_path)
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
        "best_step": result.best_step,
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
            raise UserInputError(
                f"{path} has no {name}: this {owner} model folder is incomplete "
                "(save or train the model again)"
            )


def load_weights(path: Path) -> Any:
    """The state dict(s) in ``path/weights.pt``, on the CPU; a damaged file is a user error.

    Only tensors and plain containers are loaded (``weights_only=True``): a
    file holding anything else is refused, never unpickled.
    """
    file = Path(path) / "weights.pt"
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle's protocol
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise UserInputError(
            f"cannot read {file} ({exc.strerror or exc}); check that it is a readable file"
        ) from exc
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserInputError(
            f"{file} is corrupt, truncated or not a vemrestore model ({torch_load_reason(exc)}); "
            "save or train the model again"
        ) from exc


def apply_weights(model: torch.nn.Module, weights: Any, path: Path) -> None:
    """``model.load_state_dict(weights)``; weights of another architecture are a user error."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        reason = first_sentence(str(exc)) or type(exc).__name__
        raise UserInputError(
            f"{Path(path) / 'weights.pt'} does not fit this config's network ({reason}); "
            "config.json and weights.pt must come from one save: save or train the model again"
        ) from exc


def load_json_state(file: Path) -> Any:
    """The JSON in ``file`` (a saved method's state); a damaged file is a user error."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise UserInputError(
            f"cannot read {file} ({exc.strerror or exc}); check that it is a readable file"
        ) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserInputError(
            f"{file} is damaged ({first_sentence(str(exc))}); save or train the model again"
        ) from exc


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
