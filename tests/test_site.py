"""Issue 24: the course website, built from the notebooks this test run executed (nbval's outputs, saved by
tests/conftest.py), as `make site` builds it from `make run`'s; one page per notebook, each with its figures."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import tempfile
from pathlib import Path

import pytest

from helpers import config
from helpers.engine import main_job
from tests.test_browser import REPO, chromium_page

_spec = importlib.util.spec_from_file_location("build_site", REPO / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)


def figures_in(notebook: dict) -> list[str]:
    """Every PNG a notebook's outputs hold (what nbconvert shows of each output: its richest picture), in order."""
    return [output["data"]["image/png"] for cell in notebook["cells"] if cell["cell_type"] == "code"
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]


def without_pictures(html: str) -> str:
    """A page without its base64 pictures (whose letters could spell anything)."""
    return re.sub(r"data:image/[\w+.-]+;base64,[^\"']*", "", html)


@pytest.fixture(scope="module")
def course_site(tmp_path_factory):
    """(the executed notebooks' names, the site built from them, its notebook pages)."""
    executed = config.OUTPUT_DIR / "notebooks"
    expected = [path.name for path in main_job.notebooks()]
    assert set(expected) <= {p.name for p in executed.glob("*.ipynb")}, "every notebook ran in this test run first"
    site = tmp_path_factory.mktemp("site")
    return expected, site, build_site.build_site(executed, site, log=lambda *_: None)


@pytest.mark.last
def test_the_website_has_a_page_per_executed_notebook_with_its_figures_and_what_made_them(course_site):
    expected, site, pages = course_site
    executed = config.OUTPUT_DIR / "notebooks"
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
        assert str(REPO) not in without_pictures(html), f"{name} shows the repository's folder on this machine"


@pytest.mark.last
def test_the_websites_pages_show_in_a_browser_with_every_notebook_in_the_menu(course_site):
    expected, site, _ = course_site
    with chromium_page("site") as (browser, shots):
        browser.goto((site / "04_evaluation.html").as_uri())
        browser.wait_for_selector("img[src^='data:image/png']")
        assert browser.locator("nav").first.inner_text().count("·") >= len(expected), "every notebook in the menu"
        browser.screenshot(path=str(shots / "site_04.png"), full_page=False)


