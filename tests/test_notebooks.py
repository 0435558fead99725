"""Every notebook opens and ends the same way, shows the code it teaches, runs its solutions, asks Colab for a GPU,
is stored clean (nbval executes them separately), and its setup cell works, or fails in one sentence, on Colab and
Kaggle (simulated here, without network)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import config, main_job

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
        "04_evaluation.ipynb", "05_class_activation_maps.ipynb", "06_paper_b_protocol.ipynb"]


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
    assert "f\"tensorflow=={importlib.metadata.version('tensorflow')}\"" in code, "the runtime's own TF is kept"
    imports = text(imports)
    assert imports.startswith("import helpers"), "helpers first: it keeps TensorFlow's start-up lines quiet"
    assert "config.device_report(" in imports


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
    run = 0
    for cell in cells(path):
        if cell["cell_type"] == "code":
            run += 1
            assert run <= 2, f"more than two code cells in a row: {text(cell)[:60]!r}"
            assert len(text(cell).splitlines()) <= 20, f"long cell: {text(cell)[:60]!r}"
        else:
            run = 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_says_which_data_it_uses(path):
    assert "datasets.active_dataset(" in code_of(path)  # which prints which data it uses


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


@pytest.fixture(scope="module")
def fake_colab(tmp_path_factory):
    """A `google.colab` package whose drive.mount only records where it would mount."""
    root = tmp_path_factory.mktemp("fake-colab")
    colab = root / "google" / "colab"
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text("")
    (colab / "drive.py").write_text("def mount(path):\n    print('mounted ' + path)\n")
    return root


def run_setup_cell(tmp_path, pretend: str, env: dict, python=sys.executable, cell: str | None = None):
    """The setup cell run by IPython, as a notebook runs it (an exception is shown as the notebook would show it)."""
    path = tmp_path / "setup_cell.py"
    path.write_text(cell or setup_cell(NOTEBOOKS[0]))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(pretend=pretend, cell=str(path)))
    environment = {k: v for k, v in os.environ.items() if k not in ("CXR_OUTPUT_DIR", "KAGGLE_KERNEL_RUN_TYPE",
                                                                     "CXR_RUNS_URL")}
    return subprocess.run([python, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor", "-c",
                           f"exec(open({str(runner)!r}).read())"], capture_output=True, text=True, timeout=300,
                          env={**environment, **env})


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


@pytest.mark.parametrize("runtime, package, reason", [
    ("colab", "no-such-repository", "ERROR: "),  # pip's own line
    ("kaggle", "git+file:///no/such/repository", "fatal: "),  # git's: no network, no repository
])
def test_setup_cell_that_cannot_install_says_why_in_one_line(tmp_path, fake_colab, runtime, package, reason):
    """No network, or a repository not published yet: one line with git's or pip's own reason, colour stripped, no
    traceback and no "To exit: use 'exit'". Simulated in a Python where the course is not installed."""
    pretend = "import google.colab" if runtime == "colab" else ""
    package = package if "://" in package else str(tmp_path / package)
    env = {"CXR_PACKAGE": package, "PIP_NO_INDEX": "1", "FORCE_COLOR": "1", "PYTHONPATH": str(fake_colab),
           **({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"} if runtime == "kaggle" else {})}
    done = run_setup_cell(tmp_path, pretend + "\nsys.modules['helpers'] = None  # not installed on a new VM\n"
                          "import importlib.util\nimportlib.util.find_spec = lambda name, *a: None", env)
    shown = (done.stdout + done.stderr).strip()
    assert done.returncode == 1
    assert shown.startswith(f"Setup failed: could not install the course's helpers from {package} ({reason}"), shown
    assert len(shown.splitlines()) == 1 and "Traceback" not in shown and "\x1b" not in shown and "exit" not in shown
    assert shown.endswith("then run this cell again.")


def test_setup_cell_does_nothing_outside_colab_and_kaggle(tmp_path):
    done = run_setup_cell(tmp_path, "", {"CXR_PACKAGE": str(tmp_path / "never-used")})
    assert done.returncode == 0 and done.stderr == ""


def test_the_names_a_learner_meets_are_counted_as_issue_25_counted_them(tmp_path):
    """tools/notebook_names.py: module.name uses, and figures drawn through a Figures object as plots.<figure>;
    shell lines skipped, methods of results not counted."""
    spec = importlib.util.spec_from_file_location("notebook_names", REPO / "tools" / "notebook_names.py")
    names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(names)
    figures = names.figure_names((REPO / "helpers" / "plots.py").read_text())
    assert {"sample_grid", "cam_overlays", "training_curves"} <= figures and "caption" not in figures
    cells = ["!pip install something", "from helpers import cam, plots as p\nfrom helpers.tasks import CLASSES",
             "figures = p.Figures(None)\nfigures.sample_grid(index)\nfound = cam.maps(run, x)\nfound.upsampled(8)"]
    notebook = tmp_path / "01_probe.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": c} for c in cells]}))
    assert names.count([notebook], figures) == {name: {"01_probe"} for name in (
        "plots.Figures", "plots.sample_grid", "cam.maps", "tasks.CLASSES")}


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
