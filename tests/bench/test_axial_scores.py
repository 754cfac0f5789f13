import json

import numpy as np
import pytest

from vemrestore.bench import (
    METRIC_GROUPS,
    benchmark_volume,
    em_phantom,
    parse_metrics,
    save_results,
)
from vemrestore.errors import UserInputError


def test_metric_groups_parse_in_order_and_refuse_unknown_names():
    assert parse_metrics(["perceptual", "psnr"]) == ("psnr", "perceptual")
    assert parse_metrics(["all"]) == METRIC_GROUPS
    with pytest.raises(UserInputError, match="unknown group 'beauty'"):
        parse_metrics(["beauty"])


@pytest.fixture(scope="module")
def phantom():
    return em_phantom((64, 48, 48), num_cells=12, rng=1)


def test_segmentation_scores_rank_the_truth_first_and_nearest_last(phantom):
    report = benchmark_volume(
        phantom,
        dataset="phantom",
        voxel_size=(10, 10, 10),
        factors=[8],
        methods=["nearest", "cubic"],
        metrics=("psnr", "seg"),
        segmenter="classical",
    )
    rows = {r.method: r.scores for r in report.results}
    assert list(rows) == ["truth", "nearest", "cubic"]
    # Against the segmentation of the true image, the truth itself agrees exactly.
    assert rows["truth"]["seg_vi"] == pytest.approx(0, abs=1e-9)
    assert rows["truth"]["seg_arand"] == pytest.approx(0, abs=1e-9)
    assert rows["nearest"]["seg_vi"] > rows["truth"]["seg_vi"]
    assert rows["truth"]["psnr"] == np.inf


def test_labels_are_used_when_given(phantom):
    labels = np.zeros(phantom.shape, dtype=np.int32)
    labels[:, :, 24:] = 1  # two half-volume "bodies": far from what any segmenter finds
    report = benchmark_volume(
        phantom,
        dataset="phantom",
        voxel_size=(10, 10, 10),
        factors=[8],
        methods=["cubic"],
        metrics=("seg",),
        segmenter="classical",
        labels=labels,
    )
    assert report.results[0].scores["seg_vi"] > 0  # the truth image vs labels: not 0


@pytest.mark.realdata
def test_all_metrics_on_real_data_with_figures(real_path, segmenter, tmp_path):
    import tifffile

    from vemrestore.report import decode_png

    truth = tifffile.imread(real_path("medulla_sample2"))[:96, 64:192, 64:192]
    report = benchmark_volume(
        truth,
        dataset="medulla",
        voxel_size=(10, 10, 10),
        factors=[8],
        methods=["nearest", "cubic"],
        metrics=METRIC_GROUPS,
        segmenter=segmenter,
        figures=True,
    )
    rows = {r.method: r.scores for r in report.results}
    for key in ("feature_kid", "z_hf_ratio", "spectrum_log_error", "ms_ssim_xz", "seg_vi"):
        assert np.isfinite([rows[m][key] for m in rows]).all(), key
    assert rows["truth"]["z_hf_ratio"] == 1.0
    assert rows["truth"]["spectrum_log_error"] == 0.0
    assert abs(rows["truth"]["feature_kid"]) < rows["cubic"]["feature_kid"]
    # Cubic interpolation across 8-slice sections is too smooth along z.
    assert rows["cubic"]["z_hf_ratio"] < 0.8
    [figure] = report.figures
    assert set(figure["planes"]) == {"truth", "input", "nearest", "cubic"}
    xz = decode_png(figure["planes"]["cubic"]["xz"])
    assert xz.dtype == np.uint8 and xz.shape == decode_png(figure["planes"]["truth"]["xz"]).shape
    assert set(figure["spectra"]) == {"truth", "nearest", "cubic"}
    saved = save_results(report.results, tmp_path / "r.json", {}, figures=report.figures)
    payload = json.loads(saved.read_text())
    assert payload["results"][0]["method"] == "truth" and payload["figures"][0]["frc"]


def test_one_labels_volume_per_data_volume():
    from vemrestore.bench import run_axial_benchmark

    with pytest.raises(UserInputError, match="2 given for 1 --data"):
        run_axial_benchmark(["a.tif"], factors=[4], methods=["cubic"], labels=["x", "y"])


def test_labels_of_another_shape_are_refused(tmp_path):
    from vemrestore.bench import run_axial_benchmark
    from vemrestore.io import Volume, write_volume

    data = write_volume(Volume(np.zeros((40, 8, 8), np.float32)), tmp_path / "v.tif")
    labels = write_volume(Volume(np.zeros((40, 8, 9), np.uint16)), tmp_path / "l.tif")
    with pytest.raises(UserInputError, match=r"--labels .* has shape"):
        run_axial_benchmark([data], factors=[4], methods=["cubic"], labels=[labels])
