"""Tests of the detection of missing and damaged sections."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from vemrestore.api._slices import prepare_slices
from vemrestore.degrade import MissingSlices, SliceDamage
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods.slices import detect_damage


def _smooth_stack(num: int = 24, size: int = 48) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    return (gaussian_filter(rng.random((num, size, size)), (2, 2, 2)) * 1000).astype(np.float32)


def test_detects_blank_nan_and_contrast_sections():
    stack = _smooth_stack()
    clean = detect_damage(stack)
    assert clean.missing == () and clean.partial == {}
    damaged = stack.copy()
    damaged[5] = 0
    damaged[11] = np.nan
    damaged[17] = damaged[17].mean() + 0.2 * (damaged[17] - damaged[17].mean())
    damaged[20, 10:20, 10:20] = np.nan
    found = detect_damage(damaged, local=False)
    assert found.missing == (5, 11, 17)
    assert found.reasons[5].startswith("blank")
    assert "NaN" in found.reasons[11]
    assert "contrast" in found.reasons[17]
    assert found.partial[20].sum() == 100


def test_detection_option_errors():
    with pytest.raises(UserInputError, match="at least 3 sections"):
        detect_damage(np.zeros((2, 8, 8)))
    with pytest.raises(UserInputError, match="outlier_threshold must be a positive number"):
        detect_damage(_smooth_stack(), outlier_threshold=-1)


def test_prepare_slices_merges_detection_with_given_indices():
    stack = _smooth_stack()
    stack[9] = 0
    _, report = prepare_slices(Volume(stack), missing=[3], detect=True, method="linear")
    assert report.restored_sections == [3, 9]
    assert [s["source"] for s in report.sections] == ["given", "detected"]
    assert report.sections[1]["reason"].startswith("blank")


@pytest.mark.realdata
def test_isbi_detection_finds_planted_sections_without_false_alarms(real_path):
    stack = tifffile.imread(real_path("isbi_test"))[:, :256, :256].astype(np.float32)
    intact = detect_damage(stack)
    assert intact.missing == () and intact.partial == {}
    damaged, _ = MissingSlices(indices=[6, 18, 19]).apply(stack)
    damaged[12] = damaged[12].mean() + 0.4 * (damaged[12] - damaged[12].mean())
    found = detect_damage(damaged)
    assert found.missing == (6, 12, 18, 19)
    assert found.partial == {}


@pytest.mark.realdata
def test_fibsem_detection_finds_local_damage_without_false_alarms(real_path):
    stack = tifffile.imread(real_path("medulla_sample2"))[100:140, :128, :128].astype(np.float32)
    intact = detect_damage(stack)
    assert intact.missing == () and intact.partial == {}
    damaged, info = SliceDamage(kinds=("blob",), count=2).apply(stack, rng=0)
    damaged[30] = 0
    found = detect_damage(damaged)
    assert found.missing == (30,)
    assert set(found.partial) == {z for z, _ in info.damaged}
    for z, _ in info.damaged:
        # Pixels the damage changed visibly (a dark blob on dark membrane changes nothing).
        changed = np.abs(damaged[z] - stack[z]) > 40
        assert (found.partial[z] & changed).sum() > 0.5 * changed.sum()
