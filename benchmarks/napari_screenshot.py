"""Screenshot of the napari plugin: thick sections and their cubic restoration, overlaid.

A real medulla FIB-SEM crop (sample1, 10 nm isotropic) is sectioned x4 along
z (box profile: 40 nm sections, placed at their true centres), saved as TIFF,
opened through the plugin's reader, restored with the plugin's axial widget
(cubic, factor from the layer's scale) and shown in an XZ plane: sections in
green, restoration in magenta, additive, so aligned structures turn white
(a half-section shift would show as coloured fringes along z).

Run (needs ``napari[pyqt5]`` and a display, e.g. Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/napari_screenshot.py

Writes ``benchmarks/results/napari_overlay.png``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from vemrestore.bench.datasets import DATA_ENV_VAR, real_dataset
from vemrestore.degrade import AxialSectioning
from vemrestore.io import Volume, write_volume

FACTOR = 4
VOXEL_NM = 10.0
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=real_dataset("medulla_sample1"))
    parser.add_argument("--out", type=Path, default=RESULTS / "napari_overlay.png")
    parser.add_argument(
        "--crop",
        type=int,
        nargs=6,
        default=(40, 168, 60, 188, 30, 230),
        metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"),
        help="crop of the isotropic cube, in voxels (Z1 - Z0 a multiple of 4)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    return parser.parse_args()


def sectioned_crop(path: Path, crop: tuple[int, ...]) -> Volume:
    """The crop sectioned x4 along z, placed at the sections' true centres (nm)."""
    z0, z1, y0, y1, x0, x1 = crop
    iso = tifffile.imread(path)[z0:z1, y0:y1, x0:x1].astype(np.float32)
    sections, info = AxialSectioning(FACTOR, profile="box").apply(iso)
    translation = ((z0 + info.centres[0]) * VOXEL_NM, y0 * VOXEL_NM, x0 * VOXEL_NM)
    return Volume(sections, (FACTOR * VOXEL_NM, VOXEL_NM, VOXEL_NM), translation=translation)


def register_plugin() -> None:
    """Register the plugin's manifest when the package's entry point is not installed."""
    import npe2

    manager = npe2.PluginManager.instance()
    if "vemrestore" not in manager:
        import vemrestore.napari

        manifest = Path(vemrestore.napari.__file__).with_name("napari.yaml")
        manager.register(npe2.PluginManifest.from_file(manifest))


def main() -> None:
    args = parse_args()
    if args.data is None or not Path(args.data).is_file():
        raise SystemExit(f"medulla sample1 not found (set {DATA_ENV_VAR} to ../shared/data)")
    import napari
    from napari._qt import qt_main_window
    from qtpy.QtWidgets import QApplication

    qt_main_window.SHOW_QT_WARNING = False  # no "PyQt5 is deprecated" toast over the picture
    register_plugin()
    with tempfile.TemporaryDirectory() as tmp:
        thick = write_volume(sectioned_crop(args.data, tuple(args.crop)), Path(tmp) / "thick.tif")
        viewer = napari.Viewer(title="vemrestore: axial restoration", show=True)
        viewer.window.resize(1600, 1000)
        (sections,) = viewer.open(str(thick), plugin="vemrestore")
        _, widget = viewer.window.add_plugin_dock_widget("vemrestore", "Axial restoration")
        widget.form.method.value = "cubic"
        widget.form()
        deadline = time.monotonic() + args.timeout
        while len(viewer.layers) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the restoration did not finish in time")
            QApplication.processEvents()
            time.sleep(0.05)
        restored = viewer.layers[-1]
        print(
            f"sections: shape {sections.data.shape} scale {tuple(sections.scale)} "
            f"translate {tuple(sections.translate)}\n"
            f"restored: shape {restored.data.shape} scale {tuple(restored.scale)} "
            f"translate {tuple(restored.translate)}"
        )
        sections.colormap, restored.colormap = "green", "magenta"
        restored.blending = "additive"
        viewer.dims.order = (1, 0, 2)  # show the XZ plane (z vertical)
        centre = sections.translate[1] + sections.scale[1] * sections.data.shape[1] / 2
        viewer.dims.set_point(1, centre)
        viewer.scale_bar.visible = True
        viewer.text_overlay.visible = True
        viewer.text_overlay.text = (
            "XZ plane. green: 40 nm sections (x4), magenta: cubic restoration (10 nm); "
            "white where they agree"
        )
        viewer.reset_view()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.out), canvas_only=False, flash=False)
        viewer.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
