"""No command writes over an input, a model or a file it did not create without --overwrite.

Training is replaced by fakes that write what ``fit``/``save`` would (a
checkpoint, a weights file), so these tests check the folder handling in
seconds; the real training is covered by test_cli_commands.
"""

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.cli import app

runner = CliRunner()


def _vol(path: Path, shape=(16, 24, 24)) -> Path:
    data = (np.random.default_rng(0).random(shape) * 200).astype(np.uint8)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(0.1, 0.1),
        metadata={"spacing": 40, "unit": "nm", "axes": "ZYX"},
    )
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- bench --json


@pytest.fixture
def fake_bench(monkeypatch):
    """``run_axial_benchmark`` returning one row at once; ``calls`` counts the runs."""
    import vemrestore.bench as bench

    calls = []

    def run(data, **kwargs):
        calls.append(data)
        row = bench.AxialResult("d/v", "cubic", 4.0, 0.1, 0.0, 9.0, {"psnr": 30.0, "ssim": 0.9})
        return bench.AxialReport(results=[row])

    monkeypatch.setattr(bench, "run_axial_benchmark", run)
    return calls


def test_bench_json_is_never_written_over_a_data_volume(assert_refused, tmp_path, fake_bench):
    first, second = _vol(tmp_path / "a.tif"), _vol(tmp_path / "b.tif")
    before = second.read_bytes()
    args = ["bench", "--data", str(first), str(second), "--json", str(second), "--overwrite"]
    assert_refused(runner.invoke(app, args), "--json", "b.tif")
    assert second.read_bytes() == before
    assert not fake_bench  # refused before the (long) benchmark


def test_bench_keeps_an_existing_json_without_overwrite(assert_refused, tmp_path, fake_bench):
    data, out = _vol(tmp_path / "a.tif"), tmp_path / "bench.json"
    out.write_text("keep me")
    result = runner.invoke(app, ["bench", "--data", str(data), "--json", str(out)])
    assert_refused(result, "bench.json", "--overwrite")
    assert out.read_text() == "keep me" and not fake_bench

    result = runner.invoke(app, ["bench", "--data", str(data), "--json", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"][0]["method"] == "cubic"


def test_bench_json_write_is_atomic(assert_refused, tmp_path, fake_bench, monkeypatch):
    data, out = _vol(tmp_path / "a.tif"), tmp_path / "bench.json"
    out.write_text("old results")
    write_text = Path.write_text

    def half_then_disk_full(self, text, *args, **kwargs):
        write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    result = runner.invoke(app, ["bench", "--data", str(data), "--json", str(out), "--overwrite"])
    assert_refused(result, "bench.json", "space")
    assert out.read_text() == "old results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "bench.json"]


# ------------------------------------------------- outputs over inputs, --overwrite or not


def test_slices_report_never_replaces_the_input(assert_refused, tmp_path):
    src = _vol(tmp_path / "in.tif")
    before = src.read_bytes()
    out = tmp_path / "out.tif"
    args = ["slices", str(src), str(out), "--missing", "3", "--method", "linear", "--overwrite"]
    assert_refused(runner.invoke(app, [*args, "--report", str(src)]), "--report", "in.tif")
    assert src.read_bytes() == before and not out.exists()


@pytest.mark.parametrize("where", ["dst", "mask", "model-dir"])
def test_slices_outputs_clash_with_nothing(assert_refused, tmp_path, where):
    src = _vol(tmp_path / "in.tif")
    mask = _vol(tmp_path / "mask.tif")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.pt").write_bytes(b"weights")
    out = tmp_path / "out.tif"
    report = {"dst": out, "mask": mask, "model-dir": model / "weights.pt"}[where]
    before = _snapshot(tmp_path)
    args = ["slices", str(src), str(out), "--missing", "3", "--method", "linear", "--overwrite"]
    args += ["--mask", str(mask), "--model-dir", str(model), "--report", str(report)]
    assert_refused(runner.invoke(app, args), "--report")
    assert _snapshot(tmp_path) == before


def test_iso_output_is_never_its_config_or_inside_its_skeleton(assert_refused, tmp_path):
    src = _vol(tmp_path / "in.tif")
    config = tmp_path / "cubic.h5"  # a config named like a volume
    config.write_text("method: cubic\n")
    args = ["iso", str(src), str(config), "--factor", "4", "--config", str(config), "--overwrite"]
    assert_refused(runner.invoke(app, args), "--config")
    assert config.read_text() == "method: cubic\n"

    skeleton = tmp_path / "skeleton"
    skeleton.mkdir()
    (skeleton / "weights.pt").write_bytes(b"weights")
    out = skeleton / "iso.tif"
    args = ["iso", str(src), str(out), "--factor", "4", "--method", "skelem"]
    assert_refused(runner.invoke(app, [*args, "--skeleton", str(skeleton)]), "--skeleton")
    assert not out.exists()


def test_predict_output_is_never_inside_the_model_folder(assert_refused, tmp_path):
    src = _vol(tmp_path / "in.tif")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"method": "cubic", "scale_factor": 4}))
    out = model / "restored.tif"
    assert_refused(runner.invoke(app, ["predict", str(model), str(src), str(out)]), "model")
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]


