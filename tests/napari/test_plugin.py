"""The napari plugin: manifest, readers, writer and widgets (headless).

Skipped with a reason when napari, npe2 or pytest-qt is absent. The widgets
run against a ``ViewerModel`` (layers, no canvas), so no OpenGL is needed;
Qt runs offscreen when there is no display.
"""

import os
import threading
import warnings
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any QApplication exists

with warnings.catch_warnings():  # napari's and npe2's pydantic v1 idioms: not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    napari = pytest.importorskip("napari", reason="napari is not installed (pip install napari)")
    npe2 = pytest.importorskip("npe2", reason="npe2 is not installed (pip install npe2)")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install pytest-qt)")
    pytest.importorskip(
        "qtpy", reason="no Qt binding (pip install 'napari[pyqt5]')", exc_type=ImportError
    )
    from napari.components import ViewerModel
    from npe2.manifest.utils import import_python_name

from vemrestore.api._memory import Stage, restore_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, open_volume, write_volume

MANIFEST = Path(import_module("vemrestore.napari").__file__).with_name("napari.yaml")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def command(manifest, command_id):
    """The callable a manifest command names (as napari resolves it)."""
    (found,) = [c for c in manifest.contributions.commands if c.id == command_id]
    return import_python_name(found.python_name)


@pytest.fixture
def viewer():
    return ViewerModel()


def wait_for_layers(qtbot, viewer, count):
    qtbot.waitUntil(lambda: len(viewer.layers) == count, timeout=TIMEOUT_MS)
    return viewer.layers[-1]


def test_manifest_is_valid_and_its_python_names_import(manifest):
    manifest.validate_imports()
    assert manifest.name == "vemrestore"
    (reader,) = manifest.contributions.readers
    for pattern in ("*.tif", "*.tiff", "*.h5", "*.hdf5", "*.zarr", "*.mrc", "*.rec", "*.map"):
        assert pattern in reader.filename_patterns
    assert reader.accepts_directories  # Zarr stores are folders
    (writer,) = manifest.contributions.writers
    assert writer.filename_extensions == [".zarr"] and writer.layer_types == ["image"]
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Axial restoration",
        "Restore sections",
    }


