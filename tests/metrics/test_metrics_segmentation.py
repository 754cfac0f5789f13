"""Segmentation scores and classical segmenters."""

from __future__ import annotations

import numpy as np
import pytest

from vemrestore.errors import UserInputError
from vemrestore.metrics import (
    adapted_rand_error,
    boundary_f1,
    seeded_watershed,
    threshold_segmentation,
    variation_of_information,
)


def _cells() -> np.ndarray:
    """A (4, 16, 16) volume of four cells (labels 1..4), one per XY quadrant."""
    ref = np.zeros((4, 16, 16), dtype=np.int32)
    ref[:, :8, :8], ref[:, :8, 8:], ref[:, 8:, :8], ref[:, 8:, 8:] = 1, 2, 3, 4
    return ref


def test_identical_and_permuted_segmentations_score_zero():
    ref = _cells()
    permuted = np.array([0, 7, 3, 9, 5])[ref]
    for seg in (ref, permuted):
        vi = variation_of_information(seg, ref)
        assert vi == {"seg_vi_split": 0.0, "seg_vi_merge": 0.0, "seg_vi": 0.0}
        assert adapted_rand_error(seg, ref) == {"seg_arand": 0.0}


def test_planted_merge_grows_merge_term_only():
    ref = _cells()
    merged = ref.copy()
    merged[merged == 2] = 1
    vi = variation_of_information(merged, ref)
    assert vi["seg_vi_merge"] == pytest.approx(0.5)  # half the voxels lose 1 bit
    assert vi["seg_vi_split"] == 0.0
    assert vi["seg_vi"] == pytest.approx(vi["seg_vi_merge"])
    assert adapted_rand_error(merged, ref)["seg_arand"] > 0.1


def test_planted_split_grows_split_term_only():
    ref = _cells()
    split = ref.copy()
    split[:2][split[:2] == 3] = 5  # cut cell 3 in z
    vi = variation_of_information(split, ref)
    assert vi["seg_vi_split"] == pytest.approx(0.25)
    assert vi["seg_vi_merge"] == 0.0
    assert adapted_rand_error(split, ref)["seg_arand"] > 0.05


def test_ignore_labels_drops_reference_background():
    ref = _cells()
    ref[ref == 4] = 0
    seg = ref.copy()
    seg[ref == 0] = np.arange(np.count_nonzero(ref == 0)) + 10  # shattered background
    assert variation_of_information(seg, ref)["seg_vi_split"] > 0
    assert variation_of_information(seg, ref, ignore_labels=(0,))["seg_vi"] == 0.0
    assert adapted_rand_error(seg, ref, ignore_labels=(0,))["seg_arand"] == 0.0


def _membranes(offset: int = 0) -> np.ndarray:
    maps = np.zeros((3, 32, 32), dtype=bool)
    maps[:, :, 10 + offset] = True
    maps[:, 20 + offset, :] = True
    return maps


def test_boundary_f1_identical_within_and_beyond_tolerance():
    ref = _membranes()
    assert boundary_f1(ref, ref) == 1.0
    assert boundary_f1(_membranes(2), ref, tolerance=2) == 1.0
    shifted = boundary_f1(_membranes(4), ref, tolerance=2)
    assert shifted < 0.2
    assert boundary_f1(_membranes(4)[0], ref[0], tolerance=2) == pytest.approx(shifted)


def test_boundary_f1_empty_planes():
    empty = np.zeros((2, 8, 8), dtype=bool)
    assert boundary_f1(empty, empty) == 1.0
    assert boundary_f1(_membranes()[:2], np.zeros((2, 32, 32), dtype=bool)) == 0.0


def _touching_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping spheres with a bright ridge on their dividing plane."""
    zz, yy, xx = np.mgrid[:24, :24, :40].astype(np.float32)
    left = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 < 10**2
    right = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 27) ** 2 < 10**2
    bmap = np.where(left | right, 0.0, 1.0).astype(np.float32)
    bmap[:, :, 19:21] = 1.0  # the ridge between the touching blobs
    truth = np.where(xx < 20, 1, 2) * (left | right)
    return bmap, truth


def test_seeded_watershed_separates_touching_blobs():
    bmap, truth = _touching_blobs()
    labels = seeded_watershed(bmap, threshold=0.5, min_distance=4)
    assert labels.shape == bmap.shape and labels.dtype == np.int32
    inside = truth > 0
    left, right = labels[truth == 1], labels[truth == 2]
    assert np.unique(left).size == 1 and np.unique(right).size == 1
    assert left[0] != right[0]
    assert variation_of_information(labels[inside], truth[inside])["seg_vi"] == 0.0


def test_seeded_watershed_without_interior_is_all_zero():
    assert not seeded_watershed(np.ones((4, 4, 4)), threshold=0.5).any()


def test_threshold_segmentation_labels_components():
    bmap, truth = _touching_blobs()
    labels = threshold_segmentation(bmap, threshold=0.5)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert np.unique(labels[(truth == 1) & (bmap < 0.5)]).size == 1
    inverted = threshold_segmentation(1 - bmap, threshold=0.5, below=False)
    np.testing.assert_array_equal(inverted, labels)


@pytest.mark.parametrize(
    "call",
    [
        lambda: variation_of_information(np.zeros((4, 4), int), np.zeros((4, 5), int)),
        lambda: adapted_rand_error(np.zeros((4, 4), int), np.zeros((3, 4), int)),
        lambda: boundary_f1(np.zeros((4, 4)), np.zeros((4, 5))),
        lambda: variation_of_information(np.zeros((4, 4)), np.zeros((4, 4), int)),
        lambda: boundary_f1(np.zeros((4, 4)), np.zeros((4, 4)), tolerance=-1),
        lambda: seeded_watershed(np.zeros((4, 4)), threshold=0.5, min_distance=0),
        lambda: threshold_segmentation(np.zeros(4), threshold=0.5),
    ],
)
def test_bad_input_raises_one_line_user_input_error(call):
    with pytest.raises(UserInputError) as info:
        call()
    assert "\n" not in str(info.value)
