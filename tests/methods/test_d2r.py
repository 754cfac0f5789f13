"""D2R: stage III pairs, the three stages and their resume, blockwise prediction, persistence."""

import shutil

import numpy as np
import pytest
import torch

from vemrestore.engine import predict_array, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import open_volume
from vemrestore.io._volume import Volume
from vemrestore.methods import create_method, load_method
from vemrestore.methods._base import RESTORED, XZ, YZ, BlockRequest
from vemrestore.methods.d2r import D2R, D2RConfig
from vemrestore.methods.d2r.pairs import (
    PackedNet3D,
    PairSource,
    StageThreePairs,
    stage_three_loss,
)
from vemrestore.models.d2r3d import D2RNet3D
from vemrestore.normalize import PercentileNormalization

TINY = {"num_steps": 3, "patch_size": 16, "batch_size": 2, "num_threads": 1}
IDENTITY = PercentileNormalization(low=0.0, high=1.0)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Small networks: one torch thread each (the suite may run beside other jobs)."""


def _volume(shape=(16, 48, 44), seed=0) -> Volume:
    return Volume(np.random.default_rng(seed).random(shape, dtype=np.float32))


def _d2r(teacher="skeleton", **options) -> D2R:
    teacher_options = {"base_channels": 4, "depth": 2, "train": TINY}
    if teacher == "diffusion":
        teacher_options["pool_size"] = 8
    return create_method(
        "d2r",
        scale_factor=4,
        teacher=teacher,
        channels=4,
        num_blocks=1,
        patch_sections=2,
        train=TINY,
        teacher_options=teacher_options,
        **options,
    )


# -- stage III pairs ----------------------------------------------------------


def _pairs(fine: np.ndarray, axis: int, **options) -> StageThreePairs:
    source = PairSource(fine, axis, IDENTITY, (0, fine.shape[axis]))
    return StageThreePairs(
        [source], factor=4, profile="box", num_sections=2, patch_size=8, **options
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_pairs_degrade_only_the_source_axis(axis):
    """A volume that varies along one axis only is degraded exactly when that axis is the
    source's: the input sections then lose the variation, otherwise they keep it exactly."""
    size = 32
    ramp = np.sin(np.arange(size) * 1.3).astype(np.float32)
    for varying in (0, 1, 2):
        shape = [1, 1, 1]
        shape[varying] = size
        fine = np.broadcast_to(ramp.reshape(shape), (size, size, size)).copy()
        inputs, targets = _pairs(fine, axis).draw(np.random.default_rng(1), 4)
        assert inputs.shape == (4, 2, 16, 8, 8) and targets.shape == (4, 3, 16, 8, 8)
        repeated, target = inputs[:, 0], targets[:, 0]
        if varying == axis:
            # The sections are box means of 4 fine slices along the first axis.
            means = target.reshape(4, 4, 4, 8, 8).mean(axis=2)
            np.testing.assert_allclose(repeated[:, ::4], means, atol=1e-6)
            assert np.abs(repeated - target).max() > 0.1
        else:
            np.testing.assert_allclose(repeated, target, atol=1e-6)
        assert np.array_equal(targets[:, 2], repeated)
        assert np.all(targets[:, 1] == 1.0)


def test_observed_pairs_carry_no_target():
    sections = np.random.default_rng(0).random((10, 20, 20), dtype=np.float32)
    source = PairSource(sections, 0, IDENTITY, (0, 10), observed=True)
    sampler = StageThreePairs([source], factor=4, profile="box", num_sections=2, patch_size=8)
    inputs, targets = sampler.draw(np.random.default_rng(0), 3)
    assert np.all(targets[:, 1] == 0.0)
    assert inputs.shape == (3, 2, 16, 8, 8)


def test_pairs_refuse_a_volume_shorter_than_a_window():
    with pytest.raises(UserInputError, match="16 slices along the degraded axis"):
        _pairs(np.zeros((12, 20, 20), np.float32), 0)


