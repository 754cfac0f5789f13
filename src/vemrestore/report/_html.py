"""A self-contained HTML report of benchmark results (``bench --json`` and benchmark scripts).

One file, no external resources: images are ``data:`` URIs, the style is
inline and nothing needs JavaScript. The page holds the provenance, the
results table (grouped by dataset and factor) and, for each ``figures``
entry, the planes of every method beside the truth and the input, error
maps, segmentation boundaries, and FRC and power-spectrum plots.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.report._images import decode_png, encode_png
from vemrestore.report._plots import (
    boundary_overlay,
    colour_bar,
    error_maps,
    line_plot,
    name_colours,
)

__all__ = ["load_results", "render_report", "write_report"]

# Which way each known measure is better, by key prefix; other columns are not marked.
# "one": a ratio to the truth, best closest to 1.
DIRECTION = {
    "psnr": "max",
    "ssim": "max",
    "ms_ssim": "max",
    "consistency_psnr": "max",
    "membrane_f1": "max",
    "mvox_per_s": "max",
    "frc_": "min",
    "seg_vi": "min",
    "seg_arand": "min",
    "feature_kid": "min",
    "spectrum_log_error": "min",
    "seconds": "min",
    "z_hf_ratio": "one",
}
# Rows that are references, not contenders (never marked best): the truth itself and
# upper bounds (e.g. a network trained with clean references).
REFERENCE_WORDS = ("truth", "upper bound")
# Keys that split the table into groups compared separately.
GROUP_KEYS = ("dataset", "factor", "scale_factor", "case")
ORIENTATIONS = ("xy", "xz", "yz")
# Columns of a figure that are references, not methods: no error map of their own.
REFERENCES = ("truth", "input")
_EXPECTED = "expected the output of `vemrestore bench --json`"
_NUMBER_WORDS = frozenset({"inf", "+inf", "-inf", "infinity", "-infinity", "nan"})

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1c2230;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1360px;margin:0 auto;padding:22px 26px 40px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px;color:#344}
.card{background:#fff;border:1px solid #e1e4e9;border-radius:8px;padding:14px 18px;margin:16px 0;
 box-shadow:0 1px 2px rgba(20,30,50,.05)}
.muted{color:#6b7280;font-size:12px}
.prov{font-size:12px;color:#4b5563;display:grid;grid-template-columns:max-content 1fr;gap:3px 12px}
.prov b{font-weight:600;color:#374151}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f3;
 padding:1px 5px;border-radius:3px;word-break:break-all}
.kv{display:inline-block;margin-right:14px;white-space:nowrap}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:left;white-space:nowrap}
th{background:#f8f9fb;font-weight:600;color:#374151;border-bottom:1px solid #d9dde3}
td.num,th.num{text-align:right}
td.best{font-weight:700;color:#0b6b2c;background:#e7f5ec}
td.missing{color:#b0b5bd}
td.nested{max-width:16em;overflow:hidden;text-overflow:ellipsis;font-size:11px;color:#4b5563}
tbody tr:hover td{background:#f6f8fb}
tr.group th{background:#fff;border-bottom:1px solid #d9dde3;padding:14px 10px 4px;
 font-size:13px;color:#1f2937}
tbody:first-of-type tr.group th{padding-top:6px}
tbody tr:hover td.best{background:#d9efe1}
.grid{display:grid;gap:6px;align-items:start;margin-top:8px}
.grid img{width:100%;height:auto;display:block;image-rendering:pixelated;border-radius:2px}
.head{font-size:12px;font-weight:600;text-align:center;overflow:hidden;text-overflow:ellipsis;
 white-space:nowrap}
.label{font-size:11px;font-weight:600;color:#6b7280;align-self:center;text-align:right;
 padding-right:4px}
.cell figcaption{font-size:11px;color:#6b7280;text-align:center;margin-top:2px}
.cell{margin:0}
.empty{font-size:11px;color:#b0b5bd;text-align:center;align-self:center}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
 vertical-align:-1px}
.legend{font-size:11px;color:#6b7280;display:flex;align-items:center;gap:8px}
.note{font-size:11px;color:#6b7280}
.legend img{width:220px!important;height:10px!important;display:inline-block!important}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;margin-top:12px}
.plots img{width:100%;height:auto;display:block}
"""


