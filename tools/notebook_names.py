"""The `helpers` names a learner meets in the notebooks: every `module.name` a code cell uses (`from helpers import
module`, then `module.name`; figures are plain functions, so a figure is `plots.<figure>`), every name imported from a
module (`from helpers.module import name`), and every `helpers.name` after `import helpers` (`helpers.start`).
Issue 25 measured the course with it (108 names → 78); issue 37 again (81 → 45).

    python tools/notebook_names.py [NOTEBOOK ...]      one line per name with the notebooks using it, then the counts

Reads the notebooks as text (no TensorFlow). Attributes of what those names return (`course.scan`, `run.history()`)
are not counted.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_of(notebook: Path) -> str:
    """A notebook's code cells as one module, without shell (!) and magic (%) lines."""
    cells = json.loads(notebook.read_text())["cells"]
    lines = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))


def names_in(source: str) -> set[str]:
    tree = ast.parse(source)
    modules, found = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update({alias.asname or alias.name: alias.name for alias in node.names
                            if alias.name == "helpers"})
        elif isinstance(node, ast.ImportFrom) and node.module == "helpers":
            modules.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers."):
            found.update(f"{node.module.split('.')[1]}.{alias.name}" for alias in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found.add(f"{modules[node.value.id]}.{node.attr}")
    return found


def count(notebooks) -> dict[str, set[str]]:
    """name → the notebooks (file stems) that use it."""
    used = collections.defaultdict(set)
    for notebook in notebooks:
        for name in names_in(code_of(notebook)):
            used[name].add(notebook.stem)
    return dict(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    notebooks = parser.parse_args().notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    used = count(notebooks)
    for name in sorted(used):
        print(name, ", ".join(sorted(n[:2] for n in used[name])))
    per_notebook = collections.Counter(n for users in used.values() for n in users)
    print(f"{len(used)} distinct names; per notebook: " +
          ", ".join(f"{n[:2]} {k}" for n, k in sorted(per_notebook.items())))


if __name__ == "__main__":
    main()
