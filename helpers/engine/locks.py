"""One writer per folder: a lock file beside a run folder, held while it is trained or imported, that names its holder
(pid, host, since when) and is taken over when that holder is gone."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path


class FolderInUseError(OSError):
    """Another process holds a folder's lock; the one-line message names it (pid, host, since when)."""


_SAID: set[str] = set()  # folders whose lock has been described once in this process


def lock_path(folder) -> Path:
    """The lock file of `folder`: beside it (`.<name>.lock`), so the folder itself stays exactly as its run left it."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def folder_lock(folder, doing: str = "trained", log=print):
    """Hold `folder` for this process alone while the block runs; another process (or another call in this one)
    gets `FolderInUseError` naming the holder.

    `fcntl.flock` on `lock_path(folder)`: the OS releases it when its process ends, however (a SIGKILL, an
    out-of-memory kill), so no lock is ever left stuck. Where the file system refuses flock (some FUSE mounts), an
    exclusive file holding the pid and host is the lock: advisory, said once, and taken over when that pid is gone
    from this machine. Neither keeps apart two machines sharing a synced folder (Google Drive syncs files, not locks).
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            with _exclusive_file(folder, path.with_name(path.name + ".held"), doing, exc, log):
                yield path
            return
        raise FolderInUseError(_in_use(folder, doing, _holder(path, wait=1.0), "")) from None
    try:
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        yield path
    finally:
        os.ftruncate(fd, 0)  # released: nobody to name
        os.close(fd)


@contextlib.contextmanager
def _exclusive_file(folder, path: Path, doing: str, why: OSError, log):
    """The lock where flock is refused: a file created only if absent (O_EXCL), removed on every way out of the block;
    one left by a process that is gone from this machine is stale and taken over."""
    if str(path.parent) not in _SAID:
        _SAID.add(str(path.parent))
        log(f"Note: {path.parent} refuses file locks ({why.strerror or why}); the lock there is advisory, a file "
            f"({path.name}) that a killed process leaves behind until the next command finds its pid gone.")
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path, wait=1.0)
            if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
                path.unlink(missing_ok=True)  # its process is gone: stale
                continue
            raise FolderInUseError(_in_use(folder, doing, holder, f"; if that process is gone, delete {path}")) \
                from None
        break
    else:
        raise FolderInUseError(_in_use(folder, doing, _holder(path), f"; if that process is gone, delete {path}"))
    try:
        os.write(fd, json.dumps(_me()).encode())
        os.close(fd)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")}


def _holder(path: Path, wait: float = 0.0) -> dict:
    """Who holds the lock at `path`, as its file says; waits up to `wait` seconds for a holder that has just taken
    it to write itself in."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(found, dict) and "pid" in found:
                return found
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.1)


def _alive(pid) -> bool:
    """Whether process `pid` exists on this machine (one of another user counts: it cannot be signalled)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(folder, doing: str, holder: dict, remedy: str) -> str:
    who = (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('since')}" if holder
           else "a process that has not yet written its pid")
    return (f"{folder} is being {doing} by another process ({who}); nothing was changed: wait for it to end or stop "
            f"it, or use another folder{remedy}")
