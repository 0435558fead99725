"""Every notebook opens and ends the same way and is stored clean (nbval executes them separately)."""

import json

import pytest

from helpers import config, course

NOTEBOOKS = course.notebooks()


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def text(cell):
    return "".join(cell["source"])


def test_the_course_has_its_first_lessons():
    names = [p.name for p in NOTEBOOKS]
    assert names[:3] == ["01_dataset_exploration.ipynb", "02_preprocessing.ipynb",
                         "03_transfer_learning_resnet50.ipynb"]
    assert {"04_evaluation.ipynb", "05_class_activation_maps.ipynb", "06_paper_b_protocol.ipynb"} <= set(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_same_opening(path):
    first, setup_intro, setup, imports_intro, imports = cells(path)[:5]
    assert first["cell_type"] == "markdown" and text(first).startswith("# ")
    assert course.colab_badge(path.name) in text(first)
    assert "**What you will learn**" in text(first)
    assert setup_intro["cell_type"] == "markdown"
    code = text(setup)
    assert '"google.colab" in sys.modules' in code and course.install_url() in code
    assert 'f"tensorflow=={tf.__version__}"' in code, "Colab's own TensorFlow is pinned, never reinstalled"
    assert imports_intro["cell_type"] == "markdown"
    assert "config.device_report(" in text(imports)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_same_ending_summary_and_exercises(path):
    last = text(cells(path)[-1])
    assert "## Summary" in last and "## Exercises" in last
    exercises = last.split("## Exercises", 1)[1]
    assert 2 <= sum(line[:3] in {f"{i}. " for i in range(1, 10)} for line in exercises.splitlines()) <= 4


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
            assert len(text(cell).splitlines()) <= 12, f"long cell: {text(cell)[:60]!r}"
        else:
            run = 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_says_which_data_it_uses(path):
    assert any("course.data_statement(" in text(c) for c in cells(path) if c["cell_type"] == "code")


def test_badges_and_setup_cells_point_at_the_repository_constant(tmp_path, monkeypatch):
    assert course.sync_links(write=False) == []
    assert course.colab_badge("01_dataset_exploration.ipynb") in (config.REPO_ROOT / "README.md").read_text()
    # Publishing elsewhere: one constant changes, and every link follows it.
    monkeypatch.setattr(config, "REPOSITORY", "someone-else/fork")
    stale = course.sync_links(write=False)
    assert {p.name for p in stale} >= {"README.md", *(p.name for p in NOTEBOOKS)}
