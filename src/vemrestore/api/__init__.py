"""The facade above the engine: open -> method -> engine -> write, with a run record.

Each command-line command is the function of the same name here (``iso``,
``train``, ``predict``, ``slices``); the CLI, the demo and the benchmarks call
them. In-memory helpers (``restore_slices``, ``prepare_slices``,
``train_lateral``) serve scripts and notebooks.
"""

from vemrestore.api._commands import iso, predict, slices, train
from vemrestore.api._configure import axial_factor, axial_methods, configure, factor_mismatch
from vemrestore.api._lateral import train_lateral
from vemrestore.api._run import output_paths, sibling_path
from vemrestore.api._slices import prepare_slices, restore_slices

__all__ = [
    "axial_factor",
    "axial_methods",
    "configure",
    "factor_mismatch",
    "iso",
    "output_paths",
    "predict",
    "prepare_slices",
    "restore_slices",
    "sibling_path",
    "slices",
    "train",
    "train_lateral",
]
