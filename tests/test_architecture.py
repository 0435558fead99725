"""The package's shape: one concern per module, imports at the top, no import cycle, no long function."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "helpers"
MODULES = {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}
# Imports that must stay inside a function: an optional extra (KerasHub), and TensorFlow imported with its start-up
# lines held back (helpers/__init__.py).
DEFERRED = {("models", "keras_hub"), ("__init__", "tensorflow"), ("config", "google")}  # google: Colab only


def helpers_imported_by(tree) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("helpers."):
                found.add(node.module.split(".")[1])
            elif node.module == "helpers":
                found.update(alias.name for alias in node.names if alias.name in MODULES)
    return found


def test_no_import_cycle_among_helpers_modules():
    graph = {name: helpers_imported_by(tree) - {name} for name, tree in MODULES.items()}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    cycles = sorted(name for name in graph if reaches(name, name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_sit_at_the_top_of_the_module(name):
    inside = []
    for function in ast.walk(MODULES[name]):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                    inside += [m for m in modules if (name, m.split(".")[0]) not in DEFERRED]
    assert inside == [], f"helpers/{name}.py imports inside functions: {inside}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_is_longer_than_80_lines(name):
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(MODULES[name])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in MODULES if not name.startswith("_") and name not in layout]
    assert missing == []


def test_the_readme_lists_the_modules_in_dependency_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("\nhelpers/ ", 1)[1].split("\nnotebooks/", 1)[0]
    listed = []
    for line in block.splitlines():
        if line.startswith("   ") and not line.startswith("    "):
            listed += [name.strip() for name in line.strip().split("  ")[0].split("·")]
    assert sorted(listed) == sorted(name for name in MODULES if not name.startswith("_"))
    below = {name: set(listed[i + 1:]) for i, name in enumerate(listed)}
    upward = {name: sorted(helpers_imported_by(MODULES[name]) & below[name]) for name in listed}
    assert {name: found for name, found in upward.items() if found} == {}, "a module imports one listed below it"


def test_a_run_folders_file_names_are_written_in_one_module():
    """Issue 25: a renamed run-folder file is renamed everywhere: `run_folder` names them, the others import it."""
    names = ("settings.json", "split.csv", "history.csv", "model.keras", "metrics.json", "test_predictions.csv",
             "state.json")
    found = {name: sorted(module for module, tree in MODULES.items()
                          for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == name)
             for name in names}
    assert found == {name: ["run_folder"] for name in names}


def test_a_run_folders_files_are_read_and_written_in_run_folder_only():
    """Issue 25: a run folder's files have one owner. The other modules call `run_folder`'s functions (and `Run`);
    none builds a path to one of its files from the names itself (`sharing` packs the list `SHARED`, whole)."""
    names = {"SETTINGS", "SPLIT", "HISTORY", "MODEL", "CHECKPOINTS", "STATE", "METRICS", "TEST_PREDICTIONS",
             "EPOCH_WEIGHTS", "OLD_BEST_WEIGHTS", "EPOCH_MODEL"}
    reached = sorted((module, node.attr) for module, tree in MODULES.items() if module != "run_folder"
                     for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                     and isinstance(node.value, ast.Name) and node.value.id == "run_folder" and node.attr in names)
    imported = sorted((module, alias.name) for module, tree in MODULES.items() for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and node.module == "helpers.run_folder"
                      for alias in node.names if alias.name in names)
    assert reached + imported == []
