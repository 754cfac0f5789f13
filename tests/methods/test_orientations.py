"""Tests of ``predict_orientations``: the XZ and YZ restorations of the plane methods, unfused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vemrestore.degrade import AxialSectioning
from vemrestore.engine import predict_array
from vemrestore.io import Volume
from vemrestore.methods import BlockRequest
from vemrestore.methods._base import XZ, YZ
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.skelem import SkelEM, SkelEMConfig
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTOR = 4
TINY_TRAIN = {"num_steps": 4, "patch_size": 16, "batch_size": 4, "device": "cpu", "num_threads": 1}
TINY_SKELETON = {"base_channels": 4, "depth": 2, "halo_sections": 4, "train": TINY_TRAIN}
# Sub-regions of the 64^3 output; the second one's input block is smaller than the volume.
REGION = (slice(16, 48), slice(8, 24), slice(20, 36))
CORNER = (slice(40, 60), slice(4, 20), slice(40, 60))


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    """Synthetic smooth volume (64^3) sectioned by 4 along z: shape (16, 64, 64)."""
    fine = gaussian_filter(np.random.default_rng(0).random((64, 64, 64)), 2) * 100
    return AxialSectioning(FACTOR).apply(fine)[0]


@pytest.fixture(scope="module")
def skeleton(sections) -> Skeleton:
    """A tiny skeleton with large random weights (a residual far from zero).

    ``inference.halo=32`` covers the depth-2 U-Net's receptive field, so a
    block predicts what the whole volume does.
    """
    config = SkeletonConfig(scale_factor=FACTOR, inference={"halo": 32}, **TINY_SKELETON)
    method = Skeleton(config).fit(Volume(sections), progress=False)
    torch.manual_seed(1)
    for p in method.model.parameters():
        torch.nn.init.normal_(p, std=0.15)
    return method


@pytest.fixture(scope="module")
def skelem(sections) -> SkelEM:
    """A tiny SkelEM (no cycle stage) whose refiners have random weights."""
    config = SkelEMConfig(
        scale_factor=FACTOR,
        base_channels=4,
        depth=2,
        halo_sections=4,
        pool_size=16,
        inference={"halo": 16, "batch_size": 64},
        train=TINY_TRAIN,
        skeleton=TINY_SKELETON,
        cycle=None,
    )
    method = SkelEM(config).fit(Volume(sections), progress=False)
    torch.manual_seed(1)
    for net in method.networks.values():
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return method


def _block(method, sections, region, outputs=("restored",)) -> tuple[np.ndarray, BlockRequest]:
    """The input block ``method`` needs for ``region``, and its request."""
    where = method.input_region(region, sections.shape)
    return sections[where], BlockRequest(tuple(s.start for s in where), region, outputs)


def _check_orientations(planes: dict[str, np.ndarray], request: BlockRequest) -> None:
    """Both orientations, float32 of the request's shape, and different from each other."""
    assert set(planes) == {XZ, YZ}
    for array in planes.values():
        assert array.dtype == np.float32 and array.shape == request.output_shape
    assert np.abs(planes[XZ] - planes[YZ]).max() > 0.01


# -- Skeleton ---------------------------------------------------------------


def test_skeleton_mean_fusion_is_the_mean_of_the_orientations(skeleton, sections):
    block, request = _block(skeleton, sections, REGION)
    planes = skeleton.predict_orientations(block, request)
    _check_orientations(planes, request)
    restored = skeleton.predict_block(block, request)["restored"]
    np.testing.assert_allclose(restored, 0.5 * (planes[XZ] + planes[YZ]), rtol=1e-6)
    cubic = upsample_axial(sections, FACTOR)[REGION]
    assert np.abs(restored - cubic).max() > 0.1  # the networks do change the planes


