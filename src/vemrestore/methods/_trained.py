"""The base every learned method extends: the lifecycle written once.

A learned method differs from the others in its networks, its training pairs
and losses, and its prediction step. What they share lives here: the config
split into training options (``train``) and inference options (``inference``),
the seeded build of the networks, the device and bf16 autocast at inference,
the weights' digest for resume, pickling for ``dask.distributed``, and the
save/load layout (``config.json``, ``weights.pt``, JSON state files).

A subclass defines ``build_networks`` and, if it has state beside the weights,
``state_json``/``load_state_json`` (``NormalizedMethod`` does so for the
percentile normalisation most methods keep). Its ``fit`` draws training pairs
(an ``ArraySampler`` hands them to the loop as tensors) and trains with
``train_network``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self, TypedDict, Unpack

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from vemrestore.errors import UserInputError
from vemrestore.methods._base import MethodConfig
from vemrestore.methods._persist import (
    apply_weights,
    cpu_state,
    load_json_state,
    load_weights,
    require_files,
    save_trained,
    train_record,
    weights_digest,
)
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import (
    Batch,
    TrainConfig,
    TrainResult,
    fit_model,
    resolve_device,
    split_batches,
)

__all__ = [
    "VALIDATION_BATCHES",
    "ArraySampler",
    "BatchSampler",
    "FitOptions",
    "InferenceConfig",
    "NormalizedMethod",
    "SamplingConfig",
    "TrainedConfig",
    "TrainedMethod",
    "migrate_legacy_options",
    "stage_options",
]

# Fixed validation samples of a method, in multiples of the training batch size.
VALIDATION_BATCHES = 4


class InferenceConfig(BaseModel):
    """How a trained method predicts (never what it learnt).

    Attributes
    ----------
    device : {"auto", "cpu", "cuda"}
        "auto" takes CUDA when available. Defaults to ``train.device``.
    amp : bool
        bfloat16 autocast on CUDA (ignored on CPU). Defaults to ``train.amp``.
    halo : int
        Network context in (output) voxels each side of a block's output
        region; blocks equal a whole-volume pass where it covers the
        network's receptive field.
    batch_size : int
        Planes (or slices) per network call.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    halo: int = Field(32, ge=0, le=4096)
    batch_size: int = Field(8, ge=1, le=4096)


class SamplingConfig(InferenceConfig):
    """Inference options of a diffusion method.

    Attributes
    ----------
    num_inference_steps : int
        Network calls per sample (DDIM steps).
    strength : float
        ``t0 / T`` of a truncated start; 1 samples from pure noise.
    num_samples : int
        Samples (seeds) averaged; more than one also gives a per-voxel std.
    seed : int
        Seed of the sampling noise (keyed by position, so blocks agree).
    """

    num_inference_steps: int = Field(4, ge=1, le=100_000)
    strength: float = Field(1.0, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=2**63 - 1)


