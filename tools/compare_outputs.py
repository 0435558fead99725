"""Whether two sets of executed notebooks printed the same things: their text outputs compared cell by cell (by cell
id), lines of timings, progress bars and memory addresses left out. How issue 25 checked that a refactor kept every
number (`make run` before and after: outputs/notebooks/).

    python tools/compare_outputs.py BEFORE_DIR AFTER_DIR      the cells that differ, and how; exit status 1 if any
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

# Lines that differ from run to run whatever the code: seconds, rates, Keras progress bars, object addresses.
NOISE = re.compile(r"━|ms/step|s/step|seconds|\b[0-9.]+ ?s\b|it/s|s/it|elapsed|Epoch \d+/\d+|images/s|\bETA\b|"
                   r" at 0x[0-9a-f]+|\r")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves of a progress bar


def text_outputs(notebook: Path) -> dict[str, list[str]]:
    """cell id → the lines it printed (stdout) and the text of its results, noise left out."""
    found = {}
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += "".join(output["text"]).splitlines()
            elif "text/plain" in output.get("data", {}):
                lines += "".join(output["data"]["text/plain"]).splitlines()
        lines = [ANSI.sub("", line).replace("\b", "").rstrip() for line in lines if not NOISE.search(line)]
        found[cell.get("id")] = [line for line in lines if line.strip()]
    return found


def differences(before: Path, after: Path) -> dict[str, list[str]]:
    """cell id → a unified diff of its lines, for the cells that differ (a cell only one side has included)."""
    old, new = text_outputs(before), text_outputs(after)
    return {cell: list(difflib.unified_diff(old.get(cell, ["<no such cell>"]), new.get(cell, ["<no such cell>"]),
                                            lineterm="", n=0))[2:]
            for cell in [*old, *[c for c in new if c not in old]] if old.get(cell) != new.get(cell)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    changed = 0
    for notebook in sorted(args.before.glob("*.ipynb")):
        if not (args.after / notebook.name).exists():
            print(f"== {notebook.name}: missing from {args.after}")
            changed += 1
            continue
        found = differences(notebook, args.after / notebook.name)
        changed += len(found)
        print(f"== {notebook.name}: {len(found)} cell(s) differ")
        for cell, lines in found.items():
            print(f"  -- {cell}", *(f"    {line[:150]}" for line in lines[:12]), sep="\n")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
