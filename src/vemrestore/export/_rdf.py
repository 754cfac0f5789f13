"""The rdf.yaml of a bioimage.io model package (format 0.5), as a plain mapping.

Axes carry voxel sizes, so the output axes are the input axes scaled by the
method's factors (bioimage.io ``SizeReference``: ``size = input size *
input scale / output scale``, rounded down). Files are named relative to the
package root (``FILES``).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import yaml

from vemrestore.errors import UserInputError
from vemrestore.export._docs import CITATIONS
from vemrestore.export._tile import TileGeometry, TileModel

__all__ = ["FILES", "build_rdf", "environment_yaml", "known_urls", "repository_url"]

# Weights, tensors and documents inside the package.
FILES = {
    "state_dict": "weights.pt",
    "torchscript": "weights_torchscript.pt",
    "input": "test_input.npy",
    "output": "test_output.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "readme": "README.md",
    "environment": "environment.yaml",
}

# Project URL keys looked up in the installed package's metadata, in order.
_URL_KEYS = ("repository", "source", "homepage")


def repository_url(given: str | None = None) -> str | None:
    """The vemrestore repository to cite: ``given``, else the package's project URL."""
    if given:
        return given
    try:
        entries = importlib.metadata.metadata("vemrestore").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    urls = {}
    for entry in entries:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    return next((urls[key] for key in _URL_KEYS if key in urls), None)


def known_urls(rdf: dict[str, Any]) -> dict[str, None]:
    """The http(s) URLs an rdf names, as ``known_files`` (validated without fetching them)."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith(("http://", "https://")):
            found[node] = None

    walk(rdf)
    return found


def _space_axis(
    axis: str, size: Any, scale: float, unit: str | None, description: str, halo: int = 0
) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "space", "id": axis, "size": size, "scale": scale}
    if unit:
        entry["unit"] = unit
    entry["description"] = description
    if halo:
        entry["halo"] = halo
    return entry


def axes(
    model: TileModel, voxel_in: Sequence[float], voxel_out: Sequence[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output axes: sizes, scales and halos.

    The scales are the voxel sizes in nm when their ratios give the output
    sizes exactly; otherwise unitless scales (the factors: ``k`` for the
    input z of an axial model, ``f`` for the input y, x of a lateral one).
    """
    geometry = model.geometry
    scales_in, scales_out, unit = list(voxel_in), list(voxel_out), "nanometer"
    if not _exact(geometry, scales_in, scales_out):
        f = float(geometry.lateral_factor)
        scales_in, scales_out, unit = [geometry.axial_factor, f, f], [1.0, 1.0, 1.0], None
        if not _exact(geometry, scales_in, scales_out):
            raise UserInputError(
                f"bioimage.io sizes cannot express the factor {geometry.axial_factor:g} "
                "exactly (int(size * scale_in / scale_out) loses a slice)"
            )
    what = "sections" if model.kind == "skeleton" else "slices"
    common = [{"type": "batch"}, {"type": "channel", "channel_names": ["em"]}]
    inputs, outputs = list(common), [dict(a) for a in common]
    for i, axis in enumerate("zyx"):
        label = f"{what} along z" if axis == "z" else f"pixels along {axis}"
        size = {"min": geometry.minimum[i], "step": geometry.step[i]}
        inputs.append(_space_axis(axis, size, scales_in[i], unit, label))
        reference = {"tensor_id": "raw", "axis_id": axis}
        outputs.append(
            _space_axis(axis, reference, scales_out[i], unit, f"restored {axis}", geometry.halo[i])
        )
    return inputs, outputs


def _exact(geometry: TileGeometry, scales_in: Sequence[float], scales_out: Sequence[float]) -> bool:
    """Whether bioimage.io's ``int(size * scale_in / scale_out)`` gives every output size."""
    for n in range(64):
        shape = tuple(
            low + n * step for low, step in zip(geometry.minimum, geometry.step, strict=True)
        )
        got = tuple(int(s * a / b) for s, a, b in zip(shape, scales_in, scales_out, strict=True))
        if got != geometry.output_shape(shape):  # type: ignore[arg-type]
            return False
    return True


def environment_yaml(version: str, torch_version: str) -> str:
    """Conda environment of the state-dict weights: PyTorch and vemrestore."""
    return yaml.safe_dump(
        {
            "name": "vemrestore",
            "channels": ["conda-forge", "nodefaults"],
            "dependencies": [
                "python>=3.11",
                f"pytorch=={torch_version}",
                "pip",
                {"pip": [f"vemrestore=={version}"]},
            ],
        },
        sort_keys=False,
    )


def build_rdf(
    model: TileModel,
    *,
    name: str,
    description: str,
    axes: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    authors: Sequence[str],
    license: str,
    url: str | None,
    tolerance: float,
    provenance: dict[str, Any],
    format_version: str,
    torch_version: str,
) -> dict[str, Any]:
    """The rdf.yaml content: metadata, tensors, both weights formats, tolerance, provenance."""
    inputs, outputs = axes
    cite = [{"text": text, "doi": doi} for text, doi in CITATIONS[model.kind]]
    if url:
        cite.append({"text": "vemrestore: restoration of volume electron microscopy", "url": url})
    kind_tags = (
        ["isotropic-reconstruction", "super-resolution", "3d"]
        if model.kind == "skeleton"
        else ["super-resolution", "denoising", "2d"]
    )
    task, architecture = (
        ("isotropic reconstruction", "2D U-Net")
        if model.kind == "skeleton"
        else ("super-resolution", "edge-attention SR")
    )
    rdf: dict[str, Any] = {
        "type": "model",
        "format_version": format_version,
        "name": name,
        "description": description,
        "authors": [{"name": author} for author in authors],
        "cite": cite,
        "license": license,
        "documentation": {"source": FILES["readme"]},
        "covers": [{"source": FILES["cover"]}],
        "tags": ["electron-microscopy", "volume-em", *kind_tags, "pytorch", "vemrestore"],
        "inputs": [
            _tensor("raw", "EM tile in the training data's intensity units", inputs, "input")
        ],
        "outputs": [_tensor("restored", "restored tile, same intensity units", outputs, "output")],
        "weights": {
            "pytorch_state_dict": {
                "source": FILES["state_dict"],
                "architecture": {
                    "callable": model.callable_name,
                    "import_from": "vemrestore.export",
                    "kwargs": model.kwargs,
                },
                "pytorch_version": torch_version,
                "dependencies": {"source": FILES["environment"]},
            },
            "torchscript": {
                "source": FILES["torchscript"],
                "pytorch_version": torch_version,
                "parent": "pytorch_state_dict",
            },
        },
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [
                    {
                        "absolute_tolerance": tolerance,
                        "relative_tolerance": 0.0,
                        "mismatched_elements_per_million": 0,
                    }
                ],
                "modality": "electron microscopy",
                "task": task,
                "architecture_type": architecture,
            },
            "vemrestore": provenance,
        },
    }
    if url:
        rdf["git_repo"] = url
    return rdf


def _tensor(name: str, description: str, axes: list[Any], files: str) -> dict[str, Any]:
    """A float32 tensor description whose test and sample tensors are ``FILES[files]`` and
    ``FILES["sample_" + files]``."""
    return {
        "id": name,
        "description": description,
        "axes": axes,
        "test_tensor": {"source": FILES[files]},
        "sample_tensor": {"source": FILES[f"sample_{files}"]},
        "data": {"type": "float32"},
    }
