"""Share trained models: bioimage.io model packages.

``export_bioimageio`` writes a skeleton or lateral model as a bioimage.io
model package; ``SkeletonTile`` and ``LateralTile`` are the torch modules
inside it (the architecture its PyTorch state dict needs). bioimageio.spec
is imported only when exporting or validating (``pip install
'vemrestore[bioimageio]'``).
"""

from vemrestore.export._bioimageio import ExportResult, export_bioimageio, validate_package
from vemrestore.export._torchscript import LateralTile, SkeletonTile, to_torchscript

__all__ = [
    "ExportResult",
    "LateralTile",
    "SkeletonTile",
    "export_bioimageio",
    "to_torchscript",
    "validate_package",
]
