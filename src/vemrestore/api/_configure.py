"""Build a method from its name, a config file and typed overrides; the axial factor."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vemrestore.errors import UserInputError
from vemrestore.io import Volume, axial_ratio, unknown_voxel_axes
from vemrestore.methods import (
    AxialConfig,
    Method,
    MethodConfig,
    available_methods,
    get_method,
    load_config_options,
    method_config_class,
)
from vemrestore.methods.priors import prior_conflicts, shipped_prior_options

__all__ = [
    "FACTOR_TOLERANCE",
    "axial_factor",
    "axial_methods",
    "config_factor",
    "configure",
    "factor_mismatch",
    "refuse_prior_conflicts",
    "refuse_scratch_with_prior",
    "under_shipped_prior",
]

#: A factor further than this (relative) from the voxel sizes' z / x is refused without force.
FACTOR_TOLERANCE = 0.10

# The command-line option that sets each override, for error messages.
OPTION_NAMES = {
    "scale_factor": "--factor",
    "train": "--steps",
    "num_inference_steps": "--sampling-steps",
    "num_samples": "--samples",
    "skeleton_path": "--skeleton",
}


def axial_methods() -> list[str]:
    """Names of the registered axial super-resolution methods."""
    return [n for n in available_methods() if issubclass(method_config_class(n), AxialConfig)]


def axial_factor(volume: Volume, factor: float | None = None, *, force: bool = False) -> float:
    """The axial factor to restore ``volume`` with: ``factor`` checked, or its voxel sizes' z / x.

    Parameters
    ----------
    volume : Volume
        The thick-section input; its voxel size may come from ``--voxel-size``.
    factor : float, optional
        The factor asked for (``--factor``). Without it, the factor is the
        z / x voxel size.
    force : bool
        Keep a ``factor`` that differs from z / x by more than
        `FACTOR_TOLERANCE` (then the output voxels are z / factor along z,
        not x: a warning says so).

    Returns
    -------
    float
        ``factor`` as given, or z / x (6 significant digits: 25 / 10 is 2.5).

    Raises
    ------
    UserInputError
        Without ``factor``: when the z or x voxel size is unknown (not in
        the file, or the 1 nm default), or z is not coarser than x. With it: when it differs
        from a known z / x by more than 10 % and not ``force``.

    Warns
    -----
    UserWarning
        When a forced ``factor`` differs from z / x.

    Examples
    --------
    >>> import numpy as np
    >>> thick = Volume(np.zeros((4, 8, 8)), voxel_size=(80, 10, 10))
    >>> axial_factor(thick), axial_factor(thick, 8.4)
    (8.0, 8.4)
    """
    ratio = axial_ratio(volume)
    if factor is None:
        if ratio is None:
            axes = ", ".join(a for a in "ZX" if a in unknown_voxel_axes(volume))
            raise UserInputError(
                f"{_name(volume)} gives no voxel size along {axes} (or the 1 nm default), so "
                "the axial factor is unknown (pass --factor or --voxel-size Z,Y,X)"
            )
        if ratio <= 1:
            raise UserInputError(
                f"{_name(volume)} has voxel size {_sizes(volume)}: z is not coarser than x, so "
                "there is no axial factor to infer (pass --factor, or --voxel-size Z,Y,X if "
                "these sizes are wrong)"
            )
        return ratio
    mismatch = factor_mismatch(volume, factor)
    if mismatch is not None and not force:
        raise UserInputError(
            f"--factor {factor:g} disagrees with {mismatch} (drop --factor to use {ratio:g}, "
            f"correct the sizes with --voxel-size Z,Y,X, or pass --force to keep "
            f"--factor {factor:g})"
        )
    if mismatch is not None:
        warnings.warn(f"--factor {factor:g} forced against {mismatch}", UserWarning, stacklevel=2)
    return float(factor)


def factor_mismatch(volume: Volume, factor: float) -> str | None:
    """Why ``factor`` does not fit the voxel sizes of ``volume``, or None when it does.

    It fits when z / x is unknown or within `FACTOR_TOLERANCE` of ``factor``;
    otherwise the reason names the sizes and the z voxel size ``factor``
    would give.
    """
    ratio = axial_ratio(volume)
    if ratio is None or abs(float(factor) / ratio - 1) <= FACTOR_TOLERANCE + 1e-9:
        return None
    z, _, x = volume.voxel_size
    return (
        f"the voxel size of {_name(volume)}, {_sizes(volume)}, whose z / x is {ratio:g}: "
        f"the output would have {z / float(factor):g} nm z voxels for {x:g} nm pixels"
    )


def _name(volume: Volume) -> str:
    return volume.source or "the volume"


def _sizes(volume: Volume) -> str:
    return " x ".join(f"{v:g}" for v in volume.voxel_size) + " nm (z, y, x)"


def config_factor(config: Path | None) -> float | None:
    """The ``scale_factor`` a config file gives; None without one (or one that is not a number:
    `configure` then names the problem)."""
    if config is None:
        return None
    value = load_config_options(config).get("scale_factor")
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def configure(
    name: str,
    *,
    factor: float | None = None,
    config: Path | None = None,
    steps: int | None = None,
    inference: dict[str, Any] | None = None,
    from_scratch: bool = False,
    **options: Any,
) -> Method:
    """Method ``name`` from its YAML config (if given) with overrides, validated together.

    A method with a shipped prior (``vemrestore.methods.priors``) starts from
    it, with the prior's architecture and a short fine-tune
    (``shipped_prior_options``) under the file's options and the overrides,
    unless ``from_scratch``.

    Parameters
    ----------
    name : str
        A registered method.
    factor : float, optional
        Axial factor (``scale_factor``) of an axial method; refused for others.
    config : pathlib.Path, optional
        YAML file of the method's config; the overrides apply on top of it,
        so options derived from others (e.g. SkelEM's skeleton factor)
        follow ``factor``.
    steps : int, optional
        Training steps (``train.num_steps``) of a learned method.
    inference : dict, optional
        Inference options (fields of ``config.inference``), e.g.
        ``{"num_inference_steps": 4, "num_samples": 2}``; None values are ignored.
    from_scratch : bool
        Train from random weights: no prior, and the method's own defaults.
    **options
        Top-level config fields (None values are ignored).

    Raises
    ------
    UserInputError
        For an unknown method, a config file that is unreadable, of another
        method, or with an unknown, missing or invalid option (naming the
        file), an override the method does not have (named by its CLI
        option), or architecture options the shipped prior was not trained with.
    pydantic.ValidationError
        For invalid override values (the message names the field).
    """
    config_cls = method_config_class(name)
    if config is not None:
        data = load_config_options(config)
        if data["method"] != name:
            raise UserInputError(
                f"config file {config} is for method {data['method']!r}, not {name!r} "
                f"(fix 'method:' in the file, or use it with method {data['method']!r})"
            )
    else:
        data = {"method": name}
    refuse_scratch_with_prior(from_scratch, options.get("prior"))
    if from_scratch:
        if "prior" in config_cls.model_fields:
            data["prior"] = None
        elif "skeleton" not in config_cls.model_fields:
            raise UserInputError(
                f"--from-scratch does not apply to method {name!r}: it has no shipped prior"
            )
    if factor is not None:
        if not issubclass(config_cls, AxialConfig):
            raise UserInputError(
                f"{name!r} is not an axial method (choose one of: {', '.join(axial_methods())})"
            )
        data["scale_factor"] = factor
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        _require_field(config_cls, key, name)
    if "skeleton_path" in given:
        data.pop("skeleton", None)  # a given skeleton replaces the one to train
    # A given trained skeleton (skeleton_path) is used as it is, whatever --from-scratch says.
    trained_skeleton = given.get("skeleton_path", data.get("skeleton_path")) is not None
    if from_scratch and "skeleton" in config_cls.model_fields and not trained_skeleton:
        skeleton = given.get("skeleton")
        if isinstance(skeleton, BaseModel):  # a SkeletonConfig given in Python
            skeleton = skeleton.model_dump()
        if isinstance(skeleton, dict):
            given = {**given, "skeleton": {**skeleton, "prior": None}}
        else:
            data["skeleton"] = {**(data.get("skeleton") or {}), "prior": None}
    overrides = set(given) | ({"scale_factor"} if factor is not None else set())
    combined = {**data, **given} if from_scratch else under_shipped_prior(name, {**data, **given})
    method_config = _validate(config_cls, combined, config, overrides)
    method_config = _with_overrides(method_config, steps, inference or {}, name)
    refuse_prior_conflicts(name, method_config)
    return get_method(name)(method_config)


def refuse_prior_conflicts(name: str, config: MethodConfig) -> None:
    """Raise `UserInputError` when ``config`` starts from the shipped prior (its own, or its
    skeleton's) with architecture options the prior was not trained with."""
    conflicts = prior_conflicts(name, config)
    nested = getattr(config, "skeleton", None)
    if nested is not None:
        conflicts += [f"skeleton.{c}" for c in prior_conflicts("skeleton", nested)]
    if conflicts:
        raise UserInputError(
            f"{name} starts from shipped priors trained with other options: "
            f"{', '.join(conflicts)} "
            "(drop those options to fine-tune the prior, or train from scratch: "
            "--from-scratch, from_scratch=True in Python)"
        )


def refuse_scratch_with_prior(from_scratch: bool | None, prior: str | None) -> None:
    """Raise `UserInputError` when training from scratch is asked together with a prior."""
    if from_scratch and prior is not None:
        raise UserInputError(f"from_scratch together with prior={prior!r}: drop one of them")


def under_shipped_prior(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (the file's options and the overrides) on top of the options that start
    ``name`` from its shipped prior.

    ``train`` merges one level deep, so ``train: {num_steps: 800}`` keeps the
    fine-tune's learning rate and early stopping. An explicit ``prior: None``
    (a config file's ``prior: null``) keeps the method's own options: training
    from scratch; SkelEM's skeleton still starts from the skeleton prior unless
    its own options say ``prior: null``.
    """
    scratch = "prior" in data and data["prior"] is None
    defaults = {} if scratch else shipped_prior_options(name)
    merged = {**defaults, **data}
    if defaults and isinstance(data.get("train"), dict):
        merged["train"] = {**defaults["train"], **data["train"]}
    if "skeleton" in method_config_class(name).model_fields:
        return _skeleton_under_prior(merged)
    return merged


def _skeleton_under_prior(data: dict[str, Any]) -> dict[str, Any]:
    """SkelEM's ``data`` with the skeleton it trains first starting from the shipped prior.

    Not when a trained skeleton is given (``skeleton_path``) or the skeleton's
    own options say ``prior: null``; a top-level ``profile`` reaches the
    skeleton, so a profile the prior lacks is reported as a conflict.
    """
    if data.get("skeleton_path") is not None:
        return data
    skeleton = dict(data.get("skeleton") or {})
    if "prior" in skeleton and skeleton["prior"] is None:
        return data
    if "profile" in data:
        skeleton.setdefault("profile", data["profile"])
    return {**data, "skeleton": under_shipped_prior("skeleton", skeleton)}


def _validate(
    config_cls: type[MethodConfig], data: dict[str, Any], file: Path | None, overrides: set[str]
) -> MethodConfig:
    """The config of the file's options with the overrides, validated once, together.

    Errors in options the file gives (or lacks) become one `UserInputError`
    naming the file; errors in the overrides alone stay a ``ValidationError``.
    """
    try:
        return config_cls.model_validate(data)
    except ValidationError as error:
        if file is None:
            raise
        in_file = [e for e in error.errors() if not e["loc"] or e["loc"][0] not in overrides]
        if not in_file:
            raise
        missing = [OPTION_NAMES[e["loc"][0]] for e in in_file if _is_missing_option(e)]
        alternative = f" or pass {', '.join(missing)}" if missing else ""
        raise UserInputError(
            f"config file {file}: {'; '.join(_describe(e) for e in in_file)} "
            f"(fix the file{alternative}; it holds {config_cls.__name__} options)"
        ) from error


def _is_missing_option(error: Any) -> bool:
    """Whether a pydantic error is a missing field that a command-line option gives."""
    return error["type"] == "missing" and len(error["loc"]) == 1 and error["loc"][0] in OPTION_NAMES


def _describe(error: Any) -> str:
    """``field: what is wrong`` for one pydantic error of a config file."""
    where = ".".join(str(p) for p in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown option"
    if error["type"] == "missing":
        return f"{where}: missing"
    return f"{where}: {error['msg']}"


def _require_field(config_cls: type[BaseModel], key: str, name: str) -> None:
    if key not in config_cls.model_fields:
        raise UserInputError(f"{OPTION_NAMES.get(key, key)} does not apply to method {name!r}")


def _with_overrides(
    config: MethodConfig, steps: int | None, inference: dict[str, Any], name: str
) -> MethodConfig:
    """``config`` with typed overrides, re-validated: the training budget ``steps``
    (``with_step_budget``: ``train.num_steps``; SkelEM splits it across its stages) and
    inference options."""
    if steps is not None:
        _require_field(type(config), "train", name)
        config = config.with_step_budget(steps)  # type: ignore[attr-defined]
    update: dict[str, BaseModel] = {}
    given = {key: value for key, value in inference.items() if value is not None}
    # A method whose sampling happens in training (D2R's teacher) takes the sampling options there.
    routed = {k: v for k, v in given.items() if k in getattr(config, "sampling_options", ())}
    if routed:
        try:
            config = config.with_sampling(**routed)  # type: ignore[attr-defined]
        except ValidationError:
            raise  # a bad value: reported per field, like every other option
        except ValueError as error:
            raise UserInputError(f"{error}") from None
        given = {key: value for key, value in given.items() if key not in routed}
    if given:
        fields = type(config).model_fields
        current_cls = fields["inference"].annotation if "inference" in fields else BaseModel
        for key in given:
            _require_field(current_cls, key, name)  # type: ignore[arg-type]
        current = config.inference  # type: ignore[attr-defined]
        update["inference"] = current.model_copy(update=given)
    if not update:
        return config
    # model_copy does not validate: validate the result as a whole (cross-field rules too).
    return type(config).model_validate(config.model_copy(update=update).model_dump())
