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


def with_clicks(html: str | os.PathLike, out: str | os.PathLike, clicks: list[tuple[str, str, int]]) -> Path:
    """A copy of ``html`` that, once loaded, clicks through the page: each step waits 1.5 s, then clicks

    * ``("text", label, k)``: the k-th innermost element whose whole text is ``label`` (a menu entry), or
    * ``("icon", name, k)``: the k-th ``a[iconname=name]`` (the Snakemake report's ``eye`` = show the result,
      ``information-circle`` = show its caption).

    This drives the single-page Snakemake report to a result or caption so that :func:`screenshot` and
    :func:`rendered_dom` show it. A step whose element does not exist records an error in
    ``document.body.dataset.clickError`` (visible in the DOM dump), so a missing item cannot pass silently.
    """
    import json

    steps = json.dumps([list(step) for step in clicks])
    script = f"""<script>
(function () {{
  const steps = {steps};
  steps.forEach(function (step, i) {{
    setTimeout(function () {{
      let found;
      if (step[0] === "icon") {{
        found = document.querySelectorAll('a[iconname="' + step[1] + '"]')[step[2]];
      }} else {{
        const all = Array.from(document.querySelectorAll("a,li,span,div,td,button"));
        found = all.filter(function (e) {{ return e.textContent.trim() === step[1]; }}).reverse()[step[2]];
      }}
      if (found) {{ found.click(); }} else {{ document.body.dataset.clickError = "step " + i + " not found: " + step; }}
    }}, 1500 * (i + 1));
  }});
}})();
</script>"""
    source = Path(html).read_text(encoding="utf-8")
    end = source.rfind("</body>")  # the last one: the report's scripts contain the string too
    if end < 0:
        raise ValueError(f"{html} has no </body>; is it an HTML page?")
    out = Path(out)
    out.write_text(source[:end] + script + source[end:], encoding="utf-8")
    return out
