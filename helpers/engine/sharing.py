"""Runs a class can share: a teacher trains once and exports the run folders; each learner imports them and the
notebooks reuse them instead of training (`python -m helpers run export` / `run import`).

An archive is a zip: `manifest.json` (every file's SHA-256 and what each run is: classes, profile, split
fingerprint, weights used, the model's architecture and the exporter's Keras) and `runs/<run folder name>/…`. A run
travels as its settings, split, history and weights; the learner's own code and Keras rebuild the model, so an
archive loads on any Keras 3 (a saved .keras file holds its Keras' configuration, which another Keras may refuse).
An import checks everything before it writes anything where the notebooks look, and refuses in one line: a file that
does not match its hash, an entry that would land outside its folder, a run whose split is not made of the learner's
images, a model that cannot be rebuilt (or, in an older archive, loaded). Each run lands where the notebooks look
for it (its recipe, split and profile name the folder), and the import says which runs the notebooks will not use.
The learner's copy of a run points at the learner's dataset (`data_root`) and records where it came from
(`imported.json`), so the notebooks say "using the run imported from …".

Whoever controls a teacher's link controls what an import is asked to write (issue 36), so: the names an archive
gives (run folder, profile, recipe) are plain names, every path is checked where it finally lands (links and `..`
followed), sizes are bounded before anything is read, hashes are computed in chunks, and an import holds the run
folder's lock, as training does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import urllib.parse
import urllib.request
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import keras
import pandas as pd

from helpers import config, files, models  # noqa: F401 - models: registers the course's layers for safe loading
from helpers.data import scan_cached
from helpers.datasets import DatasetLayout, dataset_tag
from helpers.engine import locks, storage
from helpers.recipes import RECIPES, Recipe
from helpers.splits import NOTEBOOK_SPLITS, fingerprint, saved_split

FORMAT = "cxr-course-runs/2"  # weights and architecture: any Keras 3
FORMAT_BEFORE_ISSUE_34 = "cxr-course-runs/1"  # the exporter's model.keras: its Keras (or a close one) only
MANIFEST = "manifest.json"
IMPORTED = "imported.json"  # in an imported run's folder: where it came from, and the teacher's data_root


class ArchiveRefused(ValueError):
    """An archive that cannot be imported, in one line saying why."""


class ExportInterrupted(KeyboardInterrupt):
    """`run export` stopped by SIGTERM or Ctrl-C: its partial archive is removed (an archive already there is kept);
    `exit_code` is 128 + the signal's number, as for training."""

    def __init__(self, archive, signal_number: int):
        how = "SIGTERM" if signal_number == signal.SIGTERM else "Ctrl-C (SIGINT)"
        super().__init__(f"interrupted by {how}: {archive} was not written (its partial file was removed; an archive "
                         "already there is as it was)")
        self.exit_code = 128 + signal_number


# What a run can hold, per file (MB), ten times over at least: the course's largest run exports 98 MiB of weights
# (Paper A's ResNet50), a split.csv row is ~85 bytes (a full dataset's 21,165 rows: ~2 MB), settings.json ~2 KB
# (measured 2026-12-07). CXR_IMPORT_SCALE multiplies every bound for the rare larger case.
MODEL_FILES = {storage.PORTABLE_WEIGHTS, *set(storage.SHARED_BEFORE_ISSUE_34) - set(storage.SHARED)}
MODEL_MB, TEXT_MB, MANIFEST_MB = 1024, 64, 16  # the weights (or an older archive's model); settings, split, history
TOTAL_MB = 8 * 1024  # every entry together: 83 runs of the largest kind (a class's whole outputs/runs)
ENTRIES = 4001  # a manifest and 4 files for each of 1,000 runs
SCALE = "CXR_IMPORT_SCALE"
CHUNK = 1 << 20  # hashing and copying read this much at a time, whatever a file's size
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DEPTH = 8  # components of a run folder inside an archive (dataset tag/profile/run, and a few more)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _scale(env=None) -> float:
    """CXR_IMPORT_SCALE as a number ≥ 1 (1 when unset)."""
    text = (os.environ if env is None else env).get(SCALE, "").strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1:  # NaN too
        raise ValueError(f"{SCALE} must be a number of at least 1 (how many times the usual bounds); found {text!r}")
    return value


