"""The SkelEM method: frozen skeleton, diffusion refiner, cycle consistency, one-pass maps."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple, Unpack

import numpy as np
from torch import nn

from vemrestore.diffusion import (
    load_scheduler_config,
    save_scheduler_config,
)
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import RESTORED, XZ, YZ, BlockRequest, register_method
from vemrestore.methods._persist import load_method, require_files, train_record, weights_digest
from vemrestore.methods._trained import FitOptions, TrainedMethod, stage_options
from vemrestore.methods.priors import (
    apply_prior,
    option_differences,
    prior_weights_path,
    warn_outside_factors,
)
from vemrestore.methods.skelem.config import SkelEMConfig, SkelEMInference
from vemrestore.methods.skelem.cycle import fine_tune
from vemrestore.methods.skelem.noise import Moments, consistency_correction, local_sectioning
from vemrestore.methods.skelem.refiner import (
    matched_strength,
    refine_planes,
    train_refiner,
    truncated_start,
)
from vemrestore.methods.skeleton import PlaneMethod, Skeleton
from vemrestore.models.cond_unet import ConditionalUNet2D
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainResult

__all__ = ["CONSISTENCY", "STD", "SkelEM"]

# Output names beside "restored": the data-consistency residual of the
# unprojected mean, and the per-voxel standard deviation over the samples.
CONSISTENCY = "consistency"
STD = "std"
_OUTPUTS = (RESTORED, CONSISTENCY, STD)

Orientation = Literal["xz", "yz"]
_ORIENTATION_KEY = {"xz": 0, "yz": 1}


class _PlaneSamples(NamedTuple):
    """What ``SkelEM._plane_samples`` gives: the refined planes of a block, per sample.

    Attributes
    ----------
    fine_start, fine_stop : int
        Absolute fine z range [start, stop) of the planes (the block's, halo included).
    samples : iterator of (numpy.ndarray, numpy.ndarray)
        For each sample, the XZ and YZ restorations (skeleton + refined
        residual), each (F, Y, X) over the fine range and the output y and x,
        in normalised units; lazy, one sample's refiner calls at a time.
    """

    fine_start: int
    fine_stop: int
    samples: Iterator[tuple[np.ndarray, np.ndarray]]

    def output_rows(self, request: BlockRequest) -> slice:
        """Rows (fine z) of the planes that are ``request``'s output region."""
        zs = request.output_region[0]
        return slice(zs.start - self.fine_start, zs.stop - self.fine_start)


@register_method("skelem", SkelEMConfig)
class SkelEM(PlaneMethod, TrainedMethod):
    """Frozen skeleton + few-step diffusion refiner for isotropic reconstruction.

    Parameters
    ----------
    config : SkelEMConfig

    Attributes
    ----------
    networks : dict of str to ConditionalUNet2D, or None
        The ``"xz"`` and ``"yz"`` refiners.
    skeleton : Skeleton or None
        The frozen skeleton (its own saved method, in ``skeleton/``).
    residual_scale : float or None
        RMS of the training residuals; the refiners work in its units.
    skeleton_error : float or None
        RMS of the skeleton's residual on held-out sections, in those units
        (what a matched ``inference.strength`` was chosen from).
    strength_matched : bool
        Whether ``config.inference.strength`` was matched at training (not
        given); a new ``fit`` then matches it again.
    cycle_result : TrainResult or None
        Loss of the cycle fine-tuning (``cycle_terms``: its terms at each validation).

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io._volume import Volume
    >>> from vemrestore.methods import create_method
    >>> tiny = {"num_steps": 2, "patch_size": 16, "batch_size": 2}
    >>> method = create_method(
    ...     "skelem", scale_factor=4, base_channels=4, depth=2, pool_size=4, train=tiny,
    ...     skeleton={"base_channels": 4, "depth": 2, "train": tiny},
    ...     cycle={"crop_sections": 2, "margin": 2, "num_crops": 1,
    ...            "train": {**tiny, "batch_size": 1}})
    >>> vol = Volume(np.random.default_rng(0).random((12, 32, 32), dtype=np.float32))
    >>> method = method.fit(vol, progress=False)
    >>> method.output_shape(vol.shape), method.outputs
    ((48, 32, 32), ('restored', 'consistency'))
    """

    name = "skelem"
    state_files = ("refiner.json",)
    pickled_attributes = ("skeleton",)
    config: SkelEMConfig

    def __init__(self, config: SkelEMConfig) -> None:
        super().__init__(config)
        self.skeleton: Skeleton | None = None
        self.residual_scale: float | None = None
        self.skeleton_error: float | None = None
        self.strength_matched = False
        self.cycle_result: TrainResult | None = None
        self.cycle_terms: list[dict[str, float]] = []

    # -- state ---------------------------------------------------------------

    def build_networks(self) -> dict[str, nn.Module]:
        """The XZ and YZ refiners; both start as the same network."""
        cfg = self.config
        refiner = ConditionalUNet2D(1, 2, 1, base_channels=cfg.base_channels, depth=cfg.depth)
        return {"xz": refiner, "yz": copy.deepcopy(refiner)}

    @property
    def outputs(self) -> tuple[str, ...]:
        """``("restored", "consistency")``, plus ``"std"`` when ``inference.num_samples > 1``."""
        if self.config.inference.num_samples > 1:
            return _OUTPUTS
        return (RESTORED, CONSISTENCY)

    def state_json(self) -> dict[str, Any]:
        networks = self.require_trained()
        record = {
            "model": networks["xz"].config,
            "residual_scale": self.residual_scale,
            "skeleton_error": self.skeleton_error,
            "strength_matched": self.strength_matched,
        }
        return {"refiner.json": record}

    def load_state_json(self, files: dict[str, Any]) -> None:
        record = files["refiner.json"]
        self.residual_scale = float(record["residual_scale"])
        self.skeleton_error = record.get("skeleton_error")  # absent in older saves
        self.strength_matched = bool(record.get("strength_matched", False))

    def training_record(self) -> dict[str, Any] | None:
        if self.train_result is None:
            return None
        record = {"refiner": train_record(self.train_result)}
        if self.cycle_result is not None:
            record["cycle"] = train_record(self.cycle_result, terms=self.cycle_terms)
        return self.with_prior(record)

    def run_fingerprint(self) -> dict[str, Any]:
        """Digest of skeleton and refiners: a blockwise run resumes only with the same networks."""
        skeleton, _ = self._frozen_skeleton()
        return {"weights": weights_digest(skeleton.model, *self.require_trained().values())}  # type: ignore[arg-type]

    def _frozen_skeleton(self) -> tuple[Skeleton, PercentileNormalization]:
        """The skeleton and its normalisation; a user error if the method is untrained."""
        self.require_trained()
        assert self.skeleton is not None and self.skeleton.normalization is not None
        return self.skeleton, self.skeleton.normalization

    # -- training ------------------------------------------------------------

    def fit(self, volume: Volume, **options: Unpack[FitOptions]) -> SkelEM:
        """Train (or load) the skeleton, freeze it, train the refiner, fine-tune it on the volume.

        Runs ``fit_refiner`` and then, unless ``config.cycle`` is None, ``fit_cycle``.

        Parameters
        ----------
        volume : Volume
            The anisotropic stack (as for ``Skeleton.fit``).
        **options
            ``FitOptions``; each stage shows its own progress bar
            (``skeleton``, ``refiner``, ``cycle``), and its checkpoints go to
            that subfolder of ``checkpoint_dir``, from which it resumes.

        Returns
        -------
        SkelEM
            ``self``, trained.

        Raises
        ------
        UserInputError
            If the volume is too small, or ``skeleton_path`` holds no matching skeleton.
        """
        self.fit_refiner(volume, **options)
        if self.config.cycle is not None:
            self.fit_cycle(volume, **options)
        return self

    def fit_refiner(self, volume: Volume, **options: Unpack[FitOptions]) -> SkelEM:
        """Stages 1-2: the frozen skeleton, then the refiner on synthetic XY pairs.

        Both orientations start with the same refiner. ``train_result`` holds
        the refiner's diffusion loss (its validation loss on held-out sections).
        Parameters as in ``fit``; ``checkpoint_dir`` gets ``skeleton`` and
        ``refiner`` subfolders.
        """
        refiner = self.seeded_networks()["xz"]
        prior = self.config.prior  # read first: a bad prior fails before any training
        self.prior_record = None if prior is None else self._apply_refiner_prior(refiner, prior)
        skeleton = self._fit_skeleton(volume, **stage_options(options, "skeleton"))
        skeleton.model.requires_grad_(False).eval()  # type: ignore[union-attr]
        # A strength matched at an earlier fit is matched again to this volume.
        requested = None if self.strength_matched else self.config.inference.strength
        sampling: list[SkelEMInference] = []

        def start(error: float) -> int:
            sampling.append(self._sampling_at(requested, error))
            return truncated_start(self.config.diffusion, sampling[0])

        fit = train_refiner(
            refiner,  # type: ignore[arg-type]
            skeleton,
            skeleton.normalization.apply(volume.to_numpy()),  # type: ignore[union-attr]
            config=self.config,
            truncated_start=start,
            train=partial(self.train_network, **stage_options(options, "refiner")),
        )
        self.config = self.config.model_copy(update={"inference": sampling[0]})
        self.set_trained(
            {"xz": refiner, "yz": copy.deepcopy(refiner)},
            skeleton=skeleton,
            residual_scale=fit.scale,
            skeleton_error=fit.error,
            strength_matched=requested is None,
            train_result=fit.result,
            cycle_result=None,
            cycle_terms=[],
        )
        return self

    def _apply_refiner_prior(self, refiner: nn.Module, prior: str) -> dict[str, Any]:
        """Load the refiner prior into ``refiner``; its record (a user error if its noise
        schedule is not this config's: its residuals would be denoised at the wrong levels)."""
        record = apply_prior(refiner, prior, self.name)
        diffusion = self.config.diffusion.model_dump()
        if record.get("diffusion") != diffusion:
            differ = option_differences(record.get("diffusion"), diffusion, "diffusion.")
            raise UserInputError(
                f"the skelem refiner prior {prior_weights_path(prior, self.name)} "
                f"was trained with {differ}; drop those options, or pass --from-scratch"
            )
        warn_outside_factors(record, self.config.scale_factor)
        return record

    def _sampling_at(self, strength: float | None, error: float) -> SkelEMInference:
        """``config.inference`` with ``strength``, or (None) the strength matched to ``error``."""
        inference = self.config.inference
        if strength is None:
            steps = inference.num_inference_steps
            strength = matched_strength(self.config.diffusion, steps, error)
        return inference.model_copy(update={"strength": strength})

    def with_inference(self, **options: Any) -> SkelEM:
        """``TrainedMethod.with_inference``; ``strength=None`` asks for the matched strength.

        On a trained method that is the strength matched to its skeleton's
        held-out error (``skeleton_error``), so passing every inference
        option of a fresh config (its ``strength`` None) keeps the match.
        """
        matched = "strength" in options and options["strength"] is None
        if matched and self.networks is not None and self.skeleton_error is None:
            raise UserInputError(
                "this SkelEM was saved before strengths were matched (no skeleton_error in "
                "refiner.json): give inference.strength in (0, 1], e.g. 0.3"
            )
        if matched and self.skeleton_error is not None:
            steps = options.get("num_inference_steps", self.config.inference.num_inference_steps)
            options["strength"] = matched_strength(
                self.config.diffusion, steps, self.skeleton_error
            )
        method = super().with_inference(**options)
        if "strength" in options:
            method.strength_matched = matched
        return method

    def fit_cycle(self, volume: Volume, **options: Unpack[FitOptions]) -> SkelEM:
        """Stage 3: fine-tune the XZ and YZ refiners for cycle consistency on the real volume.

        Needs ``fit_refiner`` (or a loaded method) first and ``config.cycle``.
        ``cycle_result`` holds the loss; its ``val_losses`` start before
        fine-tuning (fixed crops and noise), and ``cycle_terms`` holds the
        data-consistency, cross-plane and anchor terms at each validation.
        Parameters as in ``fit``; ``checkpoint_dir`` gets a ``cycle`` subfolder.

        Raises
        ------
        UserInputError
            If the method is untrained, ``config.cycle`` is None, or the
            volume is smaller than a crop.
        """
        skeleton, normalization = self._frozen_skeleton()
        refiners = self.require_trained()
        cycle = self.config.cycle
        if cycle is None:
            raise UserInputError(
                "config.cycle is None, so there is nothing to fine-tune (set cycle options, "
                "e.g. cycle={'train': {'num_steps': 100}})"
            )
        with self._lock:
            tuned = {
                name: copy.deepcopy(net).requires_grad_(True) for name, net in refiners.items()
            }
        result, terms = fine_tune(
            refiners,  # type: ignore[arg-type]
            tuned,  # type: ignore[arg-type]
            skeleton,
            normalization.apply(volume.to_numpy()),
            config=self.config,
            start=self._truncated_start(),
            residual_scale=self.residual_scale,  # type: ignore[arg-type]
            train=partial(
                self.train_network, config=cycle.train, **stage_options(options, "cycle")
            ),
        )
        self.set_trained(tuned, cycle_result=result, cycle_terms=terms)
        return self

    def _fit_skeleton(self, volume: Volume, **options: Unpack[FitOptions]) -> Skeleton:
        cfg = self.config
        if cfg.skeleton_path is None:
            return Skeleton(cfg.skeleton_config()).fit(volume, **options)
        skeleton = _load_skeleton(cfg.skeleton_path)
        found = (skeleton.config.scale_factor, skeleton.config.profile)
        if found != (cfg.scale_factor, cfg.profile):
            raise UserInputError(
                f"skeleton_path={str(cfg.skeleton_path)!r} was trained for scale factor "
                f"{found[0]:g} and profile {found[1]!r}, this method has {cfg.scale_factor:g} "
                f"and {cfg.profile!r} (use a matching skeleton)"
            )
        return skeleton

    def _truncated_start(self) -> int:
        """``t0``: the first timestep of the truncated sampler (whatever ``mode`` is)."""
        return truncated_start(self.config.diffusion, self.config.inference)

    # -- geometry ------------------------------------------------------------

    @property
    def plane_multiple(self) -> int:
        """Pooling size of the skeleton and the refiners together (both powers of two)."""
        skeleton = (
            self.skeleton.config if self.skeleton is not None else self.config.skeleton_config()
        )
        return max(skeleton.space_to_depth * 2**skeleton.depth, 2**self.config.depth)

    # -- prediction ----------------------------------------------------------

    def _refine(
        self,
        name: Orientation,
        cond: np.ndarray,
        origin: tuple[np.ndarray, int, int],
        sample_index: int,
    ) -> np.ndarray:
        """Sampled residuals (P, H, W) in normalised units (see ``refine_planes``)."""
        device = self.inference_device()
        residual = refine_planes(
            self.require_trained()[name],  # type: ignore[arg-type]
            cond,
            sampling=self.config.inference,
            diffusion=self.config.diffusion,
            key=(sample_index, _ORIENTATION_KEY[name]),
            origin=origin,
            device=device,
            context=lambda: self.inference_context(device),
        )
        return residual * np.float32(self.residual_scale)

    def _plane_samples(self, block: np.ndarray, request: BlockRequest) -> _PlaneSamples:
        """The refined XZ and YZ restorations of a region, one sample at a time.

        The fine block, the skeleton's predictions and the refiners'
        conditioning are computed here, once; each sample then runs the
        refiners when the returned ``samples`` iterator reaches it.
        """
        skeleton, normalization = self._frozen_skeleton()
        fine, (f_lo, y_lo, x_lo) = self.fine_block(block, request, normalization)
        _, ys, xs = request.output_region
        oy, ox = slice(ys.start - y_lo, ys.stop - y_lo), slice(xs.start - x_lo, xs.stop - x_lo)
        xz_stack = fine.transpose(1, 0, 2)  # XZ planes (one per y), pixels (z, x)
        yz_stack = fine.transpose(2, 0, 1)  # YZ planes (one per x), pixels (z, y)
        skel_xz = skeleton.predict_planes(xz_stack, range(oy.start, oy.stop))
        skel_yz = skeleton.predict_planes(yz_stack, range(ox.start, ox.stop))
        cond_xz = np.stack([skel_xz, xz_stack[oy]], axis=1)
        cond_yz = np.stack([skel_yz, yz_stack[ox]], axis=1)

        origin_xz = (np.arange(ys.start, ys.stop), f_lo, x_lo)
        origin_yz = (np.arange(xs.start, xs.stop), f_lo, y_lo)

        def samples() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for index in range(self.config.inference.num_samples):
                r_xz = self._refine("xz", cond_xz, origin_xz, index)
                r_yz = self._refine("yz", cond_yz, origin_yz, index)
                v_xz = (skel_xz + r_xz).transpose(1, 0, 2)[:, :, ox]
                v_yz = (skel_yz + r_yz).transpose(1, 2, 0)[:, oy, :]
                yield v_xz, v_yz

        return _PlaneSamples(f_lo, f_lo + fine.shape[0], samples())

    def predict_orientations(
        self, block: np.ndarray, request: BlockRequest
    ) -> dict[str, np.ndarray]:
        """The XZ and YZ restorations of a region, before they are fused.

        Each is the skeleton's prediction of that orientation's planes plus
        the refined residual, averaged over ``inference.num_samples`` samples
        (the same samples as ``predict_block``'s). No consistency projection:
        it applies to the fused volume only.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            Input voxels of ``input_region(request.output_region, ...)``.
        request : BlockRequest
            The output region and the block's position (``request.outputs`` is ignored).

        Returns
        -------
        dict of str to numpy.ndarray
            ``{XZ: ..., YZ: ...}``, float32 of ``request.output_shape``, in
            input intensity units.
        """
        _, normalization = self._frozen_skeleton()
        planes = self._plane_samples(block, request)
        xz, yz = Moments(), Moments()
        for v_xz, v_yz in planes.samples:
            xz.add(v_xz)
            yz.add(v_yz)
        assert xz.mean is not None and yz.mean is not None  # num_samples >= 1
        z_out = planes.output_rows(request)
        return {XZ: normalization.invert(xz.mean[z_out]), YZ: normalization.invert(yz.mean[z_out])}

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """``Method.predict_block``, all outputs from one sampling pass.

        ``num_samples`` samples of ``num_inference_steps`` refiner calls per
        plane batch and orientation give ``"restored"`` (the mean over
        samples), ``"consistency"`` (the data-consistency residual of the
        unprojected mean) and ``"std"`` (the per-voxel standard deviation over
        samples, zero for one sample), in input intensity units.
        """
        unknown = sorted(set(request.outputs) - set(_OUTPUTS))
        if unknown:
            raise ValueError(f"skelem has no outputs {unknown} (it has {', '.join(_OUTPUTS)})")
        _, normalization = self._frozen_skeleton()
        cfg = self.config
        planes = self._plane_samples(block, request)
        _, ys, xs = request.output_region
        z0, y0, x0 = request.input_start
        weights, inside = local_sectioning(
            self.grid,
            cfg.profile,
            fine_start=planes.fine_start,
            fine_stop=planes.fine_stop,
            section_start=z0,
            num_sections=block.shape[0],
        )
        observed = normalization.apply(
            block[inside, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        )
        restored, raw = Moments(), Moments()
        for v_xz, v_yz in planes.samples:
            fused = 0.5 * (v_xz + v_yz)
            raw.add(fused)
            if cfg.inference.consistency_projection:
                fused = fused + consistency_correction(fused, observed, weights)
            restored.add(fused)
        assert restored.mean is not None and raw.mean is not None  # num_samples >= 1
        z_out = planes.output_rows(request)
        span = np.float32(normalization.high - normalization.low)
        out = {}
        if RESTORED in request.outputs:
            out[RESTORED] = normalization.invert(restored.mean[z_out])
        if CONSISTENCY in request.outputs:
            out[CONSISTENCY] = consistency_correction(raw.mean, observed, weights)[z_out] * span
        if STD in request.outputs:
            out[STD] = restored.std()[z_out] * span
        return out

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt`` (both refiners' state_dicts), ``refiner.json``,
        ``scheduler_config.json`` (diffusers format) and the skeleton in ``skeleton/``.

        A ``training.json`` with the loss histories is added when the method
        was trained in this session.
        """
        skeleton, _ = self._frozen_skeleton()
        super().save(path)
        save_scheduler_config(self.config.diffusion, path)
        skeleton.save(Path(path) / "skeleton")

    def load_state(self, path: Path) -> None:
        """Restore the skeleton, refiners and scale written by ``save`` (see ``load_method``)."""
        path = Path(path)
        require_files(path, ("weights.pt", *self.state_files, "skeleton"), "SkelEM")
        if load_scheduler_config(path) != self.config.diffusion:
            raise UserInputError(
                f"{path / 'scheduler_config.json'} disagrees with the diffusion options in "
                f"{path / 'config.json'} (save the method again)"
            )
        self.skeleton = _load_skeleton(path / "skeleton")
        super().load_state(path)


def _load_skeleton(path: Path) -> Skeleton:
    """The trained skeleton saved in ``path`` (``Skeleton.save``)."""
    skeleton = load_method(path)
    if not isinstance(skeleton, Skeleton):
        raise UserInputError(
            f"{path} holds a {type(skeleton).__name__}, not a skeleton (pass a directory "
            "written by `vemrestore train skeleton`)"
        )
    return skeleton
