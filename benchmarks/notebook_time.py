"""Where an executed notebook's minutes go: each code cell's share of the notebook's time, longest first.

Reads the timing Jupyter records in every executed cell (`make run` leaves the executed notebooks in
outputs/notebooks/), so nothing is run again:

    python benchmarks/notebook_time.py outputs/notebooks/06_paper_b_protocol.ipynb [--top 8]
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path


def cell_seconds(notebook: dict) -> list[tuple[float, int, str]]:
    """(seconds, cell index, first line) for every code cell Jupyter timed."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] != "code" or not {"iopub.execute_input", "shell.execute_reply"} <= set(timing):
            continue
        began, ended = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                        for k in ("iopub.execute_input", "shell.execute_reply"))
        first_line = ("".join(cell["source"]).strip().splitlines() or [""])[0]
        found.append(((ended - began).total_seconds(), index, first_line))
    return found


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("notebook", type=Path, help="an executed notebook (with outputs)")
    args.add_argument("--top", type=int, default=8)
    options = args.parse_args()
    cells = cell_seconds(json.loads(options.notebook.read_text()))
    if not cells:
        raise SystemExit(f"{options.notebook} has no timed cells: execute it first (make run, or nbconvert --execute)")
    total = sum(seconds for seconds, _, _ in cells)
    print(f"{options.notebook.name}: {total:.0f} s in {len(cells)} code cells")
    for seconds, index, line in sorted(cells, reverse=True)[: options.top]:
        print(f"  {seconds:7.1f} s  {seconds / total:6.1%}  cell {index:>2}: {line[:70]}")


if __name__ == "__main__":
    main()
