"""What a learner sees (issue 23): JupyterLab in headless Chromium, notebook 04 run in it and its threshold slider
moved; notebook 05 run down to its map explorer, and the explorer switched to Grad-CAM at a finer layer.

JupyterLab serves a copy of the notebook on 127.0.0.1 with a token; Playwright drives the Chrome or Chromium that
tests/find_browser.py finds (CXR_CHROMIUM, Debian's /usr/bin/chromium, the PATH, macOS's applications): with none,
these tests are skipped and named in one line at the end of the run, failed in CI (CI=true). The kernel uses the
test run's outputs folder, so it reuses the runs the notebooks trained (in the notebooks' worker, after them:
tests/conftest.py); the screenshot goes to that folder, never to outputs/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import cam, config, data, datasets, evaluation, explorers, image_files, recipes, runs, splits
from tests.find_browser import browser_or_skip, find_browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_04, NOTEBOOK_05 = "04_evaluation.ipynb", "05_class_activation_maps.ipynb"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """(base URL with its token, the folder it serves): JupyterLab started for this test, stopped after it."""
    browser_or_skip()  # before JupyterLab is started for nothing
    root, home = tmp_path_factory.mktemp("lab"), tmp_path_factory.mktemp("lab-home")
    for name in (NOTEBOOK_04, NOTEBOOK_05):
        shutil.copy(REPO / "notebooks" / name, root)
    port, token = free_port(), secrets.token_hex(16)
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no "Jupyter news?" pop-up over the page
    notebook = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    notebook.parent.mkdir(parents=True)
    # every cell in the page, whether in view or not; the notebook's own kernel started without asking
    notebook.write_text('{"windowingMode": "none", "autoStartDefaultKernel": true}')
    env = {**os.environ, "CXR_FAST": "1", "CXR_OUTPUT_DIR": str(config.OUTPUT_DIR), "CUDA_VISIBLE_DEVICES": "",
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run the notebook's cells by command
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI here runs as root
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield base, token, root
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@contextlib.contextmanager
def chromium_page(notebook: str):
    """(a page in headless Chromium, the screenshots' folder); on failure, what the page showed is saved first."""
    chromium = browser_or_skip()
    playwright = pytest.importorskip("playwright.sync_api", reason="`make test` installs playwright (dev extra)")
    shots = config.OUTPUT_DIR / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page, shots
        except BaseException:
            page.screenshot(path=str(shots / f"{notebook}_failure.png"))  # what the page showed at the failure
            raise
        finally:
            browser.close()


def a_threshold_that_changes_sensitivity() -> tuple[float, str, str]:
    """(threshold, sensitivity shown at 0.5, at that threshold), from the plain function on the run notebook 04
    evaluates (trained by then): a threshold at which the slider must change what is shown."""
    layout = datasets.active_dataset()
    split = splits.saved_split(data.scan_cached(layout), mode="paper_a", task=4)
    run = runs.train_or_load(layout, recipes.PAPER_A, split, log=lambda *_: None)
    test = run.predict_part("test", verbose=0)
    is_covid, scores = test["label"] == "COVID", test["COVID"]

    def sensitivity_shown(threshold):  # as the explorer prints it
        return f"{evaluation.operating_point(is_covid, scores, threshold).sensitivity:.3f}"

    candidates = [np.floor(q * 100) / 100 for q in np.quantile(scores[is_covid], [0.5, 0.25, 0.75, 0.0])]
    for threshold in [t for t in candidates if 0 < t < 1 and t != 0.5]:
        if sensitivity_shown(threshold) != sensitivity_shown(0.5):
            return float(threshold), sensitivity_shown(0.5), sensitivity_shown(threshold)
    raise AssertionError(f"no threshold among {candidates} changes the sensitivity shown: scores {scores.tolist()}")


@pytest.mark.last
def test_moving_notebook_04s_threshold_slider_in_jupyterlab_shows_the_functions_sensitivity(jupyterlab):
    base, token, _ = jupyterlab
    with chromium_page("04") as (page, shots):
        threshold, before, at_half, shown, wanted = drive_the_explorer(page, base, token, shots)
    assert before == at_half, f"at threshold 0.5 the page showed sensitivity {before}; the function says {at_half}"
    assert shown == wanted, f"the page shows sensitivity {shown} at threshold {threshold}; the function says {wanted}"


def open_notebook(page, base: str, token: str, name: str) -> None:
    """Open a notebook in JupyterLab and wait for its kernel."""
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: not the tabs another test left open
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_function("name => { const shown = window.jupyterapp?.shell.currentWidget;"
                           " return shown?.context?.path === name"
                           " && shown.sessionContext?.session?.kernel?.connectionStatus === 'connected'; }",
                           arg=name, timeout=60_000)


def run_down_to(page, base: str, token: str, name: str, cell_id: str) -> None:
    """Open a notebook and run its cells down to the one with this id (its explorer), as a learner would with
    Run ▸ Run All Above on the cell after it; the cells below, not needed, are not run."""
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    after = next(i for i, cell in enumerate(cells) if cell.get("id") == cell_id) + 1
    open_notebook(page, base, token, name)
    page.wait_for_function("count => window.jupyterapp.shell.currentWidget.content.widgets.length === count",
                           arg=len(cells), timeout=60_000)
    chosen = page.evaluate("""index => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.activeCellIndex = index;
        window.jupyterapp.commands.execute('notebook:run-all-above');
        return notebook.activeCellIndex;
    }""", after)
    assert chosen == after, f"JupyterLab made cell {chosen} of {name} active, not {after}"


def run_cells(page, base: str, token: str, name: str, cell_ids) -> None:
    """Open a notebook and run only these cells, in order (the ones an explorer needs), as a learner jumping to it
    would: set-up, data, run, explorer. Returns at once; the kernel runs them meanwhile."""
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    indices = [next(i for i, cell in enumerate(cells) if cell.get("id") == cell_id) for cell_id in cell_ids]
    open_notebook(page, base, token, name)
    page.wait_for_function("count => window.jupyterapp.shell.currentWidget.content.widgets.length === count",
                           arg=len(cells), timeout=60_000)
    page.evaluate("""indices => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        (async () => {
            for (const index of indices) {
                notebook.activeCellIndex = index;
                await window.jupyterapp.commands.execute('notebook:run-cell');
            }
        })();
    }""", indices)


def drive_the_explorer(page, base: str, token: str, shots: Path) -> tuple:
    """Open 04, run it down to its explorer, type a new threshold into the slider's readout; what was shown, and
    wanted."""
    run_down_to(page, base, token, NOTEBOOK_04, "op-code")
    threshold, at_half, wanted = a_threshold_that_changes_sensitivity()  # while the kernel runs the cells
    sensitivity = page.locator("td.cxr-sensitivity").first
    sensitivity.wait_for(state="attached", timeout=180_000)  # the explorer drawn
    # textContent, not innerText: JupyterLab skips rendering cells out of view, whose innerText is then empty
    page.wait_for_function("selector => document.querySelector(selector)?.textContent.trim()",
                           arg="td.cxr-sensitivity", timeout=60_000)
    before = sensitivity.text_content()
    slider = page.locator(".widget-slider", has_text="threshold").first
    slider.scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    readout.fill(f"{threshold:.2f}")
    readout.press("Enter")
    page.wait_for_function("([selector, text]) => document.querySelector(selector)?.textContent === text",
                           arg=["td.cxr-sensitivity", wanted], timeout=60_000)
    page.locator(".widget-vbox", has=slider).first.screenshot(path=str(shots / "04_operating_point.png"))
    return threshold, before, at_half, sensitivity.text_content(), wanted


def a_finer_map_than_the_first() -> tuple[str, str]:
    """(share of the map in the lungs shown first, shown for Grad-CAM at conv4_block5_out): the plain function's
    numbers for 05's first test image and first class, on the run 05 explains (trained by then)."""
    layout = datasets.active_dataset()
    scan = data.scan_cached(layout)
    run = runs.train_or_load(layout, recipes.IMPROVED, splits.saved_split(scan, mode="paper_a", task=4),
                             log=lambda *_: None)
    first = run.part("test", scan).iloc[:1]
    pixels = image_files.read_images(first["path"], run.image_size).pixels
    lungs = cam.read_masks(first["mask_path"], run.image_size)[0]

    def shown(method, layer):  # as the explorer prints it
        html = explorers.map_view_html(explorers.map_view(run, pixels[0], run.classes[0], method, layer, lungs), "")
        return re.search(r'class="cxr-lungs">([^<]*)<', html).group(1)

    return shown("cam", None), shown("grad-cam", "conv4_block5_out")


@pytest.mark.last
def test_switching_notebook_05s_map_to_grad_cam_at_a_finer_layer_shows_the_functions_numbers(jupyterlab):
    base, token, _ = jupyterlab
    with chromium_page("05") as (page, shots):
        run_cells(page, base, token, NOTEBOOK_05, MAP_EXPLORER_NEEDS)
        at_first, wanted = a_finer_map_than_the_first()  # while the kernel runs the cells
        assert at_first != wanted, "a change the page must show"
        before, after = drive_the_map_explorer(page, shots, wanted)
    assert before == at_first, f"at first the page showed {before} of the map in the lungs; the function: {at_first}"
    assert after == wanted, f"with Grad-CAM at conv4_block5_out the page shows {after}; the function says {wanted}"


# The cells of 05 its map explorer needs: imports, data and run, the test images, the explorer.
MAP_EXPLORER_NEEDS = ("c04", "c06", "c08", "map-code")


def drive_the_map_explorer(page, shots: Path, wanted: str) -> tuple[str, str]:
    """In 05 (its cells running), choose Grad-CAM and a finer layer in the map explorer: (shown before, after)."""
    shown = page.locator(".cxr-lungs").first
    shown.wait_for(state="attached", timeout=180_000)
    before = shown.text_content()
    page.locator(".widget-toggle-buttons button", has_text="Grad-CAM").first.click()
    page.locator(".widget-dropdown", has_text="layer").locator("select").first.select_option(label="conv4_block5_out")
    page.wait_for_function("([selector, text]) => document.querySelector(selector)?.textContent === text",
                           arg=[".cxr-lungs", wanted], timeout=60_000)
    page.locator(".widget-vbox", has=shown).first.screenshot(path=str(shots / "05_map_explorer.png"))
    return before, shown.text_content()


# Which browser: tests/find_browser.py, with fake executables; and the Makefile's rule that installs one.

def fake_executable(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_the_browser_is_the_one_asked_for_then_debians_then_one_on_the_path_then_a_macos_application(tmp_path):
    first, second = tmp_path / "bin1", tmp_path / "bin2"
    fake_executable(first / "google-chrome")
    fake_executable(first / "chromium", executable=False)  # not a browser: it cannot be run
    fake_executable(second / "chromium-browser")
    application = fake_executable(tmp_path / "Applications" / "Google Chrome.app" / "Contents" / "MacOS" / "Chrome")
    debian, missing = tmp_path / "usr" / "bin" / "chromium", tmp_path / "nowhere" / "chromium"
    fake_executable(debian)
    path = f"{first}{os.pathsep}{second}"

    def found(environ, debian=missing, applications=(str(application),)):
        return find_browser(environ, debian=str(debian), applications=applications)[0]

    asked = fake_executable(tmp_path / "my chrome" / "chrome")
    assert found({"PATH": path, "CXR_CHROMIUM": str(asked)}, debian=debian) == str(asked)
    assert found({"PATH": path, "CXR_CHROMIUM": "google-chrome"}) == str(first / "google-chrome")  # a name: PATH's
    assert found({"PATH": path}, debian=debian) == str(debian)
    assert found({"PATH": path}) == str(second / "chromium-browser")  # the names in order, each over the whole PATH
    assert found({"PATH": str(first)}) == str(first / "google-chrome")
    assert found({"PATH": ""}) == str(application)
    assert found({"PATH": ""}, applications=()) is None
    # macOS's places, system-wide and the user's own
    home = tmp_path / "home"
    mine = fake_executable(home / "Applications" / "Chromium.app" / "Contents" / "MacOS" / "Chromium")
    assert find_browser({"PATH": "", "HOME": str(home)}, debian=str(missing))[0] == str(mine)


def test_a_browser_asked_for_that_is_not_there_is_named_not_replaced_by_another(tmp_path):
    fake_executable(tmp_path / "bin" / "chromium")
    path, why = find_browser({"PATH": str(tmp_path / "bin"), "CXR_CHROMIUM": "/opt/chrome/missing"},
                             debian=str(tmp_path / "none"), applications=())
    assert path is None and why == "CXR_CHROMIUM=/opt/chrome/missing is not an executable file"


def test_without_a_browser_the_test_is_skipped_saying_in_one_line_how_to_enable_it(tmp_path):
    nothing = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    for ci in ({}, {"CI": "false"}):
        with pytest.raises(pytest.skip.Exception) as skipped:
            browser_or_skip({**nothing, **ci}, debian=str(tmp_path / "chromium"), applications=())
        reason = str(skipped.value)
        assert "\n" not in reason and reason.startswith("browser test not run: no Chrome or Chromium found"), reason
        assert "install Chromium or Google Chrome, or set CXR_CHROMIUM=/path/to/chrome" in reason, reason


def test_in_ci_a_missing_browser_fails_the_test(tmp_path):
    for ci in ("true", "True", "1"):
        with pytest.raises(pytest.fail.Exception, match=f"CI={ci} and no Chrome or Chromium found .*: CI runs the"):
            browser_or_skip({"PATH": str(tmp_path), "CI": ci}, debian=str(tmp_path / "chromium"), applications=())
    browser = fake_executable(tmp_path / "chromium")
    assert browser_or_skip({"PATH": str(tmp_path), "CI": "true"}, debian=str(browser)) == str(browser)


def run_pytest_without_a_browser(tmp_path: Path, **environ) -> subprocess.CompletedProcess:
    """pytest with two workers, as `make test` runs it, on two tests that need a browser and one that does not, on a
    machine without any browser; the end-of-run line comes from tests/conftest.py's hook, copied here."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(
        "from tests import find_browser\n"
        "find_browser.DEBIAN, find_browser.MACOS = '/nonexistent/chromium', ()\n\n"
        "def pytest_terminal_summary(terminalreporter):\n"
        "    find_browser.say_what_was_not_run(terminalreporter)\n")
    (project / "test_pages.py").write_text(
        "from tests.find_browser import browser_or_skip\n\n"
        "def test_a_page():\n    browser_or_skip()\n\n"
        "def test_another_page():\n    browser_or_skip()\n\n"
        "def test_no_page():\n    pass\n")
    (tmp_path / "bin").mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "CXR_CHROMIUM", "PYTEST_ADDOPTS")}
    env.update(PATH=str(tmp_path / "bin"), HOME=str(tmp_path), PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               **environ)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-n", "2", "-p", "no:cacheprovider",
                           "-q", str(project)], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_test_run_names_the_browser_tests_it_could_not_run_in_one_line_at_its_end(tmp_path):
    done = run_pytest_without_a_browser(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in done.stdout.splitlines() if "not run" in line]
    assert len(said) == 1, done.stdout
    assert said[0].startswith("Browser tests not run: test_pages.py (2 tests): no Chrome or Chromium found"), said
    assert said[0].endswith("to run them, install Chromium or Google Chrome, or set CXR_CHROMIUM=/path/to/chrome.")
    assert "1 passed, 2 skipped" in done.stdout, done.stdout


def test_in_ci_the_test_run_fails_without_a_browser(tmp_path):
    done = run_pytest_without_a_browser(tmp_path, CI="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 failed, 1 passed" in done.stdout and "Browser tests not run" not in done.stdout, done.stdout


def make_the_browser(tmp_path: Path, uid: int, apt_get: bool, browser: bool) -> tuple[int, str]:
    """The Makefile's rule for the browser, on a machine without Debian's Chromium (CHROMIUM pointed elsewhere): as
    user `uid`, with or without apt-get (a fake that says what it was asked), with a browser or none. (its exit
    status, what apt-get was asked)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    bin_ = tmp_path / "bin"
    asked = tmp_path / "apt-get asked"
    (bin_ / "id").parent.mkdir(parents=True, exist_ok=True)
    (bin_ / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_ / "id").chmod(0o755)
    if apt_get:
        (bin_ / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> '{asked}'\n")
        (bin_ / "apt-get").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "MAKEFLAGS", "MFLAGS")}
    env.update(PATH=str(bin_), CXR_CHROMIUM=str(fake_executable(tmp_path / "chrome") if browser else tmp_path / "none"))
    target = str(tmp_path / "no-debian-chromium")
    done = subprocess.run([make, "-s", "-C", str(REPO), "-o", ".venv/.installed", f"CHROMIUM={target}", target],
                          env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, asked.read_text() if asked.exists() else ""


def test_make_installs_debians_chromium_only_as_root_with_apt_get_and_no_browser_and_goes_on_without_one(tmp_path):
    assert make_the_browser(tmp_path / "1", uid=0, apt_get=True, browser=False) == (
        0, "install -y --no-install-recommends chromium chromium-driver\n")
    assert make_the_browser(tmp_path / "2", uid=0, apt_get=True, browser=True) == (0, "")
    assert make_the_browser(tmp_path / "3", uid=1000, apt_get=True, browser=False) == (0, "")  # no sudo asked
    assert make_the_browser(tmp_path / "4", uid=0, apt_get=False, browser=False) == (0, "")
    assert make_the_browser(tmp_path / "5", uid=1000, apt_get=False, browser=False) == (0, "")