def test_packed_network_reads_the_sections_back():
    net = D2RNet3D(4, channels=4, num_blocks=1)
    sampler = _pairs(np.random.default_rng(0).random((32, 32, 32), dtype=np.float32), 1)
    inputs, _ = sampler.draw(np.random.default_rng(0), 2)
    packed = torch.from_numpy(inputs)
    # Untrained: the cubic channel comes back unchanged.
    assert torch.equal(PackedNet3D(net)(packed), packed[:, 1:2])


# -- config -----------------------------------------------------------------------


def test_config_refuses_a_fractional_factor_and_foreign_teacher_options():
    with pytest.raises(ValueError, match="integer scale_factor"):
        D2RConfig(scale_factor=2.5)
    with pytest.raises(ValueError, match="scale_factor or profile"):
        D2RConfig(scale_factor=4, teacher_options={"profile": "gaussian"})
    with pytest.raises(ValueError, match="teacher_options for teacher 'skeleton'"):
        D2RConfig(scale_factor=4, teacher="skeleton", teacher_options={"bogus": 1})


def test_sampling_options_go_to_the_teacher():
    config = D2RConfig(scale_factor=4).with_sampling(num_inference_steps=2, num_samples=3)
    teacher = config.teacher_config()
    assert (teacher.inference.num_inference_steps, teacher.inference.num_samples) == (2, 3)
    with pytest.raises(ValueError, match="teacher 'skeleton'"):
        D2RConfig(scale_factor=4, teacher="skeleton").with_sampling(num_inference_steps=2)


def test_step_budget_splits_between_teacher_and_network():
    config = D2RConfig(scale_factor=4, teacher="skelem").with_step_budget(100)
    teacher = config.teacher_config()
    assert config.train.num_steps == 40
    stages = (
        teacher.skeleton.train.num_steps,
        teacher.train.num_steps,
        teacher.cycle.train.num_steps,
    )
    assert sum(stages) == 60


# -- the three stages -------------------------------------------------------------------


def test_fit_trains_all_stages_and_predicts_the_fine_grid(tmp_path):
    method = _d2r("diffusion").fit(_volume(), checkpoint_dir=tmp_path, progress=False)
    assert set(method.stage_seconds) == {"teacher", "recovered", "network"}
    assert (tmp_path / "teacher" / "model" / "config.json").is_file()
    assert not (tmp_path / "recovered").exists()  # removed once the network is trained
    kept = tmp_path / "kept"
    _d2r("diffusion", recovered_dir=kept).fit(_volume(), progress=False)
    assert {p.name for p in kept.iterdir()} == {"xz.zarr", "yz.zarr", "recovered.json"}
    xz = open_volume(str(kept / "xz.zarr"))
    assert xz.shape == (64, 48, 44)
    out = predict_array(method, _volume().data)
    assert out.shape == (64, 48, 44) and np.isfinite(out).all()


def _kill(monkeypatch, stage: str):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt(stage)

    monkeypatch.setattr(D2R, stage, killed)


