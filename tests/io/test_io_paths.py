"""Path syntax: ``file.h5:/dataset``, ``store.zarr/0``, format from suffix."""

from __future__ import annotations

from pathlib import Path

import pytest

from vemrestore.errors import UserInputError
from vemrestore.io import SUPPORTED_FORMATS, split_dataset_path
from vemrestore.io._paths import format_of


@pytest.mark.parametrize(
    ("text", "file", "inner"),
    [
        ("vol.h5:/raw", "vol.h5", "raw"),
        ("run:1/vol.hdf5:/group/raw", "run:1/vol.hdf5", "group/raw"),
        ("vol.h5", "vol.h5", None),
        ("vol.h5:", "vol.h5", None),
        ("store.zarr:/0", "store.zarr", "0"),
        ("store.zarr/0", "store.zarr", "0"),
        ("data/store.zarr/labels/s0", "data/store.zarr", "labels/s0"),
        ("a:b/vol.tif", "a:b/vol.tif", None),
        ("project.zarr/vol.tif", "project.zarr/vol.tif", None),
    ],
)
def test_split_dataset_path(text, file, inner):
    assert split_dataset_path(text) == (Path(file), inner)


def test_split_keeps_an_existing_file_with_a_colon(tmp_path):
    odd = tmp_path / "scan.h5:x.tif"
    odd.write_bytes(b"")
    assert split_dataset_path(odd) == (odd, None)


def test_format_of_suffixes_case_insensitive():
    assert format_of(Path("A.TIF")) == "tiff"
    assert format_of(Path("a.hdf")) == "hdf5"
    assert format_of(Path("a.zarr")) == "zarr"
    assert format_of(Path("a.rec")) == "mrc"


def test_unknown_suffix_lists_supported_formats():
    with pytest.raises(UserInputError, match=r"vol\.png.*supported: TIFF") as info:
        format_of(Path("vol.png"))
    assert SUPPORTED_FORMATS in str(info.value)


def test_an_output_under_a_file_is_refused_with_the_right_advice(tmp_path):
    from vemrestore.io._paths import check_output_path

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="is a file, not a directory"):
        check_output_path(blocker / "out.tif", overwrite=False)
