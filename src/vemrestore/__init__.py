"""vemrestore: restore volume electron microscopy data.

Axial super-resolution (isotropic reconstruction), missing and damaged slice
restoration, lateral super-resolution with denoising, and honest evaluation
against classical baselines.
"""

from vemrestore.errors import UserInputError

__version__ = "0.1.0"
__all__ = ["UserInputError", "__version__"]
