"""Options of the shared training loop (pydantic v2, validated on assignment)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainConfig"]


class TrainConfig(BaseModel):
    """How a learned method is trained; the method decides what a batch and a loss are.

    Attributes
    ----------
    num_steps : int
        Optimiser steps in total (a resumed run continues up to this number).
    batch_size : int
        Samples per step on CPU.
    gpu_batch_multiplier : int
        On CUDA the batch is ``batch_size * gpu_batch_multiplier``.
    patch_size : int
        Side of the square training patches, in pixels.
    learning_rate : float
        Peak learning rate of AdamW.
    lr_schedule : {"cosine", "one-cycle", "constant"}
        Cosine decay from the peak to zero over ``num_steps``; one-cycle warms
        up over the first 30 % then anneals; constant keeps the peak.
    weight_decay : float
        AdamW's decoupled weight decay.
    grad_clip : float or None
        Clip the global norm of the gradients to this before each step (None:
        no clipping); keeps a diffusion model's rare large-loss batches from
        throwing the weights off.
    loss : {"l1", "l2"}
        Pixel loss (mean absolute or mean squared error).
    seed : int
        Seeds the data generator and torch; a resumed run restores both streams.
    checkpoint_every, validate_every : int
        Steps between checkpoints and between validations. Checkpoints come
        at least every 5 % of ``num_steps`` (so a short run resumes close to
        where it stopped) and after the last step.
    device : {"auto", "cpu", "cuda"}
        "auto" takes CUDA when available.
    amp : bool
        bfloat16 autocast on CUDA (ignored on CPU).
    num_threads : int or None
        CPU threads for torch during training (None keeps torch's default).
    patience : int or None
        Early stopping: end training after this many validations in a row
        without a new lowest validation loss, and keep the weights of the
        lowest (also when all steps run). None trains every step and keeps
        the last weights. Needs a validation.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    gpu_batch_multiplier: int = Field(4, ge=1, le=64)
    patch_size: int = Field(64, ge=8, le=2048)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    lr_schedule: Literal["cosine", "one-cycle", "constant"] = "cosine"
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    loss: Literal["l1", "l2"] = "l1"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    checkpoint_every: int = Field(200, ge=1)
    validate_every: int = Field(200, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    num_threads: int | None = Field(None, ge=1, le=1024)
    patience: int | None = Field(None, ge=1, le=100_000)