def migrate_legacy_options(data: Any, renames: Mapping[str, str]) -> Any:
    """Move options written under their old top-level names into ``inference``.

    Config files and saved models from before the training/inference split
    (``halo_yx``, ``planes_per_batch``, a top-level sampling ``num_steps``...)
    still load. Where ``inference`` leaves ``device`` or ``amp`` out, they
    follow ``train``'s, so ``train={"device": "cpu"}`` keeps a method on the CPU.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    inference = data.get("inference")
    inference = dict(inference) if isinstance(inference, Mapping) else inference
    for old, new in renames.items():
        if old not in data:
            continue
        value = data.pop(old)
        if not isinstance(inference, dict):
            inference = {}
        if new in inference and inference[new] != value:
            raise ValueError(
                f"{old}={value!r} (an old name of inference.{new}) contradicts "
                f"inference.{new}={inference[new]!r} (keep only inference.{new})"
            )
        inference[new] = value
    train = data.get("train")
    if isinstance(train, Mapping) and (inference is None or isinstance(inference, dict)):
        inherited = {key: train[key] for key in ("device", "amp") if key in train}
        if inherited:
            inference = {**inherited, **(inference or {})}
    if inference is not None:
        data["inference"] = inference
    return data


class TrainedConfig(MethodConfig):
    """Options of a learned method: training apart from inference.

    Subclasses narrow ``train`` and ``inference`` to their own defaults and
    list old option names in ``legacy_names`` (old name -> field of ``inference``).
    """

    legacy_names: ClassVar[dict[str, str]] = {
        "halo_yx": "halo",
        "planes_per_batch": "batch_size",
    }

    # Whether a ``train`` mapping given in part is completed from this class's own
    # ``train`` default (True) or from ``TrainConfig``'s (False, the older behaviour
    # the skeleton and slice methods keep so that their benchmarks reproduce).
    merge_partial_train: ClassVar[bool] = False

    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        data = migrate_legacy_options(data, cls.legacy_names)
        # Training options given in part keep this method's own defaults for the rest
        # (e.g. its batch size and learning rate), not the generic TrainConfig's.
        train = data.get("train") if isinstance(data, dict) else None
        factory = cls.model_fields["train"].default_factory
        if cls.merge_partial_train and isinstance(train, Mapping) and factory is not None:
            data = {**data, "train": {**factory().model_dump(), **train}}  # type: ignore[call-arg]
        return data

    def with_step_budget(self, steps: int) -> Self:
        """This config training ``steps`` optimiser steps in all (``train.num_steps``), validated.

        A method of several training stages overrides it to split the budget across them.
        """
        train = self.train.model_copy(update={"num_steps": steps})
        return type(self).model_validate(self.model_copy(update={"train": train}).model_dump())


class FitOptions(TypedDict, total=False):
    """Keyword options of every ``fit``, passed on to ``vemrestore.train.fit_model``.

    Attributes
    ----------
    checkpoint_dir : pathlib.Path or None
        Where training checkpoints go (a method of several stages gives each
        a subfolder).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir``.
    progress : bool
        Show a progress bar.
    description : str
        Label of the progress bar (default: the method's name; SkelEM's stages
        are ``skeleton``, ``refiner`` and ``cycle``).
    """

    checkpoint_dir: Path | None
    resume: bool
    progress: bool
    description: str


def stage_options(options: FitOptions, name: str, *, label: str | None = None) -> FitOptions:
    """``options`` of training stage ``name`` of a method of several stages.

    The progress bar shows ``label`` (default ``name``); checkpoints go to
    ``checkpoint_dir / name``.
    """
    staged: FitOptions = {**options, "description": name if label is None else label}
    checkpoint_dir = options.get("checkpoint_dir")
    if checkpoint_dir is not None:
        staged["checkpoint_dir"] = Path(checkpoint_dir) / name
    return staged


class BatchSampler(Protocol):
    """What ``fit_model`` draws training batches from."""

    def sample_batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Inputs and targets, all randomness from ``rng``."""


