"""Fixtures of the benchmark tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi


class DarkLineSegmenter:
    """A stand-in segmenter: membranes are the dark pixels, cells their complement's components."""

    def boundary_map(self, volume, *, normalization):
        return (normalization.apply(volume) < 0.5).astype(np.float32)

    def segment(self, volume, *, mode, normalization):
        assert mode == "2d"
        planes = self.boundary_map(volume, normalization=normalization) < 0.5
        return np.stack([ndi.label(p)[0] for p in planes]).astype(np.int32)

    def features(self, tiles, *, normalization):
        x = normalization.apply(tiles)
        return np.stack([x.mean((1, 2)), x.std((1, 2)), (x < 0.5).mean((1, 2))], axis=1)


@pytest.fixture
def dark_line_segmenter() -> DarkLineSegmenter:
    return DarkLineSegmenter()
