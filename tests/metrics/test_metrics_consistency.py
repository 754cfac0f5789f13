"""Data consistency through the forward model."""

from __future__ import annotations

import numpy as np
import pytest

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.metrics import data_consistency_psnr, peak_signal_noise_ratio


def _fine(shape=(16, 12, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_consistent_restoration_scores_inf_and_a_corrupted_one_less():
    fine = _fine()
    sectioning = AxialSectioning(4)
    sections, _ = sectioning.apply(fine)
    assert data_consistency_psnr(sections, fine, sectioning, data_range=1.0) == np.inf
    corrupted = fine + 0.1
    score = data_consistency_psnr(sections, corrupted, sectioning, data_range=1.0)
    assert score == pytest.approx(20.0, abs=1e-3)  # every section off by 0.1


def test_plain_callable_forward_model():
    fine = _fine()
    observed = fine[::2]
    score = data_consistency_psnr(observed, fine + 0.01, lambda x: x[::2], data_range=1.0)
    assert score == pytest.approx(40.0, abs=1e-3)


def test_one_section_fewer_compares_the_first_common_sections():
    fine = _fine((16, 12, 12))
    sectioning = AxialSectioning(4)
    sections, _ = sectioning.apply(fine)  # 4 sections
    short = fine[:15]  # gives 3 sections
    damaged = sections.copy()
    damaged[3] += 0.5  # the extra section is not compared
    # Exact up to float32 rounding (which may differ with the stack height); the
    # damaged extra section, if compared, would bring it to about 17 dB.
    assert data_consistency_psnr(damaged, short, sectioning, data_range=1.0) > 120
    expected = peak_signal_noise_ratio(sections[:3], sectioning.apply(short + 0.1)[0], data_range=1)
    got = data_consistency_psnr(sections, short + 0.1, sectioning, data_range=1.0)
    assert got == pytest.approx(expected)


def test_shapes_differing_by_more_than_one_raise():
    fine = _fine((16, 12, 12))
    sections, _ = AxialSectioning(4).apply(fine)
    with pytest.raises(UserInputError, match=r"\(2, 12, 12\).*\(4, 12, 12\)"):
        data_consistency_psnr(sections, fine[:8], AxialSectioning(4), data_range=1.0)


def test_forward_must_be_callable_or_have_apply():
    fine = _fine()
    with pytest.raises(UserInputError, match="forward"):
        data_consistency_psnr(fine, fine, 4, data_range=1.0)


@pytest.mark.realdata
def test_true_volume_is_consistent_with_its_own_sections(medulla_crop):
    sectioning = AxialSectioning(4)
    sections, _ = sectioning.apply(medulla_crop)
    truth_score = data_consistency_psnr(sections, medulla_crop, sectioning, data_range=255.0)
    assert truth_score >= 60.0
    rng = np.random.default_rng(0)
    corrupted = medulla_crop + rng.normal(0, 5, medulla_crop.shape).astype(np.float32)
    corrupted[30:34] = corrupted[29]  # a lost section filled by copying
    score = data_consistency_psnr(sections, corrupted, sectioning, data_range=255.0)
    assert score < 45.0
