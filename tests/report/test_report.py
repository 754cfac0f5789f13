"""The HTML report: PNG text round trips, the page's table and images, refusals, the command."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.errors import UserInputError
from vemrestore.report import decode_png, encode_png, write_report

runner = CliRunner()


class _Page(HTMLParser):
    """Collects ``<img>`` (alt, src), and the text and classes of table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.cells: list[tuple[str, str]] = []
        self.tags: set[str] = set()
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("alt", ""), attrs["src"]))
        if tag in ("td", "th"):
            self._cell = [attrs.get("class") or "", ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.mark.parametrize(
    "array",
    [
        np.arange(60, dtype=np.uint8).reshape(6, 10),
        (np.arange(60, dtype=np.uint16) * 1000).reshape(6, 10),
        (np.arange(60, dtype=">u2") * 1000).reshape(6, 10),
        np.arange(180, dtype=np.uint8).reshape(6, 10, 3),
    ],
    ids=["uint8", "uint16", "uint16-big-endian", "rgb"],
)
def test_png_text_round_trips_exactly(array):
    text = encode_png(array)
    assert text.isascii()
    back = decode_png(text)
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.int16),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint16),
        np.zeros(8, np.uint8),
        np.zeros((0, 4), np.uint8),
    ],
    ids=["float", "int16", "rgba", "rgb16", "1d", "empty"],
)
def test_encode_png_refuses_other_images(array):
    with pytest.raises(ValueError, match="encode_png takes"):
        encode_png(array)


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"plain text").decode(), None])
def test_decode_png_refuses_what_is_no_png(text):
    with pytest.raises(ValueError, match="not base64 PNG"):
        decode_png(text)


def _planes(seed: int, shape: tuple[int, int, int] = (16, 24, 32)) -> dict[str, np.ndarray]:
    volume = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return {"xy": volume[8], "xz": volume[:, 12, :], "yz": volume[:, :, 16]}


def _labels(xz: np.ndarray) -> np.ndarray:
    labels = np.ones(xz.shape, np.uint16)
    labels[:, xz.shape[1] // 2 :] = 300  # > 255: needs 16 bits
    return labels


def _results(figures: bool) -> dict:
    rows = [
        {"dataset": "toy", "factor": 4.0, "method": "cubic", "psnr": 30.5, "seconds": 2.0},
        {"dataset": "toy", "factor": 4.0, "method": "skelem", "psnr": "inf", "seconds": 9.0},
        {"dataset": "toy", "factor": 8.0, "method": "cubic", "psnr": 25.0, "seconds": None},
    ]
    data = {"results": rows, "command": "vemrestore bench --json r.json", "commit": "abc123"}
    data["machine"] = {"platform": "test", "cpu_count": 2}
    if not figures:
        return data
    truth = _planes(0)
    planes = {"truth": truth, "input": _planes(1), "cubic": dict(truth), "skelem": _planes(2)}
    frequency = np.linspace(0, 0.05, 9).tolist()
    data["figures"] = [
        {
            "dataset": "toy",
            "factor": 4.0,
            "title": "Toy & <planes>",
            "planes": {n: {o: encode_png(p) for o, p in v.items()} for n, v in planes.items()},
            "segmentations": {n: {"xz": encode_png(_labels(v["xz"]))} for n, v in planes.items()},
            "frc": {n: {"frequency": frequency, "frc": [1.0] * 9} for n in ("cubic", "skelem")},
            "spectra": {n: {"frequency": frequency, "log_power": [3.0] * 9} for n in planes},
        }
    ]
    return data


@pytest.fixture
def results_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(figures=True)))
    return path


