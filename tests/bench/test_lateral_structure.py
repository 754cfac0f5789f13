"""Structure scores of the lateral benchmark (``benchmarks/lateral_bench.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.errors import UserInputError


@pytest.fixture(scope="module")
def bench(benchmark_module):
    with benchmark_module("lateral_bench") as module:
        yield module


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grid_slices() -> np.ndarray:
    """Two 128x128 slices of bright cells between dark 3-px lines."""
    image = np.full((2, 128, 128), 200.0, np.float32)
    for z, (start, step) in enumerate(((0, 16), (5, 21))):
        lines = (np.arange(128) - start) % step < 3
        image[z, lines, :] = 20.0
        image[z, :, lines] = 20.0
    return image


def assert_blur_scores_worse(scorer, truth: np.ndarray) -> dict[str, float]:
    """Identical slices score perfectly, a blurred copy worse; returns the blurred copy's."""
    perfect = scorer(truth)
    assert perfect["membrane_f1"] == 1.0
    assert perfect["seg_vi"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["spectrum_log_error"] == 0.0
    assert perfect["ms_ssim"] == pytest.approx(1.0)
    worse = scorer(ndi.gaussian_filter(truth, (0, 4, 4)))
    assert worse["membrane_f1"] < 0.9
    assert worse["spectrum_log_error"] > 1.0
    assert worse["ms_ssim"] < 0.9
    return worse


def test_scorer_with_a_stand_in_segmenter(bench, dark_line_segmenter):
    truth = grid_slices()
    scorer = bench.StructureScorer(dark_line_segmenter, truth, pixel_nm=10.0)
    worse = assert_blur_scores_worse(scorer, truth)
    assert worse["seg_vi_merge"] > 1.0 and worse["feature_kid"] > 0.01


def test_scorer_on_real_epfl_slices(bench, real_path):
    import tifffile

    from vemrestore.metrics import load_segmenter

    try:
        segmenter = load_segmenter()
    except UserInputError as error:
        pytest.skip(f"segmenter weights not available: {error}")
    truth = tifffile.imread(real_path("epfl_slices"), key=[1, 5])[:, 256:384, 256:384].astype(
        np.float32
    )
    scorer = bench.StructureScorer(segmenter, truth, pixel_nm=bench.PIXEL_NM["epfl"])
    assert_blur_scores_worse(scorer, truth)
