"""The main job (`make run`, `python -m helpers run`): pick the data, check every file, save the splits, then
execute every notebook in order, printing each cell as it starts, with the time spent and an estimate from
the previous run, so that a long run is never silent.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from helpers import config, files
from helpers.data import format_report, scan_cached
from helpers.datasets import active_dataset, data_statement
from helpers.splits import saved_split, saved_split_path

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Keras' progress bar colours, meaningless in a log file
# Splits the main job prepares, so every notebook and CLI command finds them already made.
COURSE_SPLITS = (("paper_a", 4), ("paper_b", 3), ("paper_b", 2))


def notebooks(folder=None) -> list[Path]:
    """The numbered notebooks of the course, in order."""
    return sorted(Path(folder or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _print(message: str) -> None:
    print(message, flush=True)  # the main job is often piped into a log file: each line as it happens


def execute_notebook(source: Path, target: Path, timeout: int = 3600, expected: float | None = None,
                     log=_print) -> float:
    """Run one notebook top to bottom with the current Python's kernel, printing each code cell as it starts;
    the executed copy is written to `target` (also when a cell fails). Returns the seconds taken."""
    notebook = nbformat.read(source, as_version=4)
    code = [i for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and "solution" not in cell.metadata.get("tags", [])]
    started = time.perf_counter()
    estimate = f" of ~{_clock(expected)}" if expected else ""

    def on_cell_start(cell, cell_index):
        first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
        if cell_index not in code:
            return
        log(f"  [{source.name[:2]} · cell {code.index(cell_index) + 1}/{len(code)} · "
            f"{_clock(time.perf_counter() - started)}{estimate}] {first[:90]}")

    # Exercise solutions are left for the learner (the test command runs them): the main job runs the lessons.
    client = _EchoingClient(notebook, timeout=timeout, kernel_name="python3", on_cell_start=on_cell_start,
                            skip_cells_with_tag="solution", resources={"metadata": {"path": str(source.parent)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # not the kernel's TCP notice
    client.echo = log
    try:
        client.execute()
    finally:
        with files.atomic_path(target) as tmp:
            nbformat.write(notebook, tmp)
    return time.perf_counter() - started


class _EchoingClient(NotebookClient):
    """Also prints each finished line a cell writes (Keras' line per epoch, a bar's last state), so that a cell
    that trains for minutes is watched, not silent. Lines redrawn in place (after a carriage return) show once."""

    echo = print

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "stream":
            pending = self.__dict__.setdefault("pending", {})  # per stream: a line's start, its end yet to come
            name = msg["content"].get("name", "stdout")
            *lines, pending[name] = (pending.get(name, "") + msg["content"].get("text", "")).split("\n")
            for line in lines:
                shown = ANSI_CODES.sub("", line.rsplit("\r", 1)[-1]).strip()
                if shown:
                    self.echo(f"      {shown[:150]}")
        return super().output(outs, msg, display_id, cell_index)


def run_course(log=_print) -> dict:
    """The main job: pick the data, check it, save the splits, then execute every notebook in order.

    Executed notebooks land in outputs/notebooks/; a failing notebook stops the run (and is saved
    with its error for inspection).
    """
    out = config.OUTPUT_DIR
    profile = config.active_profile()
    log(profile.describe())
    layout = active_dataset(profile, quiet=True)
    log(data_statement(layout, profile))
    scan = scan_cached(layout, progress=True)
    report = format_report(scan)
    log(report)
    files.write_text(out / "data_check.txt", report + "\n")
    files.write_json(out / "data_check.json", scan.to_dict())

    previous = (files.read_json(out / "run_summary.json") or {}).get("notebooks", {})
    timings = out / "notebook_seconds.json"  # each notebook's last time, kept even when a later one fails
    previous = {**previous, **(files.read_json(timings) or {})}
    summary = {"profile": profile.name, "profile_reason": profile.reason, "data_root": str(layout.root),
               "phantom": layout.is_phantom, "splits": {}, "notebooks": {}}
    for mode, task in COURSE_SPLITS:
        split = saved_split(scan, mode=mode, task=task)
        path = saved_split_path(scan, mode=mode, task=task)
        counts = {f"repeat {r}": part.groupby("split").size().to_dict() for r, part in split.groupby("repeat")}
        summary["splits"][path.name] = counts
        shown = counts["repeat 0"] if len(counts) == 1 else f"{len(counts)} repeats of {counts['repeat 0']}"
        log(f"Split {mode}, {task} classes: {shown} → {path}")

    found = notebooks()
    expected_total = sum(previous.get(p.name, 0) for p in found)
    if expected_total:
        log(f"Executing {len(found)} notebooks; the last run took {_clock(expected_total)} in all.")
    for source in found:
        target = out / "notebooks" / source.name
        log(f"Executing {source.name} …")
        seconds = execute_notebook(source, target, expected=previous.get(source.name), log=log)
        summary["notebooks"][source.name] = round(seconds, 1)
        files.write_json(timings, {**previous, **summary["notebooks"]})
        log(f"  done in {_clock(seconds)} → {target}")
    if not found:
        log("No notebooks yet: the main job prepared and checked the data only.")
    files.write_json(out / "run_summary.json", summary)
    return summary
