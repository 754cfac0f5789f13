"""Shipped priors: generalist weights a learned method starts from and fine-tunes.

A method whose config names a ``prior`` ("shipped", or the path of a prior's
``.pt`` file) starts training from those weights instead of random ones, so a
short, self-supervised fine-tune on the user's volume replaces a long training
from scratch. The weights carry a record beside them (``.json``: data, steps,
wall time, machine, commit, SHA-256), checked at every load.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vemrestore._shipped import read_record, shipped_path
from vemrestore.errors import UserInputError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FINE_TUNE",
    "FINE_TUNES",
    "PRIOR_FILES",
    "PRIOR_OPTIONS",
    "RETRAIN_COMMANDS",
    "SKELEM_FINE_TUNE",
    "SKELEM_PRIOR",
    "SKELETON_PRIOR",
    "SLICES_FINE_TUNE",
    "SLICES_PRIOR",
    "apply_prior",
    "option_differences",
    "prior_conflicts",
    "prior_weights_path",
    "read_prior",
    "shipped_prior_options",
    "warn_outside_factors",
]

#: Per method with a shipped prior: the one command that retrains it.
RETRAIN_COMMANDS = {
    "skeleton": "python benchmarks/train_priors.py --out src/vemrestore/weights --overwrite",
    "skelem": "python benchmarks/train_refiner_prior.py --out src/vemrestore/weights --overwrite",
    "slices-diffusion": (
        "python benchmarks/train_slice_prior.py --out src/vemrestore/weights --overwrite"
    ),
}
PRIOR_FILES = {
    "skeleton": "skeleton_prior.pt",
    "skelem": "skelem_refiner_prior.pt",
    "slices-diffusion": "slices_prior.pt",
}

#: The skeleton options the shipped prior was trained with (its architecture and forward model).
SKELETON_PRIOR: dict[str, Any] = {
    "base_channels": 24,
    "depth": 2,
    "space_to_depth": 2,
    "factor_input": True,
    "context_planes": 0,
    "profile": "box",
}

#: The SkelEM refiner options the shipped refiner prior was trained with (its noise schedule,
#: the default ``DiffusionConfig``, is checked against the prior's record when it is loaded).
SKELEM_PRIOR: dict[str, Any] = {"base_channels": 16, "depth": 2}

#: The slice restorer options the shipped prior was trained with: the default network,
#: conditioned on optical-flow interpolation.
SLICES_PRIOR: dict[str, Any] = {
    "num_context": 1,
    "base_channels": 16,
    "depth": 2,
    "stem_patch": 2,
    "num_heads": 3,
    "attention_heads": 4,
    "estimate": "flow",
}

#: Training options of a fine-tune from the skeleton prior: a budget of minutes on a laptop CPU at a
#: lower learning rate than from scratch, validated on held-out sections of the input every
#: 50 steps, stopping after 4 validations without a new best (whose weights are kept).
FINE_TUNE: dict[str, Any] = {
    "num_steps": 1000,
    "patch_size": 48,
    "learning_rate": 5e-4,
    "validate_every": 50,
    "patience": 4,
}

#: The slice restorer's fine-tune: 4 patches of 64^2 per step (the prior took 16; 4 keeps a
#: step cheap), gradient norm clipped at 1, at a fifth of the prior's peak learning rate, warmed up
#: (one-cycle); at most 600 steps, about 5 minutes on one CPU core.
SLICES_FINE_TUNE: dict[str, Any] = {
    "num_steps": 600,
    "batch_size": 4,
    "patch_size": 64,
    "learning_rate": 1e-4,
    "lr_schedule": "one-cycle",
    "grad_clip": 1.0,
    "loss": "l2",
    "validate_every": 50,
    "patience": 4,
}

#: The SkelEM refiner's fine-tune from its prior: the refiner's own batches (8 patches of
#: 32^2) at a fifth of the prior's learning rate, validated every 100 steps on held-out
#: sections of the input, stopping after 4 validations without a new best.
SKELEM_FINE_TUNE: dict[str, Any] = {
    "num_steps": 1500,
    "learning_rate": 2e-4,
    "validate_every": 100,
    "patience": 4,
}

#: Per method with a shipped prior: the training options of its fine-tune.
FINE_TUNES: dict[str, dict[str, Any]] = {
    "skeleton": FINE_TUNE,
    "skelem": SKELEM_FINE_TUNE,
    "slices-diffusion": SLICES_FINE_TUNE,
}

#: Per method with a shipped prior: the options it was trained with, which a config
#: starting from it must keep.
PRIOR_OPTIONS: dict[str, dict[str, Any]] = {
    "skeleton": SKELETON_PRIOR,
    "skelem": SKELEM_PRIOR,
    "slices-diffusion": SLICES_PRIOR,
}


def shipped_prior_options(method: str) -> dict[str, Any]:
    """Config options that start ``method`` from its shipped prior ({} if it has none).

    The prior's architecture, ``prior="shipped"`` and the fine-tune training
    options (``FINE_TUNES``); options given by the user go on top.
    """
    if method not in PRIOR_OPTIONS:
        return {}
    return {**PRIOR_OPTIONS[method], "prior": "shipped", "train": dict(FINE_TUNES[method])}


def prior_conflicts(method: str, config: Any) -> list[str]:
    """``option=value (prior: value)`` for each option of ``config`` the shipped prior fixes
    otherwise ([] when the config does not start from the shipped prior)."""
    if getattr(config, "prior", None) != "shipped" or method not in PRIOR_OPTIONS:
        return []
    return [
        f"{key}={getattr(config, key)!r} (prior: {value!r})"
        for key, value in PRIOR_OPTIONS[method].items()
        if getattr(config, key) != value
    ]


def prior_weights_path(prior: str, method: str) -> Path:
    """The weights file of ``prior``: ``"shipped"`` (in the package) or a path."""
    if prior == "shipped":
        if method not in PRIOR_FILES:
            raise UserInputError(f"no prior is shipped for method {method!r}")
        return shipped_path(PRIOR_FILES[method])
    return Path(prior)


def read_prior(prior: str, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record and the state dict of a prior, its digest checked.

    Raises
    ------
    UserInputError
        One line naming the file: missing, unreadable, damaged, or the prior
        of another method.
    """
    import torch

    from vemrestore.train import torch_load_reason

    path = prior_weights_path(prior, method)
    fix = (
        f"reinstall vemrestore or retrain with `{RETRAIN_COMMANDS[method]}`, or pass --from-scratch"
        if prior == "shipped"
        else "give the .pt file of a prior with its .json record, or pass --from-scratch"
    )
    record = read_record(path, what=f"{method} prior weights", fix=fix)
    if record.get("method") != method:
        raise UserInputError(
            f"{path} is a prior of method {record.get('method')!r}, not {method!r}; {fix}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged zip/pickle
        raise UserInputError(
            f"{method} prior weights {path} could not be loaded ({torch_load_reason(error)}); {fix}"
        ) from None
    return record, state


def apply_prior(network: nn.Module, prior: str, method: str) -> dict[str, Any]:
    """Load the prior's weights into ``network`` (a ``ConfiguredNetwork``); return its record.

    Raises
    ------
    UserInputError
        If the prior cannot be read (`read_prior`) or was trained for another
        architecture than ``network``'s (naming the options that differ).
    """
    record, state = read_prior(prior, method)
    expected = getattr(network, "config", None)
    if record.get("network") != expected:
        options = option_differences(record.get("network"), expected)
        raise UserInputError(
            f"the {method} prior {prior_weights_path(prior, method)} was trained with {options}; "
            "drop the architecture options that differ, or pass --from-scratch"
        )
    try:
        network.load_state_dict({key: value.float() for key, value in state.items()})
    except (RuntimeError, AttributeError) as error:  # weights of another shape than the record's
        raise UserInputError(
            f"the {method} prior {prior_weights_path(prior, method)} holds weights that do not "
            f"fit its record ({str(error).splitlines()[0]}); retrain it or pass --from-scratch"
        ) from None
    return record


def option_differences(
    saved: dict[str, Any] | None, expected: dict[str, Any] | None, prefix: str = ""
) -> str:
    """``{prefix}key=saved (config: expected)`` for each key whose values differ, sorted.

    Examples
    --------
    >>> option_differences({"depth": 2, "width": 8}, {"depth": 3, "width": 8}, "net.")
    'net.depth=2 (config: 3)'
    """
    saved, expected = saved or {}, expected or {}
    return ", ".join(
        f"{prefix}{key}={saved.get(key)!r} (config: {expected.get(key)!r})"
        for key in sorted({**saved, **expected})
        if saved.get(key) != expected.get(key)
    )


def warn_outside_factors(record: dict[str, Any], factor: float) -> None:
    """Warn when ``factor`` lies outside the axial factors an axial prior was trained for
    (its record's ``factor_range``, or the extremes of its ``factors``)."""
    factors = record.get("factor_range") or record.get("factors")
    if not factors:
        return
    low, high = min(factors), max(factors)
    if not low <= factor <= high:
        warnings.warn(
            f"factor {factor:g} is outside the range {low:g}-{high:g} the prior was trained "
            "for: the fine-tune starts from an extrapolation (--from-scratch may do better)",
            UserWarning,
            stacklevel=3,
        )