def _plain_name(value, what: str, where: str = "the manifest") -> str:
    """`value` if it is one path component from a small alphabet (a manifest's run folder, profile, recipe name)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ArchiveRefused(f"{where} names {what} {value!r}: expected a plain name (letters, digits, '.', '_', "
                             "'-'; no '/', no '..'): refused, nothing was written")
    return value


def _folder_name(value, where: str) -> str:
    """A run folder as an archive names it: 1 to 8 plain names joined by '/'."""
    if not isinstance(value, str):
        _plain_name(value, "the run folder", where)  # refused: not a string
    parts = value.split("/")
    if len(parts) > _DEPTH or any(not _NAME.fullmatch(part) or part in (".", "..") for part in parts):
        raise ArchiveRefused(f"{where} names the run folder {value!r}, which would be written outside its folder: "
                             f"expected 1 to {_DEPTH} plain names (letters, digits, '.', '_', '-') joined by '/': "
                             "refused, nothing was written")
    return value


def _inside(path: Path, root: Path, what: str) -> Path:
    """`path` resolved (links and '..' followed), if it lies inside `root` resolved; else a refusal naming `what`."""
    where, within = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if where != within and within not in where.parents:
        raise ArchiveRefused(f"{what} would be written to {where}, outside {within}: refused, nothing was written")
    return where


def file_sha256(stream, chunk: int = CHUNK) -> str:
    """The SHA-256 of a binary stream, read `chunk` bytes at a time: memory stays flat whatever its size."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(chunk), b""):
        digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _interruptible(archive):
    """While the block runs, SIGTERM and Ctrl-C raise `ExportInterrupted`, so that `files.atomic_path` removes the
    partial archive (SIGTERM's default would end the process and leave it). Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number, frame):
        raise ExportInterrupted(archive, signal_number)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _run_folders(source: Path) -> list[Path]:
    """`source` itself if it is a run folder, else every run folder beneath it."""
    if storage.is_run_folder(source):
        return [source]
    found = storage.run_folders_under(source)
    if not found:
        raise ArchiveRefused(f"{source} holds no run folder (a folder with settings.json): nothing to export")
    return found


def export_runs(source, archive) -> dict:
    """Pack the finished run folder `source` (or every run folder beneath it) into the zip `archive`; returns the
    manifest. An unfinished run is refused: its checkpoints are for resuming on the machine that trains it."""
    source, archive = Path(source), Path(archive)
    runs = []
    with _interruptible(archive), files.atomic_path(archive) as partial, \
            zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as packed:
        for folder in _run_folders(source):
            settings = storage.read_settings(folder)
            if not settings.finished:
                raise ArchiveRefused(f"{folder} has not finished training: finish it (run the same command again) "
                                     "before exporting it")
            try:
                shared, architecture = storage.shared_files(folder)
            except ValueError as exc:  # a damaged model, or one the course's code cannot rebuild
                raise ArchiveRefused(f"run {folder} cannot be exported: {config.first_line(exc, 300)}") from None
            where = (folder.relative_to(source) if folder != source else Path(folder.name)).as_posix()
            for name, data in shared.items():
                packed.writestr(f"runs/{where}/{name}", data)  # stored: weights barely compress
            runs.append({"folder": where, "profile": settings.profile, "classes": settings.classes,
                         "split_fingerprint": settings.split_fingerprint, "repeat": settings.repeat,
                         "weights_used": settings.weights_used, "pretrained": settings.pretrained,
                         "architecture": architecture, "keras": keras.__version__,
                         "files": {name: sha256(data) for name, data in shared.items()}})
        manifest = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "runs": runs}
        packed.writestr(MANIFEST, json.dumps(manifest, indent=2))
    return manifest


_DRIVE_FILE = re.compile(r"https://drive\.google\.com/(?:file/d/([\w-]+)|(?:open|uc)\?(?:.*&)?id=([\w-]+))")


def download_url(url: str) -> str:
    """The URL that downloads the file itself: a Google Drive share link ("…/file/d/ID/view") names a web page."""
    drive = _DRIVE_FILE.match(url)
    if drive:
        return f"https://drive.usercontent.google.com/download?id={drive.group(1) or drive.group(2)}&export=download" \
               "&confirm=t"
    return url


def _fetch(archive_or_url: str, keep_in: Path) -> Path:
    """A local path for an archive given as a path or a URL (http, https, file); a download stops at the bound on an
    archive's total size."""
    if "://" not in archive_or_url:
        path = Path(archive_or_url)
        if not path.is_file():
            raise ArchiveRefused(f"no archive at {path}")
        return path
    target, most = keep_in / "downloaded.zip", int(TOTAL_MB * _scale() * 2 ** 20) + 2 ** 20  # + the zip's own
    try:
        with urllib.request.urlopen(download_url(archive_or_url), timeout=60) as response, \
                open(target, "wb") as out:  # noqa: S310
            for block in iter(lambda: response.read(CHUNK), b""):
                if out.tell() + len(block) > most:
                    raise ArchiveRefused(f"{archive_or_url} is larger than {most // 2 ** 20} MB, more than an "
                                         f"archive of runs holds (set {SCALE}=2 or more for a larger one): refused")
                out.write(block)
    except ArchiveRefused:
        raise
    except (OSError, ValueError) as exc:
        if files.is_disk_full(exc):
            raise files.DiskFullError(target, exc) from None
        raise ArchiveRefused(f"could not download {archive_or_url}: {config.first_line(exc)}") from None
    with open(target, "rb") as downloaded:
        start = downloaded.read(512).lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in start:
        raise ArchiveRefused(f"{archive_or_url} gave a web page, not a zip archive: on Google Drive, share the file "
                             "with 'Anyone with the link' (Share → General access) and paste that link; elsewhere, "
                             "a link that downloads the file itself")
    return target


