"""Train the lateral method and save it to a folder (the ``train lateral`` workflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from vemrestore.io import Volume
from vemrestore.methods.lateral import LateralConfig, LateralMethod

__all__ = ["train_lateral"]


def train_lateral(
    hr: Volume | np.ndarray,
    *,
    lr: Volume | np.ndarray | None = None,
    scale_factor: int,
    out_dir: Path | None = None,
    pairs: Literal["real", "synthetic"] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **options: Any,
) -> LateralMethod:
    """Train the lateral method and save it to ``out_dir``.

    Parameters
    ----------
    hr : Volume or numpy.ndarray, shape (Z, Y, X) or (Y, X)
        High-resolution slices (may be noisy).
    lr : Volume or numpy.ndarray, optional
        LR acquisitions of the same slices, shape (Z, Y // f, X // f). When
        absent, LR slices are synthesised from ``hr`` (``pairs="synthetic"``).
    scale_factor : int
        The lateral factor: 1 (denoising), 2, 3 or 4.
    out_dir : pathlib.Path, optional
        Where the trained method is saved (``load_method(out_dir)`` reads it).
    pairs : {"real", "synthetic"}, optional
        Default: "real" when ``lr`` is given, else "synthetic". With
        "synthetic" and ``lr`` given, ``lr`` only serves to estimate the noise.
    checkpoint_dir : pathlib.Path, optional
        Training checkpoints; default ``out_dir / "checkpoints"``.
    resume : bool
        Continue from the last checkpoint.
    progress : bool
        Show a progress bar.
    **options
        Other ``LateralConfig`` fields (``objective``, ``train={...}``,
        ``inference={...}``, ...).

    Returns
    -------
    LateralMethod
        Trained (and saved when ``out_dir`` is given).

    Raises
    ------
    UserInputError, pydantic.ValidationError
        On invalid options or data.

    Examples
    --------
    >>> import numpy as np
    >>> hr = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32) * 100
    >>> method = train_lateral(hr, scale_factor=2, channels=8, num_heads=2, progress=False,
    ...                        train={"num_steps": 2, "patch_size": 16, "batch_size": 2})
    >>> method.output_voxel_size((10.0, 8.0, 8.0))
    (10.0, 4.0, 4.0)
    """
    if pairs is None:
        pairs = "synthetic" if lr is None else "real"
    method = LateralMethod(LateralConfig(scale_factor=scale_factor, pairs=pairs, **options))
    if checkpoint_dir is None and out_dir is not None:
        checkpoint_dir = Path(out_dir) / "checkpoints"
    method.fit(hr, lr=lr, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    if out_dir is not None:
        method.save(Path(out_dir))
    return method
