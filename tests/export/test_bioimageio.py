"""bioimage.io export: the tile modules reproduce `vemrestore predict`, packages validate and run.

The module tests need torch only. The package tests need bioimageio.spec and
bioimageio.core (the ``bioimageio`` extra) and real data, and skip with the
reason otherwise; they train tiny models for a few steps on real crops
(medulla sample1 sectioned x4 for the skeleton, EPFL hippocampus slices for
the lateral model), export them with the command, validate the package,
run it with bioimageio.core and compare with `vemrestore predict` on the
same tile.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import typer
import yaml
from typer.testing import CliRunner

from vemrestore.bench.datasets import DATA_ENV_VAR, real_dataset
from vemrestore.cli import app as main_app
from vemrestore.cli._errors import UserErrorGroup
from vemrestore.cli._export import export
from vemrestore.degrade import AxialSectioning
from vemrestore.export import LateralTile, SkeletonTile, to_torchscript
from vemrestore.export._bioimageio import bioimageio_problem
from vemrestore.export._tile import reference_output, tile_model
from vemrestore.export._torchscript import axial_upsampling_matrix
from vemrestore.io import Volume, open_volume, write_volume
from vemrestore.methods import create_method
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.normalize import PercentileNormalization

runner = CliRunner()

# Most a package may differ from `vemrestore predict` on its test tile, grey levels of 255:
# float32 rounding only (measured 0 to 1e-4 on these tiles).
FLOAT_TOLERANCE = 0.01


def _export_app() -> typer.Typer:
    """The command as the CLI registers it: `vemrestore export ...`, errors as one line."""
    app = typer.Typer(cls=UserErrorGroup)
    app.callback()(lambda: None)
    app.command()(export)
    return app


def _needs_bioimageio() -> None:
    problem = bioimageio_problem()
    if problem is not None:
        pytest.skip(problem)
    pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed")


def _real(name: str) -> Path:
    path = real_dataset(name)
    if path is None:
        pytest.skip(f"real dataset {name!r} not found (set {DATA_ENV_VAR} to ../shared/data)")
    return path


def _perturbed(method, **state):
    """``method`` holding its seeded networks with every weight jittered (a non-trivial net)."""
    networks = method.seeded_networks()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in networks.values():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    method.set_trained(networks, **state)
    return method


def _skeleton(**options):
    method = create_method(
        "skeleton",
        scale_factor=options.pop("scale_factor", 4),
        base_channels=4,
        depth=2,
        inference={"halo": 4, "device": "cpu", "batch_size": 64},
        train={"device": "cpu", "patch_size": 16},
        **options,
    )
    return _perturbed(method, normalization=PercentileNormalization(20.0, 230.0))


def _lateral(scale_factor=2):
    method = create_method(
        "lateral",
        scale_factor=scale_factor,
        channels=8,
        num_heads=2,
        window_size=4,
        num_residual_blocks=1,
        num_wavelet_levels=2,
        inference={"device": "cpu"},
        train={"device": "cpu", "patch_size": 16},
    )
    return _perturbed(
        method,
        input_norm=PercentileNormalization(10.0, 240.0),
        output_norm=PercentileNormalization(15.0, 235.0),
    )


# -- the tile modules (torch only) -------------------------------------------


@pytest.mark.parametrize("scale_factor", [2, 2.5, 4, 8])
def test_upsampling_matrix_equals_upsample_axial(scale_factor):
    rng = np.random.default_rng(1)
    for sections in (1, 2, 3, 4, 5, 9, 17):
        stack = rng.random((sections, 3, 2), dtype=np.float32)
        expected = upsample_axial(stack, scale_factor, kind="cubic")
        weights = axial_upsampling_matrix(sections, scale_factor).numpy()
        got = np.einsum("fm,myx->fyx", weights, stack)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "shapes"),
    [
        (lambda: _skeleton(), [(9, 20, 17), (6, 33, 12)]),
        (lambda: _skeleton(context_planes=1, fusion="geometric"), [(7, 18, 21)]),
        (lambda: _skeleton(scale_factor=2.5), [(8, 13, 19)]),
        (lambda: _skeleton(space_to_depth=2, factor_input=True), [(9, 20, 17)]),
        (lambda: _lateral(2), [(2, 19, 23), (3, 8, 13)]),
        (lambda: _lateral(3), [(1, 14, 9)]),
    ],
    ids=[
        "skeleton",
        "skeleton-context-geometric",
        "skeleton-x2.5",
        "skeleton-prior-layout",
        "lateral-x2",
        "lateral-x3",
    ],
)
def test_tile_modules_reproduce_predict_block(make, shapes):
    """Eager and TorchScript modules equal the method's own prediction, at any tile size."""
    method = make()
    model = tile_model(method)
    scripted = to_torchscript(model.module)
    rng = np.random.default_rng(2)
    for shape in shapes:
        tile = (rng.random(shape, dtype=np.float32) * 255).astype(np.float32)
        expected = reference_output(method, tile)
        assert expected.shape == model.geometry.output_shape(shape)
        with torch.no_grad():
            x = torch.from_numpy(tile[None, None])
            eager, script = model.module(x)[0, 0].numpy(), scripted(x)[0, 0].numpy()
        assert np.abs(eager - expected).max() < 1e-3
        assert np.abs(script - expected).max() < 1e-3


