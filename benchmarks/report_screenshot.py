"""Screenshot of an HTML report (`vemrestore report`) with headless Chromium.

Run::

    .venv/bin/python benchmarks/report_screenshot.py REPORT.html --png benchmarks/results/report.png

Needs Chromium (``apt-get install -y chromium``). The page is shot at a
fixed window size (``--width`` x ``--height`` CSS pixels); a taller report
is cut at the bottom, so raise ``--height`` to see all of it. Chromium
runs with a fresh profile, no network services and no GPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from vemrestore.io import atomic_output

CHROMIUM = Path("/usr/bin/chromium")
# No first-run UI, no background traffic or updates: the shot depends on the page only.
QUIET_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="HTML report to shoot")
    parser.add_argument("--png", type=Path, required=True, help="screenshot to write")
    parser.add_argument("--chromium", type=Path, default=CHROMIUM, help="Chromium binary")
    parser.add_argument("--width", type=int, default=1400, help="window width (CSS px)")
    parser.add_argument("--height", type=int, default=3000, help="window height (CSS px)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    return parser.parse_args()


def screenshot(
    report: Path, png: Path, *, chromium: Path, size: tuple[int, int], timeout: float
) -> Path:
    """Shoot ``report`` at ``size`` (width, height) into ``png`` (replaced atomically)."""
    with tempfile.TemporaryDirectory(prefix="report-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        command = [
            str(chromium),
            *QUIET_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={shot}",
            report.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not shot.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"chromium made no screenshot (exit {done.returncode}): {tail}")
        png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(png, overwrite=True) as partial:
            shutil.copyfile(shot, partial)
    return png


def main() -> None:
    args = parse_args()
    if not args.report.is_file():
        raise SystemExit(f"report not found: {args.report}")
    if not (args.chromium.is_file() or shutil.which(str(args.chromium))):
        raise SystemExit(
            f"chromium not found at {args.chromium}: install it (`apt-get install -y chromium`) "
            "or pass --chromium PATH"
        )
    shot = screenshot(
        args.report,
        args.png,
        chromium=args.chromium,
        size=(args.width, args.height),
        timeout=args.timeout,
    )
    print(shot)


if __name__ == "__main__":
    main()
