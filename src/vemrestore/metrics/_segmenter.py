"""The project's boundary segmenter: shipped weights, boundary maps, segments, features.

The weights live in ``vemrestore/weights/segmenter.pt`` with their record
``segmenter.json`` (training data, steps, wall time, machine, commit, SHA-256
digest, the watershed parameters chosen on the training data, and the command
that retrains them). Torch is imported only when a learned segmenter is used.

A missing or damaged weights file is an error naming the file and the fix,
never a silent switch to the classical segmenter: that one is used only when
asked for (``load_segmenter("classical")``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from vemrestore._shipped import read_record, shipped_path
from vemrestore.errors import UserInputError
from vemrestore.metrics._image import PLANE_AXIS
from vemrestore.metrics._segmentation import seeded_watershed, threshold_segmentation
from vemrestore.normalize import PercentileNormalization

__all__ = [
    "RETRAIN_COMMAND",
    "SEGMENTER_KINDS",
    "Segmenter",
    "default_weights_path",
    "load_segmenter",
    "plane_tiles",
]

RETRAIN_COMMAND = "python benchmarks/train_segmenter.py --out src/vemrestore/weights"
SEGMENTER_KINDS = ("learned", "classical")
Mode = Literal["3d", "2d"]
# The classical fallback: a membrane is darker than this fraction of the robust range.
_CLASSICAL_THRESHOLD = 0.35
_CLASSICAL_SIGMA = 1.0
_PLANES_PER_CALL = 16
ALL_PLANES = tuple(PLANE_AXIS)


def default_weights_path() -> Path:
    """Where the shipped segmenter weights are (inside the installed package)."""
    return shipped_path("segmenter.pt")


def _read_record(weights: Path) -> dict[str, Any]:
    fix = f"reinstall vemrestore or retrain with `{RETRAIN_COMMAND}`"
    if not weights.is_file():
        fix += " (or choose the classical segmenter explicitly)"
    return read_record(weights, what="segmenter weights", fix=fix)


@dataclass
class Segmenter:
    """Boundary maps, segmentations and image features of EM volumes.

    Build with :func:`load_segmenter`. ``kind="classical"`` has no network:
    its boundary map is the inverted, smoothed intensity and it gives no
    features.

    Attributes
    ----------
    kind : {"learned", "classical"}
    record : dict
        The weights record (empty for the classical segmenter).
    watershed : dict
        Seeded-watershed parameters per mode (``"3d"``, ``"2d"``).
    """

    kind: str
    record: dict[str, Any] = field(default_factory=dict)
    watershed: dict[str, dict[str, float]] = field(default_factory=dict)
    network: Any = None

    def boundary_map(
        self,
        volume: np.ndarray,
        *,
        normalization: PercentileNormalization | None = None,
        orientations: Sequence[str] = ("xy",),
    ) -> np.ndarray:
        """Boundary probability in [0, 1] of a (Z, Y, X) volume, plane by plane.

        The network runs on the planes of each of ``orientations`` (``"xy"``,
        ``"xz"``, ``"yz"``) and the maps are averaged: all three judge a volume
        in 3D, so a restoration that is sharp within sections but blocky across
        them (nearest) is not mistaken for a good one. ``normalization`` scales
        intensities (default: the volume's own percentiles); pass the
        reference's to compare restorations fairly.
        """
        vol = np.asarray(volume)
        if vol.ndim != 3:
            raise UserInputError(f"boundary_map needs a (Z, Y, X) volume, got shape {vol.shape}")
        unknown = set(orientations) - set(PLANE_AXIS)
        if unknown or not orientations:
            raise UserInputError(f"orientations must be among xy, xz, yz, got {orientations!r}")
        norm = normalization or PercentileNormalization.from_data(vol)
        scaled = norm.apply(vol)
        if self.kind == "classical":
            in_plane = {a for o in orientations for a in range(3) if a != PLANE_AXIS[o]}
            sigma = [_CLASSICAL_SIGMA if axis in in_plane else 0.0 for axis in range(3)]
            return np.clip(1.0 - ndi.gaussian_filter(scaled, sigma), 0.0, 1.0).astype(np.float32)
        total = np.zeros(scaled.shape, dtype=np.float32)
        for orientation in orientations:
            axis = PLANE_AXIS[orientation]
            planes = np.moveaxis(scaled, axis, 0)
            total += np.moveaxis(np.concatenate(list(self._predict_planes(planes))), 0, axis)
        return total / len(orientations)

    def _predict_planes(self, scaled: np.ndarray) -> Iterator[np.ndarray]:
        import torch

        from vemrestore.models import pad_to_multiple

        h, w = scaled.shape[1:]
        with torch.no_grad():
            for start in range(0, scaled.shape[0], _PLANES_PER_CALL):
                x = torch.from_numpy(np.ascontiguousarray(scaled[start : start + _PLANES_PER_CALL]))
                x = pad_to_multiple(x[:, None], self.network.size_multiple)
                yield torch.sigmoid(self.network(x))[:, 0, :h, :w].numpy()

    def segment(
        self,
        volume: np.ndarray,
        *,
        mode: Mode = "3d",
        normalization: PercentileNormalization | None = None,
    ) -> np.ndarray:
        """Label image of ``volume``: 3D seeded watershed, or 2D per plane (``mode="2d"``).

        In 3D the boundary map averages the XY, XZ and YZ planes' maps; in 2D
        it is the XY planes' (serial sections).

        The classical segmenter labels the connected regions brighter than a
        threshold (membranes are dark) instead.
        """
        if mode not in ("3d", "2d"):
            raise UserInputError(f"mode must be '3d' or '2d', got {mode!r}")
        bmap = self.boundary_map(
            volume,
            normalization=normalization,
            orientations=ALL_PLANES if mode == "3d" else ("xy",),
        )
        if self.kind == "classical":
            threshold = 1.0 - _CLASSICAL_THRESHOLD
            return _by_mode(bmap, mode, lambda b: threshold_segmentation(b, threshold=threshold))
        params = self.watershed[mode]
        return _by_mode(bmap, mode, lambda b: seeded_watershed(b, **params))

    def features(
        self,
        tiles: np.ndarray,
        *,
        normalization: PercentileNormalization,
    ) -> np.ndarray:
        """Encoder descriptors of square tiles (N, T, T), shape (N, D), float64."""
        if self.kind == "classical":
            raise UserInputError(
                "feature distances need the learned segmenter (the classical one has no encoder)"
            )
        import torch

        scaled = normalization.apply(np.asarray(tiles))
        out = []
        with torch.no_grad():
            for start in range(0, len(scaled), 64):
                x = torch.from_numpy(np.ascontiguousarray(scaled[start : start + 64]))[:, None]
                out.append(self.network.features(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def _by_mode(
    bmap: np.ndarray, mode: str, segment: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``segment`` of the whole volume (3D), or of each plane with labels unique across planes."""
    if mode == "3d":
        return segment(bmap)
    labels = np.zeros(bmap.shape, dtype=np.int32)
    offset = 0
    for z, plane in enumerate(bmap):
        seg = segment(plane)
        labels[z] = np.where(seg > 0, seg + offset, 0)
        offset = int(labels[z].max(initial=offset))
    return labels


def load_segmenter(kind: str = "learned", *, weights: str | Path | None = None) -> Segmenter:
    """The learned segmenter from the shipped (or given) weights, or the classical one.

    Raises
    ------
    UserInputError
        Unknown ``kind``; weights missing, unreadable or not matching their
        recorded digest (one line naming the file and the retrain command).
    """
    if kind not in SEGMENTER_KINDS:
        raise UserInputError(f"unknown segmenter {kind!r} (choose {', '.join(SEGMENTER_KINDS)})")
    if kind == "classical":
        return Segmenter(kind="classical")
    import torch

    from vemrestore.models.segmenter import BoundaryNet
    from vemrestore.train import torch_load_reason

    path = Path(weights) if weights is not None else default_weights_path()
    record = _read_record(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = BoundaryNet(**record["network"])
        network.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as error:  # a damaged file or a record for another network
        raise UserInputError(
            f"segmenter weights {path} could not be loaded ({torch_load_reason(error)}); "
            f"retrain with `{RETRAIN_COMMAND}`"
        ) from None
    network.eval()
    return Segmenter(kind="learned", record=record, watershed=record["watershed"], network=network)


def plane_tiles(
    volume: np.ndarray, *, orientation: str, tile: int = 64, max_tiles: int = 512
) -> np.ndarray:
    """Non-overlapping square tiles of the XY, XZ or YZ planes of a (Z, Y, X) volume.

    Each plane is cut into a grid of ``tile`` x ``tile`` squares. With more
    than ``max_tiles`` tiles in all, whole planes are taken evenly spaced; where
    one plane alone holds more, tiles are spread evenly over all planes.
    Returns (N, tile, tile).
    """
    vol = np.asarray(volume)
    if orientation not in PLANE_AXIS:
        raise UserInputError(f"orientation must be xy, xz or yz, got {orientation!r}")
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 1:
        raise UserInputError(f"tile must be a positive integer, got {tile!r}")
    stack = np.moveaxis(vol, PLANE_AXIS[orientation], 0)
    rows, cols = stack.shape[1] // tile, stack.shape[2] // tile
    if rows == 0 or cols == 0:
        raise UserInputError(
            f"{orientation.upper()} planes of shape {stack.shape[1:]} are smaller than "
            f"one {tile}x{tile} tile"
        )
    per_plane = rows * cols
    if per_plane <= max_tiles:  # whole planes, evenly spaced
        count = min(stack.shape[0], max_tiles // per_plane)
        planes = np.linspace(0, stack.shape[0] - 1, count).round().astype(int)
        picks = (planes[:, None] * per_plane + np.arange(per_plane)).ravel()
    else:  # planes larger than the budget: tiles spread over all of them
        total = stack.shape[0] * per_plane
        picks = np.linspace(0, total - 1, max_tiles).round().astype(int)
    planes, within = np.divmod(picks, per_plane)
    rows_of, cols_of = np.divmod(within, cols)
    return np.stack(
        [
            stack[p, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
            for p, r, c in zip(planes, rows_of, cols_of, strict=True)
        ]
    )