def write_report(
    results_json: str | Path, out_html: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the HTML report of a results JSON file.

    Parameters
    ----------
    results_json : str or Path
        ``{"results": [row, ...], "command", "machine", "commit", "figures"?}``
        as written by ``vemrestore bench --json`` and the benchmark scripts.
    out_html : str or Path
        The single self-contained HTML file to write (atomically); a missing
        folder is created.
    overwrite : bool
        Replace an existing ``out_html``.

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    UserInputError
        When ``out_html`` is ``results_json`` or exists without ``overwrite``,
        or ``results_json`` is missing or malformed (not JSON, no ``results``
        list of rows, undecodable figures): one line naming the file.
    """
    from vemrestore.io import atomic_output, same_file

    source, out = Path(results_json), Path(out_html)
    if same_file(out, source):
        raise UserInputError(f"the report would replace its input {source}: pick another --out")
    data = load_results(source)

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, overwrite=overwrite) as partial:
        partial.write_text(render_report(data, source=str(source)), encoding="utf-8")
    return out


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results JSON file: an object with a ``results`` list of row objects.

    Raises
    ------
    UserInputError
        One line naming ``path`` when it is missing, not JSON or not of that shape.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"results JSON not found: {path} (check the path)") from None
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{path} is not JSON ({error.msg} at line {error.lineno}); {_EXPECTED}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"cannot read results JSON {path}: {error}") from None
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserInputError(f"{path} has no 'results' list of row objects; {_EXPECTED}")
    figures = data.get("figures")
    if figures is not None and not isinstance(figures, list):
        raise UserInputError(f"{path}: 'figures' must be a list, got {type(figures).__name__}")
    return data


def render_report(data: Mapping[str, Any], *, source: str) -> str:
    """The report page of checked results ``data`` (see `load_results`) read from ``source``."""
    rows = data["results"]
    figures = [
        _figure_section(figure, f"{source}: figures[{i}]")
        for i, figure in enumerate(data.get("figures") or [])
    ]
    title = f"vemrestore benchmark · {Path(source).name}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_esc(title)}</h1>{_provenance(data, source)}"
        f"<section class='card'><h2>Results <span class='muted'>{len(rows)} rows · best per "
        "column in green (lower is better for VI, ARAND, KID, errors, FRC resolution and "
        f"times)</span></h2>{_results_table(rows)}</section>"
        + "".join(figures)
        + "</main></body></html>\n"
    )


# -- provenance -------------------------------------------------------------------------------


def _provenance(data: Mapping[str, Any], source: str) -> str:
    items = [("source", f"<code>{_esc(source)}</code>")]
    if data.get("command"):
        items.append(("command", f"<code>{_esc(str(data['command']))}</code>"))
    if data.get("commit"):
        items.append(("commit", f"<code>{_esc(str(data['commit']))}</code>"))
    machine = data.get("machine")
    if isinstance(machine, Mapping) and machine:
        parts = (
            f"<span class='kv'><b>{_esc(str(k))}</b> {_esc(_plain(v))}</span>"
            for k, v in machine.items()
        )
        items.append(("machine", "".join(parts)))
    elif machine:
        items.append(("machine", _esc(_plain(machine))))
    body = "".join(f"<b>{name}</b><div>{value}</div>" for name, value in items)
    return f"<div class='prov'>{body}</div>"


def _plain(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value)


# -- results table ----------------------------------------------------------------------------


def _results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One table, its rows grouped by dataset and factor (one body each, aligned columns)."""
    if not rows:
        return "<p class='muted'>No result rows.</p>"
    keys = [k for k in GROUP_KEYS if any(k in row for row in rows)]
    columns = [c for c in dict.fromkeys(key for row in rows for key in row) if c not in keys]
    numeric = [_is_numeric([row.get(c) for row in rows]) for c in columns]
    head = "".join(
        f"<th class='{'num' if n else ''}'>{_esc(c)}</th>"
        for c, n in zip(columns, numeric, strict=True)
    )
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(k) for k in keys]), []).append(row)
    bodies = []
    for members in groups.values():
        title = (
            f"<tr class='group'><th colspan='{len(columns)}'>{_group_title(members[0], keys)}"
            "</th></tr>"
            if keys
            else ""
        )
        bodies.append(f"<tbody>{title}{_table_rows(members, columns, numeric)}</tbody>")
    return (
        f"<div class='table-wrap'><table><thead><tr>{head}</tr></thead>"
        f"{''.join(bodies)}</table></div>"
    )


