"""Writing files so that an interruption never leaves half of one: write a temporary file beside the target,
then rename it into place (a rename within a folder is atomic). A kill, an out-of-memory kill or a full disk
leaves either the old file or the new one, never a truncated one that a later run would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` to write to; on success it replaces `path`, on failure it goes.

    The temporary name ends like the target (Keras and matplotlib choose the format by it: .keras, .weights.h5).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        if tmp.exists():  # the data reach the disk before the name does: a VM that dies, not only a process
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(folder) -> int:
    """Delete the temporary files that writers killed mid-write left in `folder`; returns how many."""
    found = list(Path(folder).glob(".partial-*")) if Path(folder).is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, payload) -> Path:
    return write_text(path, json.dumps(payload, indent=2) + "\n")


def read_json(path):
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