def test_skeleton_geometric_fusion_of_the_orientations(skeleton, sections):
    method = pickle.loads(pickle.dumps(skeleton))
    method.config.fusion = "geometric"
    block, request = _block(method, sections, REGION)
    planes = method.predict_orientations(block, request)
    _check_orientations(planes, request)
    # Fusion does not change the orientations.
    np.testing.assert_array_equal(planes[XZ], skeleton.predict_orientations(block, request)[XZ])
    expected = np.sqrt(np.maximum(planes[XZ], 0) * np.maximum(planes[YZ], 0))
    restored = method.predict_block(block, request)["restored"]
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, expected, rtol=1e-6)


def test_skeleton_orientations_of_a_block_match_the_whole(skeleton, sections):
    region = tuple(slice(0, n) for n in skeleton.output_shape(sections.shape))
    whole = skeleton.predict_orientations(sections, BlockRequest((0, 0, 0), region))
    _check_orientations(whole, BlockRequest((0, 0, 0), region))
    np.testing.assert_allclose(
        predict_array(skeleton, sections), 0.5 * (whole[XZ] + whole[YZ]), rtol=1e-5, atol=1e-4
    )
    block, request = _block(skeleton, sections, CORNER)
    assert block.shape[1:] != sections.shape[1:]  # a genuine sub-block
    part = skeleton.predict_orientations(block, request)
    for name in (XZ, YZ):
        np.testing.assert_allclose(part[name], whole[name][CORNER], atol=1e-4)


def test_skeleton_swapping_y_and_x_swaps_the_orientations(skeleton, sections):
    planes = skeleton.predict_orientations(*_block(skeleton, sections, REGION))
    swapped_sections = np.ascontiguousarray(sections.transpose(0, 2, 1))
    swapped_region = (REGION[0], REGION[2], REGION[1])
    swapped = skeleton.predict_orientations(*_block(skeleton, swapped_sections, swapped_region))
    np.testing.assert_allclose(swapped[XZ], planes[YZ].transpose(0, 2, 1), atol=1e-4)
    np.testing.assert_allclose(swapped[YZ], planes[XZ].transpose(0, 2, 1), atol=1e-4)


# -- SkelEM -----------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 2])
def test_skelem_unprojected_restoration_is_the_mean_of_the_orientations(
    skelem, sections, num_samples
):
    method = skelem.with_inference(num_samples=num_samples, consistency_projection=False)
    block, request = _block(method, sections, REGION)
    planes = method.predict_orientations(block, request)
    _check_orientations(planes, request)
    restored = method.predict_block(block, request)["restored"]
    np.testing.assert_allclose(restored, 0.5 * (planes[XZ] + planes[YZ]), rtol=1e-5, atol=1e-4)


def test_skelem_projection_adds_the_consistency_residual_to_the_fused_orientations(
    skelem, sections
):
    # The projection is affine, so the mean of projected samples is the projected mean.
    method = skelem.with_inference(num_samples=2)
    block, request = _block(method, sections, REGION, ("restored", "consistency"))
    planes = method.predict_orientations(block, request)
    maps = method.predict_block(block, request)
    assert np.abs(maps["consistency"]).max() > 0.1
    fused = 0.5 * (planes[XZ] + planes[YZ])
    np.testing.assert_allclose(maps["restored"], fused + maps["consistency"], atol=1e-3)


def test_skelem_same_seed_gives_the_same_orientations(skelem, sections):
    block, request = _block(skelem, sections, REGION)
    first = skelem.predict_orientations(block, request)
    again = skelem.predict_orientations(block, request)
    other = skelem.with_inference(seed=1).predict_orientations(block, request)
    for name in (XZ, YZ):
        np.testing.assert_array_equal(again[name], first[name])
        assert np.abs(other[name] - first[name]).max() > 1e-3


def test_orientations_are_not_written_outputs(skeleton, skelem):
    for method in (skeleton, skelem, skelem.with_inference(num_samples=2)):
        assert XZ not in method.outputs and YZ not in method.outputs
