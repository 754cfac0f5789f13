"""Config files validated once with their overrides; damaged config and model files: one line."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from vemrestore import api
from vemrestore.cli import app
from vemrestore.errors import UserInputError
from vemrestore.io import write_volume
from vemrestore.methods._persist import load_weights
from vemrestore.methods.skeleton import SkeletonConfig

runner = CliRunner()


def _config(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- config files ------------------------------------------------------------------


def test_a_file_without_scale_factor_takes_the_factor_option(tmp_path):
    path = _config(tmp_path, "method: skeleton\nbase_channels: 4\n")
    config = api.configure("skeleton", factor=4, config=path, from_scratch=True).config
    assert config.scale_factor == 4 and config.base_channels == 4


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("method: skeleton\nbase_channelz: 4\n", ["base_channelz: unknown option"]),
        ("method: skeleton\ntrain:\n  lr: 0.1\n", ["train.lr: unknown option"]),
        ("method: skeleton\nbase_channels: -1\n", ["base_channels:", "greater than"]),
        ("method: skeleton\n  base: [\n", ["is not valid YAML", "line 2"]),
        ("- 1\n- 2\n", ["must hold a mapping with a 'method' key"]),
        ("method: skelly\n", ["unknown method 'skelly'"]),
        ("method: cubic\nscale_factor: 4\n", ["is for method 'cubic', not 'skeleton'"]),
    ],
)
def test_file_errors_are_one_line_naming_the_file(tmp_path, text, fragments):
    path = _config(tmp_path, text)
    with pytest.raises(UserInputError) as info:
        api.configure("skeleton", factor=4, config=path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_scale_factor_names_the_file_and_the_option(tmp_path):
    path = _config(tmp_path, "method: skeleton\n")
    with pytest.raises(UserInputError, match=r"c\.yaml: scale_factor: missing .*--factor"):
        api.configure("skeleton", config=path)


def test_an_invalid_override_is_not_blamed_on_the_file(tmp_path):
    path = _config(tmp_path, "method: skeleton\nbase_channels: 4\n")
    with pytest.raises(ValidationError, match="scale_factor"):
        api.configure("skeleton", factor=0.5, config=path)


def test_a_binary_or_directory_config_is_one_line(tmp_path):
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserInputError, match=r"c\.yaml cannot be read as YAML"):
        api.configure("skeleton", factor=4, config=binary)
    with pytest.raises(UserInputError, match="is not a file"):
        api.configure("skeleton", factor=4, config=tmp_path)


def test_cli_config_error_is_one_line(tmp_path):
    path = _config(tmp_path, "method: skeleton\nbase_channelz: 4\n")
    src = write_volume(np.zeros((4, 8, 8), np.uint8), tmp_path / "v.tif", voxel_size=(8, 2, 2))
    out = tmp_path / "o.tif"
    args = ["iso", str(src), str(out), "-k", "4", "--method", "skeleton", "--config", str(path)]
    line = _one_error_line(runner.invoke(app, args))
    assert f"config file {path}: base_channelz: unknown option" in line
    assert not out.exists()


# -- model files -------------------------------------------------------------------


class _NotAWeight:
    pass


def _damaged_weights(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    folder.mkdir()
    file = folder / "weights.pt"
    torch.save({"net": {"w": torch.zeros(4)}}, file)
    if kind == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    elif kind == "garbage":
        file.write_bytes(b"not a torch file" * 8)
    elif kind == "empty":
        file.write_bytes(b"")
    elif kind == "pickle":
        file.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "object":
        torch.save({"net": _NotAWeight()}, file)
    return folder


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "pickle", "object"])
def test_a_damaged_weights_file_never_advises_unsafe_loading(tmp_path, kind):
    folder = _damaged_weights(tmp_path, kind)
    with pytest.raises(UserInputError) as info:
        load_weights(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'weights.pt'} is corrupt, truncated or not a vemrestore")
    assert message.endswith("save or train the model again")
    assert "weights_only" not in message and "safe_globals" not in message
    assert "\n" not in message and "\x1b" not in message


def test_cli_predict_with_a_damaged_model_is_one_line(tmp_path):
    folder = _damaged_weights(tmp_path, "object")
    config = SkeletonConfig(scale_factor=4, base_channels=4)
    (folder / "config.json").write_text(config.model_dump_json())
    (folder / "normalization.json").write_text("{}")
    src = write_volume(np.zeros((4, 8, 8), np.uint8), tmp_path / "v.tif", voxel_size=(8, 2, 2))
    out = tmp_path / "o.tif"
    line = _one_error_line(runner.invoke(app, ["predict", str(folder), str(src), str(out)]))
    assert "weights.pt is corrupt, truncated or not a vemrestore model" in line
    assert "weights_only" not in line
    assert not out.exists()
