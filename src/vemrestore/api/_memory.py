"""Restoration of volumes held in memory, stage by stage (for napari and notebooks).

``restore_volume`` (axial super-resolution) and ``repair_sections`` (missing
and damaged sections) take a `Volume` and return one that overlays it in
world space: its voxel size and ``translation`` come from the method
(``output_voxel_size``, ``output_translation``). Each has a generator twin
(``restore_volume_stages``, ``repair_sections_stages``) that yields a `Stage`
before each step and returns the result, so a caller (the napari widgets'
worker thread) can show progress and stop between steps.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vemrestore.api._configure import axial_factor, configure
from vemrestore.api._slices import prepare_slices
from vemrestore.engine import predict_array
from vemrestore.io import Volume, check_finite
from vemrestore.methods import Method, method_config_class

#: Stages ``restore_volume_stages`` yields: configure, fit (train), predict.
RESTORE_STAGES = 3
#: Stages ``repair_sections_stages`` yields: damage map and method (training), predict.
REPAIR_STAGES = 2

__all__ = [
    "REPAIR_STAGES",
    "RESTORE_STAGES",
    "Stage",
    "is_learned",
    "repair_sections",
    "repair_sections_stages",
    "restore_volume",
    "restore_volume_stages",
]


@dataclass(frozen=True)
class Stage:
    """A step about to start.

    Attributes
    ----------
    index : int
        Steps finished so far (0 for the first).
    total : int
        Steps in all.
    description : str
        What the step does, for a progress bar.
    """

    index: int
    total: int
    description: str


def is_learned(method: str) -> bool:
    """Whether method ``method`` trains (takes ``steps``).

    Examples
    --------
    >>> is_learned("cubic"), is_learned("skeleton")
    (False, True)
    """
    return "train" in method_config_class(method).model_fields


def _drain(stages: Generator[Stage, None, Any]) -> Any:
    """Run a stage generator to its end and return its result."""
    while True:
        try:
            next(stages)
        except StopIteration as done:
            return done.value


def _result(method: Method, volume: Volume, data: np.ndarray, **metadata: Any) -> Volume:
    """``data`` as a Volume on the method's output grid, overlaying ``volume``."""
    return Volume(
        data,
        voxel_size=method.output_voxel_size(volume.voxel_size),
        translation=method.output_translation(volume.translation, volume.voxel_size),
        source=None,
        metadata={"method": method.config.method, "input": volume.source, **metadata},
    )


def restore_volume_stages(
    volume: Volume,
    *,
    method: str = "cubic",
    factor: float | None = None,
    steps: int | None = None,
    inference: dict[str, Any] | None = None,
    config: Path | None = None,
    **options: Any,
) -> Generator[Stage, None, Volume]:
    """``restore_volume`` as a generator: yields a `Stage` before each step, returns the Volume.

    Steps: build the method, fit it (training for learned methods), predict.
    Closing the generator at a yield stops before the next step.
    """
    total = RESTORE_STAGES
    yield Stage(0, total, f"configuring {method}")
    factor = axial_factor(volume, factor)
    restorer = configure(
        method, factor=factor, config=config, steps=steps, inference=inference, **options
    )
    check_finite(volume)
    learned = is_learned(method)
    yield Stage(1, total, f"training {method}" if learned else f"preparing {method}")
    if learned:
        restorer.fit(volume, progress=False)  # type: ignore[call-arg]
    else:
        restorer.fit(volume)
    yield Stage(2, total, f"restoring x{factor:g} with {method}")
    data = predict_array(restorer, volume.data)
    return _result(restorer, volume, data, factor=float(factor))


