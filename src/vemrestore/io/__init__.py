"""Volume I/O: TIFF, HDF5, Zarr/OME-Zarr, MRC."""

from vemrestore.io._volume import Volume

__all__ = ["Volume"]