def _safe_entry(name: str, info: zipfile.ZipInfo) -> None:
    path = PurePosixPath(name)
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    if (path.is_absolute() or ".." in path.parts or "\\" in name or "//" in name or not path.parts
            or ":" in path.parts[0] or is_link):
        raise ArchiveRefused(f"the archive holds {name!r}, which would be written outside its folder: refused")


def _check_sizes(packed: zipfile.ZipFile, source: str) -> None:
    """Refuse, before a byte is unpacked, an archive with more entries, a larger entry or a larger total than runs
    hold (the sizes its directory declares; reading stops at them too, `zipfile` checks)."""
    scale, infos = _scale(), packed.infolist()
    more = f"(set {SCALE}=2 or more if a run really is that large)"
    if len(infos) > ENTRIES * scale:
        raise ArchiveRefused(f"{source} holds {len(infos)} entries, more than {int(ENTRIES * scale)} (1,000 runs): "
                             f"refused before unpacking {more}")
    total = sum(info.file_size for info in infos)
    if total > TOTAL_MB * scale * 2 ** 20:
        raise ArchiveRefused(f"{source} unpacks to {total / 2 ** 20:,.0f} MB, more than the {TOTAL_MB * scale:,.0f} MB "
                             f"an archive of runs may hold: refused before unpacking {more}")
    for info in infos:
        name = PurePosixPath(info.filename).name
        bound = (MANIFEST_MB if info.filename == MANIFEST else MODEL_MB if name in MODEL_FILES else TEXT_MB) * scale
        if info.file_size > bound * 2 ** 20:
            raise ArchiveRefused(f"{info.filename} unpacks to {info.file_size / 2 ** 20:,.0f} MB, more than the "
                                 f"{bound:,.0f} MB a run's {PurePosixPath(info.filename).name} may hold: refused "
                                 f"before unpacking {more}")


