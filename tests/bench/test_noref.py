import numpy as np
import pytest

from vemrestore.bench._noref import run_isotropy_benchmark
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, write_volume


@pytest.fixture
def anisotropic(real_path, tmp_path):
    """Real medulla cut into 8-slice sections: 80 nm along z, 10 nm in XY."""
    import tifffile

    from vemrestore.degrade import AxialSectioning

    truth = tifffile.imread(real_path("medulla_sample2"))[:128, :128, :128].astype(np.float32)
    sections, _ = AxialSectioning(8).apply(truth)
    return write_volume(Volume(sections, voxel_size=(80, 10, 10)), tmp_path / "thick.tif")


@pytest.mark.realdata
def test_isotropy_scores_for_each_method(anisotropic, segmenter):
    report = run_isotropy_benchmark(anisotropic, methods=["nearest", "cubic"], segmenter=segmenter)
    rows = {r.method: r for r in report.results}
    assert rows["cubic"].factor == 8.0  # from the voxel size
    keys = ("feature_kid", "spectrum_log_error", "z_hf_ratio", "frc_single_xz_nm")
    for row in rows.values():
        assert all(np.isfinite(row.scores[k]) for k in keys)
    # Smooth across the sections: less z than x high-frequency power.
    assert rows["cubic"].scores["z_hf_ratio"] < 0.8


def test_an_isotropic_volume_is_refused(tmp_path):
    path = write_volume(
        Volume(np.zeros((8, 16, 16), np.float32), voxel_size=(10, 10, 10)), tmp_path / "iso.tif"
    )
    with pytest.raises(UserInputError, match="not > 1"):
        run_isotropy_benchmark(path, methods=["cubic"], segmenter="classical")
