"""Tests of the slice restoration methods (linear, flow, diffusion) and their entry points."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import gaussian_filter, shift

from vemrestore.api._slices import prepare_slices, restore_slices
from vemrestore.engine import predict_array, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import open_volume
from vemrestore.io._volume import Volume
from vemrestore.methods import load_method
from vemrestore.methods.slices import (
    DiffusionSlices,
    DiffusionSlicesConfig,
    FlowSlices,
    FlowSlicesConfig,
    LinearSlices,
    LinearSlicesConfig,
    SliceDamageMap,
    pairs,
    parse_indices,
)
from vemrestore.methods.slices.interp import (
    FLOW_MARGIN,
    _flow_windows,
    fill_flow,
    fill_linear,
    interpolate_flow,
)
from vemrestore.methods.slices.pairs import WindowSampler
from vemrestore.metrics import peak_signal_noise_ratio

TINY = {
    "base_channels": 4,
    "attention_heads": 2,
    "depth": 1,
    "inference": {"num_inference_steps": 2, "halo": 8},
}
TINY_TRAIN = {"num_steps": 3, "patch_size": 16, "batch_size": 2, "device": "cpu", "num_threads": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """Smooth random structure, 8-bit values as float32: (16, 32, 32)."""
    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.random((16, 32, 32)), (1, 2, 2))
    vol = (vol - vol.min()) / (vol.max() - vol.min()) * 255
    return np.round(vol).astype(np.float32)


@pytest.fixture(scope="module")
def trained(stack) -> DiffusionSlices:
    method = DiffusionSlices(DiffusionSlicesConfig(**TINY, train=TINY_TRAIN))
    method.fit(Volume(stack), progress=False)
    # Random, large weights: the restoration must not depend on the network being good.
    torch.manual_seed(1)
    for p in method.model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return method


def _with_damage(method, damage):
    copy = pickle.loads(pickle.dumps(method))
    copy.set_damage(damage)
    return copy


# -- damage map and parsing ------------------------------------------------


def test_parse_indices():
    assert parse_indices("3,17") == [3, 17]
    assert parse_indices(" 2, 5-7 ,") == [2, 5, 6, 7]
    with pytest.raises(UserInputError, match="cannot read section index 'x'"):
        parse_indices("3,x")
    with pytest.raises(UserInputError, match="invalid section range"):
        parse_indices("7-5")


def test_damage_map_build_and_runs():
    mask = np.zeros((10, 8, 8), bool)
    mask[4, 2:5, 2:5] = True
    mask[7] = True  # a fully masked section counts as missing
    damage = SliceDamageMap.build(mask.shape, missing=[3, 9], mask=mask)
    assert damage.missing == (3, 7, 9)
    assert list(damage.partial) == [4]
    assert damage.runs() == [(3, 5), (7, 8), (9, 10)]
    assert damage.pixel_counts() == {3: 64, 4: 9, 7: 64, 9: 64}
    whole = (slice(0, 10), slice(0, 8), slice(0, 8))
    expected = mask | np.isin(np.arange(10), [3, 9])[:, None, None]
    np.testing.assert_array_equal(damage.region_mask(whole), expected)
    # Runs meeting the requested sections pull in their context, and runs met by
    # that context pull in their bounding sections.
    assert damage.z_extent(4, 5, 1) == (2, 6)
    assert damage.z_extent(4, 5, 2) == (1, 7)
    assert damage.z_extent(7, 8, 2) == (5, 10)
    assert damage.z_extent(0, 1, 1) == (0, 1)


def test_damage_map_errors():
    with pytest.raises(UserInputError, match=r"mask has shape \(10, 8\) but the volume has shape"):
        SliceDamageMap.build((10, 8, 8), mask=np.zeros((10, 8)))
    with pytest.raises(UserInputError, match=r"outside 0\.\.9"):
        SliceDamageMap.build((10, 8, 8), missing=[10])


def test_damage_leaving_nothing_to_restore_from_is_refused():
    shape = (10, 8, 8)
    with pytest.raises(UserInputError, match=r"missing lists every section \(all 10 sections"):
        SliceDamageMap.build(shape, missing=range(10))
    with pytest.raises(UserInputError, match="the mask covers every voxel"):
        SliceDamageMap.build(shape, mask=np.ones(shape, np.uint8))
    half = np.zeros(shape, bool)
    half[5:] = True
    with pytest.raises(UserInputError, match="missing and the mask cover every section"):
        SliceDamageMap.build(shape, missing=range(5), mask=half)


def test_runs_at_the_edges_and_masks_on_every_section_are_restored(stack):
    # A run touching the top has one intact neighbour: it is copied, not refused.
    out, _ = restore_slices(Volume(stack), missing=range(15), method="linear")
    np.testing.assert_array_equal(out[:15], np.broadcast_to(stack[15], (15, 32, 32)))
    # Every section partly damaged: the known pixels anchor the restoration.
    mask = np.zeros(stack.shape, bool)
    for z in range(stack.shape[0]):
        mask[z, :, z : z + 2] = True
    out, report = restore_slices(Volume(stack), mask=mask, method="linear")
    assert len(report.restored_sections) == stack.shape[0] and np.isfinite(out).all()
    np.testing.assert_array_equal(out[~mask], stack[~mask])


def test_detection_finding_every_section_damaged_is_refused(stack):
    blank = np.full(stack.shape, np.nan, np.float32)
    with pytest.raises(UserInputError, match="detection finds every section damaged whole"):
        prepare_slices(Volume(blank), detect=True, method="linear")


def test_cli_refuses_a_stack_with_every_section_missing(stack, tmp_path):
    from typer.testing import CliRunner

    from vemrestore.cli import app
    from vemrestore.io import write_volume

    src = write_volume(stack, tmp_path / "stack.tif", voxel_size=(50, 4, 4))
    out = tmp_path / "out.tif"
    args = ["slices", str(src), str(out), "--missing", "0-15", "--method", "linear"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing lists every section (all 16 sections" in lines[0]
    assert not out.exists()


# -- linear and flow -------------------------------------------------------


def test_linear_restores_missing_sections_and_masks(stack):
    mask = np.zeros(stack.shape, bool)
    mask[9, 4:20, 6:30] = True
    out, report = restore_slices(Volume(stack), missing=[3, 5, 6], mask=mask, method="linear")
    np.testing.assert_allclose(out[3], (stack[2] + stack[4]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[5], (2 * stack[4] + stack[7]) / 3, rtol=1e-5)
    np.testing.assert_allclose(out[9][mask[9]], ((stack[8] + stack[10]) / 2)[mask[9]], rtol=1e-6)
    untouched = ~(mask | np.isin(np.arange(16), [3, 5, 6])[:, None, None])
    assert np.array_equal(out[untouched], stack[untouched])
    assert report.restored_sections == [3, 5, 6, 9]
    assert [s["kind"] for s in report.sections] == ["whole", "whole", "whole", "partial"]
    assert report.sections[3]["pixels"] == int(mask.sum())
    assert json.loads(report.to_json())["method"] == "slices-linear"
    assert "section     9: partial" in report.format()


def test_flow_beats_linear_on_moving_structure():
    rng = np.random.default_rng(1)
    base = gaussian_filter(rng.random((48, 48)), 2.5)
    base = (base - base.min()) / (base.max() - base.min())
    stack = np.stack([shift(base, (0, 2.0 * z), mode="wrap") for z in range(5)]).astype(np.float32)
    out, _ = restore_slices(Volume(stack), missing=[2], method="flow")
    lin, _ = restore_slices(Volume(stack), missing=[2], method="linear")
    inner = (slice(8, -8), slice(8, -8))
    flow_psnr = peak_signal_noise_ratio(stack[2][inner], out[2][inner], data_range=1.0)
    lin_psnr = peak_signal_noise_ratio(stack[2][inner], lin[2][inner], data_range=1.0)
    assert flow_psnr > lin_psnr + 5


@pytest.mark.parametrize("margin", [None, FLOW_MARGIN])  # a section too small to split
def test_flow_fills_each_damaged_region_from_the_sections_known_at_its_pixels(margin):
    # Regions damaged in consecutive sections: a region known above and below
    # is interpolated between its direct neighbours, not across the whole run.
    rng = np.random.default_rng(2)
    stack = gaussian_filter(rng.random((6, 40, 40)), (0, 2, 2)).astype(np.float32)
    mask = np.zeros(stack.shape, bool)
    mask[2, 4:14, 4:30] = True  # alone in its columns: between sections 1 and 3
    mask[3, 24:36, 6:34] = True  # alone in its columns: between sections 2 and 4
    mask[2:4, 16:22, 10:20] = True  # damaged in both: between 1 and 4, at 1/3 and 2/3
    out = fill_flow(stack, mask, slice(0, 6), margin=margin)
    filled = fill_linear(stack, mask)
    first = mask[2] & ~mask[3]
    second = mask[3] & ~mask[2]
    both = mask[2] & mask[3]
    np.testing.assert_array_equal(
        out[2][first], interpolate_flow(filled[1], filled[3], np.array([0.5]))[0][first]
    )
    np.testing.assert_array_equal(
        out[3][second], interpolate_flow(filled[2], filled[4], np.array([0.5]))[0][second]
    )
    across = interpolate_flow(filled[1], filled[4], np.array([1 / 3, 2 / 3]))
    np.testing.assert_array_equal(out[2][both], across[0][both])
    np.testing.assert_array_equal(out[3][both], across[1][both])
    assert np.array_equal(out[~mask], stack[~mask])


def test_flow_windows_grow_each_damaged_region_by_the_margin_and_to_the_least_size():
    footprint = np.zeros((100, 120), bool)
    footprint[20:30, 40:50] = True
    footprint[90:95, 100:118] = True  # far from the first: a window of its own
    footprint[33:35, 40:42] = True  # 3 px below the first: shares its window
    windows = _flow_windows(footprint, 8, min_size=1)
    assert [w for w, _ in windows] == [
        (slice(12, 43), slice(32, 58)),
        (slice(82, 100), slice(92, 120)),  # clipped at the section's edges
    ]
    first, second = (part for _, part in windows)
    assert first.sum() == 100 + 4 and second.sum() == 90
    # Widened about their centres to the least size, kept inside the section.
    assert [w for w, _ in _flow_windows(footprint, 8, min_size=40)] == [
        (slice(7, 47), slice(25, 65)),
        (slice(60, 100), slice(80, 120)),
    ]
    assert [w for w, _ in _flow_windows(footprint, 8, min_size=500)] == [
        (slice(0, 100), slice(0, 120))
    ] * 2
    assert _flow_windows(footprint, None, 40) == [((slice(None), slice(None)), footprint)]
    with pytest.raises(ValueError, match="non-negative"):
        _flow_windows(footprint, -1, 40)


def test_flow_in_windows_matches_flow_on_whole_sections():
    # Moving structure (3 px per section, 9 px across a two-section gap) on
    # sections larger than a window (256 px: the least that follows 9 px);
    # several pairs in one run, an L-shaped region, a region damaged in two
    # sections on the border, one far away.
    rng = np.random.default_rng(4)
    base = gaussian_filter(rng.random((384, 384)), 2.5)
    base = (base - base.min()) / (base.max() - base.min())
    stack = np.stack([shift(base, (0, 3.0 * z), mode="wrap") for z in range(6)]).astype(np.float32)
    mask = np.zeros(stack.shape, bool)
    mask[2, 10:20, 10:60] = True  # between sections 1 and 3
    mask[2, 20:50, 10:20] = True  # the L's other arm
    mask[3, 40:60, 40:60] = True  # between 2 and 4
    mask[2:4, 352:384, 0:20] = True  # in both, on the border: between 1 and 4
    mask[2, 250:280, 250:280] = True
    assert len(_flow_windows(mask[2], FLOW_MARGIN, 256)) == 3
    windowed = fill_flow(stack, mask, slice(0, 6), min_window=256)
    whole = fill_flow(stack, mask, slice(0, 6), margin=None)
    linear = fill_linear(stack, mask)
    assert np.array_equal(windowed[~mask], stack[~mask])
    for z in (2, 3):
        error = np.abs(windowed[z] - stack[z])[mask[z]].mean()
        assert error < 0.25 * np.abs(linear[z] - stack[z])[mask[z]].mean()
        assert np.abs(windowed[z] - whole[z])[mask[z]].mean() < 0.1 * error + 1e-4


def test_wrong_mask_shape_is_a_clear_error(stack):
    with pytest.raises(UserInputError, match=r"mask has shape \(16, 32, 31\) but the volume"):
        restore_slices(Volume(stack), mask=np.zeros((16, 32, 31), bool), method="linear")


def test_unknown_method_and_missing_damage_map(stack):
    with pytest.raises(UserInputError, match="choose one of: linear, flow, diffusion"):
        prepare_slices(Volume(stack), missing=[2], method="cubic")
    with pytest.raises(UserInputError, match="no damage map"):
        predict_array(LinearSlices(LinearSlicesConfig()), stack)


@pytest.fixture(scope="module")
def trained_on_linear(stack) -> DiffusionSlices:
    method = DiffusionSlices(DiffusionSlicesConfig(**TINY, train=TINY_TRAIN, estimate="linear"))
    return method.fit(Volume(stack), progress=False)


@pytest.mark.parametrize("kind", ["linear", "flow", "diffusion", "diffusion-linear"])
def test_blockwise_equals_in_memory(stack, trained, trained_on_linear, tmp_path, kind):
    mask = np.zeros(stack.shape, bool)
    mask[7, 3:12, 10:28] = True
    damage = SliceDamageMap.build(stack.shape, missing=[0, 3, 4, 8, 12, 15], mask=mask)
    if kind == "linear":
        method, block = LinearSlices(LinearSlicesConfig()), (4, 16, 16)
    elif kind == "flow":
        method, block = FlowSlices(FlowSlicesConfig(halo=32)), (4, 32, 32)
    elif kind == "diffusion":
        method, block = trained, (4, 32, 32)
    else:
        method, block = trained_on_linear, (4, 32, 32)
    method = _with_damage(method, damage)
    whole = predict_array(method, stack)
    path = predict_volume(
        method,
        Volume(stack),
        tmp_path / "out.zarr",
        block_shape=block,
        progress=False,
        num_workers=1,
    )
    assert np.array_equal(open_volume(path).to_numpy(), whole)


def test_linear_blockwise_in_xy_equals_in_memory(stack, tmp_path):
    method = LinearSlices(LinearSlicesConfig())
    method.set_damage(SliceDamageMap.build(stack.shape, missing=[5, 6]))
    path = predict_volume(
        method,
        Volume(stack),
        tmp_path / "out.zarr",
        block_shape=(3, 8, 16),
        progress=False,
        num_workers=1,
    )
    assert np.array_equal(open_volume(path).to_numpy(), predict_array(method, stack))


# -- diffusion -------------------------------------------------------------


def test_diffusion_masked_restoration_keeps_unmasked_pixels(stack, trained):
    mask = np.zeros(stack.shape, bool)
    mask[6, 5:20, 2:30] = True
    mask[10, 20:30, 0:8] = True
    method = _with_damage(trained, SliceDamageMap.build(stack.shape, missing=[3], mask=mask))
    out = predict_array(method, stack)
    keep = ~mask
    keep[3] = False
    assert np.array_equal(out[keep], stack[keep])
    assert not np.allclose(out[mask], stack[mask])
    assert np.isfinite(out).all()


def test_diffusion_same_seed_same_output_and_seed_matters(stack, trained):
    damage = SliceDamageMap.build(stack.shape, missing=[5])
    a = predict_array(_with_damage(trained, damage), stack)
    b = predict_array(_with_damage(trained, damage), stack)
    assert np.array_equal(a, b)
    other = _with_damage(trained, damage).with_inference(seed=1)
    assert not np.array_equal(a[5], predict_array(other, stack)[5])


def test_diffusion_save_load_round_trip(stack, trained, tmp_path):
    trained.save(tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "weights.pt", "normalization.json", "scheduler_config.json"} <= names
    loaded = load_method(tmp_path / "model")
    assert isinstance(loaded, DiffusionSlices)
    assert loaded.config == trained.config
    damage = SliceDamageMap.build(stack.shape, missing=[2, 9])
    expected = predict_array(_with_damage(trained, damage), stack)
    assert np.array_equal(predict_array(_with_damage(loaded, damage), stack), expected)


def test_a_model_saved_before_the_flow_estimate_loads_as_linear(trained_on_linear, tmp_path):
    trained_on_linear.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    saved = yaml.safe_load(path.read_text())
    assert saved.pop("estimate") == "linear"
    path.write_text(yaml.safe_dump(saved))  # as written before `estimate` existed
    assert DiffusionSlicesConfig.model_validate(saved).estimate == "flow"  # today's default
    assert load_method(tmp_path / "model").config.estimate == "linear"


def test_diffusion_training_never_uses_damaged_sections(stack):
    config = DiffusionSlicesConfig(**TINY, train=TINY_TRAIN, max_gap=2)
    damage = SliceDamageMap.build(stack.shape, missing=[4, 9])
    method = DiffusionSlices(config)
    sampler = WindowSampler(
        stack,
        usable=~np.isin(np.arange(16), damage.damaged),
        targets=np.ones(16, bool),
        num_context=1,
        max_gap=2,
        patch_size=16,
        region_probability=0.5,
        scheduler=method.scheduler,
    )
    for gap, starts in sampler.windows.items():
        for z in starts:
            assert not set(range(z - 1, z + gap + 1)) & {4, 9}
    inputs, targets = sampler.draw(np.random.default_rng(0), 3)
    depth = inputs.shape[2]
    assert inputs.shape == (3, 5, depth, 16, 16) and targets.shape == (3, 2, depth, 16, 16)
    # Only gap sections are unknown; the estimate equals the truth elsewhere.
    assert not targets[:, 1, [0, -1]].any()


def _moving_stack(num: int = 7, size: int = 48) -> np.ndarray:
    """Smooth texture shifted 3 px in x per section: flow interpolates it, linear blurs it."""
    base = gaussian_filter(np.random.default_rng(1).random((size, size)), 2.5)
    base = (base - base.min()) / (base.max() - base.min())
    return np.stack([shift(base, (0, 3.0 * z), mode="wrap") for z in range(num)]).astype(np.float32)


@pytest.mark.parametrize("region", [512, 40])
def test_flow_estimates_follow_the_training_crops_through_every_flip(monkeypatch, region):
    monkeypatch.setattr(pairs, "_FLOW_REGION", region)  # 40: regions smaller than the sections
    options = {
        "usable": np.ones(7, bool),
        "targets": np.ones(7, bool),
        "num_context": 1,
        "max_gap": 2,
        "patch_size": 16,
        "region_probability": 0.5,
        "scheduler": DiffusionSlices(DiffusionSlicesConfig(**TINY)).scheduler,
    }
    errors, masks = {}, {}
    for estimate in ("linear", "flow"):
        sampler = WindowSampler(_moving_stack(), estimate=estimate, **options)
        inputs, targets = sampler.draw(np.random.default_rng(3), 16)
        # prediction_type "sample": the target channel is the clean window.
        guess, truth, unknown = inputs[:, 1], targets[:, 0], targets[:, 1] > 0
        np.testing.assert_array_equal(guess[~unknown], truth[~unknown])
        errors[estimate] = float(np.sqrt(np.mean((guess - truth)[unknown] ** 2)))
        masks[estimate] = unknown
    np.testing.assert_array_equal(masks["flow"], masks["linear"])
    # A flow window flipped, rotated or placed unlike its truth would do worse than linear.
    assert errors["flow"] < 0.5 * errors["linear"]


def test_flow_estimates_are_computed_for_a_bounded_number_of_windows(monkeypatch):
    monkeypatch.setattr(pairs, "_MAX_FLOW_WINDOWS", 3)
    sampler = WindowSampler(
        _moving_stack(num=12),
        usable=np.ones(12, bool),
        targets=np.ones(12, bool),
        num_context=1,
        max_gap=2,
        patch_size=16,
        region_probability=0.0,
        scheduler=DiffusionSlices(DiffusionSlicesConfig(**TINY)).scheduler,
        estimate="flow",
    )
    assert len(sampler.flow) == 3
    assert sum(len(starts) for starts in sampler.windows.values()) == 3
    for _ in range(4):  # every draw comes from a window with an estimate
        sampler.draw(np.random.default_rng(_), 2)


def test_prepare_slices_trains_loads_and_reports(stack, tmp_path):
    options = {**TINY, "train": TINY_TRAIN}
    method, report = prepare_slices(
        Volume(stack),
        missing=[7],
        method="diffusion",
        model_dir=tmp_path / "m",
        train_steps=2,
        options=options,
        progress=False,
        from_scratch=True,
    )
    assert report.training["steps"] == 2
    assert (tmp_path / "m" / "weights.pt").is_file()
    again, report2 = prepare_slices(
        Volume(stack), missing=[7], method="diffusion", model_dir=tmp_path / "m", progress=False
    )
    assert report2.training is None
    assert again.config == method.config


def test_diffusion_config_validation():
    with pytest.raises(ValueError, match="multiple of stem_patch"):
        DiffusionSlicesConfig(train={"patch_size": 20})
    with pytest.raises(ValueError, match="extra"):
        DiffusionSlicesConfig(num_step=3)
    config = DiffusionSlicesConfig(inference={"num_inference_steps": 6})
    assert DiffusionSlicesConfig.model_validate_json(config.model_dump_json()) == config


def test_old_style_configs_load_into_the_new_fields():
    old = {
        "method": "slices-diffusion",
        "scale_factor": 1.0,
        "halo_yx": 40,
        "num_steps": 3,
        "strength": 0.5,
        "num_samples": 2,
        "seed": 7,
        "train": {"num_steps": 5, "device": "cpu"},
    }
    config = DiffusionSlicesConfig.model_validate(old)
    inference = config.inference
    assert (inference.halo, inference.num_inference_steps, inference.seed) == (40, 3, 7)
    assert (inference.strength, inference.num_samples, inference.device) == (0.5, 2, "cpu")
    assert config.train.num_steps == 5 and "scale_factor" not in config.model_dump()
    assert FlowSlicesConfig(halo_yx=8, scale_factor=1).halo == 8
    with pytest.raises(ValueError, match="take no scale_factor"):
        LinearSlicesConfig(scale_factor=2.0)
    with pytest.raises(ValueError, match="contradicts"):
        DiffusionSlicesConfig(num_steps=2, inference={"num_inference_steps": 3})


def test_an_old_saved_model_loads_and_pickling_keeps_the_damage(stack, trained, tmp_path):
    trained.save(tmp_path / "model")
    weights = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    assert set(weights) == set(trained.model.net.state_dict())  # the bare network's state
    new = json.loads((tmp_path / "model" / "config.json").read_text())
    inference = new.pop("inference")
    old = {**new, "scale_factor": 1.0, "halo_yx": inference["halo"], "seed": inference["seed"]}
    old["num_steps"] = inference["num_inference_steps"]
    (tmp_path / "model" / "config.json").write_text(json.dumps(old))
    loaded = load_method(tmp_path / "model")
    assert loaded.config == trained.config
    damage = SliceDamageMap.build(stack.shape, missing=[2, 9])
    copy = _with_damage(loaded, damage)
    assert pickle.loads(pickle.dumps(copy)).damage.digest() == damage.digest()
    expected = predict_array(_with_damage(trained, damage), stack)
    assert np.array_equal(predict_array(copy, stack), expected)


def test_non_finite_known_voxels_are_refused(stack):
    bad = stack.copy()
    bad[4, 3, 3] = np.nan
    with pytest.raises(UserInputError, match="section 4 has 1 NaN/inf voxels"):
        prepare_slices(Volume(bad), missing=[2], method="linear")
    bad[4] = np.nan
    out, _ = restore_slices(Volume(bad), missing=[4], method="linear")
    assert np.isfinite(out).all()


def test_nothing_to_restore_warns_and_copies(stack):
    with pytest.warns(UserWarning, match="nothing to restore"):
        out, report = restore_slices(Volume(stack), method="diffusion")
    assert report.sections == [] and np.array_equal(out, stack)


def test_diffusion_xy_blocks_match_whole_sections_when_the_halo_covers_the_network(
    trained, tmp_path
):
    rng = np.random.default_rng(3)
    stack = (gaussian_filter(rng.random((6, 80, 80)), 2) * 255).astype(np.float32)
    damage = SliceDamageMap.build(stack.shape, missing=[2])

    def blockwise(halo: int) -> tuple[np.ndarray, np.ndarray]:
        method = _with_damage(trained, damage).with_inference(halo=halo)
        path = predict_volume(
            method,
            Volume(stack),
            tmp_path / f"h{halo}.zarr",
            block_shape=(6, 40, 40),
            progress=False,
            num_workers=1,
        )
        return open_volume(path).to_numpy(), predict_array(method, stack)

    blocks, whole = blockwise(40)  # the tiny network sees 36 px each side
    np.testing.assert_allclose(blocks, whole, atol=1e-3)
    blocks, whole = blockwise(0)
    assert not np.allclose(blocks, whole, atol=1e-3)


def test_prepare_slices_resumes_training_from_its_checkpoints(stack, tmp_path, caplog):
    options = {**TINY, "train": {**TINY_TRAIN, "checkpoint_every": 2}}
    common = {
        "missing": [7],
        "method": "diffusion",
        "options": options,
        "progress": False,
        "from_scratch": True,
    }
    first, _ = prepare_slices(Volume(stack), checkpoint_dir=tmp_path / "ckpt", **common)
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()
    with caplog.at_level("INFO", logger="vemrestore.train"):
        again, report = prepare_slices(Volume(stack), checkpoint_dir=tmp_path / "ckpt", **common)
    assert "resumed from" in caplog.text and report.training["steps"] == 3
    pairs = zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a, b)


def _write_prior(path, method: DiffusionSlices, estimate: str):
    """``method``'s network written as a prior (weights and record) at ``path``."""
    from vemrestore._shipped import write_shipped

    net = method.require_trained()["net"]
    record = {"method": "slices-diffusion", "config": {"estimate": estimate}, "network": net.config}
    return write_shipped(path, net.state_dict(), record)


