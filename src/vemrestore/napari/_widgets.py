"""napari widgets: axial restoration and section repair of an image layer.

The widgets hold no restoration code: they turn the chosen layer into a
`Volume`, run a stage generator of ``vemrestore.api._memory`` in a napari
thread worker (a progress bar counts its stages; Cancel stops it before the
next stage), and add the result as a new layer that overlays the input
(``scale`` = voxel size, ``translate`` = position, nm).
"""

from collections.abc import Callable, Generator
from typing import Any

import napari
from magicgui import magicgui
from magicgui.widgets import Container, FunctionGui, PushButton
from napari.layers import Image, Labels
from napari.qt.threading import GeneratorWorker, create_worker

from vemrestore.api import axial_factor, axial_methods
from vemrestore.api._memory import (
    REPAIR_STAGES,
    RESTORE_STAGES,
    Stage,
    is_learned,
    repair_sections_stages,
    restore_volume_stages,
)
from vemrestore.api._slices import SLICE_METHODS
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.napari._layers import volume_of_layer
from vemrestore.napari._reader import layer_data

__all__ = ["AxialRestorationWidget", "SliceRestorationWidget"]


def _run_stages(stages: Generator[Stage, None, Volume]) -> Generator[Stage, None, Volume]:
    """The worker's generator: the stages, then their result."""
    return (yield from stages)


def _layers_of(viewer: napari.viewer.Viewer, kind: type) -> list[Any]:
    """The viewer's layers of type ``kind``: the choices of a layer field.

    Given here (not by napari's layer lookup, which needs the widget docked
    in a window) so the widgets also work with a bare ``ViewerModel``.
    """
    return [layer for layer in viewer.layers if isinstance(layer, kind)]


class _RestorationWidget(Container):
    """A form that starts a stage generator in a worker, a Cancel button, the result as a layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, form: FunctionGui) -> None:
        self.viewer = napari_viewer
        self.form = form
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.cancel_button.changed.connect(self.cancel)
        #: The running (or last) worker; None before the first run.
        self.worker: GeneratorWorker | None = None
        super().__init__(widgets=[form, self.cancel_button], labels=False)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()

    def start(
        self,
        stages: Generator[Stage, None, Volume],
        total: int,
        add_result: Callable[[Volume], None],
        description: str,
    ) -> GeneratorWorker:
        """Run ``stages`` in a worker thread; ``add_result`` gets the Volume it returns."""
        if self.worker is not None and self.worker.is_running:
            raise UserInputError("a restoration is running; wait for it or press Cancel")
        worker = create_worker(_run_stages, stages, _progress={"total": total, "desc": description})
        pbar = worker.pbar
        worker.yielded.connect(lambda stage: pbar.set_description(stage.description))
        worker.returned.connect(add_result)
        worker.finished.connect(lambda: self._running(False))
        self.worker = worker
        self._running(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running worker before its next stage (the running stage finishes)."""
        if self.worker is not None:
            self.worker.quit()

    def _running(self, running: bool) -> None:
        self.form.call_button.enabled = not running  # type: ignore[union-attr]
        self.cancel_button.enabled = running

    def add_volume(self, volume: Volume, like: Image, name: str) -> None:
        """Add ``volume`` as an image layer shown like ``like`` (contrast, colormap, units)."""
        data, meta, _ = layer_data(
            volume,
            name=name,
            contrast_limits=like.contrast_limits,
            colormap=like.colormap,
            units=like.units,  # as the input's: napari needs one unit across layers
            axis_labels=like.axis_labels,
        )
        self.viewer.add_image(data, **meta)


def _layer_choice(viewer: napari.viewer.Viewer, kind: type) -> dict[str, Any]:
    """magicgui options of a combo box listing the viewer's layers of type ``kind``."""
    return {"widget_type": "ComboBox", "choices": lambda _: _layers_of(viewer, kind)}


class AxialRestorationWidget(_RestorationWidget):
    """Restore isotropic resolution along z of an image layer of thick sections.

    The factor follows the chosen layer's scale (z / x) when it is anisotropic;
    ``steps`` (training steps, 0: the method's default) applies to learned
    methods only.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        form = magicgui(
            self.restore,
            call_button="Restore",
            image=_layer_choice(napari_viewer, Image),
            method={"choices": lambda _: axial_methods()},
            factor={"min": 1.0, "max": 64.0, "step": 0.5},
            steps={"min": 0, "max": 1_000_000, "tooltip": "training steps (0: default)"},
        )
        super().__init__(napari_viewer, form)
        form.image.changed.connect(self._factor_from_scale)
        form.method.changed.connect(self._steps_enabled)
        self._factor_from_scale(form.image.value)
        self._steps_enabled(form.method.value)

    def restore(
        self, image: Image, method: str = "cubic", factor: float = 4.0, steps: int = 0
    ) -> None:
        """Start the restoration of ``image``; the result is added as a new layer."""
        stages = restore_volume_stages(
            volume_of_layer(image),
            method=method,
            factor=factor,
            steps=(steps or None) if is_learned(method) else None,
        )
        name = f"{image.name} {method} x{factor:g}"
        self.start(stages, RESTORE_STAGES, lambda v: self.add_volume(v, image, name), name)

    def _factor_from_scale(self, image: Image | None) -> None:
        if image is None or image.ndim != 3:
            return
        try:
            self.form.factor.value = axial_factor(volume_of_layer(image))
        except UserInputError:
            pass  # isotropic scale: keep the factor given

    def _steps_enabled(self, method: str | None) -> None:
        self.form.steps.enabled = method is not None and is_learned(method)


class SliceRestorationWidget(_RestorationWidget):
    """Restore missing sections (indices such as ``3,17`` or ``10-12``) or masked damage.

    ``mask``: a labels layer, nonzero on the damaged voxels. ``steps``
    (training steps, 0: default) applies to ``diffusion`` only.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        form = magicgui(
            self.repair,
            call_button="Restore",
            image=_layer_choice(napari_viewer, Image),
            missing={"tooltip": "sections to restore whole, e.g. 3,17 or 10-12"},
            mask=_layer_choice(napari_viewer, Labels),
            method={"choices": list(SLICE_METHODS)},
            steps={"min": 0, "max": 1_000_000, "tooltip": "diffusion training steps (0: default)"},
        )
        super().__init__(napari_viewer, form)
        form.method.changed.connect(self._steps_enabled)
        self._steps_enabled(form.method.value)

    def repair(
        self,
        image: Image,
        missing: str = "",
        mask: Labels | None = None,
        method: str = "linear",
        steps: int = 0,
    ) -> None:
        """Start restoring the sections of ``image``; the result is added as a new layer."""
        stages = repair_sections_stages(
            volume_of_layer(image),
            missing=missing or None,
            mask=None if mask is None else mask.data,
            method=method,  # type: ignore[arg-type]
            steps=(steps or None) if method == "diffusion" else None,
        )
        name = f"{image.name} repaired ({method})"
        self.start(stages, REPAIR_STAGES, lambda v: self.add_volume(v, image, name), name)

    def _steps_enabled(self, method: str | None) -> None:
        self.form.steps.enabled = method == "diffusion"