def test_tile_module_state_dict_rebuilds_the_network():
    """The state dict is the method's network under ``net.``; kwargs rebuild the module."""
    method = _skeleton()
    model = tile_model(method)
    state = model.module.state_dict()
    assert set(state) == {f"net.{k}" for k in method.model.state_dict()}
    rebuilt = SkeletonTile(**model.kwargs)
    rebuilt.load_state_dict(state)
    lateral = tile_model(_lateral())
    LateralTile(**lateral.kwargs).load_state_dict(lateral.module.state_dict())


# -- the command's refusals (no bioimageio needed) -----------------------------


@pytest.fixture
def saved_skeleton(tmp_path):
    model_dir = tmp_path / "model"
    _skeleton().save(model_dir)
    volume = tmp_path / "thick.tif"
    write_volume(
        Volume(np.random.default_rng(0).random((12, 40, 40), np.float32), (40.0, 10.0, 10.0)),
        volume,
    )
    return model_dir, volume


def _refused(args, text):
    result = runner.invoke(_export_app(), ["export", *map(str, args)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert text in lines[0], lines[0]


def test_export_refuses_without_writing(saved_skeleton, tmp_path):
    model_dir, volume = saved_skeleton
    before = sorted(p.name for p in tmp_path.rglob("*"))
    test_input = ["--test-input", volume]
    _refused([model_dir, model_dir / "m.zip", *test_input], "is inside the model folder")
    _refused([model_dir, volume, *test_input], "is the --test-input")
    _refused([model_dir, tmp_path / "m.tar", *test_input], "is a .zip file")
    _refused([model_dir, tmp_path / "m.zip", *test_input, "--format", "onnx"], "--format")
    cubic = tmp_path / "cubic"
    create_method("cubic", scale_factor=4).save(cubic)
    _refused([cubic, tmp_path / "m.zip", *test_input], "supports skeleton and lateral")
    (tmp_path / "old.zip").write_bytes(b"old")
    _refused([model_dir, tmp_path / "old.zip", *test_input], "--overwrite")
    assert (tmp_path / "old.zip").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        [*before, "cubic", "config.json", "old.zip"]
    )


# -- packages: validated by bioimageio.spec, run by bioimageio.core ---------------


@pytest.fixture(scope="module")
def skeleton_case(tmp_path_factory):
    """A tiny skeleton trained on medulla sample1 sectioned x4, and those sections as a TIFF."""
    _needs_bioimageio()
    root = tmp_path_factory.mktemp("skeleton")
    iso = tifffile.imread(_real("medulla_sample1"))[:64, 64:160, 64:160].astype(np.float32)
    sections, _ = AxialSectioning(4).apply(iso)
    thick = Volume(np.rint(sections).astype(np.uint8), voxel_size=(40.0, 10.0, 10.0))
    write_volume(thick, root / "thick.tif")
    method = create_method(
        "skeleton",
        scale_factor=4,
        base_channels=4,
        depth=2,
        inference={"halo": 4, "device": "cpu", "batch_size": 64},
        train={"num_steps": 4, "patch_size": 16, "batch_size": 2, "device": "cpu"},
    )
    method.fit(thick, progress=False)
    method.save(root / "model")
    return root, root / "model", root / "thick.tif", (8, 32, 32)


@pytest.fixture(scope="module")
def lateral_case(tmp_path_factory):
    """A tiny x2 lateral model trained on EPFL slices, and other real slices as LR input."""
    _needs_bioimageio()
    from vemrestore.api._lateral import train_lateral

    root = tmp_path_factory.mktemp("lateral")
    slices = tifffile.imread(_real("epfl_slices"))
    train_lateral(
        slices[:4, 200:328, 300:428].astype(np.float32),
        scale_factor=2,
        out_dir=root / "model",
        progress=False,
        channels=8,
        num_heads=2,
        window_size=4,
        num_residual_blocks=1,
        num_wavelet_levels=2,
        train={"num_steps": 4, "patch_size": 16, "batch_size": 2, "device": "cpu"},
        inference={"device": "cpu"},
    )
    lr = Volume(slices[10:14, 400:448, 500:548], voxel_size=(50.0, 5.0, 5.0))
    write_volume(lr, root / "lr.tif")
    return root, root / "model", root / "lr.tif", (2, 40, 40)


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _package_array(package: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(package) as archive, archive.open(name) as f:
        return np.load(f)


def _core_outputs(package: Path, tile: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """bioimageio.core's prediction of ``tile`` with each weights format of the package.

    Per format: the tile as it is (what ``test_model`` runs) and the tile
    padded by the declared halo then cropped (``bioimageio.core.predict``'s
    default for a whole sample).
    """
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline
    from bioimageio.spec import ValidationContext, load_description

    from vemrestore.export._rdf import known_urls

    with ValidationContext(log_warnings=False):
        descr = load_description(package, known_files=known_urls(_rdf(package)))
    dims = ("batch", "channel", "z", "y", "x")
    sample = Sample(members={"raw": Tensor.from_numpy(tile[None, None], dims=dims)}, stat={}, id=0)
    outputs = {}
    for fmt in ("pytorch_state_dict", "torchscript"):
        with create_prediction_pipeline(descr, weight_format=fmt) as pipeline:
            as_is = pipeline.predict_sample_without_blocking(
                sample, skip_input_padding=True, skip_output_cropping=True
            )
            padded = pipeline.predict_sample_without_blocking(sample)
        outputs[fmt] = tuple(np.asarray(s.members["restored"].data)[0, 0] for s in (as_is, padded))
    return outputs


def _predict_cli(model_dir: Path, tile: np.ndarray, voxel_size, path: Path) -> np.ndarray:
    write_volume(Volume(tile, voxel_size=tuple(voxel_size)), path)
    out = path.with_name(path.stem + "_restored.tif")
    result = runner.invoke(main_app, ["predict", str(model_dir), str(path), str(out)])
    assert result.exit_code == 0, result.output
    return open_volume(out).to_numpy()


def _check_package(case, kind, expected_scale, extra=()):
    from bioimageio.core import test_model
    from bioimageio.spec import ValidationContext

    from vemrestore.export import validate_package
    from vemrestore.export._rdf import known_urls

    root, model_dir, test_input, tile = case
    package = root / f"{kind}.zip"
    args = ["export", str(model_dir), str(package), "--format", "bioimageio"]
    args += ["--test-input", str(test_input), "--tile", *map(str, tile), "--author", "Test Author"]
    args += list(extra)
    result = runner.invoke(_export_app(), args)
    assert result.exit_code == 0, result.output
    assert f"bioimage.io {kind} package" in result.output
    assert not any(p.name.startswith(".") for p in root.iterdir())  # no partial left

    # bioimageio.spec: valid, current 0.5 format, what the rdf must say
    descr = validate_package(package)
    assert descr.validation_summary.status in ("passed", "valid-format"), (
        descr.validation_summary.format()
    )
    rdf = _rdf(package)
    assert rdf["format_version"].startswith("0.5.")
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert rdf["license"] and rdf["authors"] == [{"name": "Test Author"}]
    assert rdf["documentation"]["source"] == "README.md"
    assert rdf["covers"][0]["source"].endswith(".png")
    (inputs,), (outputs,) = rdf["inputs"], rdf["outputs"]
    scales = [inputs["axes"][i]["scale"] / outputs["axes"][i]["scale"] for i in range(2, 5)]
    assert scales == expected_scale
    assert all(a["size"]["tensor_id"] == "raw" for a in outputs["axes"][2:])
    assert "Validation" in zipfile.ZipFile(package).read("README.md").decode()

    # bioimageio.core: both weights formats reproduce the test output, any tile size
    with ValidationContext(known_files=known_urls(rdf), log_warnings=False):
        summary = test_model(package)
    assert summary.status == "passed", summary.format()

    # ... and what `vemrestore predict` writes for the same tile
    tile_data = _package_array(package, "test_input.npy")[0, 0]
    expected = _package_array(package, "test_output.npy")[0, 0]
    voxel_size = open_volume(test_input).voxel_size
    predicted = _predict_cli(model_dir, tile_data, voxel_size, root / f"{kind}_tile.tif")
    np.testing.assert_allclose(predicted, expected, atol=1e-3)
    rounded = _predict_cli(
        model_dir, tile_data.astype(np.uint8), voxel_size, root / f"{kind}_tile_u8.tif"
    )
    halo = [a.get("halo", 0) for a in rdf["outputs"][0]["axes"][2:]]
    inner = tuple(slice(h, -h if h else None) for h in halo)
    for fmt, (got, padded) in _core_outputs(package, tile_data).items():
        float_error = np.abs(got - predicted).max()
        integer_error = np.abs(got - rounded.astype(np.float32)).max()
        border_error = np.abs(padded - predicted).max()
        inner_error = np.abs(padded[inner] - predicted[inner]).max()
        print(
            f"{kind} {fmt}: max abs difference vs predict {float_error:.2e} (float32 tile),"
            f" {integer_error:.3f} (uint8 tile, rounded by predict); tile padded by the halo "
            f"{halo}: {border_error:.3g} overall, {inner_error:.3g} inside the halo"
        )
        assert float_error <= FLOAT_TOLERANCE, fmt
        assert integer_error <= 0.5 + FLOAT_TOLERANCE, fmt

    # metadata bioimage.io would refuse is a user error, before any work
    bad = ["export", str(model_dir), str(root / "bad.zip"), "--test-input", str(test_input)]
    refused = runner.invoke(_export_app(), [*bad, "--license", "NOT-A-LICENSE"])
    assert refused.exit_code == 2 and "SPDX" in refused.output, refused.output
    assert not (root / "bad.zip").exists()

    # never over an existing package without --overwrite
    stamp = package.stat().st_mtime_ns
    refused = runner.invoke(_export_app(), args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert package.stat().st_mtime_ns == stamp
    return package


def test_skeleton_package_validates_and_reproduces_predict(skeleton_case):
    package = _check_package(skeleton_case, "skeleton", [4.0, 1.0, 1.0])
    dois = {entry.get("doi") for entry in _rdf(package)["cite"]}
    assert "10.1038/s41592-018-0216-7" in dois  # Weigert et al. 2018


def test_lateral_package_validates_and_reproduces_predict(lateral_case):
    url = "https://example.com/vemrestore"  # example.com: never fetched by bioimageio.spec
    package = _check_package(lateral_case, "lateral", [1.0, 2.0, 2.0], ["--url", url])
    rdf = _rdf(package)
    assert rdf["git_repo"] == url and url in {entry.get("url") for entry in rdf["cite"]}


def test_overwrite_replaces_a_package(skeleton_case, tmp_path):
    _, model_dir, test_input, tile = skeleton_case
    package = tmp_path / "again.zip"
    package.write_bytes(b"old")
    args = ["export", str(model_dir), str(package), "--test-input", str(test_input)]
    args += ["--tile", *map(str, tile), "--author", "Test Author", "--overwrite"]
    result = runner.invoke(_export_app(), args)
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(package)