def _group_title(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        value = row.get(key)
        text = _format_value(value)[0] if value is not None else f"no {key}"
        parts.append(f"factor ×{text}" if key == "factor" and value is not None else text)
    return " · ".join(_esc(p) for p in parts)


def _table_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], numeric: Sequence[bool]
) -> str:
    """The rows' cells, the best value of each metric column among ``rows`` highlighted."""
    names = [str(row.get("method", row.get("row", ""))) for row in rows]
    contenders = [not any(word in name for word in REFERENCE_WORDS) for name in names]
    best = [
        _best_rows(
            c, [row.get(c) if keep else None for row, keep in zip(rows, contenders, strict=True)]
        )
        for c in columns
    ]
    lines = []
    for i, row in enumerate(rows):
        tds = []
        for j, column in enumerate(columns):
            value = row.get(column)
            text, missing = _format_value(value)
            classes = ["num"] * numeric[j] + ["missing"] * missing + ["best"] * (i in best[j])
            # Nested values (lists, objects) are cut to a column's width; hovering shows them.
            nested = isinstance(value, list | dict)
            title = f" title='{_esc(text)}'" if nested else ""
            classes += ["nested"] * nested
            tds.append(f"<td class='{' '.join(classes)}'{title}>{_esc(text)}</td>")
        lines.append(f"<tr>{''.join(tds)}</tr>")
    return "".join(lines)


