"""Lateral super-resolution and denoising learned without clean references ("lateral").

A fast acquisition gives coarse, noisy XY slices (LR); a slow one gives fine
pixels (HR) that are noisy too. An ``EdgeAttentionSRNet`` maps each LR slice
to an HR slice (x1 denoises only). Training pairs come from

- ``pairs="real"``: registered LR/HR acquisitions of the same slices (both
  noisy). Each HR slice is binned to LR size, its translation to the LR slice
  is found by phase correlation and, where it exceeds
  ``registration_tolerance`` HR pixels, the HR slice is shifted onto the LR one
  (cubic spline) and the borders the shift invalidates are cropped;
- ``pairs="synthetic"``: the HR slices through the forward model
  (``LateralDegradation``: pixel binning, optional Gaussian PSF) plus
  Poisson-Gaussian noise (``PoissonGaussianNoise``), drawn afresh for every
  patch. The LR noise model is ``noise_gain``/``noise_sigma`` when given, else
  estimated from the user's real LR data when given, else the HR noise model
  (the same dwell time per pixel). Binning already carries the HR noise,
  averaged over ``f**2`` pixels, so only the remainder is added.

With ``reference="denoised"`` the HR targets are denoised first (non-local
means after a generalized Anscombe transform with the estimated HR noise
model). Otherwise the targets are the noisy HR slices: with independent noise
of zero mean, an L2 loss is minimised by the clean image (Noise2Noise;
Lehtinen et al. 2018, https://doi.org/10.48550/arXiv.1803.04189), L1 by its
median. ``objective="noisier-noisy"`` adds noise of the LR model scaled by
``noisier_strength`` to a copy of every LR patch; the loss is
``L(f(lr), hr) + noisier_weight * L(f(noisier), hr) + consistency_weight *
L(f(noisier), stopgrad(f(lr)))``.

Modules: ``config`` (options), ``pairs`` (registration, bicubic upsampling,
noise estimation, the pair sampler), ``method`` (network, losses, training,
blockwise prediction). Importing the package registers the method. Training
a method and saving it to a folder is ``vemrestore.api._lateral.train_lateral``.
"""

from vemrestore.methods.lateral.config import LateralConfig, LateralInference, LateralTrainConfig
from vemrestore.methods.lateral.method import LateralMethod
from vemrestore.methods.lateral.pairs import (
    PairSampler,
    Registration,
    check_pair_shapes,
    register_pair,
    upsample_bicubic,
)

__all__ = [
    "LateralConfig",
    "LateralInference",
    "LateralMethod",
    "LateralTrainConfig",
    "PairSampler",
    "Registration",
    "check_pair_shapes",
    "register_pair",
    "upsample_bicubic",
]
