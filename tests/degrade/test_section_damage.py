import numpy as np
import pytest

from vemrestore.degrade import MissingSlices, SliceDamage
from vemrestore.errors import UserInputError

KINDS = ["crack", "fold", "blob", "contrast"]


def _volume(shape=(12, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 200 + 20).astype(np.float32)


def test_explicit_indices_are_blanked_and_reported_sorted():
    volume = _volume()
    damaged, info = MissingSlices(indices=[7, 0, 3]).apply(volume)
    assert info.indices == (0, 3, 7)
    np.testing.assert_array_equal(np.flatnonzero(info.mask), [0, 3, 7])
    assert info.mask.shape == (12,) and info.mask.dtype == bool
    assert (damaged[info.mask] == 0).all()
    np.testing.assert_array_equal(damaged[~info.mask], volume[~info.mask])


@pytest.mark.parametrize(("count", "consecutive"), [(1, 1), (3, 2), (2, 4), (1, 10)])
def test_random_runs_avoid_the_ends_and_have_the_requested_length(count, consecutive):
    volume = _volume()
    for seed in range(20):
        _, info = MissingSlices(count=count, consecutive=consecutive).apply(volume, rng=seed)
        mask = info.mask
        assert mask.sum() == count * consecutive == len(info.indices)
        assert not mask[0] and not mask[-1]
        starts = np.flatnonzero(np.diff(mask.astype(int)) == 1) + 1
        ends = np.flatnonzero(np.diff(mask.astype(int)) == -1) + 1
        assert len(starts) == count  # separate runs
        np.testing.assert_array_equal(ends - starts, consecutive)


def test_random_placement_covers_every_interior_slice():
    seen = np.zeros(12, bool)
    for seed in range(200):
        seen |= MissingSlices(count=2).apply(np.zeros((12, 2, 2)), rng=seed)[1].mask
    np.testing.assert_array_equal(seen, [False] + [True] * 10 + [False])


@pytest.mark.parametrize(("fill", "check"), [("mean", None), ("nan", np.isnan)])
def test_fill_values(fill, check):
    volume = _volume(seed=1)
    damaged, info = MissingSlices(indices=[4], fill=fill).apply(volume)
    if check is None:
        np.testing.assert_allclose(damaged[4], volume.mean(), rtol=1e-6)
    else:
        assert check(damaged[4]).all()
    assert info.fill == fill


def test_missing_slices_same_seed_same_result_and_input_untouched():
    volume = _volume()
    before = volume.copy()
    model = MissingSlices(count=2, consecutive=2)
    first, info_a = model.apply(volume, rng=3)
    second, info_b = model.apply(volume, rng=3)
    np.testing.assert_array_equal(first, second)
    assert info_a.indices == info_b.indices
    np.testing.assert_array_equal(volume, before)


def test_uint8_input_gives_float32_copy():
    volume = (_volume() % 255).astype(np.uint8)
    damaged, _ = MissingSlices(indices=[2]).apply(volume)
    assert damaged.dtype == np.float32
    np.testing.assert_array_equal(damaged[3], volume[3])


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"count": 4, "consecutive": 2}, (12, 4, 4)),  # needs 4 * 2 + 3 > 10 interior slices
        ({"count": 1}, (2, 4, 4)),
        ({"indices": [12]}, (12, 4, 4)),
        ({"indices": [-1]}, (12, 4, 4)),
    ],
)
def test_missing_slices_impossible_requests_are_rejected(options, shape):
    with pytest.raises(UserInputError):
        MissingSlices(**options).apply(np.zeros(shape, np.float32), rng=0)


@pytest.mark.parametrize(
    "options",
    [
        {"indices": [1, 1]},
        {"indices": []},
        {"indices": [2], "count": 2},
        {"count": 0},
        {"consecutive": 0},
        {"fill": "median"},
    ],
)
def test_missing_slices_invalid_options_are_rejected(options):
    with pytest.raises(UserInputError):
        MissingSlices(**options)


def test_missing_slices_need_a_3d_volume():
    with pytest.raises(UserInputError, match="Z, Y, X"):
        MissingSlices(indices=[0]).apply(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_damage_mask_is_exactly_what_changed(kind):
    volume = _volume()
    before = volume.copy()
    for seed in range(5):
        damaged, info = SliceDamage(kinds=(kind,), count=3).apply(volume, rng=seed)
        assert damaged.dtype == np.float32 and info.mask.shape == volume.shape
        # Outside the mask: bit-identical. Inside: almost all voxels changed.
        np.testing.assert_array_equal(damaged[~info.mask], volume[~info.mask])
        assert info.mask.any()
        assert (damaged[info.mask] != volume[info.mask]).mean() > 0.9
        slices = [z for z, _ in info.damaged]
        assert [k for _, k in info.damaged] == [kind] * 3
        assert slices == sorted(set(slices)) and 0 not in slices and 11 not in slices
        np.testing.assert_array_equal(np.flatnonzero(info.mask.any(axis=(1, 2))), slices)
    np.testing.assert_array_equal(volume, before)


def test_damage_kinds_behave_as_described():
    volume = _volume(seed=2)

    def one(kind, seed):
        damaged, info = SliceDamage(kinds=(kind,), count=1).apply(volume, rng=seed)
        z = info.damaged[0][0]
        return damaged[z], volume[z], info.mask[z]

    new, old, region = one("crack", 0)
    assert region.sum() < 0.25 * region.size  # thin
    assert len(np.unique(new[region])) == 1
    new, old, region = one("fold", 0)
    assert new[region].mean() < old[region].mean()  # darkened
    new, old, region = one("blob", 0)
    assert new[region].max() <= np.percentile(old, 1) + 1e-3  # dark dust
    new, old, region = one("contrast", 0)
    assert new[region].std() < 0.65 * old[region].std()
    assert new[region].mean() == pytest.approx(old[region].mean(), rel=1e-4)


def test_damage_same_seed_same_result():
    volume = _volume()
    model = SliceDamage(count=4)
    first, info_a = model.apply(volume, rng=11)
    second, info_b = model.apply(volume, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(info_a.mask, info_b.mask)
    assert info_a.damaged == info_b.damaged
    third, _ = model.apply(volume, rng=12)
    assert not np.array_equal(first, third)


def test_damage_mixes_kinds():
    _, info = SliceDamage(count=10).apply(_volume(), rng=0)
    assert {k for _, k in info.damaged} <= set(KINDS)
    assert len({k for _, k in info.damaged}) >= 2


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"count": 11}, (12, 32, 32)),
        ({"count": 1}, (12, 8, 32)),
    ],
)
def test_damage_impossible_requests_are_rejected(options, shape):
    with pytest.raises(UserInputError):
        SliceDamage(**options).apply(np.zeros(shape, np.float32), rng=0)


@pytest.mark.parametrize("options", [{"kinds": ()}, {"kinds": ("tear",)}, {"count": 0}])
def test_damage_invalid_options_are_rejected(options):
    with pytest.raises(UserInputError):
        SliceDamage(**options)


@pytest.mark.realdata
def test_damage_on_real_crop(medulla_crop):
    damaged, info = SliceDamage(count=8).apply(medulla_crop, rng=0)
    np.testing.assert_array_equal(damaged[~info.mask], medulla_crop[~info.mask])
    assert (damaged[info.mask] != medulla_crop[info.mask]).mean() > 0.9
