"""Render an HTML file in a real headless Chromium: a screenshot and the DOM after its scripts ran.

The Snakemake report (``snakemake --report report.html``) is a single-page application whose content is built by
JavaScript, so checking the HTML source is not enough: the page must be rendered. Chromium runs with the flags a
root, offline, GPU-less machine needs (``--no-sandbox --disable-gpu --disable-background-networking
--disable-component-update --no-first-run``) and a throw-away profile (``--user-data-dir``).
``--virtual-time-budget`` lets the page's scripts finish before the screenshot or the DOM dump is taken.

Install on Debian: ``apt-get update && apt-get install -y chromium``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium` (Debian)"


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH, or ``None``."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(html: str | os.PathLike, extra: list[str], chromium: str | None, timeout: float, budget_ms: int):
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"HTML file {str(html)!r} does not exist; create it with `snakemake --report {html}`")
    executable = chromium or find_chromium()
    if executable is None:
        raise FileNotFoundError(f"no Chromium executable ({', '.join(CANDIDATES)}) on PATH; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="dwgf-chromium-") as profile:
        command = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={int(budget_ms)}",
            *extra,
            html.as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{executable} failed on {html} (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result


def screenshot(
    html: str | os.PathLike,
    png: str | os.PathLike,
    width: int = 1400,
    height: int = 1800,
    chromium: str | None = None,
    timeout: float = 180,
    budget_ms: int = 15000,
) -> Path:
    """Render ``html`` and save a ``width`` x ``height`` PNG screenshot to ``png``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(html, [f"--screenshot={png}", f"--window-size={width},{height}"], chromium, timeout, budget_ms)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium exited cleanly but wrote no screenshot {png}")
    return png


def rendered_dom(
    html: str | os.PathLike, chromium: str | None = None, timeout: float = 180, budget_ms: int = 15000
) -> str:
    """The page's DOM (serialised HTML) after its scripts ran."""
    return _run(html, ["--dump-dom"], chromium, timeout, budget_ms).stdout
