"""The package's shape: the lessons' modules in front, the machinery behind one door (helpers/engine/), one concern per
module, imports at the top, no import cycle, no long function."""

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "helpers"
NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


MODULES = {_dotted(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}
ENGINE = {name for name in MODULES if name.startswith("engine.")}
DOORS = {"runs", "course", "cli", "__main__"}  # the lessons' ways into the engine (issue 37)
LESSONS = set(MODULES) - ENGINE - DOORS
# Imports that must stay inside a function: an optional extra (KerasHub), and TensorFlow imported with its start-up
# lines held back (helpers/__init__.py).
DEFERRED = {("models", "keras_hub"), ("__init__", "tensorflow"), ("config", "google")}  # google: Colab only


def _module_named(dotted: str) -> str | None:
    """`helpers.engine.storage` → `engine.storage`, `helpers.config` → `config`; None outside the package."""
    if dotted == "helpers.engine":
        return "engine.__init__"
    if dotted.startswith("helpers."):
        return dotted.removeprefix("helpers.")
    return None


def imported_by(tree) -> set[str]:
    """The package's modules a module (or a notebook's code) imports, by dotted name under helpers/."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            base = node.module.removeprefix("helpers").lstrip(".")
            for alias in node.names:
                below = f"{base}.{alias.name}" if base else alias.name
                found.add(below if below in MODULES else (base or alias.name))
        elif isinstance(node, ast.Import):
            found.update(_module_named(alias.name) or "" for alias in node.names)
    return {name for name in found if name in MODULES or name == "engine"}


def helpers_imported_by(tree) -> set[str]:
    return {name for name in imported_by(tree) if name in MODULES}


def notebook_code(path: Path):
    cells = json.loads(path.read_text())["cells"]
    lines = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code").splitlines()
    return ast.parse("\n".join(line for line in lines if not line.lstrip().startswith(("!", "%"))))


def _reaches_engine(names) -> list[str]:
    return sorted(n for n in names if n == "engine" or n in ENGINE or n == "engine.__init__")


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_modules_never_import_the_engine(name):
    """Issue 37: a teacher reads helpers/ without meeting the machinery; only runs, course and cli open its door."""
    assert _reaches_engine(imported_by(MODULES[name])) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_never_import_the_engine(path):
    tree = notebook_code(path)
    named = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "helpers"}
    assert _reaches_engine(imported_by(tree) | named) == []


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_the_engine_never_imports_its_doors(name):
    """Nothing runs back up: the engine serves runs, course and cli, and never calls them."""
    assert sorted(imported_by(MODULES[name]) & DOORS) == []


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
    assert inside == [], f"helpers/{name.replace('.', '/')}.py imports inside functions: {inside}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_is_longer_than_80_lines(name):
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(MODULES[name])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in MODULES if not name.rsplit(".", 1)[-1].startswith("_")
               and name.rsplit(".", 1)[-1] not in layout]
    assert missing == []


def test_the_readme_lists_the_modules_in_dependency_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("\nhelpers/ ", 1)[1].split("\nnotebooks/", 1)[0]
    listed = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent in (3, 6) and not line.strip().endswith("/") and not line.strip().split("  ")[0].endswith("/"):
            prefix = "engine." if indent == 6 else ""
            listed += [prefix + name.strip() for name in line.strip().split("  ")[0].split("·")]
    assert sorted(listed) == sorted(name for name in MODULES if not name.rsplit(".", 1)[-1].startswith("_"))
    below = {name: set(listed[i + 1:]) for i, name in enumerate(listed)}
    upward = {name: sorted(helpers_imported_by(MODULES[name]) & below[name]) for name in listed}
    assert {name: found for name, found in upward.items() if found} == {}, "a module imports one listed below it"


def test_a_run_folders_file_names_are_written_in_one_module():
    """Issue 25: a renamed run-folder file is renamed everywhere: `engine.storage` names them, the others import it."""
    names = ("settings.json", "split.csv", "history.csv", "model.keras", "metrics.json", "test_predictions.csv",
             "state.json")
    found = {name: sorted(module for module, tree in MODULES.items()
                          for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == name)
             for name in names}
    assert found == {name: ["engine.storage"] for name in names}


def test_a_run_folders_files_are_read_and_written_in_storage_only():
    """Issue 25: a run folder's files have one owner. The other modules call `storage`'s functions (and `Run`);
    none builds a path to one of its files from the names itself (`sharing` packs the list `SHARED`, whole)."""
    names = {"SETTINGS", "SPLIT", "HISTORY", "MODEL", "CHECKPOINTS", "STATE", "METRICS", "TEST_PREDICTIONS",
             "EPOCH_WEIGHTS", "OLD_BEST_WEIGHTS", "EPOCH_MODEL"}
    reached = sorted((module, node.attr) for module, tree in MODULES.items() if module != "engine.storage"
                     for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                     and isinstance(node.value, ast.Name) and node.value.id == "storage" and node.attr in names)
    imported = sorted((module, alias.name) for module, tree in MODULES.items() for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and node.module == "helpers.engine.storage"
                      for alias in node.names if alias.name in names)
    assert reached + imported == []


def test_what_a_run_is_has_one_author():
    """Issue 37: settings.json's keys are written and read in `engine.storage` alone (`RunSettings`); training builds
    one, resume, sharing and `Run` read its attributes. No `settings[...]` anywhere else in the package."""
    indexed = sorted((module, node.lineno) for module, tree in MODULES.items() if module != "engine.storage"
                     for node in ast.walk(tree) if isinstance(node, ast.Subscript)
                     and ((isinstance(node.value, ast.Name) and node.value.id == "settings")
                          or (isinstance(node.value, ast.Attribute) and node.value.attr == "settings")))
    assert indexed == []
