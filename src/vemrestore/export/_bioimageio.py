"""Write a trained model as a bioimage.io model package (rdf.yaml, format 0.5).

The package holds the weights twice: a PyTorch state dict whose
architecture is ``vemrestore.export.SkeletonTile`` / ``LateralTile`` (needs
vemrestore installed) and a standalone TorchScript module; both do to a tile
what ``vemrestore predict`` does to a volume that is this tile. The test
input is a crop of a real volume given by the user, the test output what
``vemrestore predict`` gives for it. Axes carry the voxel sizes in nm, so
the output z axis is the input z axis scaled by the axial factor (bioimage.io
``SizeReference``: ``size = input size * input scale / output scale``).

bioimageio.spec is imported only here, when exporting; validation runs with
file checks on (hashes of the packaged files) and without network look-ups
of the cited URLs.
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import yaml

from vemrestore.errors import UserInputError
from vemrestore.export._rdf import (
    FILES,
    axes,
    build_rdf,
    environment_yaml,
    known_urls,
    repository_url,
)
from vemrestore.io import atomic_output, check_finite, check_output_path, open_volume
from vemrestore.io._paths import refuse_outputs_over_inputs

__all__ = ["ExportResult", "bioimageio_problem", "export_bioimageio", "validate_package"]

# Largest difference allowed between the packaged modules and `vemrestore predict`,
# as a fraction of the normalisation range (high - low): 0.02 grey levels of 200.
RELATIVE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What ``export_bioimageio`` wrote and measured.

    Attributes
    ----------
    path : pathlib.Path
        The package (.zip).
    kind : str
        ``"skeleton"`` or ``"lateral"``.
    max_abs_difference : dict of str to float
        Largest difference (grey levels) between ``vemrestore predict`` and each
        weights format on the test tile.
    tolerance : float
        The reproducibility tolerance written into the package (grey levels).
    status : str
        bioimage.io validation status of the written package (``"passed"``).
    """

    path: Path
    kind: str
    max_abs_difference: dict[str, float]
    tolerance: float
    status: str


def bioimageio_problem() -> str | None:
    """Why bioimage.io packages cannot be written here, or None when they can.

    bioimageio.spec before 0.5.14.3 passes an argument that pydantic 2.14
    refuses when it serializes file entries, so every validation fails
    (``'index_key' is expected to be an integer or a string``); bioimageio.core
    0.11 requires bioimageio.spec 0.5.12.
    """
    try:
        import bioimageio.spec
        import pydantic
        from packaging.version import Version
    except ImportError:
        return "bioimageio.spec is not installed (pip install 'vemrestore[bioimageio]')"
    spec, found = Version(bioimageio.spec.__version__), Version(pydantic.VERSION)
    if spec < Version("0.5.14.3") and found >= Version("2.14"):
        return (
            f"bioimageio.spec {spec} cannot validate packages with pydantic {found} "
            "(install 'pydantic<2.14', or bioimageio.spec>=0.5.14.3 without bioimageio.core)"
        )
    return None


def _bioimageio() -> Any:
    """``bioimageio.spec``, or a user error saying what to install."""
    problem = bioimageio_problem()
    if problem is not None:
        raise UserInputError(f"bioimage.io export: {problem}")
    import bioimageio.spec

    return bioimageio.spec


def validate_package(path: Path) -> Any:
    """Load the package at ``path`` with bioimageio.spec, file checks on, URLs not fetched.

    Returns
    -------
    bioimageio.spec description or InvalidDescr
        ``.validation_summary.status`` is ``"passed"`` (or ``"valid-format"``)
        for a valid package.
    """
    spec = _bioimageio()
    from bioimageio.spec import ValidationContext

    urls = known_urls(_package_rdf(path))
    # Findings are in the summary; Python warnings of bioimageio's file cache are noise.
    with ValidationContext(log_warnings=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"bioimageio\.")
        return spec.load_description(path, perform_io_checks=True, known_files=urls)


