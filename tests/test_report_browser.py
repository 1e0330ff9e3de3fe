"""The HTML report in a real headless browser (Debian's Chromium driven by playwright): no
console error, no network request, every image decoded, the tables there, a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_sample import HOSTILE, document
from test_report_curves import table as curve_table
from test_report_naps import nap

from xraylens import audit
from xraylens.report import Section, write_report
from xraylens.report.curves import curves_section
from xraylens.report.sections import nap_outside_blocks


def _chromium() -> str | None:
    for candidate in (os.environ.get("XRAYLENS_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium executable (apt-get install chromium; .ci/run installs it)")
    doc, summary, flags = document()
    doc.sections.append(curves_section(curve_table()))  # figures: curves, NAP energy outside
    lungs = np.zeros((32, 32), bool)
    lungs[6:28, 4:28] = True
    rows = audit.nap_outside_lungs(nap(), lungs)
    doc.sections.append(Section("NAP energy", nap_outside_blocks(rows, "nap_outside")))
    page_path = write_report(doc, tmp_path, formats=("html",))["html"]
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            tables = page.locator("table").count()
            dialogs = page.evaluate("typeof window.alert")  # the page ran no hostile script
            # sorting: click the audit glance's "model" header twice, rows reverse
            glance = page.locator("section.flag table.sortable").first
            first = glance.locator("tbody tr td").first.inner_text()
            glance.locator("th").first.click()
            ascending = glance.locator("tbody tr td").first.inner_text()
            glance.locator("th").first.click()
            descending = glance.locator("tbody tr td").first.inner_text()
            title = page.title()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert external == []
    assert len(images) == len(doc.images()) and all(ok and w > 0 for ok, w in images)
    assert tables >= 4 and dialogs == "function"
    assert {first, ascending, descending} >= {"clean", "shortcut"} and ascending != descending
    assert HOSTILE in title  # shown as text
    assert (tmp_path / "report.png").stat().st_size > 10_000
    out = os.environ.get("XRAYLENS_SCREENSHOT_DIR")  # CI keeps the screenshot as an artefact
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", Path(out) / "report.png")
