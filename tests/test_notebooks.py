"""Every notebook opens and ends the same way, shows the code it teaches, runs its solutions, asks Colab for a GPU,
is stored clean (nbval executes them separately), and its setup cell works, or fails in one sentence, on Colab and
Kaggle (simulated here, without network)."""

import ast
import http.server
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from helpers import config
from helpers.engine import main_job

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = main_job.notebooks()
_spec = importlib.util.spec_from_file_location("sync_links", REPO / "tools" / "sync_links.py")
sync_links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_links)


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def text(cell):
    return "".join(cell["source"])


def code_of(path):
    return "\n".join(text(c) for c in cells(path) if c["cell_type"] == "code")


def setup_cell(path):
    return text(cells(path)[2])


def test_the_course_has_its_lessons_in_order():
    assert [p.name for p in NOTEBOOKS] == [
        "01_dataset_exploration.ipynb", "02_preprocessing.ipynb", "03_transfer_learning_resnet50.ipynb",
        "04_evaluation.ipynb", "05_class_activation_maps.ipynb", "06_paper_b_protocol.ipynb",
        "07_sources.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_same_opening(path):
    first, setup_intro, setup, imports_intro, imports = cells(path)[:5]
    assert first["cell_type"] == "markdown" and text(first).startswith("# ")
    assert sync_links.colab_badge(path.name) in text(first)
    assert "**What you will learn**" in text(first)
    assert setup_intro["cell_type"] == "markdown" and imports_intro["cell_type"] == "markdown"
    code = text(setup)
    assert '"google.colab" in sys.modules' in code and '"KAGGLE_KERNEL_RUN_TYPE" in os.environ' in code
    assert sync_links.install_url() in code and "KEEP_OUTPUTS_ON_DRIVE" in code and "RUNS_URL" in code
    assert code.startswith("# @title ") and setup["metadata"].get("cellView") == "form", "collapsed on Colab"
    assert setup["metadata"].get("jupyter", {}).get("source_hidden") is True, "collapsed in JupyterLab"
    assert "f\"tensorflow=={importlib.metadata.version('tensorflow')}\"" in code, "the runtime's own TF is kept"
    assert text(imports).startswith("import helpers\n"), "helpers first: it keeps TensorFlow's start-up lines quiet"


def first_visible_code_cell(path):
    """The first code cell a reader sees: not collapsed on Colab (a form) nor in JupyterLab (source hidden)."""
    return next(c for c in cells(path) if c["cell_type"] == "code" and c["metadata"].get("cellView") != "form"
                and not c["metadata"].get("jupyter", {}).get("source_hidden"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_three_line_start(path):
    """Issue 37: after the collapsed install cell, at most 6 lines, imports included, with at most 3 of setup, and
    `helpers.start()` among them; no module imported only for what importing it does (`import helpers  # first`)."""
    code = text(first_visible_code_cell(path))
    lines = code.splitlines()
    assert len(lines) <= 6, f"{len(lines)} lines: {code!r}"
    statements = ast.parse(code).body
    setup = [s for s in statements if not isinstance(s, (ast.Import, ast.ImportFrom))]
    assert sum(s.end_lineno - s.lineno + 1 for s in setup) <= 3, f"more than 3 lines of setup: {code!r}"
    assert re.search(r"^course = helpers\.start\(", code, re.M), "the course starts with one call"
    source = code_of(path)
    for statement in ast.walk(ast.parse(source)):
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                name = alias.asname or alias.name.split(".")[0]
                assert re.search(rf"\b{re.escape(name)}\.", source), f"{alias.name} imported but never used"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_and_kaggle_are_asked_for_a_gpu(path):
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"
    assert metadata["kaggle"]["accelerator"] == "gpu"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_same_ending_summary_exercises_and_solutions_that_run(path):
    texts = [text(c) for c in cells(path)]
    start = next(i for i, t in enumerate(texts) if "## Exercises" in t)
    assert "## Summary" in texts[start]
    exercises = texts[start].split("## Exercises", 1)[1]
    count = sum(line[:3] in {f"{i}. " for i in range(1, 10)} for line in exercises.splitlines())
    assert 2 <= count <= 4
    solutions = [c for c in cells(path)[start:] if "solution" in c.get("metadata", {}).get("tags", [])]
    assert solutions and all(c["cell_type"] == "code" for c in solutions)
    assert all(c["metadata"].get("cellView") == "form" and text(c).startswith("# @title Solution")
               for c in solutions), "collapsed on Colab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_short_cells_introduced_by_prose(path):
    """At most 20 lines a cell, 88 characters a line. The setup cell, collapsed on Colab and Kaggle, may take 27:
    it runs before the course's helpers exist, and says in one line why an install failed and what to do."""
    run = 0
    for number, cell in enumerate(cells(path)):
        if cell["cell_type"] == "code":
            run += 1
            assert run <= 2, f"more than two code cells in a row: {text(cell)[:60]!r}"
            assert len(text(cell).splitlines()) <= (27 if number == 2 else 20), f"long cell: {text(cell)[:60]!r}"
            assert max(map(len, text(cell).splitlines()), default=0) <= 88, f"wide cell: {text(cell)[:60]!r}"
        else:
            run = 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_says_which_data_it_uses(path):
    assert "helpers.start(" in code_of(path)  # which prints which data it uses


@pytest.mark.parametrize("name, shown", [
    ("03_transfer_learning_resnet50.ipynb", ["ResNet50(", "GlobalAveragePooling2D", "Dense(1024", "Dropout(0.5",
                                             ".trainable = False", ".compile(", ".fit("]),
    ("04_evaluation.ipynb", ["confusion_matrix(", "chi2_contingency(", "image_dataset_from_directory("]),
    ("05_class_activation_maps.ipynb", ["GradientTape", "np.einsum(", "tape.gradient(", "float32_copy("]),
    ("02_preprocessing.ipynb", ["tf.data.Dataset", ".cache()", ".shuffle(", "random_flip_left_right",
                                "preprocess_input", ".prefetch("]),
])
def test_the_notebooks_show_the_code_they_teach(name, shown):
    code = code_of(REPO / "notebooks" / name)
    assert [s for s in shown if s not in code] == []


def test_03_fine_tunes_in_code_as_it_freezes():
    """A code cell of 03 sets a backbone trainable again and compiles it: fine-tuning shown, as the frozen phase is."""
    unfreezes = re.compile(r"\.trainable\s*=\s*True|set_backbone_trainable\([^)]*True")
    code_cells = [text(c) for c in cells(REPO / "notebooks" / "03_transfer_learning_resnet50.ipynb")
                  if c["cell_type"] == "code"]
    assert any(unfreezes.search(code) and ".compile(" in code for code in code_cells)


def test_badges_and_setup_cells_point_at_the_repository_constant():
    assert sync_links.sync_links(write=False) == []
    assert sync_links.colab_badge("01_dataset_exploration.ipynb") in (config.REPO_ROOT / "README.md").read_text()
    # Publishing elsewhere: one constant changes, and every link follows it; so does the branch.
    for fork in ({"repository": "someone-else/fork"}, {"branch": "spring-2027"}):
        stale = sync_links.sync_links(write=False, **fork)
        assert {p.name for p in stale} >= {"README.md", *(p.name for p in NOTEBOOKS)}
    assert sync_links.colab_url("x.ipynb", branch="spring-2027").endswith("/blob/spring-2027/notebooks/x.ipynb")
    assert sync_links.install_url("a/b", "spring-2027") == "git+https://github.com/a/b@spring-2027"
    assert sync_links.configured("REPOSITORY") == config.REPOSITORY and sync_links.configured("BRANCH") == config.BRANCH


def test_publishing_a_fork_is_one_command_that_needs_no_tensorflow(tmp_path):
    """`python tools/sync_links.py --repository OWNER/NAME` on copies, in a Python where TensorFlow cannot load."""
    for path in [*NOTEBOOKS, REPO / "README.md", REPO / "helpers" / "config.py", REPO / "tools" / "sync_links.py"]:
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    no_tensorflow = ("import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
                     "sys.argv = ['sync_links.py', *sys.argv[1:]]; runpy.run_path(PATH, run_name='__main__')")
    script = repr(str(tmp_path / "tools" / "sync_links.py"))
    done = subprocess.run([sys.executable, "-c", no_tensorflow.replace("PATH", script), "--repository",
                           "someone-else/fork", "--branch", "spring-2027"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'REPOSITORY = "someone-else/fork"' in (tmp_path / "helpers" / "config.py").read_text()
    for path in [*NOTEBOOKS, REPO / "README.md"]:
        text = (tmp_path / path.relative_to(REPO)).read_text()
        assert "github/someone-else/fork/blob/spring-2027/notebooks/" in text, path.name
        assert "github/cxr-course/" not in text and "github.com/cxr-course/" not in text, path.name
    first = (tmp_path / NOTEBOOKS[0].relative_to(REPO)).read_text()
    assert "git+https://github.com/someone-else/fork@spring-2027" in first


# --------------------------------------------------------------------------- the setup cell, on a simulated runtime

RUNNER = textwrap.dedent("""
    import sys
    {pretend}
    exec(compile(open({cell!r}).read(), "setup cell", "exec"))
    print("KEEP_ON_DRIVE=" + __import__("os").environ.get("CXR_KEEP_OUTPUTS_ON_DRIVE", ""))
    print("RUNS_URL=" + __import__("os").environ.get("CXR_RUNS_URL", ""))
""")
NOT_INSTALLED = "\nsys.modules['helpers'] = None  # not installed on a new VM\nimport importlib.util\n" \
                "importlib.util.find_spec = lambda name, *a: None"
CANNOT_READ = ("Git cannot read that repository: not published, private, or a wrong name. Before class, the teacher "
               "must publish the fork (public) and run python tools/sync_links.py --repository OWNER/NAME.")
NO_INTERNET = "Check the internet (Kaggle: Settings → Internet on), then run this cell again."
NO_VERSION = "ERROR: Could not find a version that satisfies the requirement keras>=3 (from versions: none)"


@pytest.fixture(scope="module")
def fake_colab(tmp_path_factory):
    """A `google.colab` package whose drive.mount only records where it would mount."""
    root = tmp_path_factory.mktemp("fake-colab")
    colab = root / "google" / "colab"
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text("")
    (colab / "drive.py").write_text("def mount(path):\n    print('mounted ' + path)\n")
    return root


@pytest.fixture(scope="module")
def git_host():
    """host:port of a web server on this machine that answers every request with the status its path starts with:
    /401/… as GitHub answers a private or missing repository (asking for a login), /404/…, /403/…."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            status = int(self.path.split("/")[1])
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_host():
    """host:port where nothing listens: a machine that cannot connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def run_setup_cell(tmp_path, pretend: str, env: dict, python=sys.executable, cell: str | None = None):
    """The setup cell run by IPython, as a notebook runs it (an exception is shown as the notebook would show it).
    In a session of its own, without a terminal: git could not ask for a login here even if the cell let it; and
    with no proxy, credential helper or askpass program of this machine's."""
    path = tmp_path / "setup_cell.py"
    path.write_text(cell or setup_cell(NOTEBOOKS[0]))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(pretend=pretend, cell=str(path)))
    environment = {k: v for k, v in os.environ.items() if k not in (
        "CXR_OUTPUT_DIR", "KAGGLE_KERNEL_RUN_TYPE", "CXR_RUNS_URL", "GIT_ASKPASS", "SSH_ASKPASS")
        and not k.lower().endswith("_proxy")}
    git_alone = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run([python, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor", "-c",
                           f"exec(open({str(runner)!r}).read())"], capture_output=True, text=True, timeout=300,
                          env={**environment, **git_alone, **env}, stdin=subprocess.DEVNULL, start_new_session=True)


def test_every_notebook_has_the_same_setup_cell():
    assert len({setup_cell(path) for path in NOTEBOOKS}) == 1


def test_setup_cell_passes_on_drive_and_a_teachers_runs_to_helpers(tmp_path, fake_colab):
    """The cell only says what is asked (helpers.config mounts Drive when imported: tests/test_config.py)."""
    cell = setup_cell(NOTEBOOKS[0]).replace("KEEP_OUTPUTS_ON_DRIVE = False", "KEEP_OUTPUTS_ON_DRIVE = True").replace(
        'RUNS_URL = ""', 'RUNS_URL = "https://example.org/class-runs.zip"')
    done = run_setup_cell(tmp_path, "import google.colab", {"PYTHONPATH": f"{fake_colab}:{REPO}"}, cell=cell)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KEEP_ON_DRIVE=1" in done.stdout and "RUNS_URL=https://example.org/class-runs.zip" in done.stdout
    done = run_setup_cell(tmp_path, "import google.colab", {"PYTHONPATH": f"{fake_colab}:{REPO}"})
    assert "KEEP_ON_DRIVE=\n" in done.stdout and "RUNS_URL=\n" in done.stdout, "unset: as the course chose (a secret)"


def test_setup_cell_keeps_the_runs_url_set_before_it(tmp_path, fake_colab):
    """CXR_RUNS_URL set before the notebook runs (a Kaggle classroom's environment, `make run`) is not wiped by the
    empty form field; a link pasted into the field is used instead of it."""
    env = {"PYTHONPATH": f"{fake_colab}:{REPO}", "CXR_RUNS_URL": "file:///kaggle/input/class-runs/class-runs.cxr"}
    done = run_setup_cell(tmp_path, "import google.colab", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RUNS_URL=file:///kaggle/input/class-runs/class-runs.cxr\n" in done.stdout
    pasted = setup_cell(NOTEBOOKS[0]).replace('RUNS_URL = ""', 'RUNS_URL = "https://example.org/class-runs.zip"')
    done = run_setup_cell(tmp_path, "import google.colab", env, cell=pasted)
    assert "RUNS_URL=https://example.org/class-runs.zip\n" in done.stdout


@pytest.mark.parametrize("runtime, package, said, what_to_do", [
    # GitHub answers a repository it will not show (private, missing, misspelt) by asking for a login: git fails at
    # once instead of waiting for a user name nobody can type
    ("colab", "git+http://HOST/401/someone/private", "fatal: could not read Username for 'http://HOST': terminal "
                                                     "prompts disabled", CANNOT_READ),
    ("kaggle", "git+http://HOST/404/someone/missing", "fatal: repository 'http://HOST/404/someone/missing/' not "
                                                      "found", CANNOT_READ),
    ("kaggle", "git+file:///no/such/repository", "fatal: '/no/such/repository' does not appear", CANNOT_READ),
    # no internet: Kaggle with Internet off cannot look up a host name; nothing answers; pip's own download
    ("kaggle", "git+https://github.invalid/someone/course", "fatal: unable to access 'https://github.invalid/"
                                                            "someone/course/': Could not resolve host", NO_INTERNET),
    ("colab", "git+http://CLOSED/someone/course", "fatal: unable to access 'http://CLOSED/", NO_INTERNET),
    ("colab", "http://CLOSED/cxr_resnet50_course-1.0-py3-none-any.whl", "", NO_INTERNET),
    # anything else: pip's own first ERROR line, and nothing added
    ("colab", "TMP/no-such-repository", "ERROR: Invalid requirement: 'TMP/no-such-repository'", ""),
], ids=["private-or-missing", "not-found", "no-repository", "no-name-lookup", "nothing-answers", "pip-download",
        "pips-own-line"])
def test_setup_cell_that_cannot_install_says_why_and_what_to_do_in_one_line(
        tmp_path, fake_colab, git_host, runtime, package, said, what_to_do):
    """Real pip and git on a simulated runtime where the course is not installed, with colours forced (FORCE_COLOR,
    as Kaggle's kernel sets it): one line with git's or pip's reason, colour stripped, and what to do; no traceback
    and no "To exit: use 'exit'"."""
    closed = closed_host()
    package, said = (text.replace("HOST", git_host).replace("CLOSED", closed).replace("TMP", str(tmp_path))
                     for text in (package, said))
    env = {"CXR_PACKAGE": package, "PIP_NO_INDEX": "1", "PIP_RETRIES": "0", "FORCE_COLOR": "1",
           "PYTHONPATH": str(fake_colab), **({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"} if runtime == "kaggle" else {})}
    done = run_setup_cell(tmp_path, ("import google.colab" if runtime == "colab" else "") + NOT_INSTALLED, env)
    shown = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, shown
    assert shown.startswith(f"Setup failed: could not install the course's helpers from {package} ({said}"), shown
    assert shown.endswith(f"). {what_to_do}" if what_to_do else ")."), shown
    assert len(shown.splitlines()) == 1 and "Traceback" not in shown and "\x1b" not in shown and "exit" not in shown


@pytest.mark.parametrize("pip_said, what_to_do", [
    # a repository git cannot read: git's words for it
    ("remote: Repository not found.\nfatal: repository 'https://github.com/a/b/' not found", CANNOT_READ),
    ("fatal: could not read Username for 'https://github.com': terminal prompts disabled", CANNOT_READ),
    ("fatal: could not read Password for 'https://a@github.com': terminal prompts disabled", CANNOT_READ),
    ("fatal: Authentication failed for 'https://github.com/a/b/'", CANNOT_READ),
    ("fatal: unable to access 'https://github.com/a/b/': The requested URL returned error: 403", CANNOT_READ),
    ("fatal: unable to access 'https://github.com/a/b/': The requested URL returned error: 404", CANNOT_READ),
    # no internet: git's and pip's words for it
    ("fatal: unable to access 'https://github.com/a/b/': Could not resolve host: github.com", NO_INTERNET),
    ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
     "broken by 'NewConnectionError('<HTTPSConnection object at 0x7f>: Failed to establish a new connection: "
     "[Errno -3] Temporary failure in name resolution')': /simple/keras/\n" + NO_VERSION, NO_INTERNET),
    ("WARNING: Retrying after connection broken by 'NameResolutionError(\"<HTTPSConnection object at 0x7f>: Failed "
     "to resolve 'pypi.org' ([Errno -3] Temporary failure in name resolution)\")': /simple/keras/\n" + NO_VERSION,
     NO_INTERNET),
    ("fatal: unable to access 'https://github.com/a/b/': Failed to connect to github.com port 443 after 3 ms: "
     "Network is unreachable", NO_INTERNET),
    ("fatal: unable to access 'https://github.com/a/b/': Failed to connect to github.com port 443 after 130 s: "
     "Connection timed out", NO_INTERNET),
    ("WARNING: Retrying after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', "
     "port=443): Read timed out. (read timeout=15)\")': /simple/keras/\n" + NO_VERSION, NO_INTERNET),
    # anything else: pip's first ERROR line alone
    (NO_VERSION, ""),
    ("ERROR: Cannot install cxr-resnet50-course because these package versions have conflicting dependencies.\n"
     "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/", ""),
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", ""),
], ids=["repository-not-found", "no-user-name", "no-password", "authentication-failed", "http-403", "http-404",
        "no-host-name", "pip-no-connection", "pip-no-name-resolution", "network-unreachable", "connection-timed-out",
        "read-timed-out", "no-such-version", "conflicting-dependencies", "disk-full"])
def test_setup_cell_tells_apart_why_an_install_failed(monkeypatch, pip_said, what_to_do):
    """Every reason git or pip gives, coloured as on Kaggle, through the cell itself in this process (pip stood in for),
    on a simulated new Kaggle machine; and pip is run with GIT_TERMINAL_PROMPT=0, so git never waits for a login."""
    given = {}

    def pip(command, **options):
        given.update(command=command, env=options.get("env") or {})
        coloured = re.sub(r"^(ERROR|WARNING|fatal)", "\x1b[1;31m\\1\x1b[0m", pip_said, flags=re.M)
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=f"  error: failed\n{coloured}\n")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "helpers" else find_spec(name, *args))
    for name in ("CXR_PACKAGE", "CXR_RUNS_URL", "CXR_KEEP_OUTPUTS_ON_DRIVE"):  # restored afterwards, even if unset
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    with pytest.raises(Exception) as failed:
        exec(compile(setup_cell(NOTEBOOKS[0]), "setup cell", "exec"), {})
    shown = failed.value._render_traceback_()
    assert type(failed.value).__name__ == "Failed" and shown == [str(failed.value)], "one line, no traceback"
    first = next(line for line in pip_said.splitlines() if line.startswith(("fatal: ", "ERROR: ")))
    said = f"Setup failed: could not install the course's helpers from {sync_links.install_url()} ({first})."
    assert shown[0] == (f"{said} {what_to_do}" if what_to_do else said)
    assert given["env"].get("GIT_TERMINAL_PROMPT") == "0" and given["command"][-1].startswith("tensorflow==")


def test_setup_cell_does_nothing_outside_colab_and_kaggle(tmp_path):
    done = run_setup_cell(tmp_path, "", {"CXR_PACKAGE": str(tmp_path / "never-used")})
    assert done.returncode == 0 and done.stderr == ""


def test_the_names_a_learner_meets_are_counted_as_issue_25_counted_them(tmp_path):
    """tools/notebook_names.py: module.name uses (figures are plain functions: plots.<figure>), names imported from a
    module, and helpers.start; shell lines skipped, attributes of results (the course, a run) not counted."""
    spec = importlib.util.spec_from_file_location("notebook_names", REPO / "tools" / "notebook_names.py")
    names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(names)
    cells = ["!pip install something",
             "import helpers\nfrom helpers import cam, plots as p\nfrom helpers.tasks import CLASSES",
             "course = helpers.start()\np.sample_grid(course.scan.index, caption=course.caption)\n"
             "found = cam.maps(run, x)\nfound.upsampled(8)"]
    notebook = tmp_path / "01_probe.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": c} for c in cells]}))
    assert names.count([notebook]) == {name: {"01_probe"} for name in (
        "helpers.start", "plots.sample_grid", "cam.maps", "tasks.CLASSES")}