def executed_notebook_with_paths(repo: Path, data: Path, outputs: Path, home: Path, temporary: Path) -> dict:
    """A small executed notebook whose outputs name this machine's folders, as the course's print them: in stream
    text, an HTML output, an error's traceback (with its terminal colours), a widget's saved state, a markdown cell."""
    red, green, reset = "\x1b[0;31m", "\x1b[0;32m", "\x1b[0m"
    stream = (f"Data: {repo}/data/phantoms/96px-12-per-class/COVID/COVID-1.png\n"
              f"Outputs (runs, caches, figures): {outputs}\nSaved {outputs}/runs/paper_a/model.keras\n"
              f"Downloaded to {home}/.keras/models/resnet50.h5\nScratch: {temporary}/cxr-scratch/x.npy\n"
              "Copied from /Users/bob/Downloads/COVID-19_Radiography_Dataset\n")  # another machine's home
    html = (f'<p>Figure saved at <code>{repo}/outputs/figures/roc.png</code>, from '
            f'<a href="file://{data}/phantoms/x.png">{data}/phantoms/x.png</a></p>')
    traceback = [f"{red}FileNotFoundError{reset}   Traceback (most recent call last)",
                 f"File {green}{repo}/helpers/image_files.py:40{reset}, in read_images(paths)",
                 f"File {green}{home}/.venv/lib/python3.11/site-packages/PIL/Image.py:3431{reset}, in open(fp)",
                 f"{red}FileNotFoundError{reset}: [Errno 2] No such file: '{data}/COVID/COVID-9.png'"]
    code = {"cell_type": "code", "execution_count": 1, "id": "c01", "metadata": {}, "source": "run()",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": stream.splitlines(keepends=True)},
                {"output_type": "display_data", "metadata": {},
                 "data": {"text/html": html, "text/plain": f"<Figure {repo}/outputs/figures/roc.png>"}},
                {"output_type": "error", "ename": "FileNotFoundError",
                 "evalue": f"[Errno 2] No such file: '{data}/COVID/COVID-9.png'", "traceback": traceback}]}
    markdown = {"cell_type": "markdown", "id": "m01", "metadata": {},
                "source": f"# 01 · Paths\n\nThe runs are in `{outputs}/runs` and the phantoms in {data}/phantoms.\n"}
    widget_state = {"state": {"abc": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                                      "model_module_version": "2.0.0",
                                      "state": {"value": f"<b>{data}/phantoms/COVID/COVID-1.png</b>"}}},
                    "version_major": 2, "version_minor": 0}
    return {"cells": [markdown, code], "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "widgets": {"application/vnd.jupyter.widget-state+json": widget_state}}}


def test_the_pages_show_no_folder_of_the_machine_that_ran_the_notebooks(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    data, outputs, home = elsewhere / "data", elsewhere / "outputs", tmp_path / "home" / "ann"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(outputs))
    notebooks = outputs / "notebooks"
    notebooks.mkdir(parents=True)
    notebook = executed_notebook_with_paths(REPO, data, outputs, home, Path(tempfile.gettempdir()))
    (notebooks / "01_paths.ipynb").write_text(json.dumps(notebook))
    site = tmp_path / "site"
    [page] = build_site.build_site(notebooks, site, log=lambda *_: None)
    html = without_pictures(page.read_text())
    for folder in (REPO, home, tmp_path, tempfile.gettempdir(), "/Users/bob"):
        for shown in (html, (site / "01_paths.ipynb").read_text(), (site / "index.html").read_text()):
            assert not re.search(re.escape(str(folder)) + r"(?![\w-])", shown), f"{folder} in the site"
    for relative in ("data/phantoms/96px-12-per-class/COVID/COVID-1.png", "outputs/figures/roc.png",
                     "helpers/image_files.py:40", "~/.keras/models/resnet50.h5", "~/.venv/lib/python3.11",
                     "~/Downloads/COVID-19_Radiography_Dataset",
                     "&lt;outputs&gt;/runs/paper_a/model.keras", "&lt;tmp&gt;/cxr-scratch/x.npy",
                     "&lt;data&gt;/COVID/COVID-9.png", "&lt;data&gt;/phantoms/x.png", "&lt;data&gt;/phantoms."):
        assert relative in html, f"{relative} not in the page"
    # a placeholder in HTML, or in markdown's prose, is written as entities: as a tag the browser would hide it
    assert not re.search(r"<(data|outputs|tmp)>", html), re.search(r".{60}<(data|outputs|tmp)>.{60}", html)


@pytest.mark.parametrize(("written", "shown"), [
    ("{repo}/data/x.png", "data/x.png"),
    ("cd {repo} && make run", "cd . && make run"),
    ("see https://example.com/home/x", "see https://example.com/home/x"),
    ("{home}/data/x", "<data>/x"),  # CXR_DATA_DIR, in the home folder
    ("{home}/cache/x", "~/cache/x"),
    ("/home/ann/course/x and /Users/bob", "~/course/x and ~"),  # another machine's home folders
    ("\x1b[0;32m{repo}/helpers/cam.py\x1b[0m", "\x1b[0;32mhelpers/cam.py\x1b[0m"),
])
def test_a_path_of_this_machine_is_written_relative_to_the_repository_or_as_its_folders_name(written, shown):
    home = "/home/someone"
    folders = build_site.machine_folders(environ={"CXR_DATA_DIR": f"{home}/data", "HOME": home})
    hide = build_site.PathHider(folders).hide
    assert hide(written.format(repo=REPO, home=home)) == shown.format(repo=REPO, home=home)


def test_a_folder_whose_name_starts_as_the_repositorys_is_not_taken_for_it():
    """Another folder (it may still be shown as the temporary folder's, or the home's, when the clone is in one)."""
    hide = build_site.PathHider(build_site.machine_folders(environ={"HOME": "/home/someone"})).hide
    assert hide(f"{REPO}2/x").endswith(f"{REPO.name}2/x")


def test_data_and_outputs_in_the_repository_are_shown_relative_to_it():
    folders = build_site.machine_folders(environ={"CXR_DATA_DIR": str(REPO / "data"),
                                                  "CXR_OUTPUT_DIR": str(REPO / ".test-outputs")})
    hide = build_site.PathHider(folders).hide
    assert hide(f"{REPO}/data/phantoms and {REPO}/.test-outputs/runs") == "data/phantoms and .test-outputs/runs"