class ArraySampler:
    """A pair sampler that draws numpy arrays; the training loop gets them as tensors.

    A subclass defines ``draw``.
    """

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of ``batch_size`` samples, float32, all randomness from ``rng``."""
        raise NotImplementedError

    def sample_batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """``draw`` as tensors (what ``fit_model`` calls)."""
        inputs, targets = self.draw(rng, batch_size)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def validation_batches(self, train: TrainConfig) -> list[Batch]:
        """Fixed validation samples: ``VALIDATION_BATCHES`` batches of ``train.batch_size``.

        They come from one draw, seeded by ``[train.seed, 1]``.
        """
        inputs, targets = self.draw(
            np.random.default_rng([train.seed, 1]), VALIDATION_BATCHES * train.batch_size
        )
        return split_batches(inputs, targets, train.batch_size)


class TrainedMethod:
    """Shared lifecycle of a learned method; subclasses add pairs, losses and prediction.

    Attributes
    ----------
    config : TrainedConfig
    networks : dict of str to torch.nn.Module, or None
        The trained networks by name (None until ``fit`` or ``load_state``).
    train_result : TrainResult or None
        The last training run's losses (None for a loaded method).
    prior_record : dict or None
        The record of the prior the last training started from (None: random weights).
    """

    name: ClassVar[str]
    # Set by ``register_method``.
    config_class: ClassVar[type[TrainedConfig]]
    # JSON files ``save`` writes beside ``weights.pt`` (``state_json`` keys).
    state_files: ClassVar[tuple[str, ...]] = ()
    # Attributes a pickle carries beside the config, weights and JSON state
    # (dask.distributed workers need them): a frozen skeleton, a damage map.
    pickled_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TrainedConfig) -> None:
        self.config = config
        self.networks: dict[str, nn.Module] | None = None
        self.train_result: TrainResult | None = None
        self.prior_record: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._device: torch.device | None = None

    # -- what a subclass defines -------------------------------------------

    def build_networks(self) -> dict[str, nn.Module]:
        """Untrained networks by name, as the config describes them."""
        raise NotImplementedError

    def state_json(self) -> dict[str, Any]:
        """JSON-ready state beside the weights, by file name (e.g. ``normalization.json``)."""
        return {}

    def load_state_json(self, files: dict[str, Any]) -> None:
        """Restore what ``state_json`` returned (raise ``KeyError``/``ValueError`` if damaged)."""

    def training_record(self) -> dict[str, Any] | None:
        """What ``training.json`` holds after a training in this session (None: no file).

        By default the loss history, the config of the (only) network and the
        prior trained from (its digest, steps and commit).
        """
        if self.train_result is None or self.networks is None:
            return None
        (network,) = self.networks.values()
        return self.with_prior(train_record(self.train_result, model=network.config))

    def with_prior(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with the prior trained from (its digest, steps and commit), if any."""
        if self.prior_record is None:
            return record
        keys = ("sha256", "steps", "commit")
        return {**record, "prior": {key: self.prior_record.get(key) for key in keys}}

    # -- training ------------------------------------------------------------

    def train_network(
        self,
        model: nn.Module,
        sampler: BatchSampler,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        validate: Callable[[nn.Module], float] | None,
        *,
        config: TrainConfig | None = None,
        **options: Unpack[FitOptions],
    ) -> TrainResult:
        """Train ``model`` in place on batches of ``sampler`` (``vemrestore.train.fit_model``).

        ``config`` defaults to ``config.train``; ``options`` are those of ``fit``
        (``FitOptions``).
        """
        return fit_model(
            model,
            sample_batch=sampler.sample_batch,
            loss_fn=loss_fn,
            config=self.config.train if config is None else config,
            validate=validate,
            **{"description": self.name, **options},
        )

    # -- networks and device -----------------------------------------------

    @property
    def outputs(self) -> tuple[str, ...]:
        """Named arrays ``predict_block`` can return; the first is the restoration."""
        return ("restored",)

    def seeded_networks(self) -> dict[str, nn.Module]:
        """``build_networks()`` with torch seeded by ``train.seed`` (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            return self.build_networks()

    def set_trained(self, networks: dict[str, nn.Module], **state: Any) -> None:
        """Install trained ``networks`` (and attributes ``state``) for inference."""
        with self._lock:
            self.networks = networks
            for key, value in state.items():
                setattr(self, key, value)
            self._device = None

    def require_trained(self) -> dict[str, nn.Module]:
        """The networks; a user error if the method was neither fitted nor loaded."""
        if self.networks is None:
            raise UserInputError(
                f"the {self.name} method is not trained (call fit(volume) or "
                "load_method(path) first)"
            )
        return self.networks

    def inference_device(self) -> torch.device:
        """The device of ``inference.device``, with every network moved there in eval mode."""
        networks = self.require_trained()
        with self._lock:
            if self._device is None:
                self._device = resolve_device(self.config.inference.device)
                if self._device.type == "cpu":
                    torch.set_flush_denormal(True)
                for net in networks.values():
                    net.to(self._device).eval()
            return self._device

    @contextlib.contextmanager
    def inference_context(self, device: torch.device) -> Iterator[None]:
        """``torch.inference_mode`` plus bf16 autocast on CUDA when ``inference.amp``."""
        amp = self.config.inference.amp and device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            yield

    def run_fingerprint(self) -> dict[str, Any]:
        """The weights' digest: a blockwise run resumes only with the same networks."""
        return {"weights": weights_digest(*self.require_trained().values())}

    def with_inference(self, **options: Any) -> Self:
        """The same trained state with other inference options (validated).

        The copy shares the networks (read-only) with ``self``; its config
        records the options, so a blockwise run of it is told apart from one
        of ``self``.

        Raises
        ------
        UserInputError
            If an option is not an inference option (change the config and fit again).
        """
        known = type(self.config.inference).model_fields
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UserInputError(
                f"with_inference takes inference options only ({', '.join(known)}), got "
                f"{unknown} (change training options in the config and fit again)"
            )
        inference = self.config.inference.model_copy(update=options)
        config = type(self.config).model_validate(
            {**self.config.model_dump(), "inference": inference.model_dump()}
        )
        return copy_state(self, config)

    # -- pickling (dask.distributed) -----------------------------------------

    def _weights(self) -> Any:
        # One network: its state dict (the layout of every saved model so far);
        # several: a mapping by network name.
        networks = self.require_trained()
        if len(networks) == 1:
            return next(iter(networks.values())).state_dict()
        return {name: net.state_dict() for name, net in networks.items()}

    def _networks_from(self, weights: Any, path: Path) -> dict[str, nn.Module]:
        networks = self.seeded_networks()
        if len(networks) == 1:
            (net,) = networks.values()
            apply_weights(net, weights, path)
        else:
            if not isinstance(weights, Mapping) or set(weights) != set(networks):
                raise UserInputError(
                    f"{Path(path) / 'weights.pt'} does not hold the networks "
                    f"{sorted(networks)} of this config; save the method again"
                )
            for name, net in networks.items():
                apply_weights(net, weights[name], path)
        for net in networks.values():
            net.eval()
        return networks

    def __getstate__(self) -> dict[str, Any]:
        trained = self.networks is not None
        return {
            "config": self.config.model_dump(),
            "weights": cpu_state(self._weights()) if trained else None,
            "json": self.state_json() if trained else None,
            **{name: getattr(self, name) for name in self.pickled_attributes},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(self.config_class.model_validate(state["config"]))  # type: ignore[misc]
        if state["weights"] is not None:
            networks = self._networks_from(state["weights"], Path("<pickle>"))
            self.load_state_json(state["json"])
            self.set_trained(networks)
        for name in self.pickled_attributes:
            setattr(self, name, state[name])

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt``, the JSON state files and, after
        training in this session, ``training.json`` into directory ``path``."""
        self.require_trained()
        save_trained(
            path,
            self.config,
            self._weights(),
            json_files=self.state_json(),
            training=self.training_record() if self.train_result is not None else None,
        )

    def load_state(self, path: Path) -> None:
        """Restore what ``save`` wrote (see ``load_method``)."""
        require_files(path, ("weights.pt", *self.state_files), type(self).__name__)
        weights = load_weights(path)
        files = {name: load_json_state(Path(path) / name) for name in self.state_files}
        networks = self._networks_from(weights, path)
        try:
            self.load_state_json(files)
        except (KeyError, ValueError, TypeError) as exc:
            raise UserInputError(
                f"{path} holds a corrupt or incomplete model ({exc}); save the method again"
            ) from exc
        self.set_trained(networks)


class NormalizedMethod(TrainedMethod):
    """A learned method whose networks see percentile-normalised data (``normalization.json``).

    Attributes
    ----------
    normalization : PercentileNormalization or None
        Set with the networks (None until ``fit`` or ``load_state``).
    """

    state_files = ("normalization.json",)

    def __init__(self, config: TrainedConfig) -> None:
        super().__init__(config)
        self.normalization: PercentileNormalization | None = None

    def state_json(self) -> dict[str, Any]:
        return {"normalization.json": self.require_normalization().to_dict()}

    def load_state_json(self, files: dict[str, Any]) -> None:
        self.normalization = PercentileNormalization.from_dict(files["normalization.json"])

    def require_normalization(self) -> PercentileNormalization:
        """The normalisation; a user error if the method was neither fitted nor loaded."""
        self.require_trained()
        assert self.normalization is not None  # set together with the networks
        return self.normalization


def copy_state(method: TrainedMethod, config: TrainedConfig) -> Any:
    """A method of ``config`` sharing ``method``'s trained state (networks, statistics)."""
    other = type(method)(config)
    shared = {k: v for k, v in vars(method).items() if k not in ("config", "_lock", "_device")}
    vars(other).update(shared)
    return other