@pytest.mark.parametrize("suffix", [".tif", ".h5", ".zarr", ".ome.zarr", ".mrc", ".rec"])
def test_reader_gives_scale_and_translate_in_nm(manifest, tmp_path, suffix):
    path = tmp_path / f"vol{suffix}"
    data = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8)
    write_volume(Volume(data, (40, 8, 8), translation=(80, -16, 8)), path)
    reader = command(manifest, "vemrestore.get_reader")(str(path))
    assert reader is not None
    ((layer, meta, kind),) = reader(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(np.asarray(layer), data)
    assert tuple(meta["scale"]) == pytest.approx((40, 8, 8))
    assert tuple(meta["translate"]) == pytest.approx((80, -16, 8))
    assert meta["name"].startswith(path.name) and meta["units"] == "nm"


def test_reader_places_a_translated_volume(tmp_path):
    from vemrestore.napari._reader import layer_data

    volume = Volume(np.zeros((2, 3, 4), np.float32), (40, 8, 8), translation=(85, -4, 2))
    _, meta, _ = layer_data(volume)
    assert meta["translate"] == (85.0, -4.0, 2.0) and meta["scale"] == (40.0, 8.0, 8.0)


def test_hdf5_reader_takes_the_named_or_the_first_3d_dataset(manifest, tmp_path):
    import h5py

    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["labels/table"] = np.zeros(5)
        handle["raw"] = np.full((3, 4, 5), 1, np.uint8)
        handle["smooth"] = np.full((3, 4, 5), 2, np.uint8)
        for name in ("raw", "smooth"):
            handle[name].attrs["voxel_size"] = (30.0, 4.0, 4.0)
    get_reader = command(manifest, "vemrestore.get_reader")
    ((first, meta, _),) = get_reader(str(path))(str(path))
    assert int(first[0, 0, 0]) == 1 and meta["name"] == "two.h5:/raw"
    assert tuple(meta["scale"]) == (30.0, 4.0, 4.0)
    named = f"{path}:/smooth"
    ((second, meta, _),) = get_reader(named)(named)
    assert int(second[0, 0, 0]) == 2 and meta["name"] == "two.h5:/smooth"


def test_reader_declines_other_files(manifest):
    get_reader = command(manifest, "vemrestore.get_reader")
    assert get_reader("notes.txt") is None
    assert get_reader(["a.tif", "b.png"]) is None


def test_writer_writes_ome_zarr_with_voxel_size(manifest, tmp_path):
    write = command(manifest, "vemrestore.write_ome_zarr")
    data = np.random.default_rng(0).random((4, 6, 8)).astype(np.float32)
    attributes = {"name": "restored", "scale": (10, 8, 8), "translate": (85, 0, 4)}
    out = tmp_path / "out.zarr"
    assert write(str(out), data, attributes) == [str(out)]
    volume = open_volume(out)
    np.testing.assert_array_equal(volume.to_numpy(), data)
    assert volume.voxel_size == (10.0, 8.0, 8.0)
    with pytest.raises(UserInputError, match="exists"):
        write(str(out), data, attributes)  # never replaced


def test_writer_refuses_other_layers(manifest, tmp_path):
    write = command(manifest, "vemrestore.write_ome_zarr")
    with pytest.raises(UserInputError, match="3D"):
        write(str(tmp_path / "a.zarr"), np.zeros((2, 3, 4, 5)), {"name": "4d"})
    with pytest.raises(UserInputError, match="RGB"):
        write(str(tmp_path / "b.zarr"), np.zeros((2, 3, 4, 3)), {"name": "rgb", "rgb": True})
    with pytest.raises(UserInputError, match=r"\.zarr"):
        write(str(tmp_path / "c.tif"), np.zeros((2, 3, 4)), {"name": "tif"})
    assert not any(tmp_path.iterdir())


def test_writer_round_trips_the_position(manifest, tmp_path):
    write = command(manifest, "vemrestore.write_ome_zarr")
    out = tmp_path / "placed.zarr"
    write(str(out), np.zeros((2, 3, 4), np.float32), {"scale": (10, 8, 8), "translate": (85, 0, 4)})
    get_reader = command(manifest, "vemrestore.get_reader")
    ((_, meta, _),) = get_reader(str(out))(str(out))
    assert tuple(meta["translate"]) == (85.0, 0.0, 4.0) and tuple(meta["scale"]) == (10, 8, 8)


def test_axial_widget_restores_a_layer_that_overlays_it(manifest, qtbot, viewer):
    sections = np.random.default_rng(0).random((6, 16, 12)).astype(np.float32)
    image = viewer.add_image(sections, scale=(40, 10, 10), translate=(100, 5, 0), name="thick")
    widget = command(manifest, "vemrestore.axial_restoration")(viewer)
    assert widget.form.image.value is image
    assert widget.form.factor.value == 4.0  # from the layer's scale, z / x
    assert not widget.form.steps.enabled  # cubic does not train
    widget.form.method.value = "skeleton"
    assert widget.form.steps.enabled
    widget.form.method.value = "linear"
    widget.form()
    result = wait_for_layers(qtbot, viewer, 2)
    assert result.name == "thick linear x4"
    assert result.data.shape == (24, 16, 12)
    np.testing.assert_allclose(result.scale, (10, 10, 10))
    np.testing.assert_allclose(result.translate, (85, 5, 0))
    expected = restore_volume(Volume(sections, (40, 10, 10)), method="linear", factor=4)
    np.testing.assert_allclose(result.data, expected.data)
    assert widget.worker.pbar.total == 3 and "restoring x4" in widget.worker.pbar.desc
    assert widget.form.call_button.enabled and not widget.cancel_button.enabled


def test_slice_widget_restores_a_missing_section(manifest, qtbot, viewer):
    stack = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    stack[2] = 0
    viewer.add_image(stack, scale=(50, 4, 4), translate=(0, 10, 20), name="stack")
    widget = command(manifest, "vemrestore.slice_restoration")(viewer)
    assert not widget.form.steps.enabled  # linear does not train
    widget.form.missing.value = "2"
    widget.form()
    result = wait_for_layers(qtbot, viewer, 2)
    assert result.name == "stack repaired (linear)" and result.data.shape == stack.shape
    np.testing.assert_allclose(result.data[2], (stack[1] + stack[3]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(result.data[[0, 1, 3, 4]], stack[[0, 1, 3, 4]])
    np.testing.assert_allclose(result.scale, (50, 4, 4))
    np.testing.assert_allclose(result.translate, (0, 10, 20))


def test_slice_widget_restores_what_a_labels_layer_masks(manifest, qtbot, viewer):
    stack = np.random.default_rng(2).random((5, 8, 8)).astype(np.float32)
    image = viewer.add_image(stack, name="stack")
    mask = np.zeros(stack.shape, np.uint8)
    mask[3, 2:5, 2:5] = 1
    labels = viewer.add_labels(mask, name="damage")
    widget = command(manifest, "vemrestore.slice_restoration")(viewer)
    assert widget.form.image.choices == (image,)
    assert widget.form.mask.choices == (None, labels)
    widget.form.mask.value = labels
    widget.form()
    result = wait_for_layers(qtbot, viewer, 3)
    changed = ~np.isclose(result.data, stack)
    assert changed.any() and not changed[mask == 0].any()


def test_cancel_stops_the_worker_between_stages(qtbot, viewer, monkeypatch):
    import vemrestore.napari._widgets as widgets

    proceed, reached = threading.Event(), []

    def slow_stages(volume, **options):
        yield Stage(0, 3, "configuring")
        proceed.wait(TIMEOUT_MS / 1000)
        yield Stage(1, 3, "training")
        reached.append("predict")  # a cancelled worker never gets here
        return volume

    monkeypatch.setattr(widgets, "restore_volume_stages", slow_stages)
    viewer.add_image(np.zeros((4, 8, 8), np.float32), scale=(20, 10, 10))
    widget = widgets.AxialRestorationWidget(viewer)
    widget.form()
    worker = widget.worker
    assert widget.cancel_button.enabled and not widget.form.call_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        widget.cancel()
        proceed.set()
    assert reached == [] and len(viewer.layers) == 1
    assert widget.form.call_button.enabled and not widget.cancel_button.enabled


def test_widget_refuses_a_2d_layer(qtbot, viewer):
    from vemrestore.napari._widgets import AxialRestorationWidget

    viewer.add_image(np.zeros((8, 8), np.float32), name="flat")
    widget = AxialRestorationWidget(viewer)
    with pytest.raises(UserInputError, match="3D"):
        widget.form()
    assert widget.worker is None and len(viewer.layers) == 1