@contextlib.contextmanager
def _reading(name: str, source: str):
    """An entry that cannot be read (a bad CRC, cut short, a compression this Python lacks) in one line naming it."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveRefused(f"{name} in {source} cannot be read ({config.first_line(exc)}): the archive is damaged "
                             "or was not made by `run export`") from None


def _read_manifest(packed: zipfile.ZipFile, source: str) -> dict:
    """The manifest as JSON, or one line naming it: missing, empty, not JSON, not a runs manifest."""
    where = f"{MANIFEST} in {source}"
    try:
        with _reading(MANIFEST, source):
            data = packed.read(MANIFEST)
    except KeyError:
        raise ArchiveRefused(f"{source} has no {MANIFEST}: it was not made by `run export`") from None
    if not data.strip():
        raise ArchiveRefused(f"{where} is empty: it was not made by `run export`, or was cut short")
    try:
        manifest = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ArchiveRefused(f"{where} is not JSON ({config.first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_BEFORE_ISSUE_34):
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArchiveRefused(f"{where}: the format is {found!r}, expected {FORMAT!r}")
    return manifest


def _check_run_entry(run, expected: tuple, where: str) -> None:
    """One run of the manifest: its names plain, its claims of the types `run export` writes."""
    if not isinstance(run, dict):
        raise ArchiveRefused(f"{where} lists a run that is {type(run).__name__}, not an object: it was not made by "
                             "`run export`")
    name = _folder_name(run.get("folder"), where)
    if run.get("profile") is not None:
        _plain_name(run["profile"], f"run {name}'s profile", where)
    listed = run.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ArchiveRefused(f"{where}: run {name} lists no files; a run archive holds {sorted(expected)}")
    if sorted(listed) != sorted(expected):
        raise ArchiveRefused(f"run {name} lists the files {sorted(listed)}; a run archive holds {sorted(expected)}")
    if not all(isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) for digest in listed.values()):
        raise ArchiveRefused(f"{where}: run {name}'s files are not each listed with a SHA-256 (64 hex digits)")
    if not isinstance(run.get("classes"), list) or not all(isinstance(c, str) for c in run["classes"]):
        raise ArchiveRefused(f"{where}: run {name} does not list its classes (found {run.get('classes')!r})")


def _checked_manifest(packed: zipfile.ZipFile, source: str = "the archive") -> dict:
    """The manifest, once every entry is safe, bounded, listed and matches its hash (hashed in chunks)."""
    for info in packed.infolist():
        _safe_entry(info.filename, info)
    _check_sizes(packed, source)
    manifest = _read_manifest(packed, source)
    where = f"{MANIFEST} in {source}"
    runs = manifest.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ArchiveRefused(f"{where} lists no runs (found {json.dumps(runs)[:40]}): it was not made by "
                             "`run export`, or from a folder without finished runs")
    expected = storage.SHARED if manifest["format"] == FORMAT else storage.SHARED_BEFORE_ISSUE_34
    for run in runs:
        _check_run_entry(run, expected, where)
    if len({run["folder"] for run in runs}) != len(runs):
        raise ArchiveRefused(f"{where} lists a run folder twice: it was not made by `run export`")
    listed = {f"runs/{run['folder']}/{name}": digest for run in manifest["runs"] for name, digest in
              run["files"].items()}
    present = {info.filename for info in packed.infolist() if not info.is_dir()} - {MANIFEST}
    if present - listed.keys():
        raise ArchiveRefused(f"the archive holds files its manifest does not list: {sorted(present - listed.keys())}")
    if listed.keys() - present:
        raise ArchiveRefused(f"the archive misses files its manifest lists: {sorted(listed.keys() - present)}")
    for name, digest in listed.items():
        with _reading(name, source), packed.open(name) as entry:
            if file_sha256(entry) != digest:
                raise ArchiveRefused(f"{name} does not match its SHA-256 in the manifest: the archive was changed or "
                                     "damaged after export")
    return manifest


def split_mismatch(split: pd.DataFrame, index: pd.DataFrame) -> str | None:
    """Why a run's split is not made of these images (missing, or with other contents), or None."""
    here = dict(zip(index["relpath"], index["content_hash"]))
    differ = [relpath for relpath, digest in zip(split["relpath"], split["content_hash"])
              if here.get(relpath) != digest]
    if not differ:
        return None
    return f"{len(differ)} of its {len(split)} images are missing or different in your data (e.g. {differ[0]})"