def _number(value: Any) -> float | None:
    """``value`` as a float (None, "nan": nan; "inf": inf), or None when it is no number."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _NUMBER_WORDS:
        return float(value)
    return None


def _is_numeric(values: Sequence[Any]) -> bool:
    numbers = [_number(v) for v in values if v is not None]
    return bool(numbers) and all(n is not None for n in numbers)


def _best_rows(key: str, values: Sequence[Any]) -> set[int]:
    """Rows holding the best value of a metric column (floats; integer columns are counts)."""
    if not _is_numeric(values) or all(isinstance(v, int) or v is None for v in values):
        return set()
    numbers = [_number(v) for v in values]
    present = {n for n in numbers if n is not None and not math.isnan(n)}
    if len(present) < 2:
        return set()
    direction = _direction(key)
    if direction is None:
        return set()
    if direction == "one":
        best = min(present, key=lambda n: abs(math.log(n)) if n > 0 else math.inf)
    else:
        best = min(present) if direction == "min" else max(present)
    return {i for i, n in enumerate(numbers) if n == best}


def _direction(key: str) -> str | None:
    """ "max", "min" or "one" for a known measure (longest matching prefix), else None."""
    matches = [prefix for prefix in DIRECTION if key.startswith(prefix)]
    return DIRECTION[max(matches, key=len)] if matches else None


def _format_value(value: Any) -> tuple[str, bool]:
    """Display text of a table cell and whether it stands for a missing value."""
    if isinstance(value, int):  # bools too
        return str(value), False
    number = _number(value)
    if number is None:
        return (value if isinstance(value, str) else json.dumps(value)), False
    if math.isnan(number):
        return "–", True
    return _format_float(number), False


def _format_float(x: float) -> str:
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    magnitude = abs(x)
    if x == 0:
        return "0"
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{x:.2e}"
    if magnitude >= 1000:
        return f"{x:.0f}"
    return f"{x:.4g}"


# -- figures ----------------------------------------------------------------------------------


def _figure_section(figure: Any, where: str) -> str:
    figure = _mapping(figure, where)
    planes = {
        name: {
            o: _decode(text, f"{where}.planes.{name}.{o}")
            for o, text in _mapping(views, f"{where}.planes.{name}").items()
        }
        for name, views in _mapping(figure.get("planes"), f"{where}.planes").items()
    }
    frc = _curves(figure.get("frc"), "frc", f"{where}.frc")
    spectra = _curves(figure.get("spectra"), "log_power", f"{where}.spectra")
    names = list(dict.fromkeys([*planes, *frc, *spectra]))
    colours = name_colours(names)
    columns = list(planes)
    rows = [_header_row(columns, colours)]
    for o in ORIENTATIONS:
        if any(o in views for views in planes.values()):
            rows.append(_image_row(o.upper(), [planes[n].get(o) for n in columns]))
    rows.extend(_error_rows(planes, columns, where))
    rows.extend(_segmentation_rows(figure.get("segmentations"), planes, columns, where))
    grid = (
        f"<div class='grid' style='grid-template-columns:4.5em repeat({len(columns)},"
        f"minmax(0,1fr))'>{''.join(rows)}</div>"
        if columns
        else ""
    )
    return (
        f"<section class='card'><h2>{_esc(_figure_title(figure))}</h2>"
        f"<div class='muted'>{_esc(_figure_subtitle(figure, planes))}</div>"
        f"{grid}{_plots(frc, spectra, colours)}</section>"
    )


def _figure_title(figure: Mapping[str, Any]) -> str:
    if figure.get("title"):
        return str(figure["title"])
    parts = [str(figure.get("dataset", "figure"))]
    if figure.get("factor") is not None:
        parts.append(f"factor ×{_format_value(figure['factor'])[0]}")
    return " · ".join(parts)


def _figure_subtitle(figure: Mapping[str, Any], planes: Mapping[str, dict[str, np.ndarray]]) -> str:
    parts = [f"{k} {_format_value(figure[k])[0]}" for k in GROUP_KEYS if k in figure]
    for o in ORIENTATIONS:
        shape = next((views[o].shape[:2] for views in planes.values() if o in views), None)
        if shape is not None:
            parts.append(f"{o.upper()} crop {shape[0]}×{shape[1]} px")
    return " · ".join(parts)


def _header_row(columns: Sequence[str], colours: Mapping[str, str]) -> str:
    heads = "".join(
        f"<div class='head' title='{_esc(n)}'><span class='swatch' "
        f"style='background:{colours[n]}'></span>{_esc(n)}</div>"
        for n in columns
    )
    return f"<div></div>{heads}"


def _image_row(
    label: str, images: Sequence[np.ndarray | None], captions: Sequence[str] | None = None
) -> str:
    cells = []
    for i, image in enumerate(images):
        caption = captions[i] if captions else None
        if image is None:
            cells.append(f"<div class='empty'>{_esc(caption or '')}</div>")
            continue
        text = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        cells.append(f"<figure class='cell'>{_img(image, label)}{text}</figure>")
    return f"<div class='label'>{_esc(label)}</div>{''.join(cells)}"


def _error_rows(
    planes: Mapping[str, dict[str, np.ndarray]], columns: Sequence[str], where: str
) -> list[str]:
    """``|method - truth|`` of the XZ planes, one colour scale, and its legend."""
    truth = planes.get("truth", {}).get("xz")
    methods = [n for n in columns if n not in REFERENCES and "xz" in planes[n]]
    if truth is None or not methods:
        return []
    for name in methods:
        if planes[name]["xz"].shape != truth.shape:
            raise UserInputError(
                f"{where}.planes.{name}.xz is {planes[name]['xz'].shape}, the truth's "
                f"{truth.shape}: planes of one orientation must share their shape"
            )
    images, mean_errors, vmax = error_maps({n: planes[n]["xz"] for n in methods}, truth)
    row = _image_row(
        "|error| XZ",
        [images.get(n) for n in columns],
        [f"mean |error| {mean_errors[n]:.1f}" if n in images else "reference" for n in columns],
    )
    legend = (
        "<div></div><div class='legend' style='grid-column:2/-1'>"
        f"0 {_img(colour_bar(), 'error scale')} {vmax:.0f} grey levels "
        "(|method − truth| on the XZ plane, one scale for all)</div>"
    )
    return [row, legend]


def _segmentation_rows(
    segmentations: Any,
    planes: Mapping[str, dict[str, np.ndarray]],
    columns: Sequence[str],
    where: str,
) -> list[str]:
    """Each column's segment boundaries (magenta) and the truth's (green) on its XZ plane."""
    if not segmentations:
        return []
    labels = {}
    for name, views in _mapping(segmentations, f"{where}.segmentations").items():
        views = _mapping(views, f"{where}.segmentations.{name}")
        if "xz" in views:
            labels[name] = _decode(views["xz"], f"{where}.segmentations.{name}.xz")
    truth = labels.get("truth")
    images = []
    for name in columns:
        grey = planes[name].get("xz")
        if grey is None or name not in labels:
            images.append(None)
            continue
        for layer in (labels[name], truth):
            if layer is not None and layer.shape != grey.shape:
                raise UserInputError(
                    f"{where}.segmentations: a label crop is {layer.shape}, "
                    f"{name}'s XZ plane {grey.shape}; they must be the same crop"
                )
        own = None if name == "truth" else labels[name]
        images.append(boundary_overlay(grey, own, truth))
    if not any(image is not None for image in images):
        return []
    legend = (
        "<div></div><div class='note' style='grid-column:2/-1'>boundaries of the "
        "<b style='color:#1a9e1a'>truth's segmentation</b>, of <b style='color:#b000b0'>the "
        "column's</b>, <b>white</b> where both agree</div>"
    )
    return [_image_row("segments XZ", images), legend]


def _plots(
    frc: Mapping[str, tuple[np.ndarray, np.ndarray]],
    spectra: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colours: Mapping[str, str],
) -> str:
    if not frc and not spectra:
        return ""
    images = []
    if frc:
        text = line_plot(
            frc,
            colours=colours,
            title="Fourier ring correlation with the truth (XZ); dotted: 1/7",
            xlabel="spatial frequency (1/nm)",
            ylabel="FRC",
            threshold=1 / 7,
        )
        images.append((text, "FRC"))
    if spectra:
        text = line_plot(
            spectra,
            colours=colours,
            title="Radially averaged power spectrum of XZ planes",
            xlabel="spatial frequency (1/nm)",
            ylabel="log10 power",
        )
        images.append((text, "power spectrum"))
    tags = "".join(f"<img src='data:image/png;base64,{t}' alt='{a}'>" for t, a in images)
    return f"<div class='plots'>{tags}</div>"


def _curves(value: Any, y_key: str, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (frequency, ``y_key``) arrays of equal length, from a figure's curve object."""
    curves = {}
    for name, entry in _mapping(value or {}, where).items():
        entry = _mapping(entry, f"{where}.{name}")
        try:
            x = np.asarray(entry.get("frequency"), dtype=np.float64)
            y = np.asarray(entry.get(y_key), dtype=np.float64)
        except (TypeError, ValueError):
            x = y = np.empty(0)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise UserInputError(
                f"{where}.{name} needs 'frequency' and '{y_key}' lists of numbers of one length"
            )
        curves[name] = (x, y)
    return curves


# -- small helpers ----------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UserInputError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _decode(text: Any, where: str) -> np.ndarray:
    try:
        return decode_png(text)
    except ValueError as error:
        raise UserInputError(f"{where} is not a base64 PNG: {error}") from None


def _img(image: np.ndarray, alt: str) -> str:
    height, width = image.shape[:2]
    return (
        f"<img src='data:image/png;base64,{encode_png(image)}' alt='{_esc(alt)}' "
        f"width='{width}' height='{height}'>"
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