def _package_rdf(path: Path) -> dict[str, Any]:
    """The rdf.yaml of a package zip, as a mapping."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(("rdf.yaml", "bioimageio.yaml"))]
        if not names:
            raise UserInputError(f"{path} is not a bioimage.io package (no rdf.yaml inside)")
        return yaml.safe_load(archive.read(names[0]))


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _run(module: Any, tile: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(tile[None, None])).numpy()[0, 0]


def export_bioimageio(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test_input: str,
    tile: tuple[int, int, int] | None = None,
    channel: int | None = None,
    authors: Sequence[str] | None = None,
    license: str = "CC-BY-4.0",
    url: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the model saved in ``model_dir`` as a bioimage.io package ``out`` (.zip).

    Parameters
    ----------
    model_dir : path
        A skeleton or lateral model folder (``vemrestore train ... --out``).
    out : path
        The package to write, ending in ``.zip``; never the model folder or the
        test input; an existing file is replaced only with ``overwrite``,
        once the new package is complete and valid.
    test_input : str
        A real volume the model applies to (thick sections for a skeleton
        model, LR slices for a lateral one); the test tile is cut from its
        centre and its voxel size (nm) labels the axes.
    tile : tuple of int, optional
        Test tile size (z, y, x) in input voxels; default a small valid tile.
    channel : int, optional
        Channel of a multi-channel ``test_input``.
    authors : sequence of str, optional
        The package's authors; default the login name.
    license : str
        SPDX identifier of the weights' licence.
    url : str, optional
        The vemrestore repository to cite; default the installed package's
        project URL (none: vemrestore is named in the README only).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    ExportResult

    Raises
    ------
    UserInputError
        For a missing bioimageio.spec, a model that is not exportable, a test
        input or tile that does not fit, or an output that may not be written.
    """
    import torch

    from vemrestore.export._docs import describe, training_record, write_cover, write_readme
    from vemrestore.export._tile import reference_output, test_tile, tile_model
    from vemrestore.export._torchscript import to_torchscript
    from vemrestore.methods import load_method

    out, model_dir = Path(out), Path(model_dir)
    refuse_outputs_over_inputs(
        {"output": out}, {"model folder": model_dir, "--test-input": test_input}
    )
    if out.suffix.lower() != ".zip":
        raise UserInputError(f"a bioimage.io package is a .zip file, got {out} (name it *.zip)")
    check_output_path(out, overwrite=overwrite)
    method = load_method(model_dir)
    model = tile_model(method)
    spec = _bioimageio()
    authors = list(authors) if authors else [_login_name()]
    _check_metadata(license, authors)
    volume = open_volume(test_input, channel=channel)
    check_finite(volume)
    data, region = test_tile(volume, model, tile)
    reference = reference_output(method, data)
    scripted = to_torchscript(model.module)
    outputs = {"pytorch_state_dict": _run(model.module, data), "torchscript": _run(scripted, data)}
    differences = {fmt: _max_difference(got, reference) for fmt, got in outputs.items()}
    span = _normalisation_span(model.kwargs)
    tolerance = float(f"{RELATIVE_TOLERANCE * span:.2g}")
    if max(differences.values()) > tolerance:
        raise RuntimeError(
            f"the exported modules differ from vemrestore predict by {differences} grey levels "
            f"(tolerance {tolerance:.3g}); this is a bug in vemrestore.export"
        )
    version = importlib.metadata.version("vemrestore")
    torch_version = torch.__version__.split("+")[0]
    voxel_out = method.output_voxel_size(volume.voxel_size)
    name, description = describe(model)
    test = {
        "source": Path(volume.source or test_input).name,
        "region": [[s.start, s.stop] for s in region],
        "shape": list(data.shape),
        "voxel_size": list(volume.voxel_size),
        "output_voxel_size": list(voxel_out),
        "max_abs_difference": max(differences.values()),
        "tolerance": tolerance,
    }
    provenance = {
        "version": version,
        "method_config": method.config.model_dump(mode="json"),
        "test_tile": test,
        "max_abs_difference_vs_predict": differences,
    }
    url = repository_url(url)
    rdf = build_rdf(
        model,
        name=name,
        description=description,
        axes=axes(model, volume.voxel_size, voxel_out),
        authors=authors,
        license=license,
        url=url,
        tolerance=tolerance,
        provenance=provenance,
        format_version=spec.model.v0_5.ModelDescr.implemented_format_version,
        torch_version=torch_version,
    )
    with tempfile.TemporaryDirectory(prefix="vemrestore-export-") as staging_dir:
        staging = Path(staging_dir)
        torch.save(model.module.state_dict(), staging / FILES["state_dict"])
        scripted.save(str(staging / FILES["torchscript"]))
        np.save(staging / FILES["input"], data[None, None])
        np.save(staging / FILES["output"], reference[None, None])
        tifffile.imwrite(staging / FILES["sample_input"], data)
        tifffile.imwrite(staging / FILES["sample_output"], reference)
        write_cover(staging / FILES["cover"], data, reference, model)
        write_readme(
            staging / FILES["readme"],
            model,
            name=name,
            description=description,
            test=test,
            training=training_record(model_dir),
            version=version,
            url=url,
        )
        (staging / FILES["environment"]).write_text(environment_yaml(version, torch_version))
        package = staging / "package.zip"
        _write_zip(staging, rdf, package)
        descr = validate_package(package)
        status = descr.validation_summary.status
        if status not in ("passed", "valid-format"):
            raise RuntimeError(
                f"bioimageio.spec rejects the package vemrestore wrote ({status}): "
                f"{descr.validation_summary.format()}"
            )
        with atomic_output(out, overwrite=overwrite) as partial:
            shutil.copyfile(package, partial)
    return ExportResult(out, model.kind, differences, tolerance, "passed")