# ------------------------------------------------------------------ train --out


@pytest.fixture
def fake_training(monkeypatch):
    """Skeleton and lateral ``fit``/``save`` that write a checkpoint and a model at once.

    ``calls`` records (checkpoint_dir, resume) of each fit; set ``fail`` to
    make the next fit raise after its checkpoint.
    """
    from vemrestore.methods import get_method
    from vemrestore.methods.lateral import LateralMethod

    state = {"calls": [], "fail": False}

    def fit(self, volume, *, checkpoint_dir, resume=False, **kwargs):
        state["calls"].append((Path(checkpoint_dir), resume))
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / "checkpoint.pt").write_bytes(b"step")
        if state["fail"]:
            raise RuntimeError("training died")

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "weights.pt").write_bytes(b"new model")

    for cls in (get_method("skeleton"), LateralMethod):
        monkeypatch.setattr(cls, "fit", fit)
        monkeypatch.setattr(cls, "save", save)
    return state


def _old_model(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"old model")
    return _snapshot(folder)


def _train(src: Path, out: Path, *flags: str):
    return runner.invoke(app, ["train", "skeleton", str(src), "-k", "4", "--out", str(out), *flags])


def test_train_refuses_an_existing_model_or_file_without_overwrite(
    assert_refused, tmp_path, fake_training
):
    src = _vol(tmp_path / "in.tif")
    model = tmp_path / "model"
    old = _old_model(model)
    assert_refused(_train(src, model), "model", "--overwrite")
    assert _snapshot(model) == old
    assert_refused(_train(src, model, "--resume"), "no checkpoints", "--overwrite")
    assert _snapshot(model) == old and not fake_training["calls"]

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert_refused(_train(src, a_file), "is a file", "--overwrite")
    assert a_file.read_text() == "mine"


def test_train_into_a_new_or_empty_folder(tmp_path, fake_training):
    src = _vol(tmp_path / "in.tif")
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        result = _train(src, out)
        assert result.exit_code == 0, result.output
        assert (out / "weights.pt").read_bytes() == b"new model"
        assert fake_training["calls"][-1] == (out / "checkpoints", False)


def test_train_overwrite_replaces_the_model_only_once_complete(tmp_path, fake_training):
    src = _vol(tmp_path / "in.tif")
    model = tmp_path / "model"
    old = _old_model(model)
    fake_training["fail"] = True
    failed = _train(src, model, "--overwrite")
    assert "training died" in str(failed.exception)
    assert _snapshot(model) == old  # the old model survives a failed training
    partial, _ = fake_training["calls"][-1]
    assert partial.parent.name == ".model.partial" and partial.exists()  # kept for --resume

    fake_training["fail"] = False
    result = _train(src, model, "--overwrite", "--resume")
    assert result.exit_code == 0, result.output
    assert fake_training["calls"][-1] == (partial, True)  # continued the replacement
    assert (model / "weights.pt").read_bytes() == b"new model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "model"]


def test_train_overwrite_alone_starts_afresh(tmp_path, fake_training):
    src = _vol(tmp_path / "in.tif")
    model = tmp_path / "model"
    _old_model(model)
    stale = tmp_path / ".model.partial" / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "old.pt").write_bytes(b"from another run")
    result = _train(src, model, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (model / "checkpoints").iterdir()) == ["checkpoint.pt"]
    assert not (tmp_path / ".model.partial").exists()


def test_train_resume_continues_in_its_own_folder(assert_refused, tmp_path, fake_training):
    src = _vol(tmp_path / "in.tif")
    model = tmp_path / "model"
    fake_training["fail"] = True
    assert "training died" in str(_train(src, model).exception)
    assert_refused(_train(src, model), "--resume", "--overwrite")  # advice names both

    fake_training["fail"] = False
    result = _train(src, model, "--resume")
    assert result.exit_code == 0, result.output
    assert fake_training["calls"][-1] == (model / "checkpoints", True)
    assert (model / "weights.pt").read_bytes() == b"new model"


def test_train_never_overwrites_its_input(assert_refused, tmp_path, fake_training):
    model = tmp_path / "model"
    model.mkdir()
    src = _vol(model / "in.tif")
    before = src.read_bytes()
    assert_refused(_train(src, model, "--overwrite"), "--out", "in.tif")
    assert src.read_bytes() == before and not fake_training["calls"]


def test_train_lateral_refuses_an_existing_model_and_replaces_it_atomically(
    assert_refused, tmp_path, fake_training
):
    hr = _vol(tmp_path / "hr.tif", shape=(2, 32, 32))
    model = tmp_path / "lateral"
    old = _old_model(model)
    args = ["train", "lateral", "--hr", str(hr), "--factor", "2", "--out", str(model)]
    assert_refused(runner.invoke(app, args), "lateral", "--overwrite")
    fake_training["fail"] = True
    assert "training died" in str(runner.invoke(app, [*args, "--overwrite"]).exception)
    assert _snapshot(model) == old

    fake_training["fail"] = False
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (model / "weights.pt").read_bytes() == b"new model"
    assert_refused(runner.invoke(app, [*args[:-2], "--out", str(hr), "--overwrite"]), "--hr")
