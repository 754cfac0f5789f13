"""The one training loop every learned method shares.

The method supplies the model, a batch sampler and a loss; the loop owns
seeding, device and autocast, the optimiser and learning-rate schedule,
progress, validation, and checkpoints that a crashed run resumes from
exactly (model, optimiser, schedule and both random streams are restored).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.errors import UserInputError
from vemrestore.io._atomic import storage_error
from vemrestore.train._config import TrainConfig
from vemrestore.train._torch_load import torch_load_reason

__all__ = [
    "CHECKPOINT_NAME",
    "TrainResult",
    "checkpoint_interval",
    "fit_model",
    "pixel_loss",
    "resolve_device",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = frozenset(
    {
        "format",
        "step",
        "model",
        "optimizer",
        "scheduler",
        "torch_rng",
        "cuda_rng",
        "numpy_rng",
        "history",
        "val_losses",
        "seconds",
        "config",
    }
)
# What to do once a checkpoint write failure is fixed, for a run started without resume.
_RETRY_WITHOUT_RESUME = "run again with resume=True (--resume) to continue from the last checkpoint"
# Options that may change between a run and its resumption without a warning.
_RESUMABLE_CHANGES = frozenset(
    {"num_steps", "checkpoint_every", "validate_every", "device", "num_threads", "amp"}
)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    """What a training run did.

    Attributes
    ----------
    history : list of float
        Training loss at every step since step 1 (resumed runs included).
    val_losses : list of (int, float)
        (step, validation loss) at every validation; step 0 is the untrained model.
    seconds : float
        Wall time spent training, summed over resumed runs.
    steps : int
        Steps completed (fewer than ``num_steps`` after an early stop).
    best_step : int or None
        With ``patience``: the step whose weights were kept (lowest
        validation loss; 0 is the starting weights). None otherwise.
    """

    history: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    best_step: int | None = None


@dataclass
class _EarlyStopping:
    """The lowest validation loss so far, its weights, and validations since (``patience``)."""

    patience: int | None
    loss: float = math.inf
    step: int | None = None
    state: dict[str, torch.Tensor] | None = None
    since: int = 0

    def record(self, step: int, value: float, model: nn.Module | None) -> None:
        """Note a validation; copy the weights of ``model`` when it is a new best."""
        if value < self.loss:
            self.loss, self.step, self.since = value, step, 0
            if model is not None:
                self.state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
        else:
            self.since += 1

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.since >= self.patience

    @classmethod
    def resumed(
        cls, patience: int | None, val_losses: list[tuple[int, float]], state: Any
    ) -> _EarlyStopping:
        """The state a checkpoint implies: replayed losses, and its saved best weights."""
        stopping = cls(patience)
        if patience is None:
            return stopping
        for step, value in val_losses:
            stopping.record(step, value, None)
        if state is None:  # a checkpoint of a run without patience: start the search afresh
            return cls(patience)
        stopping.state = state
        return stopping


def resolve_device(name: str) -> torch.device:
    """Torch device for ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    UserInputError
        If ``"cuda"`` is asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device='cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise UserInputError(f"unknown device {name!r} (choose 'auto', 'cpu' or 'cuda')")
    return torch.device(name)


def pixel_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean absolute (``"l1"``) or mean squared (``"l2"``) error."""
    losses = {"l1": F.l1_loss, "l2": F.mse_loss}
    if name not in losses:
        raise UserInputError(f"unknown loss {name!r} (choose 'l1' or 'l2')")
    return losses[name]


def _lr_factor(schedule: str, num_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        t = min(step, num_steps) / num_steps
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if schedule == "one-cycle":
            warm = 0.3
            if t < warm:
                return 0.04 + 0.96 * t / warm
            return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / (1.0 - warm)))
        return 1.0

    return factor


@contextlib.contextmanager
def _cpu_threads(device: torch.device, num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if device.type == "cpu":
        # Denormal floats slowed a small U-Net ~10x after a few hundred CPU steps.
        torch.set_flush_denormal(True)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _checkpoint_tmp(path: Path) -> Path:
    """The temporary name a checkpoint is written under before the rename."""
    return path.with_name(path.name + ".tmp")


def _save_checkpoint(path: Path, payload: dict[str, Any], *, retry: str) -> None:
    """Write ``payload`` to ``path`` atomically: temporary file, fsync, rename.

    Serialised in memory first, so every storage fault surfaces as an
    `OSError` of the plain file write. On failure the temporary is removed
    and the previous checkpoint at ``path`` is untouched.

    Raises
    ------
    UserInputError
        If writing or renaming fails (disk full, read-only, permission denied).
    """
    tmp = _checkpoint_tmp(path)
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
        with open(tmp, "wb") as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise storage_error("writing checkpoint", path, error, retry=retry) from error


def _prepare_checkpoint_dir(path: Path) -> None:
    """Create the folder of checkpoint ``path`` and drop a killed run's temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _checkpoint_tmp(path).unlink(missing_ok=True)
    except OSError as error:
        raise storage_error("creating checkpoint folder", path.parent, error) from error