def _check_metadata(license: str, authors: Sequence[str]) -> None:
    """Refuse a licence bioimage.io does not know and author names it does not take."""
    import pydantic
    from bioimageio.spec.generic.v0_3 import LicenseId

    try:
        pydantic.TypeAdapter(LicenseId).validate_python(license)
    except pydantic.ValidationError:
        raise UserInputError(
            f"--license {license!r} is not an SPDX licence identifier bioimage.io accepts "
            "(e.g. CC-BY-4.0, CC0-1.0, MIT, BSD-3-Clause)"
        ) from None
    for author in authors:
        if not author.strip() or "/" in author:
            raise UserInputError(f"--author {author!r}: give a name without '/'")


def _login_name() -> str:
    """The default author: the login name (a placeholder where none is known)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "vemrestore user"


def _normalisation_span(kwargs: dict[str, Any]) -> float:
    """``high - low`` of the output normalisation (the grey-level range the model maps to)."""
    if "high" in kwargs:
        return float(kwargs["high"] - kwargs["low"])
    return float(kwargs["output_high"] - kwargs["output_low"])


def _write_zip(staging: Path, rdf: dict[str, Any], package: Path) -> None:
    """Zip rdf.yaml and the files it names, each with its SHA-256 in the rdf.

    The rdf stays as written here (``bioimageio.spec.save_bioimageio_package``
    rewrites it, and before bioimageio.spec 0.5.14.3 fails with pydantic 2.14);
    the package is validated by loading it back.
    """
    files = []

    def hashed(node: Any) -> None:
        if isinstance(node, dict):
            source = node.get("source")
            if isinstance(source, str) and (staging / source).is_file():
                node["sha256"] = hashlib.sha256((staging / source).read_bytes()).hexdigest()
                files.append(source)
            for value in node.values():
                hashed(value)
        elif isinstance(node, list):
            for value in node:
                hashed(value)

    rdf = copy.deepcopy(rdf)
    hashed(rdf)
    with zipfile.ZipFile(package, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf, sort_keys=False))
        for name in dict.fromkeys(files):
            archive.write(staging / name, name)
