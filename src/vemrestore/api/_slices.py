"""Restore missing and damaged sections: damage map, method (trained if needed), prediction."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vemrestore.api._configure import (
    refuse_prior_conflicts,
    refuse_scratch_with_prior,
    under_shipped_prior,
)
from vemrestore.engine import predict_array
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import create_method, load_method
from vemrestore.methods.slices import (
    DiffusionSlices,
    SliceDamageMap,
    SliceMethod,
    SliceReport,
    detect_damage,
)

__all__ = ["SLICE_METHODS", "prepare_slices", "restore_slices"]

# The ``method`` choices of ``prepare_slices`` and the registered methods they name.
SLICE_METHODS = {"linear": "slices-linear", "flow": "slices-flow", "diffusion": "slices-diffusion"}


def _check_known_voxels_finite(volume: Volume, damage: SliceDamageMap) -> None:
    """Raise if a voxel that is not to be restored is NaN or infinite."""
    for z in range(volume.shape[0]):
        if z in damage.missing:
            continue
        bad = ~np.isfinite(np.asarray(volume.data[z], dtype=np.float32))
        if z in damage.partial:
            bad &= ~damage.partial[z]
        if bad.any():
            raise UserInputError(
                f"section {z} has {int(bad.sum())} NaN/inf voxels outside the damage to restore "
                "(pass detect=True / --detect, add the section to missing, or mask them)"
            )


def _build_damage(
    volume: Volume,
    missing: Sequence[int] | None,
    mask: Any,
    detect: bool,
    detect_options: dict[str, Any] | None,
) -> tuple[SliceDamageMap, dict[int, str], dict[int, str]]:
    damage = SliceDamageMap.build(volume.shape, missing=missing, mask=mask)
    sources = {z: "given" for z in damage.missing}
    sources.update({z: "mask" for z in damage.partial})
    reasons: dict[int, str] = {}
    if detect:
        found = detect_damage(volume.to_numpy(), **(detect_options or {}))
        damage = damage.merged(found.missing, found.partial)
        for z in set(found.missing) | set(found.partial):
            sources[z] = f"{sources[z]}+detected" if z in sources else "detected"
        reasons.update(found.reasons)
        damage.require_known(
            "detection finds every section damaged whole",
            "check that the input is the right stack, or give the damaged sections with "
            "missing / --missing instead of detect / --detect",
        )
    return damage, sources, reasons


def _diffusion_options(
    options: dict[str, Any], seed: int, train_steps: int | None, from_scratch: bool
) -> dict[str, Any]:
    """``options`` with ``seed`` as the training and sampling seed unless they give one,
    on top of the prior's fine-tune (the shipped prior unless they name another) unless
    ``from_scratch`` or they say ``prior: None``."""
    train = dict(options.pop("train", {}))
    train.setdefault("seed", seed)
    if train_steps is not None:
        train["num_steps"] = train_steps
    inference = dict(options.pop("inference", {}))
    if "seed" not in options:  # an old top-level sampling seed moves into inference itself
        inference.setdefault("seed", seed)
    options = {**options, "train": train, "inference": inference}
    refuse_scratch_with_prior(from_scratch, options.get("prior"))
    if from_scratch:
        return options
    return under_shipped_prior(SLICE_METHODS["diffusion"], options)


def prepare_slices(
    volume: Volume,
    *,
    missing: Sequence[int] | None = None,
    mask: Any = None,
    detect: bool = False,
    method: Literal["linear", "flow", "diffusion"] = "diffusion",
    model_dir: Path | None = None,
    train_steps: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    detect_options: dict[str, Any] | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    from_scratch: bool = False,
) -> tuple[SliceMethod, SliceReport]:
    """Build the damage map, and the method ready to restore it (trained if needed).

    Use the method with ``vemrestore.engine.predict_volume`` (blockwise, any
    size) or ``predict_array``; ``restore_slices`` does the latter.

    Parameters
    ----------
    volume : Volume
        The stack, shape (Z, Y, X).
    missing : sequence of int, optional
        Sections to restore whole.
    mask : array-like, shape (Z, Y, X), optional
        Nonzero on damaged voxels (only those are restored).
    detect : bool
        Also detect blank, outlying and locally damaged sections (``detect_damage``).
    method : {"linear", "flow", "diffusion"}
        Restoration method.
    model_dir : pathlib.Path, optional
        For ``diffusion``: a saved model to load if the folder holds one,
        else where the model trained on ``volume`` is saved.
    train_steps : int, optional
        For ``diffusion``: training steps (default: the config's).
    seed : int
        Seeds training and the sampling noise.
    options : dict, optional
        Further config options of the method (e.g.
        ``{"inference": {"num_inference_steps": 8}}``; old names such as
        ``{"num_steps": 8}`` still work).
    detect_options : dict, optional
        Keyword options of ``detect_damage``.
    progress : bool
        Show training progress.
    checkpoint_dir : pathlib.Path, optional
        For ``diffusion`` training: write checkpoints there and resume from
        the one it holds (a killed run continues where it stopped). Unused
        when no training is needed.
    from_scratch : bool
        For ``diffusion`` training: start from random weights with the
        config's own training defaults. Otherwise training fine-tunes a
        prior (``SLICES_FINE_TUNE``: early stopping on held-out sections):
        the shipped one (``vemrestore.methods.priors.SLICES_PRIOR``), or the
        one ``options["prior"]`` names; ``options={"prior": None}`` is the
        same as ``from_scratch``.

    Returns
    -------
    method : LinearSlices, FlowSlices or DiffusionSlices
        With the damage map attached.
    report : SliceReport
        The sections and pixels that will be restored, with reasons.

    Raises
    ------
    UserInputError
        For an unknown method, indices outside the stack, a mask whose shape
        differs from the volume's, damage that leaves nothing to restore it
        from (every section damaged whole), NaN/Inf voxels outside the damage,
        or network options the shipped prior was not trained with (unless
        ``from_scratch``).
    """
    if method not in SLICE_METHODS:
        raise UserInputError(
            f"unknown slice method {method!r} (choose one of: {', '.join(SLICE_METHODS)})"
        )
    if from_scratch and method != "diffusion":
        raise UserInputError(
            f"--from-scratch does not apply to slice method {method!r}: only diffusion trains"
        )
    damage, sources, reasons = _build_damage(volume, missing, mask, detect, detect_options)
    if damage.is_empty:
        warnings.warn(
            "nothing to restore: no missing sections, mask or detected damage "
            "(the output will equal the input)",
            stacklevel=2,
        )
    if np.issubdtype(volume.dtype, np.floating):
        _check_known_voxels_finite(volume, damage)
    name = SLICE_METHODS[method]
    report = SliceReport.from_damage(damage, method=name, sources=sources, reasons=reasons)
    options = dict(options or {})
    if method != "diffusion":
        restorer = create_method(name, **options)
    elif model_dir is not None and (Path(model_dir) / "config.json").is_file():
        if from_scratch:
            raise UserInputError(
                f"--from-scratch with --model-dir {model_dir}, which holds a trained model that "
                "is used as it is (drop --from-scratch, or pass an empty --model-dir to train anew)"
            )
        restorer = load_method(Path(model_dir))
        if not isinstance(restorer, DiffusionSlices):
            raise UserInputError(
                f"{model_dir} holds a {restorer.config.method!r} model, not slices-diffusion "
                "(pass another --model-dir)"
            )
    else:
        restorer = create_method(
            name, **_diffusion_options(options, seed, train_steps, from_scratch)
        )
        refuse_prior_conflicts(name, restorer.config)
        if not damage.is_empty or model_dir is not None:
            restorer.fit(  # type: ignore[call-arg]
                volume,
                damage=damage,
                progress=progress,
                checkpoint_dir=checkpoint_dir,
                resume=checkpoint_dir is not None,
            )
            r = restorer.train_result  # type: ignore[attr-defined]
            report.training = {
                "steps": r.steps,
                "seconds": round(r.seconds, 1),
                "final_loss": float(np.mean(r.history[-50:])),
                "val_losses": r.val_losses,
            }
            if model_dir is not None:
                restorer.save(Path(model_dir))
    restorer.set_damage(damage)  # type: ignore[attr-defined]
    return restorer, report  # type: ignore[return-value]


def restore_slices(volume: Volume, **options: Any) -> tuple[np.ndarray, SliceReport]:
    """Restore missing and damaged sections of a stack held in memory.

    Parameters
    ----------
    volume : Volume
        The stack, shape (Z, Y, X).
    **options
        Keyword options of ``prepare_slices`` (``missing``, ``mask``,
        ``detect``, ``method``, ...).

    Returns
    -------
    restored : numpy.ndarray of float32, shape (Z, Y, X)
        Equal to the input (as float32) on every voxel not restored.
    report : SliceReport
        What was restored and why, with the prediction time in ``seconds``.

    Raises
    ------
    UserInputError
        See ``prepare_slices``.

    Examples
    --------
    >>> stack = np.random.default_rng(0).random((6, 16, 16), dtype=np.float32)
    >>> out, report = restore_slices(Volume(stack), missing=[2], method="linear")
    >>> report.restored_sections, bool(np.allclose(out[2], (stack[1] + stack[3]) / 2))
    ([2], True)
    """
    restorer, report = prepare_slices(volume, **options)
    start = time.perf_counter()
    restored = predict_array(restorer, volume.data)  # type: ignore[arg-type]
    report.seconds = time.perf_counter() - start
    return restored, report