def checkpoint_interval(config: TrainConfig) -> int:
    """Steps between checkpoints: ``checkpoint_every``, at most 5 % of ``num_steps``.

    So that even a short run killed midway resumes close to where it stopped.

    Examples
    --------
    >>> checkpoint_interval(TrainConfig(num_steps=60, checkpoint_every=200))
    3
    >>> checkpoint_interval(TrainConfig(num_steps=100_000, checkpoint_every=200))
    200
    """
    return min(config.checkpoint_every, max(1, math.ceil(0.05 * config.num_steps)))


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    fix = "delete it to start over"
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise UserInputError(
            f"checkpoint {path} is corrupt or incomplete ({torch_load_reason(exc)}); {fix}"
        ) from exc
    if not isinstance(payload, dict) or not _CHECKPOINT_KEYS <= set(payload):
        missing = sorted(_CHECKPOINT_KEYS - set(payload)) if isinstance(payload, dict) else "all"
        raise UserInputError(
            f"checkpoint {path} is corrupt or incomplete (missing {missing}); {fix}"
        )
    if payload["format"] != _CHECKPOINT_FORMAT:
        raise UserInputError(
            f"checkpoint {path} has format {payload['format']}, this version reads "
            f"{_CHECKPOINT_FORMAT}; {fix}"
        )
    return payload


def _warn_config_changes(saved_json: str, config: TrainConfig, path: Path) -> None:
    saved = TrainConfig.model_validate_json(saved_json).model_dump()
    now = config.model_dump()
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved[k] != now[k])
    if changed:
        warnings.warn(
            f"resuming from {path} with changed training options {changed}; "
            "the result will not match an uninterrupted run",
            stacklevel=3,
        )


