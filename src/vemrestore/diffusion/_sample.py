"""Few-step reverse diffusion: full (from pure noise) or truncated (from a noised estimate).

The loop is written out here; the scheduler (a diffusers ``DDIMScheduler``,
see ``make_scheduler``) only supplies ``set_timesteps``, ``step`` and
``add_noise``. Known pixels can be imposed at every step (RePaint-style
replacement), so one network restores any mask without retraining.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vemrestore.errors import UserInputError

__all__ = ["sample", "sampling_timesteps"]

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[int, tuple[int, ...]], torch.Tensor]


def sampling_timesteps(scheduler: Any, num_steps: int, *, strength: float = 1.0) -> torch.Tensor:
    """The ``num_steps`` timesteps a sampling run visits, highest first.

    Sets the scheduler's timesteps as a side effect (``scheduler.step`` needs it).

    Parameters
    ----------
    scheduler : diffusers.DDIMScheduler
    num_steps : int
        Network calls, ``1 .. num_train_timesteps``.
    strength : float
        In ``(0, 1]``. 1: the ``num_steps``-step schedule from the noisiest
        level. Below 1: the schedule of ``round(num_steps / strength)`` steps
        over the whole range is set and only its ``num_steps`` lowest steps
        are kept, so the run starts near ``t0 = strength * T`` and keeps the
        step size of the longer schedule.

    Returns
    -------
    torch.Tensor of int64, shape (num_steps,)

    Raises
    ------
    UserInputError
        If ``num_steps`` or ``strength`` is out of range.
    """
    total = int(scheduler.config.num_train_timesteps)
    if not 1 <= num_steps <= total:
        raise UserInputError(
            f"num_steps must be in 1..{total} (the training timesteps), got {num_steps}"
        )
    if not 0.0 < strength <= 1.0:
        raise UserInputError(
            f"strength must be in (0, 1] (1 = start from pure noise), got {strength}"
        )
    if strength == 1.0:
        scheduler.set_timesteps(num_steps)
        return scheduler.timesteps
    scheduler.set_timesteps(min(total, max(num_steps, round(num_steps / strength))))
    return scheduler.timesteps[-num_steps:]


def _check_shapes(
    shape: Sequence[int] | None,
    init: torch.Tensor | None,
    strength: float,
    known: torch.Tensor | None,
    known_mask: torch.Tensor | None,
) -> tuple[int, ...]:
    if init is None and shape is None:
        raise UserInputError("give shape= (sampling from noise) or init= (an estimate to refine)")
    if init is not None and shape is not None and tuple(shape) != tuple(init.shape):
        raise UserInputError(
            f"shape={tuple(shape)} differs from init.shape={tuple(init.shape)} (give only one)"
        )
    if strength < 1.0 and init is None:
        raise UserInputError(
            f"strength={strength} < 1 starts from a noised estimate: pass init= "
            "(or use strength=1 to start from pure noise)"
        )
    out_shape = tuple(int(n) for n in (init.shape if init is not None else shape))  # type: ignore[union-attr]
    if (known is None) != (known_mask is None):
        raise UserInputError("give known= and known_mask= together (or neither)")
    if known is not None and known_mask is not None:
        if tuple(known.shape) != out_shape:
            raise UserInputError(
                f"known has shape {tuple(known.shape)}, the sample has shape {out_shape} "
                "(pass known values on the sample's grid)"
            )
        if known_mask.dtype != torch.bool:
            raise UserInputError(
                f"known_mask must be a boolean tensor (True = known), got {known_mask.dtype}"
            )
        try:
            torch.broadcast_shapes(tuple(known_mask.shape), out_shape)
        except RuntimeError as exc:
            raise UserInputError(
                f"known_mask shape {tuple(known_mask.shape)} does not broadcast to the sample "
                f"shape {out_shape}"
            ) from exc
    return out_shape


def sample(
    denoise_fn: DenoiseFn,
    *,
    scheduler: Any,
    num_steps: int,
    shape: Sequence[int] | None = None,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    noise_fn: NoiseFn | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion with exactly ``num_steps`` network calls.

    Parameters
    ----------
    denoise_fn : callable
        ``denoise_fn(x_t, t) -> output``: ``x_t`` of the sample's shape
        (N, ...), ``t`` an int64 tensor of shape (N,); returns what the
        scheduler's ``prediction_type`` names (noise, ``x0`` or ``v``), shape (N, ...).
    scheduler : diffusers.DDIMScheduler
        Its timesteps are set by this call.
    num_steps : int
        Network calls (sampling steps).
    shape : sequence of int, optional
        Shape (N, ...) of the sample when starting from noise.
    init : torch.Tensor, optional
        Estimate to refine (and the sample's shape); needed when ``strength < 1``.
    strength : float
        1: start from pure noise (``init`` only gives the shape). Below 1:
        truncated run, starting from ``scheduler.add_noise(init, noise, t0)``
        at ``t0``, about ``strength * T`` (see ``sampling_timesteps``), and
        running only the steps at or below ``t0``.
    generator : torch.Generator, optional
        Source of all noise (unless ``noise_fn`` is given); the same seed
        gives the same output.
    known, known_mask : torch.Tensor, optional
        Values (the sample's shape) and a boolean mask (broadcastable to it)
        of pixels that are known. They are imposed at the start and after
        every step, noised to the next step's level (RePaint-style
        replacement); after the last step they are copied exactly, so the
        result equals ``known`` bit for bit where ``known_mask`` is True.
    noise_fn : callable, optional
        ``noise_fn(k, shape) -> tensor`` of standard normal noise for draw
        ``k`` (0: the starting noise; ``k >= 1``: noise for the known pixels
        after step ``k``). Lets a caller make the noise a function of
        position, e.g. for blockwise processing. Default: ``torch.randn``
        with ``generator``.
    device : torch.device or str, optional
        Device of the sample; default: that of ``init``, else the CPU.

    Returns
    -------
    torch.Tensor
        The sample, float32, shape (N, ...).

    Raises
    ------
    UserInputError
        For inconsistent shapes, a non-boolean mask, or out-of-range
        ``num_steps`` / ``strength``.

    References
    ----------
    Lugmayr, A. et al. RePaint: inpainting using denoising diffusion
    probabilistic models. CVPR (2022). :doi:`10.1109/CVPR52688.2022.01117`
    Meng, C. et al. SDEdit: guided image synthesis and editing with
    stochastic differential equations. ICLR (2022). :doi:`10.48550/arXiv.2108.01073`

    Examples
    --------
    >>> from vemrestore.diffusion import DiffusionConfig, make_scheduler
    >>> scheduler = make_scheduler(DiffusionConfig(prediction_type="sample"))
    >>> x = sample(lambda x, t: torch.zeros_like(x), scheduler=scheduler, num_steps=3,
    ...            shape=(1, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    >>> float(x.abs().max())
    0.0
    """
    out_shape = _check_shapes(shape, init, strength, known, known_mask)
    if device is None:
        device = init.device if init is not None else torch.device("cpu")
    timesteps = sampling_timesteps(scheduler, num_steps, strength=strength).to(device)

    def draw(k: int) -> torch.Tensor:
        if noise_fn is not None:
            noise = noise_fn(k, out_shape)
            if tuple(noise.shape) != out_shape:
                raise ValueError(
                    f"noise_fn returned shape {tuple(noise.shape)}, expected {out_shape}"
                )
            return noise.to(device=device, dtype=torch.float32)
        gen_device = generator.device if generator is not None else device
        return torch.randn(out_shape, generator=generator, device=gen_device).to(device)

    def level(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(1).expand(out_shape[0])

    noise = draw(0)
    if strength == 1.0:
        x = noise * float(scheduler.init_noise_sigma)
    else:
        x = scheduler.add_noise(init.to(device, torch.float32), noise, level(timesteps[0]))  # type: ignore[union-attr]
    if known is not None:
        known = known.to(device, torch.float32)
        mask = known_mask.to(device)  # type: ignore[union-attr]
        x = torch.where(mask, scheduler.add_noise(known, noise, level(timesteps[0])), x)
    last = len(timesteps) - 1
    for i, t in enumerate(timesteps):
        output = denoise_fn(scheduler.scale_model_input(x, t), level(t))
        x = scheduler.step(output.float(), int(t), x).prev_sample
        if known is not None:
            if i == last:
                x = torch.where(mask, known, x)
            else:
                noised = scheduler.add_noise(known, draw(i + 1), level(timesteps[i + 1]))
                x = torch.where(mask, noised, x)
    return x
