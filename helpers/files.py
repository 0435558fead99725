"""Writing files so that an interruption never leaves half of one: write a temporary file beside the target,
then rename it into place (a rename within a folder is atomic). A kill, an out-of-memory kill or a full disk
leaves either the old file or the new one, never a truncated one that a later run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from pathlib import Path


class DiskFullError(OSError):
    """A file could not be written for want of space (ENOSPC) or quota (EDQUOT); its one-line message names the file
    and says that nothing half-written was kept."""

    def __init__(self, path, cause: OSError):
        self.message = (f"{path} could not be written: {cause.strerror or _FULL.get(cause.errno, 'the disk is full')}"
                        f"; nothing half-written was kept (a previous {Path(path).name}, if any, is as it was): free "
                        "some space and run the same command again")
        super().__init__(cause.errno or errno.ENOSPC, self.message)
        self.path = Path(path)

    def __str__(self) -> str:
        return self.message


_FULL = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the quota) is full: by its errno, or by its text for writers that lose the
    errno on the way (h5py)."""
    return isinstance(exc, OSError) and (exc.errno in _FULL or any(text in str(exc) for text in _FULL.values()))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` to write to; on success it replaces `path`, on failure it goes.

    The temporary name ends like the target (Keras and matplotlib choose the format by it: .keras, .weights.h5).
    A full disk (or quota) becomes `DiskFullError`, one line naming `path`.
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
    except OSError as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        raise DiskFullError(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(folder, older_than: float = 0) -> int:
    """Delete the temporary files that writers killed mid-write left in `folder`; returns how many.

    `older_than` (seconds) spares younger ones, where another process may be writing right now (a shared folder).
    """
    found = list(Path(folder).glob(".partial-*")) if Path(folder).is_dir() else []
    now = time.time()
    stale = []
    for path in found:
        with contextlib.suppress(FileNotFoundError):  # its writer finished or removed it meanwhile
            if older_than <= 0 or now - path.stat().st_mtime >= older_than:  # 0: all (a clock can be ahead)
                path.unlink(missing_ok=True)
                stale.append(path)
    return len(stale)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, payload) -> Path:
    return write_text(path, json.dumps(payload, indent=2) + "\n")


class UnreadableFileError(ValueError):
    """A file is there but cannot be read (cut short, edited by hand): unlike json's own errors, it names the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path} cannot be read ({reason})")
        self.path, self.reason = Path(path), reason


def read_json(path):
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: "line 1 column 14" says nothing of which file
        raise UnreadableFileError(path, f"not valid JSON: {exc}") from None