def test_report_embeds_table_and_figure_images(results_json, tmp_path):
    out = write_report(results_json, tmp_path / "report.html")
    page = _parse(out)
    text = out.read_text(encoding="utf-8")
    assert not page.tags & {"script", "link", "iframe"} and "http" not in text
    assert "Toy &amp; &lt;planes&gt;" in text  # the title, escaped
    cells = [cell for _, cell in page.cells]
    assert "cubic" in cells and "skelem" in cells and "abc123" in text
    assert "∞" in cells and "–" in cells  # "inf" and a missing value
    best = [cell for classes, cell in page.cells if "best" in classes]
    # Lowest seconds (row 1), highest PSNR (row 2); a single row at factor 8: no contest.
    assert best == ["2", "∞"]

    alts = [alt for alt, _ in page.images]
    for orientation in ("XY", "XZ", "YZ"):
        assert alts.count(orientation) == 4  # truth, input, cubic, skelem
    assert alts.count("|error| XZ") == 2 and alts.count("segments XZ") == 4
    assert {"FRC", "power spectrum", "error scale"} <= set(alts)
    decoded = {}
    for alt, src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))) as image:
            image.load()
        decoded.setdefault(alt, []).append(np.asarray(image))
    cubic_error, skelem_error = decoded["|error| XZ"]
    # cubic is the truth: its map is one colour (zero error); skelem's is not.
    assert len(np.unique(cubic_error.reshape(-1, 3), axis=0)) == 1
    assert len(np.unique(skelem_error.reshape(-1, 3), axis=0)) > 1


def test_report_without_figures_has_the_table_only(tmp_path):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(_results(figures=False)))
    page = _parse(write_report(source, tmp_path / "report.html"))
    assert page.images == []
    assert "cubic" in [cell for _, cell in page.cells]


def test_report_refuses_existing_output_and_its_input(results_json, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep")
    with pytest.raises(UserInputError, match="exists"):
        write_report(results_json, out)
    assert out.read_text() == "keep"
    write_report(results_json, out, overwrite=True)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(UserInputError, match="replace its input"):
        write_report(results_json, results_json, overwrite=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "no 'results' list"),
        ('{"results": 3}', "no 'results' list"),
        ('{"results": [1]}', "no 'results' list"),
        ('{"results": [], "figures": {}}', "'figures' must be a list"),
        ('{"results": [], "figures": [{"planes": {"cubic": {"xz": "x"}}}]}', "planes.cubic.xz"),
    ],
)
def test_malformed_results_are_one_line_user_errors(tmp_path, text, fragment):
    source = tmp_path / "bad.json"
    source.write_text(text)
    out = tmp_path / "report.html"
    with pytest.raises(UserInputError) as error:
        write_report(source, out)
    message = str(error.value)
    assert fragment in message and "bad.json" in message and "\n" not in message
    assert not out.exists()


def test_report_command_writes_then_refuses(results_json, tmp_path):
    out = tmp_path / "sub" / "report.html"
    arguments = ["report", str(results_json), "--out", str(out)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and out.is_file()
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "exists" in lines[0]
    assert runner.invoke(app, [*arguments, "--overwrite"]).exit_code == 0


def test_bench_json_to_report_end_to_end(tmp_path):
    """`vemrestore bench --json` keeps figures that `vemrestore report` renders."""
    from vemrestore.bench import em_phantom
    from vemrestore.io import Volume, write_volume

    data = write_volume(
        Volume(em_phantom((64, 48, 48), num_cells=12, rng=2), voxel_size=(10, 10, 10)),
        tmp_path / "iso.tif",
    )
    results = tmp_path / "bench.json"
    args = ["bench", "--data", str(data), "--factors", "4", "--methods", "nearest,cubic"]
    args += ["--metrics", "psnr,frc,seg", "--segmenter", "classical", "--json", str(results)]
    assert runner.invoke(app, args).exit_code == 0
    [figure] = json.loads(results.read_text())["figures"]
    assert set(figure["planes"]) == {"truth", "input", "nearest", "cubic"}
    assert set(figure["segmentations"]) == {"truth", "nearest", "cubic"}
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(results), "--out", str(html)])
    assert result.exit_code == 0, result.output
    page = _parse(html)
    # 4 columns x 3 planes, 2 error maps, 3 overlays, at least the FRC plot
    assert len(page.images) >= 4 * 3 + 2 + 3 + 1
    for _, src in page.images:
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).load()
    assert any("cubic" in text for _, text in page.cells)
