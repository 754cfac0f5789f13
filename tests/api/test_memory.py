"""In-memory restoration (``api._memory``): results that overlay their input, stage by stage."""

import numpy as np
import pytest

from vemrestore.api import _memory, axial_factor
from vemrestore.api._memory import (
    REPAIR_STAGES,
    RESTORE_STAGES,
    repair_sections,
    repair_sections_stages,
    restore_volume,
    restore_volume_stages,
)
from vemrestore.errors import UserInputError
from vemrestore.io import Volume


@pytest.fixture
def sections():
    """Six thick sections (40 nm) of 10 nm pixels, placed away from the origin."""
    data = np.random.default_rng(0).random((6, 12, 10)).astype(np.float32)
    return Volume(data, voxel_size=(40.0, 10.0, 10.0), translation=(100.0, -5.0, 7.0))


def test_restore_volume_overlays_its_input_in_world_space(sections):
    fine = restore_volume(sections, method="linear", factor=4)
    assert fine.shape == (24, 12, 10)
    assert fine.voxel_size == (10.0, 10.0, 10.0)
    # Section j covers fine slices 4j..4j+3: their mean centre is section j's centre.
    z_fine = fine.translation[0] + fine.voxel_size[0] * (4 * np.arange(6) + 1.5)
    z_sections = sections.translation[0] + sections.voxel_size[0] * np.arange(6)
    np.testing.assert_allclose(z_fine, z_sections)
    assert fine.translation == (85.0, -5.0, 7.0)
    assert fine.data.dtype == np.float32
    assert fine.metadata["method"] == "linear" and fine.metadata["factor"] == 4.0


def test_restore_volume_with_odd_factor_keeps_the_sections_at_their_centres(sections):
    thick = Volume(sections.data, voxel_size=(30.0, 10.0, 10.0), translation=(100.0, 0.0, 0.0))
    fine = restore_volume(thick, method="linear", factor=3)
    # Odd factor: fine slice 3j + 1 is section j's centre, where linear interpolation is exact.
    np.testing.assert_allclose(fine.data[1::3], thick.data, atol=1e-5)
    assert fine.translation[0] == pytest.approx(100.0 - 30.0 / 3)


def test_factor_defaults_to_the_voxel_size_ratio(sections):
    assert axial_factor(Volume(sections.data, voxel_size=(50.0, 4.0, 4.0))) == 12.5
    assert restore_volume(sections, method="nearest").shape == (24, 12, 10)


def test_isotropic_voxel_size_without_factor_is_refused():
    volume = Volume(np.zeros((4, 8, 8), np.float32), voxel_size=(10, 10, 10))
    with pytest.raises(UserInputError, match="pass --factor"):
        restore_volume(volume, method="cubic")


def test_restore_volume_refuses_nan_and_non_axial_methods(sections):
    with pytest.raises(UserInputError, match="not an axial method"):
        restore_volume(sections, method="slices-linear", factor=4)
    data = sections.data.copy()
    data[2, 3, 3] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        restore_volume(Volume(data, voxel_size=sections.voxel_size), method="cubic")


def test_restore_stages_are_reported_and_closing_stops_before_predicting(sections, monkeypatch):
    predicted = []
    monkeypatch.setattr(_memory, "predict_array", lambda *a, **k: predicted.append(1))
    stages = restore_volume_stages(sections, method="cubic", factor=4)
    seen = [next(stages), next(stages), next(stages)]  # the worker yields before each stage
    assert [s.index for s in seen] == [0, 1, 2]
    assert {s.total for s in seen} == {RESTORE_STAGES}
    assert "restoring x4 with cubic" in seen[2].description
    stages.close()  # a cancelled worker: the prediction never runs
    assert predicted == []


def test_restore_volume_trains_a_learned_method():
    data = np.random.default_rng(1).random((6, 16, 16)).astype(np.float32)
    sections = Volume(data, voxel_size=(20.0, 10.0, 10.0), translation=(100.0, 0.0, 0.0))
    fine = restore_volume(
        sections,
        method="skeleton",
        steps=2,
        base_channels=4,
        train={"batch_size": 2, "patch_size": 8},
        from_scratch=True,
    )
    assert fine.shape == (12, 16, 16) and np.isfinite(fine.data).all()
    assert fine.voxel_size == (10.0, 10.0, 10.0) and fine.translation == (95.0, 0.0, 0.0)


def test_steps_are_refused_for_interpolation(sections):
    with pytest.raises(UserInputError, match="--steps does not apply"):
        restore_volume(sections, method="cubic", factor=4, steps=3)


def test_repair_sections_from_text_keeps_geometry_and_other_sections(sections):
    repaired = repair_sections(sections, missing="1,3")
    np.testing.assert_allclose(repaired.data[1], (sections.data[0] + sections.data[2]) / 2)
    np.testing.assert_allclose(repaired.data[3], (sections.data[2] + sections.data[4]) / 2)
    np.testing.assert_array_equal(repaired.data[[0, 2, 4, 5]], sections.data[[0, 2, 4, 5]])
    assert repaired.voxel_size == sections.voxel_size
    assert repaired.translation == sections.translation
    assert repaired.metadata["report"].restored_sections == [1, 3]


def test_repair_sections_with_a_labels_mask_changes_only_masked_voxels(sections):
    mask = np.zeros(sections.shape, np.int32)  # a napari labels layer: label ids
    mask[2, 4:8, 3:6] = 7
    repaired = repair_sections(sections, mask=mask, method="linear")
    changed = ~np.isclose(repaired.data, sections.data)
    assert changed.any() and not changed[mask == 0].any()


def test_repair_stages_and_bad_indices(sections):
    stages = list(repair_sections_stages(sections, missing=[2]))
    assert [s.index for s in stages] == [0, 1] and stages[0].total == REPAIR_STAGES
    with pytest.raises(UserInputError, match="cannot read section index"):
        repair_sections(sections, missing="2,x")
    with pytest.raises(UserInputError):
        repair_sections(sections, missing=[9])