def test_a_learner_meets_at_most_45_helper_names():
    """Issue 37: a small library in front of the lessons (it was 81 names)."""
    spec = importlib.util.spec_from_file_location("notebook_names", REPO / "tools" / "notebook_names.py")
    names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(names)
    used = names.count(NOTEBOOKS)
    assert len(used) <= 45, sorted(used)


def test_executed_notebooks_are_compared_by_what_they_print_not_by_their_timings(tmp_path):
    """tools/compare_outputs.py, how issue 25 checked that a refactor kept every number of `make run`."""
    spec = importlib.util.spec_from_file_location("compare_outputs", REPO / "tools" / "compare_outputs.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    def executed(path, accuracy, seconds):
        outputs = [{"output_type": "stream", "name": "stdout",
                    "text": [f"accuracy {accuracy}\n", f"trained in {seconds} s\n", "\r\x1b[1m3/3\x1b[0m ━━━\n"]},
                   {"output_type": "execute_result", "data": {"text/plain": ["<Figure at 0x7f00aa>"]}}]
        cells = [{"cell_type": "code", "id": "c1", "source": "", "outputs": outputs},
                 {"cell_type": "markdown", "id": "m1", "source": "prose"}]
        path.write_text(json.dumps({"cells": cells}))
        return path

    before = executed(tmp_path / "before.ipynb", 0.75, 12.5)
    assert compare.differences(before, executed(tmp_path / "same.ipynb", 0.75, 99.1)) == {}, "timings are noise"
    changed = compare.differences(before, executed(tmp_path / "changed.ipynb", 0.5, 12.5))
    assert list(changed) == ["c1"] and changed["c1"] == ["@@ -1 +1 @@", "-accuracy 0.75", "+accuracy 0.5"]
