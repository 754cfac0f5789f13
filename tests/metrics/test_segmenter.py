import hashlib
import json
import shutil

import numpy as np
import pytest

from vemrestore.errors import UserInputError
from vemrestore.metrics import (
    boundary_f1,
    load_segmenter,
    plane_tiles,
    variation_of_information,
)
from vemrestore.metrics._segmenter import default_weights_path


def test_shipped_weights_match_their_record_and_retrain_command():
    weights = default_weights_path()
    record = json.loads(weights.with_suffix(".json").read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]
    assert weights.stat().st_size < 5e6
    assert record["retrain"].startswith("python benchmarks/train_segmenter.py")
    for key in ("data", "steps", "wall_seconds", "machine", "commit", "watershed"):
        assert key in record
    assert "sample2" not in json.dumps(record["data"])  # never the scored cube


def _copy_weights(tmp_path):
    weights = default_weights_path()
    copy = tmp_path / "segmenter.pt"
    shutil.copy(weights, copy)
    shutil.copy(weights.with_suffix(".json"), copy.with_suffix(".json"))
    return copy


def test_missing_weights_are_a_clear_error_not_a_fallback(tmp_path):
    with pytest.raises(UserInputError, match=r"not found.*train_segmenter"):
        load_segmenter(weights=tmp_path / "segmenter.pt")


def test_damaged_weights_fail_their_digest(tmp_path):
    copy = _copy_weights(tmp_path)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="do not match the digest"):
        load_segmenter(weights=copy)


def test_a_missing_record_is_a_clear_error(tmp_path):
    copy = _copy_weights(tmp_path)
    copy.with_suffix(".json").unlink()
    with pytest.raises(UserInputError, match=r"record .* missing or unreadable"):
        load_segmenter(weights=copy)


def test_unknown_kind_is_refused():
    with pytest.raises(UserInputError, match="unknown segmenter"):
        load_segmenter("magic")


def test_classical_segmenter_labels_bright_cells_and_has_no_features():
    vol = np.full((2, 32, 32), 200.0, dtype=np.float32)
    vol[:, :, 14:17] = 10.0  # a dark membrane splits two cells
    seg = load_segmenter("classical")
    labels = seg.segment(vol)
    assert len(np.unique(labels[labels > 0])) == 2
    with pytest.raises(UserInputError, match="learned segmenter"):
        seg.features(np.zeros((1, 16, 16)), normalization=None)


def test_plane_tiles_cut_each_orientation():
    vol = np.arange(40 * 64 * 128, dtype=np.float32).reshape(40, 64, 128)
    assert plane_tiles(vol, orientation="xy", tile=32).shape[1:] == (32, 32)
    xz = plane_tiles(vol, orientation="xz", tile=32, max_tiles=8)
    assert len(xz) == 8 and np.array_equal(xz[0], vol[:32, 0, :32])
    with pytest.raises(UserInputError, match="smaller than one"):
        plane_tiles(vol, orientation="yz", tile=64)


@pytest.mark.realdata
def test_learned_membranes_on_unseen_isbi_sections(real_path, segmenter):
    import tifffile

    raw = tifffile.imread(real_path("isbi_train"))[20:24]  # not in its training sections
    membranes = tifffile.imread(real_path("isbi_membranes"))[20:24] == 0
    bmap = segmenter.boundary_map(raw)
    assert bmap.shape == raw.shape and 0 <= bmap.min() and bmap.max() <= 1
    f1 = boundary_f1(bmap > 0.5, membranes)
    classical = boundary_f1(load_segmenter("classical").boundary_map(raw) > 0.5, membranes)
    assert f1 > 0.7 and f1 > classical


@pytest.mark.realdata
def test_learned_segmentation_of_medulla_beats_chance(real_path, segmenter):
    import tifffile

    raw = tifffile.imread(real_path("medulla_sample2"))[100:164, 64:192, 64:192]
    bodies = tifffile.imread(real_path("medulla_sample2_bodies"))[100:164, 64:192, 64:192]
    labels = segmenter.segment(raw)
    vi = variation_of_information(labels, bodies, ignore_labels=(0,))["seg_vi"]
    one_segment = variation_of_information(np.ones_like(labels), bodies)["seg_vi"]
    assert vi < 0.8 * one_segment  # about 1.95 vs 2.64 bits: useful, far from perfect
    noisy = raw + np.random.default_rng(0).normal(0, 40, raw.shape)
    noisy_vi = variation_of_information(segmenter.segment(noisy), bodies, ignore_labels=(0,))
    assert noisy_vi["seg_vi"] > vi


@pytest.mark.realdata
def test_features_tell_real_planes_from_noise(real_path, segmenter):
    import tifffile

    from vemrestore.normalize import PercentileNormalization

    raw = tifffile.imread(real_path("medulla_sample2"))[:128, :128, :128].astype(np.float32)
    norm = PercentileNormalization.from_data(raw)
    tiles = plane_tiles(raw, orientation="xy", max_tiles=16)
    features = segmenter.features(tiles, normalization=norm)
    noise = np.random.default_rng(0).normal(raw.mean(), raw.std(), tiles.shape)
    noise_features = segmenter.features(noise, normalization=norm)
    assert features.shape == (16, noise_features.shape[1])
    assert np.linalg.norm(features.mean(0) - noise_features.mean(0)) > 0.1 * np.linalg.norm(
        features.mean(0)
    )


def test_plane_tiles_spread_over_planes_larger_than_the_budget():
    vol = np.arange(4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64)
    tiles = plane_tiles(vol, orientation="xy", tile=8, max_tiles=16)  # 64 tiles per plane
    assert len(tiles) == 16
    planes = {int(t[0, 0]) // (64 * 64) for t in tiles}
    assert planes == {0, 1, 2, 3}  # not all from the first plane's top rows
    with pytest.raises(UserInputError, match="positive integer"):
        plane_tiles(vol, orientation="xy", tile=0)


def test_classical_2d_mode_labels_each_plane_apart():
    vol = np.full((2, 32, 32), 200.0, dtype=np.float32)
    vol[:, :, 14:17] = 10.0
    labels = load_segmenter("classical").segment(vol, mode="2d")
    assert not set(np.unique(labels[0])) - {0} & set(np.unique(labels[1])) - {0}
    with pytest.raises(UserInputError, match="mode must be"):
        load_segmenter("classical").segment(vol, mode="2D")
