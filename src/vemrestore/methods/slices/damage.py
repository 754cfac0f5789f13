"""Where a stack is damaged (whole sections and pixel masks), and the report of a restoration."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError

__all__ = ["SliceDamageMap", "SliceReport", "parse_indices"]


def parse_indices(text: str) -> list[int]:
    """Parse section indices such as ``"3,17"`` or ``"3,10-12"`` (ranges inclusive).

    Raises
    ------
    UserInputError
        If a part is not an integer or a range ``a-b`` with ``a <= b``.

    Examples
    --------
    >>> parse_indices("3, 10-12")
    [3, 10, 11, 12]
    """
    indices: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise UserInputError(
                f"cannot read section index {part!r} in {text!r} (use e.g. '3,17' or '10-12')"
            ) from None
        if first > last or first < 0:
            raise UserInputError(f"invalid section range {part!r} in {text!r} (use 'a-b', a <= b)")
        indices.extend(range(first, last + 1))
    return indices


@dataclass(frozen=True)
class SliceDamageMap:
    """Damaged voxels of a (Z, Y, X) stack: whole missing sections plus per-section masks.

    Build it with ``SliceDamageMap.build``. Stored sparsely (one (Y, X) mask
    per partially damaged section), so it is small for large stacks.

    Attributes
    ----------
    shape : tuple of int
        Shape (Z, Y, X) of the stack.
    missing : tuple of int
        Sections restored whole, sorted.
    partial : dict of int to numpy.ndarray
        Boolean (Y, X) masks (True = restore) of sections not in ``missing``;
        every mask has at least one True pixel.
    """

    shape: tuple[int, int, int]
    missing: tuple[int, ...] = ()
    partial: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        shape: Sequence[int],
        *,
        missing: Iterable[int] | None = None,
        mask: Any = None,
    ) -> SliceDamageMap:
        """Validate user input and build the map.

        Parameters
        ----------
        shape : sequence of int
            Shape (Z, Y, X) of the stack.
        missing : iterable of int, optional
            Sections to restore whole.
        mask : array-like, shape (Z, Y, X), optional
            Nonzero where voxels are damaged. A section masked entirely
            counts as missing.

        Returns
        -------
        SliceDamageMap

        Raises
        ------
        UserInputError
            If an index is outside ``0 .. Z-1``, the mask shape differs from
            ``shape``, or every section is damaged whole (nothing is left to
            restore them from).
        """
        shape = tuple(int(n) for n in shape)
        num = shape[0]
        given = sorted({int(z) for z in (missing or ())})
        bad = [z for z in given if not 0 <= z < num]
        if bad:
            raise UserInputError(
                f"missing section indices {bad} are outside 0..{num - 1} (the stack has Z={num})"
            )
        partial: dict[int, np.ndarray] = {}
        if mask is not None:
            if tuple(mask.shape) != shape:
                raise UserInputError(
                    f"mask has shape {tuple(mask.shape)} but the volume has shape {shape} "
                    "(pass a mask with one value per voxel, nonzero where damaged)"
                )
            for z in range(num):
                plane = np.asarray(mask[z]) != 0
                if plane.all():
                    given.append(z)
                elif plane.any() and z not in given:
                    partial[z] = plane
        whole = tuple(sorted(set(given)))
        damage = cls(shape, whole, {z: m for z, m in sorted(partial.items()) if z not in whole})
        if mask is None:
            cause, fix = "missing lists every section", "list only the damaged sections"
        elif not missing:
            cause, fix = "the mask covers every voxel", "mark only the damaged voxels"
        else:
            cause, fix = "missing and the mask cover every section", "mark only the damage"
        damage.require_known(cause, fix)
        return damage

    def require_known(self, cause: str, fix: str) -> None:
        """Raise unless some voxel is left to restore the damage from.

        A run of damaged sections is restored from the intact sections
        bounding it (only one at the top or bottom of the stack) and from the
        known pixels of its partially damaged sections, so the damage can be
        restored unless every section is damaged whole.

        Parameters
        ----------
        cause : str
            What marked every section, e.g. ``"missing lists every section"``.
        fix : str
            What to do instead.

        Raises
        ------
        UserInputError
            If every section is missing.
        """
        num = self.shape[0]
        if num and len(self.missing) == num:
            raise UserInputError(
                f"{cause} (all {num} sections of the stack): nothing is left to restore them "
                f"from ({fix}; they are restored from the intact sections and pixels around them)"
            )

    def merged(self, missing: Iterable[int], partial: dict[int, np.ndarray]) -> SliceDamageMap:
        """A map with more missing sections and masks (e.g. from detection) added."""
        whole = tuple(sorted(set(self.missing) | {int(z) for z in missing}))
        masks = dict(self.partial)
        for z, m in partial.items():
            masks[z] = masks[z] | m if z in masks else np.asarray(m, bool)
        return SliceDamageMap(
            self.shape, whole, {z: m for z, m in sorted(masks.items()) if z not in whole}
        )

    def digest(self) -> str:
        """SHA-256 of the shape, the missing sections and every mask (tells maps apart)."""
        h = hashlib.sha256(json.dumps([self.shape, self.missing]).encode())
        for z, m in self.partial.items():
            h.update(str(z).encode())
            h.update(np.packbits(m).tobytes())
        return h.hexdigest()

    @property
    def damaged(self) -> tuple[int, ...]:
        """All sections with any damaged voxel, sorted."""
        return tuple(sorted(set(self.missing) | set(self.partial)))

    @property
    def is_empty(self) -> bool:
        return not self.missing and not self.partial

    def pixel_counts(self) -> dict[int, int]:
        """Damaged pixels per damaged section."""
        area = self.shape[1] * self.shape[2]
        counts = {z: area for z in self.missing}
        counts.update({z: int(m.sum()) for z, m in self.partial.items()})
        return dict(sorted(counts.items()))

    def runs(self) -> list[tuple[int, int]]:
        """Half-open ranges of consecutive damaged sections."""
        runs: list[tuple[int, int]] = []
        for z in self.damaged:
            if runs and runs[-1][1] == z:
                runs[-1] = (runs[-1][0], z + 1)
            else:
                runs.append((z, z + 1))
        return runs

    def region_mask(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Boolean mask of the damaged voxels in ``region`` (absolute slices, step 1)."""
        zs, ys, xs = region
        out = np.zeros((zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start), bool)
        for z in range(zs.start, zs.stop):
            if z in self.partial:
                out[z - zs.start] = self.partial[z][ys, xs]
            elif z in self.missing:
                out[z - zs.start] = True
        return out

    def z_extent(self, start: int, stop: int, context: int) -> tuple[int, int]:
        """Sections needed to restore the damaged sections in ``start:stop``.

        Every run of damaged sections that meets ``start:stop`` is included
        with ``context`` sections each side; runs met by that context are
        included whole with their bounding sections (for their interpolated
        fill), repeatedly, clipped to the stack.
        """
        runs = self.runs()
        num = self.shape[0]
        lo, hi = start, stop
        for a, b in runs:
            if a < stop and b > start:
                lo, hi = min(lo, a - context), max(hi, b + context)
        lo, hi = max(lo, 0), min(hi, num)
        while True:
            new_lo, new_hi = lo, hi
            for a, b in runs:
                if a < hi and b > lo:
                    new_lo, new_hi = min(new_lo, a - 1), max(new_hi, b + 1)
            new_lo, new_hi = max(new_lo, 0), min(new_hi, num)
            if (new_lo, new_hi) == (lo, hi):
                return lo, hi
            lo, hi = new_lo, new_hi


