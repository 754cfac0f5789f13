"""``vemrestore bench``: typer options with several values (repeated, comma- or space-separated)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.cli._bench import spread_values

runner = CliRunner()


@pytest.fixture
def fake_bench(monkeypatch):
    """``run_axial_benchmark`` recording its arguments and returning one row at once."""
    import vemrestore.bench as bench

    calls = []

    def run(data, **kwargs):
        calls.append({"data": list(data), **kwargs})
        row = bench.AxialResult("d/v", "cubic", 4.0, 0.1, 0.0, 9.0, {"psnr": 30.0, "ssim": 0.9})
        return bench.AxialReport(results=[row])

    monkeypatch.setattr(bench, "run_axial_benchmark", run)
    return calls


@pytest.fixture
def volumes(tmp_path):
    """Two (empty) files standing for --data volumes: the fake benchmark never reads them."""
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path in paths:
        path.touch()
    return [str(p) for p in paths]


def test_the_readme_command_still_works(fake_bench, volumes, tmp_path):
    out = tmp_path / "out.json"
    args = ["--data", volumes[0], "--factors", "4", "8", "--methods", "nearest,linear"]
    result = runner.invoke(app, ["bench", *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (call,) = fake_bench
    assert call["data"] == [volumes[0]]
    assert call["factors"] == [4.0, 8.0] and call["methods"] == ["nearest", "linear"]
    assert call["profile"] == "box" and call["method_options"] is None
    assert "| cubic |" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["command"] == " ".join(["vemrestore", "bench", *args, "--json", str(out)])


@pytest.mark.parametrize(
    "form",
    [
        ["--data", "A", "B", "--factors", "4", "8", "--methods", "nearest", "cubic"],
        ["--data", "A", "--data", "B", "--factors", "4,8", "--methods", "nearest,cubic"],
        ["--factors", "4", "--factors", "8", "--data", "A", "B", "--methods=nearest,cubic"],
        ["--methods", "nearest,", "cubic", "--factors=4,8", "--data=A", "B"],
    ],
)
def test_several_values_repeated_comma_or_space_separated(fake_bench, volumes, form):
    args = [{"A": volumes[0], "B": volumes[1]}.get(token, token) for token in form]
    args = [token.replace("=A", f"={volumes[0]}") for token in args]
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 0, result.output
    (call,) = fake_bench
    assert call["data"] == volumes
    assert call["factors"] == [4.0, 8.0] and call["methods"] == ["nearest", "cubic"]


def test_the_other_options_and_defaults(fake_bench, volumes):
    options = '{"skeleton": {"train": {"num_steps": 20}}}'
    args = ["--data", volumes[0], "--profile", "gaussian", "--options", options]
    assert runner.invoke(app, ["bench", *args]).exit_code == 0
    assert runner.invoke(app, ["bench", "--data", volumes[0]]).exit_code == 0
    given, default = fake_bench
    assert given["profile"] == "gaussian"
    assert given["method_options"] == {"skeleton": {"train": {"num_steps": 20}}}
    assert default["factors"] == [4.0, 8.0]
    assert default["methods"] == ["nearest", "linear", "cubic"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([], ("either --data", "--no-reference")),
        (["--data", "V", "--no-reference", "W"], ("either --data", "--no-reference")),
        (["--data", "V", "--metrics", "psnr,beauty"], ("--metrics", "'beauty'", "all")),
        (["--no-reference", "V", "--factors", "4", "8"], ("--no-reference", "one factor")),
        (["--data", "V", "--factors", "4", "abc"], ("--factors", "'abc'", "not a number")),
        (["--data", "V", "--factors", "1"], ("--factors", "> 1")),
        (["--data", "V", "--methods", ","], ("--methods", "at least one")),
        (["--data", "V", "--profile", "flat"], ("--profile", "box or gaussian")),
        (["--data", "V", "--options", "{bad"], ("--options", "not valid JSON")),
        (["--data", "V", "--options", "[1, 2]"], ("--options", "method names")),
        (["--data", "V", "--bogus"], ("--bogus", "vemrestore bench --help")),
        (["--data", "V", "--json"], ("--json", "requires an argument")),
        (["--data", "V", "--methods", "cubik"], ("cubik", "cubic")),
    ],
)
def test_mistakes_are_one_line_and_exit_2(assert_refused, args, fragments, volumes):
    args = [volumes[0] if token == "V" else token for token in args]
    assert_refused(runner.invoke(app, ["bench", *args]), *fragments)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option(flag):
    result = runner.invoke(app, ["bench", flag])
    assert result.exit_code == 0, result.output
    for option in ("--data", "--factors", "--methods", "--profile", "--options", "--json"):
        assert option in result.stdout
    assert "4,8" in result.stdout  # the comma form is documented


def test_spread_values_leaves_single_value_options_and_the_end_marker_alone():
    argv = ["--json", "o.json", "--factors", "4", "8", "--profile", "box", "--", "x", "y"]
    assert spread_values(argv) == [
        *["--json", "o.json", "--factors", "4", "--factors", "8", "--profile", "box"],
        *["--", "x", "y"],
    ]