@pytest.mark.parametrize(
    ("killed_in", "rerun"),
    [("recover", {"recovered", "network"}), ("fit_network", {"network"})],
)
def test_a_killed_run_resumes_at_its_stage(tmp_path, monkeypatch, killed_in, rerun):
    volume = _volume()
    with monkeypatch.context() as patch:
        _kill(patch, killed_in)
        with pytest.raises(KeyboardInterrupt):
            _d2r().fit(volume, checkpoint_dir=tmp_path, progress=False)
    resumed = _d2r().fit(volume, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert set(resumed.stage_seconds) == rerun
    fresh = _d2r().fit(volume, progress=False)
    np.testing.assert_array_equal(
        predict_array(resumed, volume.data), predict_array(fresh, volume.data)
    )


def test_recovered_dir_of_another_input_is_refused(tmp_path):
    _d2r(recovered_dir=tmp_path / "kept").fit(_volume(seed=0), progress=False)
    assert (tmp_path / "kept" / "xz.zarr").exists()
    with pytest.raises(UserInputError, match="another teacher or input"):
        _d2r(recovered_dir=tmp_path / "kept").fit(_volume(seed=1), progress=False)


def test_recovered_dir_with_foreign_volumes_is_not_overwritten(tmp_path):
    kept = tmp_path / "kept"
    (kept / "xz.zarr").mkdir(parents=True)
    (kept / "xz.zarr" / "mine.txt").write_text("user data")
    with pytest.raises(UserInputError):
        _d2r(recovered_dir=kept).fit(_volume(), progress=False)
    assert (kept / "xz.zarr" / "mine.txt").read_text() == "user data"


def test_same_seed_same_output_and_round_trip(tmp_path):
    volume = _volume()
    first = _d2r().fit(volume, progress=False)
    second = _d2r().fit(volume, progress=False)
    out = predict_array(first, volume.data)
    np.testing.assert_array_equal(out, predict_array(second, volume.data))
    first.save(tmp_path / "model")
    loaded = load_method(tmp_path / "model")
    assert isinstance(loaded, D2R)
    np.testing.assert_array_equal(out, predict_array(loaded, volume.data))


def test_supervised_training_on_an_isotropic_reference():
    reference = _volume((40, 40, 40), seed=3)
    method = _d2r().fit_supervised(reference, _volume(), progress=False)
    assert method.train_result is not None and set(method.stage_seconds) == {"network"}
    assert predict_array(method, _volume().data).shape == (64, 48, 44)


def test_consistency_term_trains():
    method = _d2r(consistency_weight=1.0).fit(_volume(), progress=False)
    assert len(method.train_result.history) == 3
    assert np.isfinite(method.train_result.history).all()


def test_loss_terms():
    """A perfect prediction costs nothing; an observed crop (no target) only pays for
    disagreeing with its sections, and only with the consistency term on."""
    fine = np.random.default_rng(0).random((32, 32, 32), dtype=np.float32)
    _, targets = _pairs(fine, 0).draw(np.random.default_rng(0), 2)
    packed = torch.from_numpy(targets)
    options = {"margin": 1, "factor": 4, "profile": "box", "hf_weight": 1.0}
    plain = stage_three_loss(**options, consistency_weight=0.0)
    consistent = stage_three_loss(**options, consistency_weight=1.0)
    assert float(plain(packed[:, :1], packed)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistent(packed[:, :1], packed)) == pytest.approx(0.0, abs=1e-5)
    wrong = packed[:, :1] + 0.5
    assert float(plain(wrong, packed)) > 0.4
    observed = packed.clone()
    observed[:, 1] = 0.0
    assert float(plain(wrong, observed)) == 0.0
    assert float(consistent(wrong, observed)) == pytest.approx(0.5, abs=1e-4)


# -- blockwise prediction -------------------------------------------------------------------


def _noisy_weights(method: D2R) -> D2R:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in method.networks["net"].parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return method


def test_blocks_equal_the_whole_volume(tmp_path):
    """Blocks that read only part of the volume (z and lateral halo smaller than it)."""
    volume = _volume((48, 64, 56))
    method = _noisy_weights(
        _d2r(halo_sections=8, inference={"halo": 0}).fit(volume, progress=False)
    )
    block = (36, 20, 24)
    first = method.input_region(tuple(slice(0, n) for n in block), volume.shape)
    assert all(s.stop < n for s, n in zip(first, volume.shape, strict=True))  # a real block
    whole = predict_array(method, volume.data)
    path = predict_volume(method, volume, tmp_path / "out.zarr", block_shape=block, progress=False)
    blocks = open_volume(str(path)).to_numpy()
    # The network part is exact; the global cubic spline differs by ~1e-4 with 8 sections.
    np.testing.assert_allclose(blocks, whole, atol=2e-4 * float(np.ptp(whole)))


def test_diffusion_teacher_orientations_are_blockwise_and_seeded():
    volume = _volume((12, 96, 96))
    options = {"scale_factor": 4, "base_channels": 4, "depth": 2, "pool_size": 8, "train": TINY}
    teacher = create_method("diffusion2d", **options).fit(volume, progress=False)
    shape = teacher.output_shape(volume.shape)
    everything = BlockRequest((0, 0, 0), tuple(slice(0, n) for n in shape))
    whole = teacher.predict_orientations(volume.to_numpy(), everything)
    region = (slice(20, 36), slice(40, 56), slice(40, 60))
    read = teacher.input_region(region, volume.shape)
    assert read[1] != slice(0, 96) and read[2] != slice(0, 96)  # a real block
    part = teacher.predict_orientations(
        volume.to_numpy()[read], BlockRequest(tuple(s.start for s in read), region)
    )
    for name in (XZ, YZ):
        np.testing.assert_allclose(part[name], whole[name][region], atol=1e-4)
    restored = teacher.predict_block(volume.to_numpy(), everything)[RESTORED]
    np.testing.assert_allclose(restored, 0.5 * (whole[XZ] + whole[YZ]), atol=1e-6)
    other_seed = teacher.with_inference(seed=1).predict_orientations(volume.to_numpy(), everything)
    assert np.abs(other_seed[XZ] - whole[XZ]).max() > 1e-3


def test_a_volume_too_small_for_stage_three_is_refused_before_training(monkeypatch):
    _kill(monkeypatch, "fit_teacher")  # must not be reached
    with pytest.raises(UserInputError, match="pixels along y and x"):
        _d2r().fit(_volume((16, 12, 44)), progress=False)


def test_resume_refuses_a_teacher_of_another_input(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        _kill(patch, "recover")
        with pytest.raises(KeyboardInterrupt):
            _d2r().fit(_volume(seed=0), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(UserInputError, match="another input"):
        _d2r().fit(_volume(seed=1), checkpoint_dir=tmp_path, resume=True, progress=False)


def test_stage_two_killed_between_its_two_volumes_resumes(tmp_path):
    volume = _volume()
    method = _d2r()
    teacher = method.fit_teacher(volume, progress=False)
    folder = tmp_path / "recovered"
    method.recover(teacher, volume, folder, progress=False)
    expected = open_volume(str(folder / "xz.zarr")).to_numpy()
    shutil.rmtree(folder / "xz.zarr")  # as if killed before its final rename
    again = method.recover(teacher, volume, folder, progress=False)
    np.testing.assert_array_equal(again[XZ].to_numpy(), expected)


def test_a_skelem_teacher_resumes_with_its_matched_strength(tmp_path, monkeypatch):
    skelem = {
        "base_channels": 4,
        "depth": 2,
        "train": TINY,
        "pool_size": 8,
        "cycle": None,
        "inference": {"halo": 8},
        "skeleton": {"base_channels": 4, "depth": 2, "train": TINY},
    }

    def d2r() -> D2R:
        return create_method(
            "d2r",
            scale_factor=4,
            teacher="skelem",
            channels=4,
            num_blocks=1,
            patch_sections=2,
            train=TINY,
            teacher_options=skelem,
        )

    volume = _volume()
    with monkeypatch.context() as patch:
        _kill(patch, "recover")
        with pytest.raises(KeyboardInterrupt):
            d2r().fit(volume, checkpoint_dir=tmp_path, progress=False)
    saved = load_method(tmp_path / "teacher" / "model")
    assert saved.strength_matched and saved.config.inference.strength is not None
    resumed = d2r().fit(volume, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert "teacher" not in resumed.stage_seconds  # the saved teacher was reused
    fresh = d2r().fit(volume, progress=False)
    np.testing.assert_array_equal(
        predict_array(resumed, volume.data), predict_array(fresh, volume.data)
    )