def fit_model(
    model: nn.Module,
    *,
    sample_batch: Callable[[np.random.Generator, int], Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    validate: Callable[[nn.Module], float] | None = None,
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Train ``model`` in place with AdamW until ``config.num_steps`` steps are done.

    With ``config.patience``, training ends early once that many validations in
    a row bring no new lowest validation loss, and the model keeps the weights
    of the lowest (the starting weights included: a fine-tune that never helps
    returns its prior unchanged).

    Parameters
    ----------
    model : torch.nn.Module
        Moved to the training device and left there, in eval mode, when done.
    sample_batch : callable
        ``sample_batch(rng, batch_size) -> (inputs, targets)``: tensors on any
        device; all randomness must come from ``rng`` so a resumed run
        continues the same stream.
    loss_fn : callable
        ``loss_fn(model(inputs), targets) -> scalar tensor``.
    config : TrainConfig
    checkpoint_dir : pathlib.Path, optional
        Where ``checkpoint.pt`` is written every ``config.checkpoint_every``
        steps, at least every 5 % of ``config.num_steps``
        (`checkpoint_interval`), and at the end (atomically: temporary file,
        then rename; a failed write keeps the previous checkpoint).
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists.
    validate : callable, optional
        ``validate(model) -> float``, called under ``torch.no_grad`` in eval
        mode before the first step, every ``config.validate_every`` steps and
        at the end.
    progress : bool
        Show a progress bar: ``description``, steps done, elapsed time, an
        estimate of the time left and the running loss.
    description : str
        What is trained, shown at the start of the bar: a method passes its
        name or its stage's (``"skeleton"``, ``"refiner"``, ``"cycle"``, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    UserInputError
        If the checkpoint is corrupt, or is already past ``config.num_steps``,
        or writing a checkpoint fails (disk full, read-only, permission
        denied, a file in the way).
    FloatingPointError
        If the loss becomes NaN or infinite.
    """
    if validate is None and config.patience is not None:
        raise UserInputError(
            f"train.patience={config.patience} (early stopping) needs a validation, and "
            f"{description} has none here (drop train.patience)"
        )
    device = resolve_device(config.device)
    batch_size = config.batch_size * (config.gpu_batch_multiplier if device.type == "cuda" else 1)
    use_amp = config.amp and device.type == "cuda"
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config.lr_schedule, config.num_steps)
    )
    rng = np.random.default_rng(config.seed)
    result = TrainResult()
    stopping = _EarlyStopping(config.patience)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices), _cpu_threads(device, config.num_threads):
        torch.manual_seed(config.seed)
        if resume and path is not None and path.exists():
            saved = _load_checkpoint(path, device)
            if saved["step"] > config.num_steps:
                raise UserInputError(
                    f"checkpoint {path} is at step {saved['step']}, past num_steps="
                    f"{config.num_steps} (raise num_steps or delete the checkpoint)"
                )
            _warn_config_changes(saved["config"], config, path)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"].cpu())
            if cuda_devices and saved["cuda_rng"]:
                torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
            rng.bit_generator.state = saved["numpy_rng"]
            stopping = _EarlyStopping.resumed(
                config.patience, saved["val_losses"], saved.get("best_model")
            )
            result = TrainResult(
                history=list(saved["history"]),
                val_losses=[(int(s), float(v)) for s, v in saved["val_losses"]],
                seconds=float(saved["seconds"]),
                steps=int(saved["step"]),
            )
            logger.info("resumed from %s at step %d", path, result.steps)
        elif resume:
            logger.info("no checkpoint to resume from; starting at step 0")
        if path is not None:
            _prepare_checkpoint_dir(path)
        every = checkpoint_interval(config)
        retry = "run the same command again to resume" if resume else _RETRY_WITHOUT_RESUME

        def checkpoint() -> None:
            _save_checkpoint(
                path,
                {  # type: ignore[arg-type]
                    "format": _CHECKPOINT_FORMAT,
                    "step": result.steps,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if cuda_devices else [],
                    "numpy_rng": rng.bit_generator.state,
                    "history": result.history,
                    "val_losses": result.val_losses,
                    "seconds": result.seconds,
                    "config": config.model_dump_json(),
                    "best_model": stopping.state,
                },
                retry=retry,
            )

        def run_validation() -> float:
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                value = float(validate(model))  # type: ignore[misc]
            model.train()
            result.val_losses.append((result.steps, value))
            if config.patience is not None:
                stopping.record(result.steps, value, model)
            logger.info("step %d: validation loss %.5f", result.steps, value)
            return value

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        model.train()
        start = time.perf_counter()
        seconds_before = result.seconds
        if validate is not None and result.steps == 0:
            run_validation()  # the untrained model: a baseline to compare with
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(description, total=config.num_steps, completed=result.steps)
            while result.steps < config.num_steps and not stopping.exhausted:
                inputs, targets = sample_batch(rng, batch_size)
                inputs = inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                    prediction = model(inputs)
                loss = loss_fn(prediction.float(), targets.float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"training loss is {value} at step {result.steps + 1} "
                        f"(lower learning_rate, now {config.learning_rate})"
                    )
                result.history.append(value)
                result.steps += 1
                step = result.steps
                done = step == config.num_steps
                result.seconds = seconds_before + time.perf_counter() - start
                if validate is not None and (step % config.validate_every == 0 or done):
                    run_validation()
                if path is not None and (step % every == 0 or done or stopping.exhausted):
                    checkpoint()
                recent = float(np.mean(result.history[-50:]))
                bar.update(task, completed=step, description=f"{description} loss {recent:.4f}")
        if stopping.state is not None:
            if stopping.exhausted:
                logger.info("early stop at step %d: keeping step %d", result.steps, stopping.step)
            model.load_state_dict(stopping.state)
            result.best_step = stopping.step
        model.eval()
    return result
