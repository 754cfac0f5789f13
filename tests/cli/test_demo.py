import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vemrestore.bench import em_phantom
from vemrestore.cli import _demo, app
from vemrestore.io import open_volume


@pytest.mark.slow
def test_demo_runs_offline_and_writes_outputs(tmp_path, monkeypatch):
    # No real data: the demo must fall back to the labelled synthetic phantom.
    monkeypatch.setenv("VEMRESTORE_DATA", str(tmp_path / "no-data-here"))
    out = tmp_path / "demo"
    # A short fine-tune keeps the test quick; the default budget is FINE_TUNE's.
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "20"])
    assert result.exit_code == 0, result.output
    assert (out / "orthoview.png").stat().st_size > 10_000
    # The default shows the skeleton (its shipped prior, fine-tuned) beside the baselines.
    assert open_volume(out / "restored_skeleton.tif").dtype == np.uint8  # as the phantom
    metrics = json.loads((out / "metrics.json").read_text())
    assert "SYNTHETIC" in metrics["data"]
    psnr = {r["method"]: r["psnr"] for r in metrics["results"]}
    assert psnr["cubic"] > psnr["nearest"] and np.isfinite(psnr["skeleton"])


def _small_demo_volume(dtype):
    """A 48 x 32 x 32 phantom of ``dtype`` at 10 nm: a demo that runs in seconds."""

    def volume():
        truth = em_phantom((48, 32, 32), num_cells=10, rng=3).astype(dtype)
        return truth, (10.0, 10.0, 10.0), "SYNTHETIC small phantom"

    return volume


@pytest.mark.parametrize(("dtype", "written"), [(np.uint8, np.uint8), (np.float64, np.float32)])
def test_demo_volumes_keep_the_input_dtype(tmp_path, monkeypatch, dtype, written):
    monkeypatch.setattr(_demo, "_demo_volume", _small_demo_volume(dtype))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--factor", "4", "--method", "cubic"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    degraded, restored = (
        open_volume(out / "degraded_x4.tif"),
        open_volume(out / "restored_cubic.tif"),
    )
    assert degraded.dtype == restored.dtype == written
    assert degraded.shape == (12, 32, 32) and restored.shape == (48, 32, 32)
    assert degraded.voxel_size == pytest.approx((40.0, 10.0, 10.0))
    # The sections are the means of 4 slices, rounded (not truncated) for an integer input.
    truth = _small_demo_volume(dtype)()[0].astype(np.float64)
    means = truth.reshape(12, 4, 32, 32).mean(axis=1)
    expected = np.rint(means) if written == np.uint8 else means
    np.testing.assert_allclose(degraded.to_numpy(), expected, atol=1e-3)


def test_demo_steps_is_the_training_budget_of_a_learned_method(tmp_path, monkeypatch):
    import vemrestore.bench as bench

    seen = []

    def benchmark_volume(truth, **options):
        seen.append(options["method_options"])
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(_demo, "_demo_volume", _small_demo_volume(np.uint8))
    monkeypatch.setattr(bench, "benchmark_volume", benchmark_volume)
    args = ["demo", "--out", str(tmp_path), "-k", "4", "--method", "skelem"]
    CliRunner().invoke(app, args)
    CliRunner().invoke(app, [*args, "--steps", "9"])
    # As iso --steps: configure(steps=9), which SkelEM splits across its stages; without
    # --steps, the demo's short fine-tune budget of its shipped priors.
    assert seen == [{"skelem": {"steps": _demo.DEMO_FINE_TUNE_STEPS}}, {"skelem": {"steps": 9}}]