def import_runs(archive_or_url, layout: DatasetLayout, out=None, log=print) -> list[Path]:
    """Check the archive, then unpack each run where the notebooks look for it (or under `out`); returns the run
    folders. Nothing is written there unless every check passes; a run already imported is left as it is. The
    notebooks' RUNS_URL (`import_from_environment`) comes here too."""
    out = Path(out) if out is not None else None
    source = str(archive_or_url)
    with tempfile.TemporaryDirectory(prefix="cxr-import-") as scratch:
        scratch = Path(scratch)
        try:
            packed = zipfile.ZipFile(_fetch(source, scratch))
        except zipfile.BadZipFile:
            raise ArchiveRefused(f"{archive_or_url} is not a zip archive") from None
        with packed:
            manifest = _checked_manifest(packed, source)
            index = scan_cached(layout).index
            staged, other_data = [], []
            for number, run in enumerate(manifest["runs"]):
                problem = _staged_run(packed, run, layout, index, scratch / f"run-{number}", source)
                (other_data if problem else staged).append((number, run, problem))
            if not staged:  # nothing of it is for this dataset
                _, run, problem = other_data[0]
                raise ArchiveRefused(f"run {run['folder']} was not trained on your data: {problem}; import it where "
                                     f"the dataset it was trained on is (yours: {layout.root})")
            places = [(scratch / f"run-{number}", *_destination(scratch / f"run-{number}", run, layout, out,
                                                                 len(staged) > 1), run)
                      for number, run, _ in staged]  # every destination checked before any run is placed
            held_here: set[Path] = set()
            with contextlib.ExitStack() as held:  # every run folder held (training's lock) before any is written
                for _, target, root, run in places:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    where = _inside(target, root, f"run {run['folder']}")  # again: the folders just made
                    if where not in held_here:  # two runs of the archive may land in one folder
                        held_here.add(where)
                        held.enter_context(locks.folder_lock(target, doing="trained or imported", log=log))
                placed = [_put_in_place(folder, target, root, run, layout, log)
                          for folder, target, root, run in places]
    for _, run, problem in other_data:  # a teacher's other datasets (05's shortcut phantoms): trained here as usual
        log(f"Not imported: {run['folder']}, trained on other data ({problem}); a notebook that needs it trains it.")
    return placed


