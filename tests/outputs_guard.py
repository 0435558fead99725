"""The test run never writes to the course's outputs/: its own output folder, and a fingerprint of outputs/ to prove it.

Used by the repository's root conftest.py (which pytest loads first, whatever paths it is given) and by
tests/test_course_outputs.py. Imports nothing of the course, so that CXR_OUTPUT_DIR is set before helpers/config.py
reads it."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COURSE_OUTPUTS = REPO / "outputs"
# Git-ignored and kept between test runs, so that a local re-run reuses the fast profile's runs (CI starts empty).
TEST_OUTPUTS = REPO / ".test-outputs"
# The file holding the fingerprint of outputs/ taken when the test run started (set by the main pytest process).
SNAPSHOT_VARIABLE = "CXR_TEST_OUTPUTS_SNAPSHOT"


def use_test_outputs() -> Path:
    """Point CXR_OUTPUT_DIR at the test run's own folder, unless it is set already (by hand, or by the main pytest
    process for its xdist workers: one folder for the whole run). Kernels and child processes inherit it."""
    if not os.environ.get("CXR_OUTPUT_DIR"):
        os.environ["CXR_OUTPUT_DIR"] = str(TEST_OUTPUTS)
    return Path(os.environ["CXR_OUTPUT_DIR"]).expanduser()


def fingerprint(folder: Path = COURSE_OUTPUTS) -> dict[str, list[int] | str] | None:
    """Every file and folder under `folder` (symbolic links not followed): size and modification time of each file,
    "folder" for a folder, "link -> target" for a link. None when `folder` does not exist."""
    if not folder.is_dir():
        return None
    entries: dict[str, list[int] | str] = {}
    for top, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(top) / name
            key = path.relative_to(folder).as_posix()
            try:
                if path.is_symlink():
                    entries[key] = f"link -> {os.readlink(path)}"
                elif path.is_dir():
                    entries[key] = "folder"
                else:
                    stat = path.stat()
                    entries[key] = [stat.st_size, stat.st_mtime_ns]
            except FileNotFoundError:  # removed while we looked: it is not there
                continue
    return entries


def changes(before: dict | None, after: dict | None, name: str = "outputs") -> list[str]:
    """What changed between two fingerprints, one line per path."""
    if before is None and after is None:
        return []
    if before is None:
        return [f"{name}/ was created, with {len(after)} entries"]
    if after is None:
        return [f"{name}/ was removed"]
    lines = [f"added    {name}/{key}" for key in sorted(after.keys() - before.keys())]
    lines += [f"removed  {name}/{key}" for key in sorted(before.keys() - after.keys())]
    lines += [f"modified {name}/{key}" for key in sorted(before.keys() & after.keys()) if before[key] != after[key]]
    return lines


def save_snapshot(path: Path) -> None:
    path.write_text(json.dumps(fingerprint()))
    os.environ[SNAPSHOT_VARIABLE] = str(path)


def changes_since_start() -> list[str]:
    """What the test run has changed in outputs/ so far (in any process of the run: they share the snapshot)."""
    snapshot = os.environ.get(SNAPSHOT_VARIABLE)
    if not snapshot or not Path(snapshot).exists():
        raise RuntimeError(f"no fingerprint of outputs/ from the start of the test run ({SNAPSHOT_VARIABLE} is "
                           f"{snapshot!r}): the repository's conftest.py takes it")
    return changes(json.loads(Path(snapshot).read_text()), fingerprint())


def report(lines: list[str], limit: int = 20) -> str:
    shown = lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
    return (f"the test run changed the course's outputs/ ({COURSE_OUTPUTS}), which only `make run` may write; "
            f"tests write to CXR_OUTPUT_DIR ({os.environ.get('CXR_OUTPUT_DIR')}). If `make run` ran meanwhile, "
            "that explains it; otherwise a test or notebook wrote there:\n  " + "\n  ".join(shown))
