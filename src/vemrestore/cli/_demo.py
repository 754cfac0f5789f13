"""``vemrestore demo``: the main job end to end, on real data when present, offline."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]

BASELINES = ("nearest", "linear", "cubic")
# The demo restores and scores the central part of the real cube: segmenting and
# scoring every method on all 250^3 voxels takes minutes more than the demo should.
DEMO_SIDE = 160
# Fine-tune steps of a method with a shipped prior when --steps is not given: about
# 40 s on 2 cores, so the demo takes about 3 minutes (the prior alone is most of the gain).
DEMO_FINE_TUNE_STEPS = 300


def _demo_volume() -> tuple[np.ndarray, tuple[float, float, float], str]:
    from vemrestore.bench import em_phantom, real_dataset
    from vemrestore.io import open_volume

    path = real_dataset("medulla_sample2")
    if path is not None:
        volume = open_volume(path)
        centre = tuple(slice(max(0, (s - DEMO_SIDE) // 2), None) for s in volume.shape)
        crop = volume.to_numpy()[centre][:DEMO_SIDE, :DEMO_SIDE, :DEMO_SIDE]
        label = f"real FIB-SEM: {path}, central {'x'.join(map(str, crop.shape))} crop"
        return crop, volume.voxel_size, label
    return (
        em_phantom((128, 128, 128), rng=0),
        (10.0, 10.0, 10.0),
        ("SYNTHETIC EM-like phantom (real data not found; set VEMRESTORE_DATA to ../shared/data)"),
    )


def run_demo(out: Path, *, factor: float, method: str, steps: int | None) -> None:
    """Degrade along z, restore with baselines and ``method``, write volumes, PNG and metrics.

    The volumes written (the degraded input and the restoration) keep the
    input's integer dtype (uint8 for the FIB-SEM cube), rounded and clipped
    like the output of ``vemrestore iso``; a float input gives float32.
    ``steps`` is the training budget of a learned ``method`` (as ``iso --steps``;
    default `DEMO_FINE_TUNE_STEPS` for a method that fine-tunes a shipped prior).
    """
    from rich.console import Console

    from vemrestore.api._commands import _restoration_dtype
    from vemrestore.bench import (
        METRIC_GROUPS,
        benchmark_volume,
        format_table,
        provenance,
        save_results,
    )
    from vemrestore.io import Volume, write_volume
    from vemrestore.methods import get_method, method_config_class
    from vemrestore.methods.interpolate import upsample_axial
    from vemrestore.methods.priors import PRIOR_OPTIONS
    from vemrestore.report import save_orthoview, write_report

    console = Console(stderr=True)
    get_method(method)
    truth, voxel_size, label = _demo_volume()
    console.print(f"[bold]vemrestore demo[/bold]: {label}, x{factor:g} along z")
    methods = list(dict.fromkeys([*BASELINES, method]))
    if steps is None and method in PRIOR_OPTIONS:
        steps = DEMO_FINE_TUNE_STEPS
    options = {method: {"steps": steps}} if steps is not None else None
    working = "degrading, restoring and scoring ..."
    if "train" in method_config_class(method).model_fields:
        console.print(working)  # training shows a progress bar per stage: no spinner over it
        waiting: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    else:
        waiting = console.status(working)
    with waiting:
        report = benchmark_volume(
            truth,
            dataset=label.split(":")[0],
            voxel_size=voxel_size,
            factors=[factor],
            methods=methods,
            method_options=options,
            keep_outputs=True,
            metrics=METRIC_GROUPS,
            figures=True,
        )
    rows, outputs = report.results, report.outputs
    out.mkdir(parents=True, exist_ok=True)
    sections = outputs[(float(factor), "input")]
    restored = outputs[(float(factor), method)]
    vz, vy, vx = voxel_size
    dtype = _restoration_dtype(truth.dtype)
    write_volume(
        Volume(sections, voxel_size=(vz * factor, vy, vx)),
        out / f"degraded_x{factor:g}.tif",
        overwrite=True,
        dtype=dtype,
    )
    restored_path = write_volume(
        Volume(restored, voxel_size=voxel_size),
        out / f"restored_{method}.tif",
        overwrite=True,
        dtype=dtype,
    )
    fine = truth[: restored.shape[0]].astype(np.float32)
    panels = {
        f"input x{factor:g} (nearest)": upsample_axial(sections, factor, kind="nearest"),
        **({"cubic": outputs[(float(factor), "cubic")]} if method != "cubic" else {}),
        method: restored,
        "ground truth": fine,
    }
    png = save_orthoview(panels, out / "orthoview.png", title=label)
    metrics_path = save_results(
        rows,
        out / "metrics.json",
        {"data": label, **provenance()},
        overwrite=True,
        figures=report.figures,
    )
    html = write_report(metrics_path, out / "report.html", overwrite=True)
    print(format_table(rows))
    console.print(f"wrote {restored_path}, {png}, {metrics_path}, {html}")
