"""Spearman correlation of an uncertainty map with the absolute error."""

import numpy as np
import pytest

from vemrestore.errors import UserInputError
from vemrestore.metrics import uncertainty_error_correlation


def _restoration(rng):
    truth = rng.random((6, 20, 20))
    error_scale = rng.random(truth.shape)
    restored = truth + error_scale * rng.choice([-1.0, 1.0], size=truth.shape)
    return truth, restored, error_scale


def test_a_map_that_ranks_the_error_scores_one_and_noise_near_zero():
    rng = np.random.default_rng(0)
    truth, restored, error_scale = _restoration(rng)
    assert uncertainty_error_correlation(error_scale, restored, truth) == pytest.approx(1.0)
    assert uncertainty_error_correlation(error_scale**3, restored, truth) == pytest.approx(1.0)
    assert uncertainty_error_correlation(-error_scale, restored, truth) == pytest.approx(-1.0)
    noise = uncertainty_error_correlation(rng.random(truth.shape), restored, truth)
    assert abs(noise) < 0.1


def test_a_subset_of_voxels_estimates_the_same_correlation():
    rng = np.random.default_rng(1)
    truth, restored, error_scale = _restoration(rng)
    blurred = error_scale + 0.5 * rng.random(truth.shape)
    full = uncertainty_error_correlation(blurred, restored, truth)
    subset = uncertainty_error_correlation(blurred, restored, truth, max_voxels=1000)
    assert 0.5 < full < 0.99 and subset == pytest.approx(full, abs=0.08)


def test_a_constant_map_has_no_correlation_and_bad_input_is_refused():
    truth, restored, _ = _restoration(np.random.default_rng(2))
    assert np.isnan(uncertainty_error_correlation(np.ones_like(truth), restored, truth))
    with pytest.raises(UserInputError, match="shape"):
        uncertainty_error_correlation(np.ones((3, 3)), restored, truth)
    with pytest.raises(UserInputError, match="max_voxels"):
        uncertainty_error_correlation(truth, restored, truth, max_voxels=1)
