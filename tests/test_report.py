"""The Snakemake HTML report renders in a real headless browser and shows what the issue asks for.

Chromium is needed (``apt-get update && apt-get install -y chromium``); without it these tests skip with that
reason. The report test uses the session's one smoke run (tests/audit_smoke.py) and writes ``report.html`` beside
``results/`` (not inside it, so ``dwgf verify`` is unaffected). Set ``DWGF_REPORT_SCREENSHOT=<file.png>`` to keep
the screenshot for a look.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from audit_smoke import smoke_workdir, snakemake
from PIL import Image

from dwgf.audit.browser import find_chromium, rendered_dom, screenshot

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH; install it with `apt-get update && apt-get install -y chromium`"
)


@needs_chromium
def test_browser_runs_page_scripts_and_screenshots(tmp_path):
    """The DOM is taken after JavaScript ran, and the screenshot shows the page (not a blank canvas)."""
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body style='background:#fff'><div id='out'></div><div style='width:200px;height:100px;"
        "background:#c00'></div><script>document.getElementById('out').textContent = 'rendered-' + (6 * 7);"
        "</script></body></html>"
    )
    assert "rendered-42" in rendered_dom(page)
    png = screenshot(page, tmp_path / "page.png", width=400, height=300)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (300, 400, 3)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert 0.05 < red.mean() < 0.5  # the red block is there, and the page is not all red


def test_browser_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="snakemake --report"):
        rendered_dom(tmp_path / "absent.html")
    (tmp_path / "page.html").write_text("<html></html>")
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on PATH: a loud error with the install command
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        rendered_dom(tmp_path / "page.html")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    workdir = smoke_workdir(tmp_path_factory)
    out = workdir / "report.html"
    if not out.is_file():
        snakemake(workdir, "--report", str(out))
    return out


@pytest.mark.slow
@needs_chromium
def test_snakemake_report_shows_tables_plots_grid_runtimes_and_protocol(report_html, tmp_path):
    source = report_html.read_text(encoding="utf-8")
    # every result the issue lists is embedded: main/ablation/runtime tables, ablation plots, qualitative grids
    for name in ("main.html", "runtime.html", "ablation-gamma.html", "ablation-n_particles.html"):
        assert name in source, name
    for name in ("ablation-gamma.png", "ablation-n_particles.png", "qualitative-box.png", "qualitative-sr8.png"):
        assert name in source, name
    # captions state the protocol: operator, sigma_y, steps, N, metric implementation
    for fact in ("box_inpainting", "sr_avgpool", "sigma_y = 0.001", "6 steps", "N = 2"):
        assert fact in source, fact
    assert re.search(r"LPIPS|lpips", source) and re.search(r"clean-fid|FID", source)
    # per-rule runtimes (Snakemake's statistics section lists each rule)
    for rule in ("solve", "evaluate", "aggregate", "tables"):
        assert f'"{rule}"' in source or f"'{rule}'" in source, rule

    dom = rendered_dom(report_html)
    for category in ("Tables", "Ablations", "Qualitative"):
        assert category in dom, category
    png = screenshot(report_html, tmp_path / "report.png", width=1400, height=1000)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # rendered content, not an empty page
    keep = os.environ.get("DWGF_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)
