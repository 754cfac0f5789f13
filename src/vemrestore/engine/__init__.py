"""Blockwise execution of restoration methods on volumes larger than memory.

``predict_volume`` cuts the output into chunk-aligned blocks, reads each
block's input region (with the halo the method declares) lazily, predicts and
writes it (the restoration and, through ``extra_outputs``, the method's other
outputs, all from one call per block); runs are resumable and run on local
threads or a dask cluster. ``predict_array`` is the whole-array reference.
"""

from vemrestore.engine._grid import Block, block_grid
from vemrestore.engine._predict import (
    DEFAULT_BLOCK_SHAPE,
    MAX_IN_MEMORY_BYTES,
    predict_array,
    predict_volume,
)

__all__ = [
    "DEFAULT_BLOCK_SHAPE",
    "MAX_IN_MEMORY_BYTES",
    "Block",
    "block_grid",
    "predict_array",
    "predict_volume",
]
