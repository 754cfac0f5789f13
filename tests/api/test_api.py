"""The facade: configuration with typed overrides, one function per command."""

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from vemrestore import api
from vemrestore.bench import em_phantom
from vemrestore.errors import UserInputError
from vemrestore.io import open_volume
from vemrestore.methods import load_config
from vemrestore.methods.skeleton import SkeletonConfig

TINY_TRAIN = {"num_steps": 2, "batch_size": 2, "patch_size": 16}


@pytest.fixture
def thick_tif(tmp_path):
    path = tmp_path / "thick.tif"
    sections = em_phantom((12, 32, 32), num_cells=8, rng=2)
    tifffile.imwrite(path, sections, imagej=True, metadata={"spacing": 32, "axes": "ZYX"})
    return path


def test_configure_applies_typed_overrides_on_top_of_the_file(tmp_path):
    path = tmp_path / "skeleton.yaml"
    path.write_text(
        "method: skeleton\nscale_factor: 2\nbase_channels: 4\ntrain:\n  batch_size: 3\n"
    )
    method = api.configure(
        "skeleton",
        factor=8,
        config=path,
        steps=5,
        inference={"halo": 12, "batch_size": None},
        from_scratch=True,
    )
    cfg = method.config
    assert cfg.scale_factor == 8 and cfg.base_channels == 4
    assert cfg.train.num_steps == 5 and cfg.train.batch_size == 3
    assert cfg.inference.halo == 12 and cfg.inference.batch_size == 8  # None: not given


def test_configure_validates_overrides():
    with pytest.raises(ValidationError):
        api.configure("skeleton", factor=4, steps=0)
    with pytest.raises(ValidationError):
        api.configure("skeleton", factor=4, inference={"halo": -1})


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"steps": 3}, "--steps"),
        ({"inference": {"num_samples": 2}}, "--samples"),
        ({"inference": {"num_inference_steps": 2}}, "--sampling-steps"),
        ({"skeleton_path": "model"}, "--skeleton"),
    ],
)
def test_options_a_method_lacks_are_refused_by_their_cli_name(kwargs, option):
    with pytest.raises(UserInputError, match=f"{option} does not apply to method 'cubic'"):
        api.configure("cubic", factor=4, **kwargs)


def test_a_lateral_method_is_not_an_axial_method():
    with pytest.raises(UserInputError, match="'lateral' is not an axial method"):
        api.configure("lateral", factor=4)
    assert "lateral" not in api.axial_methods() and "skeleton" in api.axial_methods()


def test_old_option_names_still_load(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "method: skeleton\nscale_factor: 4\nhalo_yx: 16\nplanes_per_batch: 2\n"
        "train:\n  device: cpu\n  amp: false\n"
    )
    cfg = load_config(path)
    assert isinstance(cfg, SkeletonConfig)
    assert cfg.inference.halo == 16 and cfg.inference.batch_size == 2
    assert cfg.inference.device == "cpu" and cfg.inference.amp is False  # follow train's
    with pytest.raises(ValidationError, match="contradicts"):
        SkeletonConfig(scale_factor=4, halo_yx=16, inference={"halo": 8})


def test_iso_writes_and_resumes_nothing_twice(thick_tif, tmp_path):
    out = tmp_path / "iso.zarr"
    written = api.iso(str(thick_tif), str(out), factor=4, method="linear", block_shape=(16, 16, 16))
    assert written == {"restored": out}
    result = open_volume(out)
    assert result.shape == (48, 32, 32) and result.dtype == np.uint8
    assert not (tmp_path / ".iso.zarr.run").exists()
    with pytest.raises(UserInputError, match="exists"):
        api.iso(str(thick_tif), str(out), factor=4, method="linear")


def test_train_then_predict_through_the_facade(thick_tif, tmp_path):
    model = api.train(
        "skeleton",
        str(thick_tif),
        tmp_path / "model",
        factor=4,
        base_channels=4,
        depth=2,
        train=TINY_TRAIN,
        from_scratch=True,
    )
    assert (model / "weights.pt").exists()
    out = tmp_path / "restored.tif"
    written = api.predict(model, str(thick_tif), str(out))
    assert written == {"restored": out} and open_volume(out).shape == (48, 32, 32)
