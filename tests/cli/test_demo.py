import json

import pytest
from typer.testing import CliRunner

from vemrestore.cli import app


@pytest.mark.slow
def test_demo_runs_offline_and_writes_outputs(tmp_path, monkeypatch):
    # No real data: the demo must fall back to the labelled synthetic phantom.
    monkeypatch.setenv("VEMRESTORE_DATA", str(tmp_path / "no-data-here"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "orthoview.png").stat().st_size > 10_000
    assert (out / "restored_cubic.tif").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "SYNTHETIC" in metrics["data"]
    psnr = {r["method"]: r["psnr"] for r in metrics["results"]}
    assert psnr["cubic"] > psnr["nearest"]
