import numpy as np
import pytest

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.methods import (
    BlockRequest,
    MethodConfig,
    available_methods,
    create_method,
    get_method,
    register_method,
)
from vemrestore.methods.interpolate import upsample_axial

KINDS = ["nearest", "linear", "cubic", "lanczos"]


def _whole(method, sections):
    shape = method.output_shape(sections.shape)
    request = BlockRequest((0, 0, 0), tuple(slice(0, n) for n in shape))
    return method.predict_block(sections, request)["restored"]


@pytest.mark.parametrize(("factor", "tolerance"), [(4, 1e-3), (6.25, 0.02)])
@pytest.mark.parametrize("kind", ["linear", "cubic"])
def test_linear_ramp_is_restored_between_centres(kind, factor, tolerance):
    # A box section of a linear ramp equals the ramp at the section centre (up
    # to the partial-slice weighting of non-integer factors, < 0.02 slices), so
    # kernels that reproduce linear functions must return the ramp.
    z = np.arange(100, dtype=np.float32)
    volume = np.broadcast_to(z[:, None, None], (100, 3, 3)).copy()
    sections, info = AxialSectioning(factor).apply(volume)
    restored = _whole(create_method(kind, scale_factor=factor), sections)
    assert restored.shape == (info.num_fine, 3, 3)
    inside = slice(int(np.ceil(info.centres[0])), int(np.floor(info.centres[-1])) + 1)
    np.testing.assert_allclose(restored[inside, 1, 1], z[inside], atol=tolerance)


def test_lanczos_follows_a_ramp_away_from_the_edges():
    # Normalised Lanczos-3 reproduces lines only approximately (< 2% of a section).
    z = np.arange(200, dtype=np.float32)
    sections, info = AxialSectioning(4).apply(np.broadcast_to(z[:, None, None], (200, 2, 2)))
    restored = _whole(create_method("lanczos", scale_factor=4), sections)
    inside = slice(int(info.centres[3]), int(info.centres[-4]))
    np.testing.assert_allclose(restored[inside, 0, 0], z[inside], atol=0.02 * 4)


def test_nearest_copies_each_section_to_its_own_slices():
    sections = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    restored = _whole(create_method("nearest", scale_factor=4), sections)
    np.testing.assert_array_equal(restored[:, 0, 0], np.repeat(np.arange(4), 4))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("factor", [3, 6.25])
def test_blocks_with_halo_equal_whole_volume(kind, factor):
    rng = np.random.default_rng(0)
    sections = rng.random((30, 5, 6)).astype(np.float32)
    method = create_method(kind, scale_factor=factor)
    whole = _whole(method, sections)
    for start, stop in [(0, 17), (17, 60), (60, whole.shape[0])]:
        region = (slice(start, stop), slice(1, 4), slice(2, 6))
        read = method.input_region(region, sections.shape)
        block = sections[read]
        request = BlockRequest((read[0].start, read[1].start, read[2].start), region)
        np.testing.assert_allclose(
            method.predict_block(block, request)["restored"], whole[region], atol=1e-4
        )


def test_output_geometry_and_voxel_size():
    method = create_method("cubic", scale_factor=5)
    assert method.output_shape((10, 20, 30)) == (50, 20, 30)
    assert method.output_voxel_size((50.0, 10.0, 10.0)) == (10.0, 10.0, 10.0)


def test_upsample_axial_along_other_axis_matches_z():
    rng = np.random.default_rng(1)
    sections = rng.random((8, 4, 5)).astype(np.float32)
    along_z = upsample_axial(sections, 4, kind="cubic", axis=0)
    along_x = upsample_axial(np.moveaxis(sections, 0, 2), 4, kind="cubic", axis=2)
    np.testing.assert_allclose(np.moveaxis(along_x, 2, 0), along_z, atol=1e-6)


def test_registry_lists_baselines_and_rejects_unknown_and_duplicates():
    assert set(KINDS) <= set(available_methods())
    with pytest.raises(UserInputError, match=r"unknown method .cubik.*cubic"):
        get_method("cubik")
    with pytest.raises(RuntimeError, match="already registered"):
        register_method("cubic", MethodConfig)(object)


def test_factor_is_validated():
    with pytest.raises(ValueError, match="scale_factor"):
        create_method("cubic", scale_factor=1.0)
