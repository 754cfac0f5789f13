"""Tests of the per-volume percentile normalisation."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from vemrestore.errors import UserInputError
from vemrestore.normalize import PercentileNormalization


def test_percentiles_of_subsample_match_full_volume():
    vol = np.random.default_rng(0).normal(100.0, 20.0, size=(40, 50, 60)).astype(np.float32)
    norm = PercentileNormalization.from_data(vol, max_samples=10_000)
    low, high = np.percentile(vol, [1.0, 99.8])
    assert norm.low == pytest.approx(low, abs=3.0)
    assert norm.high == pytest.approx(high, abs=5.0)
    scaled = norm.apply(vol)
    assert scaled.dtype == np.float32
    assert np.mean(scaled < 0) == pytest.approx(0.01, abs=0.005)


def test_apply_invert_round_trip_and_dict():
    vol = np.random.default_rng(1).integers(0, 256, size=(8, 16, 16)).astype(np.uint8)
    norm = PercentileNormalization.from_data(vol)
    np.testing.assert_allclose(norm.invert(norm.apply(vol)), vol, atol=1e-3)
    again = PercentileNormalization.from_dict(norm.to_dict())
    assert again == norm


def test_dask_input_reads_the_same_subsample():
    vol = np.random.default_rng(2).random((20, 30, 30), dtype=np.float32)
    lazy = da.from_array(vol, chunks=(5, 10, 10))
    assert PercentileNormalization.from_data(lazy) == PercentileNormalization.from_data(vol)


def test_constant_volume_is_refused():
    with pytest.raises(UserInputError, match="constant"):
        PercentileNormalization.from_data(np.ones((4, 4, 4)))


def test_bad_percentiles_and_records_are_refused():
    with pytest.raises(UserInputError, match="p_low"):
        PercentileNormalization.from_data(np.arange(8.0), p_low=50.0, p_high=10.0)
    with pytest.raises(UserInputError, match="keys"):
        PercentileNormalization.from_dict({"low": 0.0, "high": 1.0})
