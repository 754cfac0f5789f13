"""The D2R method: a plane teacher recovers XZ/YZ volumes, a 3D network learns from them.

Stage I trains the teacher on the volume's own XY sections (by default the
2D diffusion model ``diffusion2d``). Stage II runs it, block by block through
the engine, on every XZ and every YZ plane and keeps the two recovered
volumes (Zarr, resumable; the sampling noise is keyed by position, so blocks
agree). Stage III trains ``D2RNet3D`` on windows of the recovered volumes
degraded along their untouched fine in-plane axis (y for the XZ volume, x
for the YZ volume) with the same forward model, so its pairs look like the
real problem; at inference only the 3D network runs, on the thick sections
directly: no diffusion, one network call per block.

Stage II is a blockwise restoration, the engine's job; D2R is the one method
whose training data is itself a restoration, so its ``fit`` calls the engine
(imported when needed; the engine does not import methods' modules).

Reference: the D2R idea as described in the project's issue tracker (a 2D
diffusion model recovers XZ/YZ planes, a 3D network distils the recovered
volume).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from torch import nn

from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import (
    RESTORED,
    XZ,
    YZ,
    AxialMethod,
    BlockRequest,
    get_method,
    register_method,
)
from vemrestore.methods._persist import load_method
from vemrestore.methods._trained import FitOptions, NormalizedMethod, stage_options
from vemrestore.methods.d2r.config import TEACHERS, D2RConfig
from vemrestore.methods.d2r.pairs import (
    PAIR_MARGIN,
    PackedNet3D,
    PairSource,
    StageThreePairs,
    stage_three_loss,
)
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.models.d2r3d import D2RNet3D
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainResult, fixed_validation

__all__ = ["D2R", "PlaneOrientations"]

_RECOVERED_RECORD = "recovered.json"
# Beside the saved teacher: the signature of the input it was trained on.
_TEACHER_INPUT = "trained_on.json"
# Stage III holds out the last windows of each recovered volume along its degraded axis.
_VALIDATION_FRACTION = 0.2


class PlaneOrientations:
    """A fitted plane method seen by the engine with its XZ and YZ restorations as outputs.

    ``restored`` is their mean; geometry, fingerprint and config are the
    wrapped method's.
    """

    def __init__(self, method: Any) -> None:
        self.method = method
        self.config = method.config
        self.name = method.name

    @property
    def outputs(self) -> tuple[str, ...]:
        return (RESTORED, XZ, YZ)

    def fit(self, volume: Volume) -> PlaneOrientations:
        return self

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.method.output_shape(input_shape)

    def output_voxel_size(self, voxel_size: tuple[float, float, float]) -> Any:
        return self.method.output_voxel_size(voxel_size)

    def output_translation(self, translation: Any, voxel_size: Any) -> Any:
        return self.method.output_translation(translation, voxel_size)

    def input_region(self, output_region: Any, input_shape: Any) -> Any:
        return self.method.input_region(output_region, input_shape)

    def run_fingerprint(self) -> dict[str, Any]:
        return self.method.run_fingerprint()

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        planes = self.method.predict_orientations(block, request)
        planes[RESTORED] = 0.5 * (planes[XZ] + planes[YZ])
        return {name: planes[name] for name in request.outputs}

    def save(self, path: Path) -> None:
        self.method.save(path)


@register_method("d2r", D2RConfig)
class D2R(AxialMethod, NormalizedMethod):
    """Diffusion-recovered planes distilled into a fast 3D network (see the module docstring).

    Parameters
    ----------
    config : D2RConfig

    Attributes
    ----------
    teacher_result : TrainResult or None
        Loss of the teacher's training in this session (None if loaded or resumed).
    stage_seconds : dict of str to float
        Wall time of each stage run in this session (``teacher``,
        ``recovered``, ``network``).

    Examples
    --------
    >>> from vemrestore.methods import create_method
    >>> tiny = {"num_steps": 2, "patch_size": 16, "batch_size": 2}
    >>> method = create_method(
    ...     "d2r", scale_factor=4, teacher="skeleton", channels=4, num_blocks=1,
    ...     patch_sections=2, train=tiny,
    ...     teacher_options={"base_channels": 4, "depth": 2, "train": tiny})
    >>> vol = Volume(np.random.default_rng(0).random((12, 32, 32), dtype=np.float32))
    >>> method.fit(vol, progress=False).output_shape(vol.shape)
    (48, 32, 32)
    """

    name = "d2r"
    config: D2RConfig

    def __init__(self, config: D2RConfig) -> None:
        super().__init__(config)
        self.teacher_result: TrainResult | None = None
        self.stage_seconds: dict[str, float] = {}

    def build_networks(self) -> dict[str, nn.Module]:
        cfg = self.config
        options = {"channels": cfg.channels, "num_blocks": cfg.num_blocks}
        return {"net": D2RNet3D(cfg.factor, **options, wavelet_levels=cfg.wavelet_levels)}

    @property
    def receptive_field(self) -> tuple[int, int]:
        """The 3D network's reach: (sections, pixels) each side."""
        return D2RNet3D.reach(self.config.num_blocks, self.config.wavelet_levels)

    # -- training ------------------------------------------------------------

    def fit(self, volume: Volume, **options: Unpack[FitOptions]) -> D2R:
        """Run the three stages; each resumes from ``checkpoint_dir`` (``FitOptions``).

        ``checkpoint_dir/teacher`` holds the teacher's checkpoints and, once
        trained, the teacher itself (``teacher/model``); stage II writes
        ``xz.zarr`` and ``yz.zarr`` to ``config.recovered_dir`` or
        ``checkpoint_dir/recovered`` (a temporary folder without either);
        ``checkpoint_dir/network`` holds the 3D network's checkpoints.

        Raises
        ------
        UserInputError
            If the volume is too small for the teacher or the stage III windows,
            or ``recovered_dir`` holds volumes this run did not write.
        """
        self._check_size(volume.shape)
        checkpoint_dir = options.get("checkpoint_dir")
        with contextlib.ExitStack() as stack:
            if self.config.recovered_dir is not None:
                recovered_dir = Path(self.config.recovered_dir)
            elif checkpoint_dir is not None:
                recovered_dir = Path(checkpoint_dir) / "recovered"
            else:
                recovered_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            teacher = self.fit_teacher(volume, **options)
            progress = options.get("progress", True)
            recovered = self.recover(teacher, volume, recovered_dir, progress=progress)
            self.fit_network(volume, recovered, **options)
        if self.config.recovered_dir is None and checkpoint_dir is not None:
            # Two float32 fine volumes: kept only while a later stage may need them.
            shutil.rmtree(recovered_dir, ignore_errors=True)
        return self

    def _check_size(self, shape: tuple[int, ...]) -> None:
        """Refuse, before any training, a volume too small for the stage III windows."""
        cfg = self.config
        window = (cfg.patch_sections + 2 * PAIR_MARGIN) * cfg.factor
        _, height, width = shape
        fine = self.grid.num_fine(shape[0])
        if min(height, width) < window or min(fine, height, width) < cfg.train.patch_size:
            raise UserInputError(
                f"d2r at factor {cfg.factor} needs at least {window} pixels along y and x and "
                f"{cfg.train.patch_size} fine slices, got a volume of shape {tuple(shape)} "
                "(use a larger volume, or lower patch_sections or train.patch_size)"
            )

    def fit_teacher(self, volume: Volume, **options: Unpack[FitOptions]) -> Any:
        """Stage I: the teacher trained on the volume's XY sections (or loaded when finished)."""
        from vemrestore.io import volume_signature

        checkpoint_dir = options.get("checkpoint_dir")
        config = self.config.teacher_config()
        saved = None if checkpoint_dir is None else Path(checkpoint_dir) / "teacher" / "model"
        trained_on = {"input": volume_signature(volume)}
        if saved is not None and options.get("resume") and (saved / "config.json").is_file():
            teacher = load_method(saved)
            same_training = teacher.config.model_dump(exclude={"inference"}) == config.model_dump(
                exclude={"inference"}
            )
            record = json.loads((saved / _TEACHER_INPUT).read_text())
            if not same_training or record != json.loads(json.dumps(trained_on)):
                raise UserInputError(
                    f"{saved} holds a teacher trained with other options or on another input "
                    "(start without --resume, or remove the run folder)"
                )
            return teacher.with_inference(**config.inference.model_dump())  # type: ignore[attr-defined]
        with _timed(self.stage_seconds, "teacher"):
            teacher = get_method(TEACHERS[self.config.teacher])(config)
            teacher.fit(volume, **stage_options(options, "teacher", label="d2r teacher"))
        self.teacher_result = getattr(teacher, "train_result", None)
        if saved is not None:
            partial = saved.with_name("model.partial")
            shutil.rmtree(partial, ignore_errors=True)
            teacher.save(partial)
            (partial / _TEACHER_INPUT).write_text(json.dumps(trained_on))
            shutil.rmtree(saved, ignore_errors=True)
            partial.rename(saved)
        return teacher

    def recover(
        self, teacher: Any, volume: Volume, directory: Path, *, progress: bool = True
    ) -> dict[str, Volume]:
        """Stage II: the teacher's XZ and YZ restorations, written blockwise to ``directory``.

        A finished pair of volumes of the same teacher and input is reused; a
        partial one resumes (the engine's ledger). ``recovered.json`` records the
        teacher and input; a folder holding volumes without it, or of another
        teacher or input, is refused and left untouched.
        """
        from vemrestore.engine import predict_volume
        from vemrestore.io import open_volume, volume_signature

        directory = Path(directory)
        paths = {name: directory / f"{name}.zarr" for name in (XZ, YZ)}
        record = {
            "teacher": teacher.config.model_dump(mode="json"),
            "fingerprint": teacher.run_fingerprint(),
            "input": volume_signature(volume),
        }
        record_path = directory / _RECOVERED_RECORD
        missing = {name: path for name, path in paths.items() if not path.exists()}
        if len(missing) < len(paths) or record_path.exists():
            found = json.loads(record_path.read_text()) if record_path.exists() else None
            if found != json.loads(json.dumps(record)):
                raise UserInputError(
                    f"{directory} holds recovered volumes of another teacher or input, or "
                    "volumes this program did not write (choose another recovered_dir)"
                )
        if missing:
            directory.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=1))
            with _timed(self.stage_seconds, "recovered"):
                predict_volume(
                    PlaneOrientations(teacher),  # type: ignore[arg-type]
                    volume,
                    None,
                    extra_outputs=missing,
                    progress=progress,
                    pyramid=False,
                    # A run killed between the two final renames left one volume finished:
                    # the other (ours, per the record) is computed again from the start.
                    overwrite=len(missing) < len(paths),
                )
        return {name: open_volume(str(path)) for name, path in paths.items()}

    def fit_network(
        self, volume: Volume, recovered: dict[str, Volume], **options: Unpack[FitOptions]
    ) -> D2R:
        """Stage III: the 3D network on the recovered volumes, degraded along y (XZ) and x (YZ).

        With ``consistency_weight`` > 0 crops of ``volume`` add the
        data-consistency term. ``train_result`` holds the loss, validated on
        windows held out at the end of each recovered volume.
        """
        normalization = PercentileNormalization.from_data(volume.data)
        sources = [(recovered[XZ].data, 1), (recovered[YZ].data, 2)]
        observed = volume.data if self.config.consistency_weight > 0 else None
        return self._train_network(sources, normalization, observed, normalization, **options)

    def fit_supervised(
        self, reference: Volume, volume: Volume, **options: Unpack[FitOptions]
    ) -> D2R:
        """The same 3D network trained supervised on an isotropic ``reference``, degraded along z.

        The comparison the bench needs ("comparable to supervised training");
        ``volume`` (the input to restore) gives the normalisation used at inference.
        """
        normalization = PercentileNormalization.from_data(volume.data)
        reference_norm = PercentileNormalization.from_data(reference.data)
        return self._train_network(
            [(reference.data, 0)], reference_norm, None, normalization, **options
        )

    def _train_network(
        self,
        fine: list[tuple[Any, int]],
        fine_normalization: PercentileNormalization,
        observed: Any,
        normalization: PercentileNormalization,
        **options: Unpack[FitOptions],
    ) -> D2R:
        cfg = self.config
        pairs = {
            "factor": cfg.factor,
            "profile": cfg.profile,
            "num_sections": cfg.patch_sections,
            "patch_size": cfg.train.patch_size,
        }
        window = (cfg.patch_sections + 2 * PAIR_MARGIN) * cfg.factor
        train_sources, val_sources = [], []
        for data, axis in fine:
            length = data.shape[axis]
            split = max(length - max(window, math.ceil(_VALIDATION_FRACTION * length)), window)
            train_sources.append(PairSource(data, axis, fine_normalization, (0, split)))
            if length - split >= window:
                val_sources.append(PairSource(data, axis, fine_normalization, (split, length)))
        if observed is not None:
            rows = (0, observed.shape[0])
            train_sources.append(PairSource(observed, 0, normalization, rows, observed=True))
        sampler = StageThreePairs(train_sources, **pairs)
        loss_fn = stage_three_loss(
            margin=PAIR_MARGIN,
            factor=cfg.factor,
            profile=cfg.profile,
            hf_weight=cfg.hf_weight,
            consistency_weight=cfg.consistency_weight,
        )
        validate = None
        if val_sources:
            batches = StageThreePairs(val_sources, **pairs).validation_batches(cfg.train)
            validate = fixed_validation(batches, loss_fn)
        net = self.seeded_networks()["net"]
        with _timed(self.stage_seconds, "network"):
            result = self.train_network(
                PackedNet3D(net),  # type: ignore[arg-type]
                sampler,
                loss_fn,
                validate,
                **stage_options(options, "network", label="d2r network"),
            )
        net.requires_grad_(False).eval()
        self.set_trained({"net": net}, normalization=normalization, train_result=result)
        return self

    # -- prediction ----------------------------------------------------------

    def _halo(self) -> tuple[int, int]:
        """(sections, pixels) of context each side of a block's output."""
        sections, lateral = self.receptive_field
        return sections + self.config.halo_sections, max(lateral, self.config.inference.halo)

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        zs, ys, xs = output_region
        num, height, width = input_shape
        k = self.config.factor
        sections, lateral = self._halo()
        z = slice(max(zs.start // k - sections, 0), min(-(-zs.stop // k) + sections, num))
        y = slice(max(ys.start - lateral, 0), min(ys.stop + lateral, height))
        x = slice(max(xs.start - lateral, 0), min(xs.stop + lateral, width))
        return z, y, x

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """``Method.predict_block``: the 3D network on the block's sections, cropped."""
        normalization = self.require_normalization()
        net = self.require_trained()["net"]
        device = self.inference_device()
        k = self.config.factor
        z0, y0, x0 = request.input_start
        sections = normalization.apply(block)
        cubic = upsample_axial(
            sections, k, kind="cubic", fine_start=z0 * k, num_fine=len(block) * k, section_start=z0
        )
        with self.inference_context(device):
            fine = net(
                torch.from_numpy(sections)[None, None].to(device),
                torch.from_numpy(cubic)[None, None].to(device),
            )
        fine = fine[0, 0].float().cpu().numpy()
        zs, ys, xs = request.output_region
        first = z0 * k
        region = (
            slice(zs.start - first, zs.stop - first),
            slice(ys.start - y0, ys.stop - y0),
            slice(xs.start - x0, xs.stop - x0),
        )
        return {RESTORED: normalization.invert(fine[region])}


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
