"""The report's index.html in a real headless browser: every image decodes, every table is there.

The page's inline script sets ``data-report-status="ok|broken:<images>:<tables>"`` on ``<body>``
after the load event; Chromium's ``--dump-dom`` (with a virtual-time budget, so the load event
has fired) returns the DOM including that attribute. A copy of the page with one image pointing
at a missing file must read "broken", which shows the check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_reports import ABLATIONS, EXPERTS, METHODS, search_config, write_sweep

from reports.build import build

pytestmark = pytest.mark.slow

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _dump_dom(browser: str, page: Path, profile: Path) -> str:
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--mute-audio", f"--user-data-dir={profile}",
        "--virtual-time-budget=15000", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _status(dom: str) -> tuple[str, int, int, str]:
    m = re.search(r'data-report-status="(\w+):(\d+):(\d+)"', dom)
    assert m, "the page's load script did not run"
    broken = re.search(r'data-report-broken="([^"]*)"', dom)
    return m.group(1), int(m.group(2)), int(m.group(3)), broken.group(1) if broken else ""


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed (apt chromium)")
def test_index_html_loads_every_image_and_table(tmp_path: Path) -> None:
    res, out = tmp_path / "results", tmp_path / "report"
    write_sweep(res, "abl", ABLATIONS)
    write_sweep(res, "meth", METHODS)
    write_sweep(res, "exp", EXPERTS)
    write_sweep(res, "opt", {"search": {}}, seeds=tuple(range(6)), config_fn=search_config)
    w = build(res, out, log=lambda s: None)
    figures = [r for r in w.refs if hasattr(r, "png")]
    tables = [r for r in w.refs if hasattr(r, "table")]
    assert figures and tables
    browser = _browser()

    status, images, ntables, broken = _status(
        _dump_dom(browser, out / "index.html", tmp_path / "p1")
    )
    assert (status, images, ntables, broken) == ("ok", len(figures), len(tables), "")

    # Negative control: one image pointing at a missing file is reported broken.
    page = (out / "index.html").read_text(encoding="utf-8")
    first = figures[0].png
    (out / "broken.html").write_text(page.replace(f'src="{first}"', 'src="figures/missing.png"'),
                                     encoding="utf-8")  # fmt: skip
    status, images, _, broken = _status(_dump_dom(browser, out / "broken.html", tmp_path / "p2"))
    assert status == "broken" and images == len(figures) and broken == "figures/missing.png"
