"""The plots page of ``dvc plots show`` / ``dvc plots diff`` renders offline, checked in a real browser.

Debian's chromium, headless, driven by Playwright; every request that is not a local file is aborted and
recorded. A page passes when every plot div holds a Vega SVG with data marks, no request left the machine
and the console has no error. ``make test`` installs chromium (scripts/ensure-chromium.sh); the test is
skipped only when chromium cannot be installed (no root), printing why, and never in CI.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from conftest import ROOT, copy_project, dvc, init_repo
from shrink import offline_plots
from shrink.io import sha256_file

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL = ("file:", "data:", "blob:", "about:")
# per plot div: does it hold Vega's SVG, and how many data marks (lines, points, bars) with a real shape
RENDERED_JS = """() => Array.from(document.querySelectorAll('body > div[id]')).map(d => ({
    id: d.id,
    svg: d.querySelector('svg.marks') !== null,
    marks: Array.from(d.querySelectorAll(
        'svg.marks g.mark-line > path, svg.marks g.mark-symbol > path, svg.marks g.mark-rect > path, svg.marks g.mark-area > path'
    )).filter(p => (p.getAttribute('d') || '').length > 8).length,
}))"""
ALL_RENDERED_JS = """() => { const divs = document.querySelectorAll('body > div[id]');
    return divs.length > 0 && Array.from(divs).every(d => d.querySelector('svg.marks') !== null); }"""


def chromium_path() -> str:
    """Debian's chromium; installs it like ``make test`` does if missing; skips (never in CI) if it can't."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found:
        return found
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-chromium.sh")], capture_output=True, text=True,
                          env={**os.environ, "CI": ""})
    found = shutil.which("chromium")
    if found:
        return found
    reason = f"chromium cannot be installed here: {(proc.stderr or proc.stdout).strip()}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the real-browser test)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_playwright() as pw:
        # Playwright gives every launch a new, empty profile (its own --user-data-dir)
        b = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        yield b
        b.close()


def open_offline(browser, page: Path, timeout_ms: int = 30_000) -> dict:
    """Open ``page`` with the network blocked; returns what rendered, the blocked requests and the console errors."""
    context = browser.new_context()
    blocked: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("request", lambda req: None if req.url.startswith(LOCAL) or req.url in blocked else blocked.append(req.url))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}") if req.url.startswith("file:") else None)
    tab.goto(page.resolve().as_uri())
    timed_out = False
    try:
        tab.wait_for_function(ALL_RENDERED_JS, timeout=timeout_ms)
    except Exception:  # playwright's TimeoutError: report what did render below
        timed_out = True
    tab.wait_for_timeout(300)  # let late console errors arrive
    plots = tab.evaluate(RENDERED_JS)
    context.close()
    return {"plots": plots, "blocked": sorted(set(blocked)), "errors": errors, "timed_out": timed_out}


def assert_rendered(result: dict, expected_plots: int, what: str) -> None:
    assert result["blocked"] == [], f"{what}: the page tried the network: {result['blocked']}"
    assert result["errors"] == [], f"{what}: console errors: {result['errors']}"
    assert len(result["plots"]) == expected_plots, f"{what}: {len(result['plots'])} plot divs, expected {expected_plots}"
    blank = [p for p in result["plots"] if not p["svg"] or p["marks"] == 0]
    assert not blank and not result["timed_out"], f"{what}: plots that did not render: {blank}"


def use_offline_template(project: Path) -> None:
    """Give ``project`` this repo's vendored Vega and the repo's own ``plots.html_template`` setting."""
    shutil.copytree(ROOT / "vendor", project / "vendor", dirs_exist_ok=True)
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    dvc(project, "config", "plots.html_template", cfg["plots"]["html_template"])


def plot_count(project: Path) -> int:
    import yaml

    return len(yaml.safe_load((project / "dvc.yaml").read_text())["plots"])


# ------------------------------------------------------------------ the template itself (no browser)

def test_template_is_the_vendored_scripts_inlined():
    vendor = ROOT / "vendor" / "vega"
    page = (vendor / offline_plots.TEMPLATE_NAME).read_text(encoding="utf-8")
    assert page == offline_plots.build_template(vendor), "rebuild it: python -m shrink.offline_plots build"
    assert "{plot_divs}" in page
    assert "{scripts}" not in page, "DVC would put its CDN <script src> tags there"
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page must not load scripts from anywhere"
    readme = (vendor / "README.md").read_text()
    for package, (version, name) in offline_plots.VERSIONS.items():
        assert f"{package}@{version}" in readme and sha256_file(vendor / name) in readme, package
        assert (vendor / f"LICENSE.{package}").read_text().startswith("Copyright (c)"), package


def test_repo_config_points_dvc_at_the_template():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    # DVC resolves a relative plots.html_template against .dvc/
    path = (ROOT / ".dvc" / cfg["plots"]["html_template"]).resolve()
    assert path == (ROOT / "vendor" / "vega" / offline_plots.TEMPLATE_NAME).resolve()


# ------------------------------------------------------------------ in the browser

@pytest.fixture(scope="module")
def csv_project(tmp_path_factory) -> Path:
    """A small git + DVC repo with one CSV plot (seconds, no pipeline)."""
    proj = tmp_path_factory.mktemp("plots") / "proj"
    proj.mkdir()
    (proj / "acc.csv").write_text("step,acc\n0,0.50\n1,0.71\n2,0.80\n3,0.84\n")
    (proj / "dvc.yaml").write_text("plots:\n  - acc.csv:\n      x: step\n      y: acc\n")
    return init_repo(proj, "plots")


def test_dvc_default_page_is_blank_offline(browser, csv_project: Path, tmp_path: Path):
    """The control: DVC's own page needs the CDN, so with the network blocked nothing renders."""
    dvc(csv_project, "plots", "show", "-o", str(tmp_path / "default"))
    result = open_offline(browser, tmp_path / "default" / "index.html", timeout_ms=3_000)
    assert any("vega" in url for url in result["blocked"]), result
    assert [p for p in result["plots"] if p["svg"]] == [], result


def test_offline_template_renders_with_network_blocked(browser, csv_project: Path, tmp_path: Path):
    dvc(csv_project, "plots", "show", "-o", str(tmp_path / "out"), "--html-template",
        str(ROOT / "vendor" / "vega" / offline_plots.TEMPLATE_NAME))
    assert_rendered(open_offline(browser, tmp_path / "out" / "index.html"), 1, "dvc plots show --html-template")


@pytest.mark.slow
def test_pipeline_plots_render_offline(browser, tiny_run: Path, tmp_path: Path):
    """The real thing: `dvc plots show` and `dvc plots diff` of a tiny pipeline run, with the repo's config."""
    proj = copy_project(tiny_run, tmp_path / "proj")
    use_offline_template(proj)
    n = plot_count(proj)
    dvc(proj, "plots", "show")
    assert_rendered(open_offline(browser, proj / "dvc_plots" / "index.html"), n, "dvc plots show")
    dvc(proj, "plots", "diff", "HEAD", "-o", "diff_plots")
    assert_rendered(open_offline(browser, proj / "diff_plots" / "index.html"), n, "dvc plots diff HEAD")


@pytest.mark.slow
def test_report_md_embeds_the_charts(tiny_run: Path):
    report = (tiny_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", report)
    assert len(links) == 7, report  # trade-off, accuracy vs bytes, prune rounds, latency, training curves, confusion,
    # the knee search
    for link in links:
        assert not Path(link).is_absolute() and not link.startswith("http"), link
        assert (tiny_run / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
