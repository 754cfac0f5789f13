"""Cycle-consistency fine-tuning of SkelEM's XZ and YZ refiners on the real volume."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from vemrestore.diffusion import DiffusionConfig, make_scheduler, predicted_original_sample
from vemrestore.errors import UserInputError
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.skelem.config import CycleConfig, SkelEMConfig
from vemrestore.methods.skelem.noise import local_sectioning
from vemrestore.methods.skeleton import Skeleton
from vemrestore.models.cond_unet import ConditionalUNet2D
from vemrestore.models.unet2d import pad_to_multiple
from vemrestore.train import TrainResult, resolve_device

__all__ = ["CycleCrops", "CycleObjective", "fine_tune"]


class CycleObjective(nn.Module):
    """XZ and YZ restorations of crops: skeleton + one-step ``x0`` of each refiner at ``t0``.

    Input (B, 5, F, L, L): cubic, skeleton XZ, skeleton YZ, noise XZ, noise YZ
    (z, y, x); output (B, 2, F, L, L): the XZ and YZ restorations.
    """

    def __init__(
        self,
        refiners: dict[str, ConditionalUNet2D],
        *,
        diffusion: DiffusionConfig,
        start: int,
        residual_scale: float,
    ) -> None:
        super().__init__()
        self.refiners = nn.ModuleDict(refiners)
        self.scheduler = make_scheduler(diffusion)
        self.start = start
        self.residual_scale = residual_scale

    def _restore(
        self, name: str, cubic: torch.Tensor, skeleton: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        # cubic etc. (B, F, P, W): planes along P, pixels (F, W).
        b, f, p, w = cubic.shape
        refiner = self.refiners[name]

        def planes(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 1, 3).reshape(b * p, 1, f, w)

        cond = pad_to_multiple(
            torch.cat([planes(skeleton), planes(cubic)], dim=1), refiner.size_multiple
        )
        eps = pad_to_multiple(planes(noise), refiner.size_multiple)
        t = torch.full((b * p,), self.start, dtype=torch.long, device=cubic.device)
        noisy = self.scheduler.add_noise(torch.zeros_like(eps), eps, t)
        x0 = predicted_original_sample(self.scheduler, refiner(noisy, t, cond), noisy, t)
        residual = x0[:, 0, :f, :w].reshape(b, p, f, w).permute(0, 2, 1, 3)
        return skeleton + self.residual_scale * residual

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        cubic, skel_xz, skel_yz, noise_xz, noise_yz = packed.unbind(dim=1)
        xz = self._restore("xz", cubic, skel_xz, noise_xz)  # XZ planes: one per y
        yz = self._restore(
            "yz", *(v.transpose(2, 3) for v in (cubic, skel_yz, noise_yz))
        ).transpose(2, 3)  # YZ planes: one per x
        return torch.stack([xz, yz], dim=1)


class CycleCrops:
    """Crops of the real volume with their frozen skeleton outputs, and the loss on them.

    Every crop spans ``crop_sections`` observed sections plus one each side
    (context) in a window of ``F`` fine slices, and ``patch_size + 2 margin``
    pixels laterally. The forward-model rows of each crop's scored sections
    are kept per crop (they differ for non-integer factors); the crop index
    travels in the last target channel so the loss can find them.
    """

    def __init__(
        self,
        skeleton: Skeleton,
        sections: np.ndarray,
        config: CycleConfig,
        *,
        profile: str,
        rng: np.random.Generator,
    ) -> None:
        k = skeleton.config.scale_factor
        num, height, width = sections.shape
        ns, margin, size = config.crop_sections, config.margin, config.train.patch_size
        side = size + 2 * margin
        if num < ns + 2 or min(height, width) < side:
            raise UserInputError(
                f"cycle consistency needs crops of {ns} + 2 sections and {side}x{side} pixels "
                f"(cycle.crop_sections={ns}, cycle.train.patch_size={size}, cycle.margin="
                f"{margin}), but the volume has shape {sections.shape} (lower them, or set "
                "cycle=None)"
            )
        self.config = config
        self.lateral = slice(margin, margin + size)
        fine = math.ceil((ns + 2) * k) + 2
        first = math.ceil(k)
        self.inner_z = slice(first, first + math.floor(ns * k))
        arrays: dict[str, list[np.ndarray]] = {
            "cubic": [],
            "xz": [],
            "yz": [],
            "observed": [],
            "weights": [],
        }
        for _ in range(config.num_crops):
            s0 = int(rng.integers(1, num - ns))
            y0, x0 = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            f_lo = skeleton.grid.fine_at(s0 - 1)
            cubic = upsample_axial(
                sections[:, y0 : y0 + side, x0 : x0 + side],
                k,
                kind="cubic",
                fine_start=f_lo,
                num_fine=fine,
            )
            arrays["cubic"].append(cubic)
            xz = skeleton.predict_planes(cubic.transpose(1, 0, 2), range(side))
            arrays["xz"].append(xz.transpose(1, 0, 2))
            yz = skeleton.predict_planes(cubic.transpose(2, 0, 1), range(side))
            arrays["yz"].append(yz.transpose(1, 2, 0))
            weights, inside = local_sectioning(
                skeleton.grid,
                profile,
                fine_start=f_lo,
                fine_stop=f_lo + fine,
                section_start=s0,
                num_sections=ns,
            )
            padded_w = np.zeros((ns, fine), np.float32)
            padded_w[: len(inside)] = weights
            observed = np.zeros((ns, size, size), np.float32)
            observed[: len(inside)] = sections[
                s0 + inside, y0 + margin : y0 + margin + size, x0 + margin : x0 + margin + size
            ]
            arrays["weights"].append(padded_w)
            arrays["observed"].append(observed)
        self.cubic, self.skel_xz, self.skel_yz = (
            np.stack(arrays[name]) for name in ("cubic", "xz", "yz")
        )
        self.observed = np.stack(arrays["observed"])
        self.weights = torch.from_numpy(np.stack(arrays["weights"]))
        self.reference: CycleObjective | None = None

    def pack(self, idx: np.ndarray, noise: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (B, 5, F, L, L) and targets (B, 4, F, L, L).

        Targets: observed sections (first slices, inner pixels), the reference
        XZ and YZ restorations (anchor), and the crop index (constant).
        """
        inputs = np.stack(
            [self.cubic[idx], self.skel_xz[idx], self.skel_yz[idx], noise[:, 0], noise[:, 1]],
            axis=1,
        )
        packed = torch.from_numpy(inputs)
        targets = torch.zeros((len(idx), 4, *self.cubic.shape[1:]))
        lat, ns = self.lateral, self.observed.shape[1]
        targets[:, 0, :ns, lat, lat] = torch.from_numpy(self.observed[idx])
        if self.reference is not None:
            device = next(self.reference.parameters()).device
            with torch.no_grad():
                targets[:, 1:3] = self.reference(packed.to(device)).float().cpu()
        targets[:, 3] = torch.from_numpy(idx.astype(np.float32))[:, None, None, None]
        return packed, targets

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(len(self.cubic), size=batch_size)
        noise = rng.standard_normal((batch_size, 2, *self.cubic.shape[1:]), dtype=np.float32)
        return self.pack(idx, noise)

    def terms(self, restored: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three L1 terms: data consistency, cross-plane, anchor."""
        lat, inner = self.lateral, self.inner_z
        idx = targets[:, 3, 0, 0, 0].round().long().cpu()
        weights = self.weights[idx].to(restored.device)  # (B, S, F); zero rows unused
        valid = weights.sum(dim=2) > 0
        fused = restored.float().mean(dim=1)[:, :, lat, lat]
        resectioned = torch.einsum("bsf,bfyx->bsyx", weights, fused)
        observed = targets[:, 0, : weights.shape[1], lat, lat]
        error = (resectioned - observed).abs().mean(dim=(2, 3))
        region = restored[:, :, inner, lat, lat].float()
        return {
            "consistency": error[valid].mean(),
            "cross_plane": (region[:, 0] - region[:, 1]).abs().mean(),
            "anchor": (region - targets[:, 1:3, inner, lat, lat]).abs().mean(),
        }

    def loss(self, restored: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = self.terms(restored, targets)
        cfg = self.config
        return (
            cfg.consistency_weight * terms["consistency"]
            + cfg.cross_plane_weight * terms["cross_plane"]
            + cfg.anchor_weight * terms["anchor"]
        )


def fine_tune(
    refiners: dict[str, ConditionalUNet2D],
    tuned: dict[str, ConditionalUNet2D],
    skeleton: Skeleton,
    sections: np.ndarray,
    *,
    config: SkelEMConfig,
    start: int,
    residual_scale: float,
    train: Callable[..., TrainResult],
) -> tuple[TrainResult, list[dict[str, float]]]:
    """Fine-tune ``tuned`` (copies of ``refiners``) in place for cycle consistency.

    ``sections`` is the normalised stack; ``config.cycle`` must be set;
    ``train(model, sampler, loss_fn, validate)`` trains with
    ``config.cycle.train`` (``TrainedMethod.train_network``). The anchor
    term compares with ``refiners``, which stay unchanged. Returns the loss
    and the data-consistency, cross-plane and anchor terms at each validation.
    """
    cycle = config.cycle
    assert cycle is not None  # the caller checks it
    options = {"diffusion": config.diffusion, "start": start, "residual_scale": residual_scale}
    crops = CycleCrops(
        skeleton,
        sections,
        cycle,
        profile=config.profile,
        rng=np.random.default_rng([cycle.train.seed, 5]),
    )
    device = resolve_device(cycle.train.device)
    if cycle.anchor_weight > 0:
        frozen = {name: copy.deepcopy(net) for name, net in refiners.items()}
        crops.reference = CycleObjective(frozen, **options).to(device).eval()  # type: ignore[arg-type]
    val_inputs, val_targets = crops.sample_batch(
        np.random.default_rng([cycle.train.seed, 6]), max(2, cycle.train.batch_size)
    )
    terms: list[dict[str, float]] = []

    def validate(model: nn.Module) -> float:
        dev = next(model.parameters()).device
        restored, targets = model(val_inputs.to(dev)), val_targets.to(dev)
        terms.append({name: float(v) for name, v in crops.terms(restored, targets).items()})
        return float(crops.loss(restored, targets))

    result = train(CycleObjective(tuned, **options), crops, crops.loss, validate)  # type: ignore[arg-type]
    for net in tuned.values():
        net.requires_grad_(False).eval()
    return result, terms