@dataclass
class SliceReport:
    """Which sections and regions a slice restoration changed, and why.

    Attributes
    ----------
    method : str
        Registered method name (``slices-linear``, ``slices-flow``, ``slices-diffusion``).
    shape : tuple of int
        Shape (Z, Y, X) of the stack.
    sections : list of dict
        One entry per restored section: ``index``, ``kind`` ("whole" or
        "partial"), ``pixels`` restored, ``source`` ("given", "mask" or
        "detected", joined by "+" when several) and ``reason``.
    seconds : float or None
        Wall time of the restoration (prediction only), when measured.
    training : dict or None
        Training summary (steps, seconds, final losses) when a model was trained.
    """

    method: str
    shape: tuple[int, int, int]
    sections: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    training: dict[str, Any] | None = None

    @classmethod
    def from_damage(
        cls,
        damage: SliceDamageMap,
        *,
        method: str,
        sources: dict[int, str],
        reasons: dict[int, str],
    ) -> SliceReport:
        """One entry per damaged section of ``damage``."""
        counts = damage.pixel_counts()
        sections = [
            {
                "index": z,
                "kind": "whole" if z in damage.missing else "partial",
                "pixels": counts[z],
                "source": sources.get(z, "given"),
                "reason": reasons.get(z, ""),
            }
            for z in damage.damaged
        ]
        return cls(method=method, shape=damage.shape, sections=sections)

    @property
    def restored_sections(self) -> list[int]:
        """Indices of all restored sections."""
        return [s["index"] for s in self.sections]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content."""
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """A short human-readable summary, one line per restored section."""
        head = f"{self.method}: restored {len(self.sections)} of {self.shape[0]} sections"
        if self.seconds is not None:
            head += f" in {self.seconds:.1f} s"
        lines = [head]
        for s in self.sections:
            reason = f" - {s['reason']}" if s["reason"] else ""
            lines.append(
                f"  section {s['index']:>5}: {s['kind']:<7} {s['pixels']:>10} px  "
                f"[{s['source']}]{reason}"
            )
        return "\n".join(lines)
