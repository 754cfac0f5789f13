"""Structure scores of the missing-section benchmark (``benchmarks/slices_bench.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.normalize import PercentileNormalization


@pytest.fixture(scope="module")
def bench(benchmark_module):
    with benchmark_module("slices_bench") as module:
        yield module


def grid_sections() -> tuple[np.ndarray, np.ndarray]:
    """Two 128x128 sections of bright cells between dark 3-px lines, and their labels."""
    image = np.full((2, 128, 128), 200.0, np.float32)
    for section, (start, step) in enumerate(((0, 16), (5, 21))):
        lines = (np.arange(128) - start) % step < 3
        image[section, lines, :] = 20.0
        image[section, :, lines] = 20.0
    membranes = np.where(image < 100, 0, 255).astype(np.uint8)
    return image, membranes


def test_identical_sections_score_perfectly_and_blur_scores_worse(bench, dark_line_segmenter):
    truth, membranes = grid_sections()
    seg, norm = dark_line_segmenter, PercentileNormalization(low=0.0, high=255.0)
    perfect, labels = bench.structure_scores(seg, truth, truth, membranes, normalization=norm)
    assert perfect["membrane_f1"] == 1.0
    assert perfect["seg_vi"] == perfect["seg_arand"] == 0.0
    assert perfect["membrane_f1_per_section"] == [1.0, 1.0]
    assert labels.shape == truth.shape and labels.max() > 10
    blurred = ndi.gaussian_filter(truth, (0, 4, 4))
    worse, _ = bench.structure_scores(seg, blurred, truth, membranes, normalization=norm)
    assert worse["membrane_f1"] < 0.9
    assert worse["seg_vi_merge"] > 3.0 and worse["seg_arand"] > 0.5
    assert worse["feature_kid"] > perfect["feature_kid"] + 0.05


def test_a_region_limits_the_scored_pixels_and_drops_kid(bench, dark_line_segmenter):
    truth, membranes = grid_sections()
    seg, norm = dark_line_segmenter, PercentileNormalization(low=0.0, high=255.0)
    restored = truth.copy()
    restored[..., 64:] = ndi.gaussian_filter(truth[..., 64:], (0, 4, 4))
    region = np.zeros(truth.shape, bool)
    region[..., :48] = True  # cells there end at the line x = 48-50, left of the damage
    inside, _ = bench.structure_scores(
        seg, restored, truth, membranes, normalization=norm, region=region
    )
    assert inside["membrane_f1"] == 1.0 and inside["seg_vi"] == 0.0
    assert inside["feature_kid"] is None
    region[..., 64:] = True
    damaged, _ = bench.structure_scores(
        seg, restored, truth, membranes, normalization=norm, region=region
    )
    assert damaged["membrane_f1"] < 0.95 and damaged["seg_vi"] > 1.0


@pytest.mark.realdata
def test_linear_interpolation_of_an_isbi_section_scores_below_the_truth(bench, real_path):
    import tifffile

    from vemrestore.errors import UserInputError
    from vemrestore.metrics._segmenter import load_segmenter

    try:
        seg = load_segmenter()
    except UserInputError as error:
        pytest.skip(f"learned segmenter unavailable: {error}")
    crop = (slice(15, 30), slice(0, 256), slice(0, 256))  # sections unseen in training
    raw = tifffile.imread(real_path("isbi_train"))[crop].astype(np.float32)
    membranes = tifffile.imread(real_path("isbi_membranes"))[crop][5:6]
    norm = PercentileNormalization.from_data(raw)
    truth, others = raw[5:6], raw[8:12]  # section 20; KID's real reference: sections 23-26
    linear = 0.5 * (raw[4:5] + raw[6:7])
    real, _ = bench.structure_scores(seg, truth, others, membranes, normalization=norm)
    interp, _ = bench.structure_scores(seg, linear, others, membranes, normalization=norm)
    assert real["membrane_f1"] > 0.6  # the segmenter finds the membranes of a real section
    assert interp["membrane_f1"] < real["membrane_f1"] - 0.05
    assert interp["seg_vi"] > real["seg_vi"]
    # KID of 16 tiles is too noisy to order the two; the benchmark pools 256 per row.
    assert np.isfinite([real["feature_kid"], interp["feature_kid"]]).all()
