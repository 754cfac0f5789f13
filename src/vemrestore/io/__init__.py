"""Volume I/O: TIFF, HDF5, Zarr/OME-Zarr, MRC.

`open_volume` turns any supported file into a ZYX `Volume` with its voxel
size in nm (lazy dask data for HDF5, Zarr and large files); `write_volume`
writes one back, atomically (temporary name, then rename). `atomic_output`
and `write_ngff_metadata` let blockwise writers produce the same outputs.
"""

from vemrestore.io._atomic import atomic_output, partial_path, storage_error
from vemrestore.io._check import (
    axial_ratio,
    check_finite,
    describe_size,
    describe_volume,
    unknown_voxel_axes,
)
from vemrestore.io._open import open_volume
from vemrestore.io._paths import (
    SUPPORTED_FORMATS,
    check_output_path,
    format_of,
    refuse_outputs_over_inputs,
    same_file,
    split_dataset_path,
)
from vemrestore.io._signature import (
    describe_changes,
    file_signature,
    source_signature,
    volume_signature,
)
from vemrestore.io._volume import Volume
from vemrestore.io._write import write_volume
from vemrestore.io._zarr import write_ngff_metadata

__all__ = [
    "SUPPORTED_FORMATS",
    "Volume",
    "atomic_output",
    "axial_ratio",
    "check_finite",
    "check_output_path",
    "describe_changes",
    "describe_size",
    "describe_volume",
    "file_signature",
    "format_of",
    "open_volume",
    "partial_path",
    "refuse_outputs_over_inputs",
    "same_file",
    "source_signature",
    "split_dataset_path",
    "storage_error",
    "unknown_voxel_axes",
    "volume_signature",
    "write_ngff_metadata",
    "write_volume",
]
