"""SkelEM: a frozen regression skeleton plus a few-step diffusion refiner ("skelem").

Regression (the ``skeleton`` method) recovers the structure of an axially
undersampled stack but blurs fine detail; a diffusion model sampled from
pure noise restores texture but invents structure and is slow. SkelEM
decouples the two:

1. The skeleton is trained first, with its own pixel loss, on the volume's XY
   sections (``api.configure`` and the CLI fine-tune the shipped skeleton
   prior), or loaded from a saved skeleton, and then frozen.
2. A conditional diffusion U-Net (the refiner) learns the high-frequency
   residual ``sharp - skeleton`` on the same self-supervised XY pairs (rows
   sectioned by the axial forward model, cubic-upsampled back), conditioned on
   the skeleton output and the cubic input. Its diffusion loss never reaches
   the skeleton (the skeleton's weights are not in its optimiser, and its
   outputs are computed once, without gradients).
3. At prediction the residual of each XZ and YZ plane is sampled by a
   truncated reverse diffusion: it starts at ``t0 ~ strength * T`` from the
   noised skeleton estimate (a zero residual) and runs ``num_inference_steps``
   (default 4) DDIM steps. Unless ``inference.strength`` is given, ``t0`` is
   chosen at training where the noise level matches the skeleton's RMS error
   on held-out sections (``matched_strength``). ``inference.mode="full"``
   samples from pure noise instead, for comparison.
4. Cycle consistency on the real input: the refiner is copied into an XZ and
   a YZ refiner, fine-tuned on crops of the real (cubic-upsampled) volume so
   that the fused restoration, re-sectioned along z by the same forward model,
   reproduces the observed sections (data consistency) and the XZ and YZ
   restorations agree (cross-plane consistency); an anchor term keeps both
   close to the synthetically trained refiner. The restoration is the
   differentiable one-step ``x0`` estimate at ``t0`` (the first step of the
   truncated sampler), so a fine-tuning step costs one network call per plane.
5. One sampling pass gives every output: ``num_samples`` samples with
   different seeds give the mean (``"restored"``) and a per-voxel standard
   deviation (``"std"``); the data-consistency residual (``"consistency"``:
   observed sections minus the re-sectioned unprojected mean, spread back over
   the fine slices) shows where the restoration disagrees with the
   measurement. Optionally (``consistency_projection``, on by default) that
   residual is added to the result: the orthogonal projection onto the volumes
   that reproduce the observation exactly, which never increases the L2
   distance to any such volume (the truth among them when the sections are
   noise-free).

Sampling noise is a hash of the seed, sample index, plane orientation and
absolute voxel coordinates, so blockwise and whole-volume predictions agree.

References
----------
Weigert, M. et al. Isotropic reconstruction of 3D fluorescence microscopy
images using convolutional neural networks. MICCAI (2017).
:doi:`10.1007/978-3-319-66179-7_15`
Meng, C. et al. SDEdit: guided image synthesis and editing with stochastic
differential equations. ICLR (2022). :doi:`10.48550/arXiv.2108.01073`
Song, J., Meng, C. & Ermon, S. Denoising diffusion implicit models. ICLR (2021).
:doi:`10.48550/arXiv.2010.02502`
"""

from vemrestore.methods.skelem.config import CycleConfig, SkelEMConfig, SkelEMInference
from vemrestore.methods.skelem.method import CONSISTENCY, STD, SkelEM
from vemrestore.methods.skelem.noise import consistency_correction, keyed_normal

__all__ = [
    "CONSISTENCY",
    "STD",
    "CycleConfig",
    "SkelEM",
    "SkelEMConfig",
    "SkelEMInference",
    "consistency_correction",
    "keyed_normal",
]