def _staged_run(packed: zipfile.ZipFile, run: dict, layout: DatasetLayout, index: pd.DataFrame, folder: Path,
                source: str) -> str | None:
    """Unpack the run in a scratch folder, pointed at the learner's data, its model rebuilt (or, from an older
    archive, checked to load in safe mode); or say why its split is not made of the learner's images."""
    with _reading(f"runs/{run['folder']}", source):  # bounded: _check_sizes
        shared = {name: packed.read(f"runs/{run['folder']}/{name}") for name in run["files"]}
    try:
        storage.write_shared_files(folder, shared)
    except OSError as exc:
        if files.is_disk_full(exc):
            raise files.DiskFullError(exc.filename or folder, exc) from None
        raise
    try:
        split = storage.read_split(folder, layout.root)
        settings = storage.read_settings(folder)
        problem = split_mismatch(split, index)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveRefused(f"run {run['folder']}'s settings or split cannot be read: "
                             f"{config.first_line(exc, 200)}") from None
    if problem:  # another dataset's run: no model is built for it
        return problem
    _check_claims(run, settings, split)
    teacher_keras = run.get("keras") or storage.saved_with_keras(folder)
    try:
        rebuilt = storage.save_rebuilt_model(folder, shared, run.get("architecture"))
    except Exception as exc:  # noqa: BLE001 - whatever this Keras says of another's model: one line, both versions
        if files.is_disk_full(exc):
            raise files.DiskFullError(storage.model_path(folder), exc) from None
        raise ArchiveRefused(_not_usable_here(run["folder"], teacher_keras, exc)) from None
    teacher_root = settings.data_root
    storage.write_settings(folder, settings.but(data_root=str(Path(layout.root).resolve())))  # as training does
    if not rebuilt:  # an archive from before issue 34: the exporter's own model.keras
        _check_loads_safely(storage.model_path(folder), run["folder"], teacher_keras)
    files.write_json(folder / IMPORTED, {"from": source, "data_root": teacher_root, "sha256": run["files"],
                                         "files": _local_hashes(folder), "keras": teacher_keras,
                                         "imported": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return None


RECORDED = storage.SHARED_BEFORE_ISSUE_34  # an imported run's files: settings, split, history, its model.keras


def _local_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of each file an imported run holds, as the import wrote it (imported.json keeps them)."""
    found = {}
    for name in RECORDED:
        with open(folder / name, "rb") as stream:
            found[name] = file_sha256(stream)
    return found


def _check_claims(run: dict, settings: storage.RunSettings | None, split: pd.DataFrame) -> None:
    """The manifest's claims (classes, split fingerprint, profile, repeat) against the run's own settings and split:
    what the import says of a run is what its files are. (`storage.read_settings` has checked each key's type.)"""
    if settings is None:
        raise ArchiveRefused(f"run {run['folder']} has no settings.json: it does not describe a run")
    repeat = settings.repeat
    own = split[split["repeat"] == repeat]
    fingerprint_here = fingerprint(own)
    labels = sorted(set(own["label"]))
    differ = []
    for key, claimed, found in (("classes", run.get("classes"), settings.classes),
                                ("split_fingerprint", run.get("split_fingerprint", fingerprint_here),
                                 settings.split_fingerprint),
                                ("profile", run.get("profile"), settings.profile),
                                ("repeat", run.get("repeat", repeat), repeat)):
        if claimed != found:
            differ.append(f"{key}: the manifest says {claimed!r}, its settings.json {found!r}")
    if settings.split_fingerprint != fingerprint_here:
        differ.append(f"split_fingerprint: settings.json says {settings.split_fingerprint!r}, its split.csv "
                      f"is {fingerprint_here!r}")
    if sorted(settings.classes) != labels:
        differ.append(f"classes: settings.json says {settings.classes!r}, its split.csv holds {labels!r}")
    if differ:
        raise ArchiveRefused(f"run {run['folder']} is not what its manifest says ({differ[0]}"
                             + (f"; and {len(differ) - 1} more" if len(differ) > 1 else "") + "): refused")
    where = f"run {run['folder']}'s settings.json"
    _plain_name(settings.recipe.get("name"), "the recipe", where)
    if settings.profile is not None:
        _plain_name(settings.profile, "the profile", where)


def _not_usable_here(name: str, teacher_keras: str | None, exc: BaseException) -> str:
    return (f"run {name}, exported with Keras {teacher_keras or '(unknown)'}, cannot be used with this Keras "
            f"{keras.__version__}: {models.keras_error_line(exc)}; ask your teacher to export it again with this "
            "course's `python -m helpers run export` (its archives load on any Keras 3)"
            + (f", or install keras=={teacher_keras}" if teacher_keras else ""))


def _check_loads_safely(path: Path, name: str, teacher_keras: str | None) -> None:
    try:  # the course's own layers (helpers.models) are registered for safe loading
        keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - TypeError, ValueError, …: another Keras' config, or unsafe code
        text = str(exc)
        if "unsafe" in text or "safe_mode" in text or "lambda" in text.lower():
            raise ArchiveRefused(f"run {name}'s model needs unsafe deserialisation (Python code inside the file, "
                                 "such as a Lambda layer): refused") from None
        raise ArchiveRefused(_not_usable_here(name, teacher_keras, exc)) from None


def _destination(folder: Path, run: dict, layout: DatasetLayout, out: Path | None, many: bool) -> tuple[Path, Path]:
    """(the run folder, the destination it must lie in): where the notebooks look, the course's folder for its dataset,
    profile, recipe, split and repeat (`storage.course_run_folder`) inside the outputs' runs folder, whatever
    folder the teacher trained it in; or where `out` says. Checked where it lands: links and '..' followed."""
    if out is not None:
        root = out if many else out.parent  # a single run's folder is `out` itself, made beside it
        target = out / PurePosixPath(run["folder"]).name if many else out
    else:
        root = config.OUTPUT_DIR / "runs"
        settings = storage.read_settings(folder)
        _plain_name(dataset_tag(layout), "the dataset tag", f"your dataset {layout.root}")
        target = storage.course_run_folder(layout, Recipe.from_dict(settings.recipe),
                                              storage.read_split(folder, layout.root), settings.repeat,
                                              _plain_name(run["profile"] or config.active_profile().name,
                                                          "the profile", f"run {run['folder']}"))
    where = _inside(target, root, f"run {run['folder']}")
    if where == Path(os.path.realpath(root)):
        raise ArchiveRefused(f"run {run['folder']} would be written over {where} itself: refused, nothing was written")
    return target, root


def unused_by_notebooks(run_dir, layout: DatasetLayout) -> str | None:
    """Why the notebooks will not use this run where it is, or None if one of them will: a notebook trains (or
    finds) one recipe on one of the course's splits (`splits.NOTEBOOK_SPLITS`) of the profile's data."""
    folder, settings = Path(run_dir), storage.read_settings(run_dir)
    profile = settings.profile or config.active_profile().name
    if folder.parent != storage.course_runs(layout, profile):
        return f"it is not in {storage.course_runs(layout, profile)}, where they look (import it without --out)"
    recipe = Recipe.from_dict(settings.recipe)
    known = RECIPES.get(recipe.name)
    if known is not None and known.to_dict() != recipe.to_dict():
        changed = sorted(k for k, v in recipe.to_dict().items() if known.to_dict().get(k) != v)
        return f"its recipe {recipe.name} differs from this course's ({', '.join(changed)})"
    scan, in_profile = scan_cached(layout), config.choose_profile({**os.environ, "CXR_PROFILE": profile})
    course = {name: saved_split(scan, mode, task, profile=in_profile) for (mode, task), name in NOTEBOOK_SPLITS.items()}
    saved = storage.read_split(folder, settings.data_root)
    if not any(_same_images(saved, split, settings.repeat) for split in course.values()):
        return (f"its split is none of the notebooks' in the {profile} profile ({'; '.join(course)}): it was "
                "made another way (e.g. `train --per-class`, or a split file of its own)")
    return None


def _same_images(split: pd.DataFrame, other: pd.DataFrame, repeat: int) -> bool:
    return fingerprint(split[split["repeat"] == repeat]) == fingerprint(other[other["repeat"] == repeat])


def _put_in_place(staged: Path, target: Path, root: Path, run: dict, layout: DatasetLayout, log) -> Path:
    """Move a checked run to `target` whole: copied next to it under a temporary name, every file checked to land
    inside it, then renamed. The caller holds the folder's lock (training's), so no trainer writes there meanwhile."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if _record_matches(target) and files.read_json(target / IMPORTED).get("sha256") == run["files"]:
            log(f"{target} already holds this run: left as it is.")
            return target
        raise ArchiveRefused(f"{target} already holds something else (or an import whose files were changed "
                             "since): delete it, or import with --out elsewhere")
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
    try:
        _copy_checked(staged, partial, root, run)
        if target.exists():
            target.rmdir()  # empty
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log(f"Imported {run['folder']} into {target}")
    profile = config.active_profile().name
    if run["profile"] and run["profile"] != profile:
        log(f"  It was trained in the {run['profile']} profile; this machine's notebooks use {profile}: set "
            f"CXR_PROFILE={run['profile']} to use it.")
    unused = unused_by_notebooks(target, layout)
    if unused:
        log(f"  The notebooks will not use it: {unused}. The command line can: python -m helpers evaluate --run "
            f"{target}")
    return target


def _copy_checked(staged: Path, partial: Path, root: Path, run: dict) -> None:
    """Copy the staged run's files (plain files, no links) into `partial`, each checked to land inside it; a full
    disk is one line naming the file."""
    _inside(partial, root, f"run {run['folder']}")
    partial.mkdir()
    for source in sorted(staged.iterdir()):
        if source.is_symlink() or not source.is_file():
            raise ArchiveRefused(f"run {run['folder']} staged {source.name}, which is not a plain file: refused")
        destination = partial / source.name
        _inside(destination, partial, f"{run['folder']}/{source.name}")
        try:
            with open(source, "rb") as reading, open(destination, "xb") as writing:
                shutil.copyfileobj(reading, writing, CHUNK)
        except OSError as exc:
            if files.is_disk_full(exc):
                raise files.DiskFullError(_target_name(partial, source.name), exc) from None
            raise


def _target_name(partial: Path, name: str) -> Path:
    """The file a partial copy stands for, for messages: the run folder's own name, not the temporary one."""
    return partial.with_name(partial.name.split("-", 2)[-1]) / name


def _record_matches(run_dir: Path) -> bool:
    """Whether an imported run's files are still those its imported.json records (SHA-256 of each; for a record
    from before issue 36, which kept only the teacher's, the split and history, which an import does not change)."""
    try:
        record = files.read_json(run_dir / IMPORTED)
    except (ValueError, OSError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("from"), str):
        return False
    recorded = record.get("files")
    if not isinstance(recorded, dict):  # the teacher's hashes of the files an import does not change
        teacher = record.get("sha256") if isinstance(record.get("sha256"), dict) else {}
        recorded = {name: digest for name, digest in teacher.items()
                    if name in RECORDED and name != storage.settings_path(run_dir).name}
    if set(recorded) - set(RECORDED) or not recorded:
        return False
    try:
        for name, digest in recorded.items():
            with open(run_dir / name, "rb") as stream:
                if file_sha256(stream) != digest:
                    return False
    except OSError:
        return False
    return True


def import_from_environment(layout: DatasetLayout, log=print) -> list[Path]:
    """The runs of the archive a teacher handed out as `CXR_RUNS_URL` (the setup cell's RUNS_URL), imported once per
    outputs folder: a URL already imported is not downloaded again. Without it, nothing."""
    url = os.environ.get("CXR_RUNS_URL", "").strip()
    if not url:
        return []
    record = config.OUTPUT_DIR / "runs" / "imported-urls.json"
    done = files.read_json(record) if record.exists() else {}
    if url in done.get(dataset_tag(layout), []):
        return []
    if url in _FAILED_URLS:  # said once already in this process
        return []
    log(f"Importing the runs your teacher shared (CXR_RUNS_URL={url}) …")
    try:
        placed = import_runs(url, layout, log=log)
    except (ValueError, OSError) as exc:  # one line (ArchiveRefused, a full disk), and the notebook trains instead
        _FAILED_URLS.add(url)
        log(f"Could not use the runs your teacher shared: {exc}. This notebook trains its own instead.")
        return []
    done.setdefault(dataset_tag(layout), []).append(url)
    files.write_json(record, done)
    return placed


_FAILED_URLS: set[str] = set()


def imported_from(run_dir) -> str | None:
    """Where an imported run came from (its archive or URL); None for a run trained here, or one whose files are no
    longer those its import recorded (trained over, edited): that folder is not the import any more."""
    path = Path(run_dir) / IMPORTED
    return files.read_json(path)["from"] if path.exists() and _record_matches(Path(run_dir)) else None

