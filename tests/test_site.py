"""Issue 24: the course website, built from the notebooks this test run executed (nbval's outputs, saved by
tests/conftest.py), as `make site` builds it from `make run`'s; one page per notebook, each with its figures."""

from __future__ import annotations

import base64
import importlib.util
import json
import re

import pytest

from helpers import config, main_job
from tests.test_browser import REPO, chromium_page

_spec = importlib.util.spec_from_file_location("build_site", REPO / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)


def figures_in(notebook: dict) -> list[str]:
    """Every PNG a notebook's outputs hold (what nbconvert shows of each output: its richest picture), in order."""
    return [output["data"]["image/png"] for cell in notebook["cells"] if cell["cell_type"] == "code"
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]


@pytest.mark.last
def test_the_website_has_a_page_per_executed_notebook_with_its_figures_and_what_made_them(tmp_path):
    executed = config.OUTPUT_DIR / "notebooks"
    expected = [path.name for path in main_job.notebooks()]
    assert set(expected) <= {p.name for p in executed.glob("*.ipynb")}, "every notebook ran in this test run first"
    site = tmp_path / "site"
    pages = build_site.build_site(executed, site, log=lambda *_: None)
    assert [page.name for page in pages] == [name.replace(".ipynb", ".html") for name in expected]
    home = (site / "index.html").read_text()
    assert all(f'href="{page.name}"' in home for page in pages) and "teaching.html" in home
    for name, page in zip(expected, pages):
        html = page.read_text()
        figures = figures_in(json.loads((executed / name).read_text()))
        shown = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
        assert figures and len(shown) >= len(figures), f"{name}: {len(shown)} pictures for {len(figures)} figures"
        assert {figure.replace("\n", "")[:200] for figure in figures} <= {s[:200] for s in shown}, name
        assert "This run uses GENERATED PHANTOM radiographs" in html and "Outputs as executed" in html, name
        assert base64.b64decode(shown[0][:64] + "==", validate=False)[:4] == b"\x89PNG"
    with chromium_page("site") as (browser, shots):
        browser.goto((site / "04_evaluation.html").as_uri())
        browser.wait_for_selector("img[src^='data:image/png']")
        assert browser.locator("nav").first.inner_text().count("·") >= len(expected), "every notebook in the menu"
        browser.screenshot(path=str(shots / "site_04.png"), full_page=False)
