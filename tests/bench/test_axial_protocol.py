import numpy as np
import pytest

from vemrestore.bench import benchmark_volume, em_phantom, run_axial_benchmark
from vemrestore.errors import UserInputError


@pytest.mark.realdata
def test_real_medulla_orders_cubic_over_linear_over_nearest(real_path):
    results = run_axial_benchmark(
        [real_path("medulla_sample2")], factors=[4, 8], methods=["nearest", "linear", "cubic"]
    ).results
    psnr = {(r.factor, r.method): r.scores["psnr"] for r in results}
    for k in (4.0, 8.0):
        assert psnr[(k, "cubic")] > psnr[(k, "linear")] > psnr[(k, "nearest")]
    # The reference protocol (box profile, true centres, 2k trim) gives
    # ~26.3 dB for cubic at x8 and ~30.9 dB at x4; far off means misalignment.
    assert psnr[(8.0, "cubic")] == pytest.approx(26.3, abs=0.4)
    assert psnr[(4.0, "cubic")] == pytest.approx(30.9, abs=0.4)
    for r in results:
        assert r.scores["consistency_psnr"] > 30  # interpolators roughly reproduce the sections
    # Axial FRC against the truth resolves about one section thickness; cubic keeps
    # more axial information than nearest.
    frc = {(r.factor, r.method): r.scores["frc_xz_nm"] for r in results}
    for k in (4.0, 8.0):
        assert frc[(k, "cubic")] < frc[(k, "nearest")]
        assert 10 * k < frc[(k, "cubic")] < 20 * k


def test_phantom_keeps_outputs_and_scores_every_method():
    truth = em_phantom((64, 32, 32), num_cells=15, rng=3)
    report = benchmark_volume(
        truth,
        dataset="phantom",
        voxel_size=(10, 10, 10),
        factors=[4],
        methods=["nearest", "cubic"],
        keep_outputs=True,
    )
    rows, outputs = report.results, report.outputs
    assert [r.method for r in rows] == ["nearest", "cubic"]
    assert outputs[(4.0, "input")].shape == (16, 32, 32)
    assert outputs[(4.0, "cubic")].shape == (64, 32, 32)
    for r in rows:
        assert np.isfinite([r.scores["psnr"], r.scores["ssim"], r.scores["frc_xz_nm"]]).all()
    # nearest copies the sections: exactly consistent
    assert rows[0].scores["consistency_psnr"] == np.inf
    assert 30 < rows[1].scores["consistency_psnr"] < np.inf


def test_too_short_volume_is_a_user_error():
    with pytest.raises(UserInputError, match="too few"):
        benchmark_volume(
            em_phantom((24, 16, 16), num_cells=5, rng=0),
            dataset="tiny",
            voxel_size=(1, 1, 1),
            factors=[4],
            methods=["cubic"],
        )


def test_the_benchmark_refuses_a_volume_with_nan(tmp_path):
    import numpy as np

    from vemrestore.bench import run_axial_benchmark
    from vemrestore.errors import UserInputError
    from vemrestore.io import Volume, write_volume

    data = np.ones((32, 8, 8), np.float32)
    data[3, 2, 2] = np.nan
    path = write_volume(Volume(data, voxel_size=(10, 10, 10)), tmp_path / "nan.h5:/v")
    with pytest.raises(UserInputError, match="NaN"):
        run_axial_benchmark([f"{path}:/v"], factors=[2], methods=["linear"])


def test_a_method_with_an_uncertainty_map_is_scored_on_it():
    from vemrestore.bench._scores import AxialScorer
    from vemrestore.degrade import AxialSectioning

    truth = em_phantom((64, 32, 32), num_cells=15, rng=4).astype(np.float32)
    tiny = {"num_steps": 2, "patch_size": 16, "batch_size": 2, "num_threads": 1}
    skelem = {
        "base_channels": 4,
        "depth": 2,
        "pool_size": 8,
        "cycle": {
            "crop_sections": 2,
            "margin": 2,
            "num_crops": 1,
            "train": {**tiny, "batch_size": 1},
        },
        "from_scratch": True,
        "train": tiny,
        "inference": {"num_samples": 2, "halo": 8},
        "skeleton": {"base_channels": 4, "depth": 2, "train": tiny},
    }
    report = benchmark_volume(
        truth,
        dataset="phantom",
        voxel_size=(10, 10, 10),
        factors=[4],
        methods=["cubic", "skelem"],
        method_options={"skelem": skelem},
        metrics=("psnr",),
    )
    scores = {r.method: r.scores for r in report.results}
    assert "std_error_spearman" not in scores["cubic"]
    assert -1 <= scores["skelem"]["std_error_spearman"] <= 1
    # The map is compared with the error voxel by voxel: |error| itself ranks it exactly.
    sectioning = AxialSectioning(4)
    sections = sectioning.apply(truth)[0]
    scorer = AxialScorer(truth, sections, sectioning, voxel_size_nm=10, data_range=255)
    restored = truth + np.random.default_rng(0).normal(size=truth.shape).astype(np.float32)
    error = np.abs(restored - truth)
    spearman = scorer.score(restored, std=error)[0]["std_error_spearman"]
    assert spearman == pytest.approx(1.0)