def test_a_prior_given_by_path_starts_the_training_and_is_recorded(
    stack, trained, tmp_path, monkeypatch
):
    record = _write_prior(tmp_path / "prior.pt", trained, "flow")
    config = DiffusionSlicesConfig(**TINY, prior=str(tmp_path / "prior.pt"), train=TINY_TRAIN)
    start = {}
    train_network = DiffusionSlices.train_network

    def capture_start(self, model, *args, **kwargs):
        start.update({k: v.clone() for k, v in model.net.state_dict().items()})
        return train_network(self, model, *args, **kwargs)

    monkeypatch.setattr(DiffusionSlices, "train_network", capture_start)
    method = DiffusionSlices(config).fit(Volume(stack), progress=False)
    prior = trained.require_trained()["net"].state_dict()
    assert start.keys() == prior.keys()
    assert all(torch.equal(start[k], prior[k]) for k in prior)
    assert method.training_record()["prior"]["sha256"] == record["sha256"]


def test_a_prior_for_another_estimate_is_one_clear_error(stack, trained, tmp_path):
    _write_prior(tmp_path / "prior.pt", trained, "linear")
    config = DiffusionSlicesConfig(**TINY, prior=str(tmp_path / "prior.pt"), train=TINY_TRAIN)
    with pytest.raises(UserInputError, match=r"estimate='linear', not 'flow'.*from scratch"):
        DiffusionSlices(config).fit(Volume(stack), progress=False)
