"""Options of D2R: the teacher of stages I-II and the 3D network of stage III."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, ValidationError, model_validator

from vemrestore.methods._base import AxialConfig, MethodConfig, method_config_class
from vemrestore.methods._trained import TrainedConfig
from vemrestore.methods.skelem.config import split_steps
from vemrestore.train import TrainConfig

__all__ = ["STEP_BUDGET_SHARES", "TEACHERS", "D2RConfig"]

# Methods that can restore the XZ/YZ planes of stage II, by ``teacher`` option.
TEACHERS = {"diffusion": "diffusion2d", "skeleton": "skeleton", "skelem": "skelem"}
# How a budget of training steps splits between the teacher and the 3D network.
STEP_BUDGET_SHARES = {"teacher": 0.6, "network": 0.4}
# Sampling options routed to the teacher (``--sampling-steps``, ``--samples`` and,
# through ``inference`` overrides, its strength and seed).
_SAMPLING_OPTIONS = ("num_inference_steps", "num_samples", "strength", "seed")


class D2RConfig(TrainedConfig, AxialConfig):
    """Options of the D2R method.

    Attributes
    ----------
    scale_factor : float
        The axial factor; an integer (the 3D network lays out whole fine
        slices per section).
    profile : {"box", "gaussian"}
        Slice profile of the axial forward model (teacher pairs, stage III
        pairs, data consistency).
    teacher : {"diffusion", "skeleton", "skelem"}
        What restores the XZ and YZ planes in stage II: the 2D diffusion
        model (``diffusion2d``, D2R proper), or the skeleton or SkelEM, to
        tell what the diffusion contributes.
    teacher_options : dict
        Options of the teacher's config (``PlaneDiffusionConfig``,
        ``SkeletonConfig`` or ``SkelEMConfig``); ``scale_factor`` and
        ``profile`` are D2R's.
    recovered_dir : pathlib.Path, optional
        Where stage II writes the recovered volumes ``xz.zarr`` and
        ``yz.zarr`` (kept). Default: the training run's checkpoint folder,
        or a temporary folder removed after training.
    channels, num_blocks, wavelet_levels : int
        The 3D network (``D2RNet3D``).
    patch_sections : int
        Sections per stage III training window along the degraded axis (one
        more each side gives context); ``train.patch_size`` is its lateral size.
    hf_weight : float
        Weight of the detail-band (high-frequency) L1 term of stage III.
    consistency_weight : float
        Weight of the data-consistency term on crops of the real input
        (0: no real crops are drawn).
    halo_sections : int
        Extra sections each side at inference for the cubic spline (added to
        the network's own reach). The spline is global: with 8 a block differs
        from the whole volume by about 1e-4 of the intensity range, with 4 by 2e-3.
    train : TrainConfig
        Stage III training options.
    inference : InferenceConfig
        ``halo`` is the lateral context in pixels each side (at least the
        network's receptive field is used); a block is one network call, so
        ``batch_size`` has no effect.
    """

    method: Literal["d2r"] = "d2r"
    profile: Literal["box", "gaussian"] = "box"
    teacher: Literal["diffusion", "skeleton", "skelem"] = "diffusion"
    teacher_options: dict[str, Any] = Field(default_factory=dict)
    recovered_dir: Path | None = None
    channels: int = Field(16, ge=1, le=256)
    num_blocks: int = Field(3, ge=0, le=32)
    wavelet_levels: int = Field(2, ge=1, le=5)
    patch_sections: int = Field(4, ge=1, le=64)
    hf_weight: float = Field(1.0, ge=0.0)
    consistency_weight: float = Field(0.0, ge=0.0)
    halo_sections: int = Field(8, ge=0, le=256)
    train: TrainConfig = Field(
        default_factory=partial(
            TrainConfig, num_steps=600, batch_size=4, patch_size=40, learning_rate=5e-4
        )
    )

    sampling_options: ClassVar[tuple[str, ...]] = _SAMPLING_OPTIONS
    merge_partial_train: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check(self) -> D2RConfig:
        if self.scale_factor != round(self.scale_factor):
            raise ValueError(
                f"d2r needs an integer scale_factor, got {self.scale_factor:g} (use 2, 3, 4, ...)"
            )
        if "scale_factor" in self.teacher_options or "profile" in self.teacher_options:
            raise ValueError(
                "teacher_options must not set scale_factor or profile (they are d2r's own)"
            )
        try:
            self.teacher_config()
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in error.errors()
            )
            raise ValueError(f"teacher_options for teacher {self.teacher!r}: {problems}") from None
        return self

    @property
    def factor(self) -> int:
        """``scale_factor`` as an integer."""
        return round(self.scale_factor)

    def teacher_config(self) -> MethodConfig:
        """The validated config of the stage II teacher."""
        name = TEACHERS[self.teacher]
        options = {
            "method": name,
            "scale_factor": self.scale_factor,
            "profile": self.profile,
            **self.teacher_options,
        }
        # The teacher trains where D2R does, unless its own options say otherwise.
        train = dict(options.get("train", {}))
        for key in ("device", "amp", "num_threads"):
            train.setdefault(key, getattr(self.train, key))
        options["train"] = train
        return method_config_class(name).model_validate(options)

    def with_step_budget(self, steps: int) -> Self:
        """``steps`` training steps in all: teacher 60 % (split further as it splits its own),
        3D network 40 %, at least one each.

        Examples
        --------
        >>> config = D2RConfig(scale_factor=8).with_step_budget(1000)
        >>> config.teacher_config().train.num_steps, config.train.num_steps
        (600, 400)
        """
        counts = split_steps(steps, tuple(STEP_BUDGET_SHARES), STEP_BUDGET_SHARES)
        teacher = self.teacher_config().with_step_budget(counts["teacher"])  # type: ignore[attr-defined]
        return type(self).model_validate(
            {
                **self.model_dump(),
                "teacher_options": teacher.model_dump(
                    exclude={"method", "scale_factor", "profile"}
                ),
                "train": self.train.model_copy(update={"num_steps": counts["network"]}),
            }
        )

    def with_sampling(self, **options: Any) -> Self:
        """This config with the teacher's sampling options (``num_inference_steps``...) set.

        Raises
        ------
        ValueError
            If the teacher does not sample (the skeleton).
        """
        teacher = self.teacher_config()
        inference = getattr(teacher, "inference", None)
        unknown = [
            key for key in options if inference is None or key not in type(inference).model_fields
        ]
        if unknown:
            raise ValueError(
                f"sampling options {unknown} do not apply to teacher {self.teacher!r} "
                "(use teacher diffusion or skelem)"
            )
        merged = {**self.teacher_options}
        merged["inference"] = {**merged.get("inference", {}), **options}
        return type(self).model_validate({**self.model_dump(), "teacher_options": merged})