def restore_volume(volume: Volume, **options: Any) -> Volume:
    """Axial super-resolution of a volume held in memory.

    The keyword options are those of ``restore_volume_stages``:

    Parameters
    ----------
    volume : Volume
        Thick sections, shape (Z, Y, X), with voxel size and translation in nm.
    method : str
        An axial method (``axial_methods()``).
    factor : float, optional
        Axial factor; default: z / x of ``volume.voxel_size``, and a given one is checked
        against it (``vemrestore.api.axial_factor``).
    steps, inference, config, **options
        As in ``configure`` (training steps of a learned method, ...).

    Returns
    -------
    Volume
        Float32 data of shape ``method.output_shape(volume.shape)``, with the
        method's output voxel size and a ``translation`` that overlays
        ``volume`` (thick section j is centred on its fine slices);
        ``metadata`` names the method and factor.

    Raises
    ------
    UserInputError
        For an unknown or non-axial method, no factor from an isotropic voxel
        size, NaN/Inf voxels, or an option the method lacks.
    pydantic.ValidationError
        For an invalid option value (e.g. a factor <= 1).

    Examples
    --------
    >>> sections = Volume(np.zeros((4, 8, 8), np.float32), voxel_size=(40, 10, 10))
    >>> fine = restore_volume(sections, method="linear")
    >>> fine.shape, fine.voxel_size, fine.translation
    ((16, 8, 8), (10.0, 10.0, 10.0), (-15.0, 0.0, 0.0))
    """
    return _drain(restore_volume_stages(volume, **options))


def _missing_indices(missing: str | Sequence[int] | None) -> list[int] | None:
    """Section indices from text such as ``"3,17"`` or ``"10-12"``, or a sequence."""
    from vemrestore.methods.slices import parse_indices

    if missing is None:
        return None
    if isinstance(missing, str):
        return parse_indices(missing)
    return [int(i) for i in missing]


def repair_sections_stages(
    volume: Volume,
    *,
    missing: str | Sequence[int] | None = None,
    mask: Any = None,
    method: Literal["linear", "flow", "diffusion"] = "linear",
    steps: int | None = None,
    detect: bool = False,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> Generator[Stage, None, Volume]:
    """``repair_sections`` as a generator: yields a `Stage` before each step, returns the Volume.

    Steps: map the damage and build the method (training diffusion), predict.
    Closing the generator at a yield stops before the next step.
    """
    total = REPAIR_STAGES
    indices = _missing_indices(missing)
    yield Stage(0, total, "training diffusion" if method == "diffusion" else f"preparing {method}")
    restorer, report = prepare_slices(
        volume,
        missing=indices,
        mask=mask,
        detect=detect,
        method=method,
        train_steps=steps,
        seed=seed,
        options=options,
        progress=False,
    )
    sections = ", ".join(str(s["index"]) for s in report.sections) or "none"
    yield Stage(1, total, f"restoring sections {sections} with {method}")
    data = predict_array(restorer, volume.data)  # type: ignore[arg-type]
    return _result(restorer, volume, data, report=report)  # type: ignore[arg-type]


def repair_sections(volume: Volume, **options: Any) -> Volume:
    """Restore missing and damaged sections of a stack held in memory.

    The keyword options are those of ``repair_sections_stages``:

    Parameters
    ----------
    volume : Volume
        The stack, shape (Z, Y, X).
    missing : str or sequence of int, optional
        Sections to restore whole: indices, or text such as ``"3,17"`` or
        ``"3,10-12"`` (ranges inclusive).
    mask : array-like, shape (Z, Y, X), optional
        Nonzero on damaged voxels (only those are restored), e.g. a napari
        labels layer's data.
    method : {"linear", "flow", "diffusion"}
        Restoration method; ``diffusion`` fine-tunes the shipped prior on the stack first.
    steps : int, optional
        Training steps of ``diffusion`` (default: the config's).
    detect : bool
        Also detect blank, outlying and locally damaged sections.
    seed : int
        Seeds training and sampling.
    options : dict, optional
        Further config options of the method (as in ``prepare_slices``).

    Returns
    -------
    Volume
        Float32, same shape, voxel size and translation as ``volume``, equal
        to it on every voxel not restored; ``metadata["report"]`` is the
        ``SliceReport`` (what was restored and why).

    Raises
    ------
    UserInputError
        For unreadable indices, indices outside the stack, a mask of another
        shape, an unknown method, or nothing left to restore from.

    Examples
    --------
    >>> stack = Volume(np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2))
    >>> repaired = repair_sections(stack, missing="1")
    >>> bool(np.allclose(repaired.data[1], (stack.data[0] + stack.data[2]) / 2))
    True
    """
    return _drain(repair_sections_stages(volume, **options))
