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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import keras
import pandas as pd

from helpers import config, files, models, run_folder  # noqa: F401 - models: registers the course's layers for safe loading
from helpers.data import scan_cached
from helpers.datasets import DatasetLayout, dataset_tag
from helpers.recipes import RECIPES, Recipe
from helpers.splits import NOTEBOOK_SPLITS, fingerprint, saved_split

FORMAT = "cxr-course-runs/2"  # weights and architecture: any Keras 3
FORMAT_BEFORE_ISSUE_34 = "cxr-course-runs/1"  # the exporter's model.keras: its Keras (or a close one) only
MANIFEST = "manifest.json"
IMPORTED = "imported.json"  # in an imported run's folder: where it came from, and the teacher's data_root


class ArchiveRefused(ValueError):
    """An archive that cannot be imported, in one line saying why."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_folders(source: Path) -> list[Path]:
    """`source` itself if it is a run folder, else every run folder beneath it."""
    if run_folder.is_run_folder(source):
        return [source]
    found = run_folder.run_folders_under(source)
    if not found:
        raise ArchiveRefused(f"{source} holds no run folder (a folder with settings.json): nothing to export")
    return found


def export_runs(source, archive) -> dict:
    """Pack the finished run folder `source` (or every run folder beneath it) into the zip `archive`; returns the
    manifest. An unfinished run is refused: its checkpoints are for resuming on the machine that trains it."""
    source, archive = Path(source), Path(archive)
    runs = []
    with files.atomic_path(archive) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as packed:
        for folder in _run_folders(source):
            settings = run_folder.read_settings(folder)
            if not settings.get("finished"):
                raise ArchiveRefused(f"{folder} has not finished training: finish it (run the same command again) "
                                     "before exporting it")
            try:
                shared, architecture = run_folder.shared_files(folder)
            except ValueError as exc:  # a damaged model, or one the course's code cannot rebuild
                raise ArchiveRefused(f"run {folder} cannot be exported: {config.first_line(exc, 300)}") from None
            where = (folder.relative_to(source) if folder != source else Path(folder.name)).as_posix()
            for name, data in shared.items():
                packed.writestr(f"runs/{where}/{name}", data)  # stored: weights barely compress
            runs.append({"folder": where, "profile": settings.get("profile"), "classes": settings["classes"],
                         "split_fingerprint": settings["split_fingerprint"], "repeat": settings["repeat"],
                         "weights_used": settings.get("weights_used"), "pretrained": settings.get("pretrained"),
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
    """A local path for an archive given as a path or a URL (http, https, file)."""
    if "://" not in archive_or_url:
        path = Path(archive_or_url)
        if not path.is_file():
            raise ArchiveRefused(f"no archive at {path}")
        return path
    target = keep_in / "downloaded.zip"
    try:
        with urllib.request.urlopen(download_url(archive_or_url), timeout=60) as response, \
                open(target, "wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out)
    except (OSError, ValueError) as exc:
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
    if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in path.parts[0] or is_link:
        raise ArchiveRefused(f"the archive holds {name!r}, which would be written outside its folder: refused")


def _checked_manifest(packed: zipfile.ZipFile) -> dict:
    """The manifest, once every entry is safe, listed and matches its hash."""
    for info in packed.infolist():
        _safe_entry(info.filename, info)
    try:
        manifest = json.loads(packed.read(MANIFEST))
    except KeyError:
        raise ArchiveRefused(f"the archive has no {MANIFEST}: it was not made by `run export`") from None
    except ValueError as exc:
        raise ArchiveRefused(f"the archive's {MANIFEST} is not JSON ({config.first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_BEFORE_ISSUE_34):
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArchiveRefused(f"the archive's format is {found!r}, expected {FORMAT!r}")
    runs = manifest.get("runs")
    if not runs or not isinstance(runs, list) or not all(
            isinstance(run, dict) and isinstance(run.get("folder"), str) and isinstance(run.get("files"), dict)
            and isinstance(run.get("classes"), list) for run in runs):
        raise ArchiveRefused(f"the archive's {MANIFEST} lists no runs, or runs without their folder, classes and "
                             "files: it was not made by `run export`")
    expected = run_folder.SHARED if manifest["format"] == FORMAT else run_folder.SHARED_BEFORE_ISSUE_34
    for run in manifest["runs"]:
        folder = PurePosixPath(run["folder"])
        if folder.is_absolute() or ".." in folder.parts or "//" in run["folder"] or not folder.parts:
            raise ArchiveRefused(f"the manifest names the run folder {run['folder']!r}, which would be written "
                                 "outside its folder: refused")
        if sorted(run["files"]) != sorted(expected):
            raise ArchiveRefused(f"run {run['folder']} lists the files {sorted(run['files'])}; a run archive holds "
                                 f"{sorted(expected)}")
    listed = {f"runs/{run['folder']}/{name}": digest for run in manifest["runs"] for name, digest in
              run["files"].items()}
    present = {info.filename for info in packed.infolist() if not info.is_dir()} - {MANIFEST}
    if present - listed.keys():
        raise ArchiveRefused(f"the archive holds files its manifest does not list: {sorted(present - listed.keys())}")
    if listed.keys() - present:
        raise ArchiveRefused(f"the archive misses files its manifest lists: {sorted(listed.keys() - present)}")
    for name, digest in listed.items():
        if sha256(packed.read(name)) != digest:
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
    folders. Nothing is written there unless every check passes; a run already imported is left as it is."""
    out = Path(out) if out is not None else None
    with tempfile.TemporaryDirectory(prefix="cxr-import-") as scratch:
        scratch = Path(scratch)
        try:
            packed = zipfile.ZipFile(_fetch(str(archive_or_url), scratch))
        except zipfile.BadZipFile:
            raise ArchiveRefused(f"{archive_or_url} is not a zip archive") from None
        with packed:
            manifest = _checked_manifest(packed)
            index = scan_cached(layout).index
            staged, other_data = [], []
            for run in manifest["runs"]:
                problem = _staged_run(packed, run, layout, index, scratch, str(archive_or_url))
                (other_data if problem else staged).append((run, problem))
            if not staged:  # nothing of it is for this dataset
                run, problem = other_data[0]
                raise ArchiveRefused(f"run {run['folder']} was not trained on your data: {problem}; import it where "
                                     f"the dataset it was trained on is (yours: {layout.root})")
            placed = [_put_in_place(scratch / run["folder"], _destination(scratch / run["folder"], run, layout, out,
                                                                          len(staged) > 1), run, layout, log)
                      for run, _ in staged]
    for run, problem in other_data:  # a teacher's other datasets (05's shortcut phantoms): trained here as usual
        log(f"Not imported: {run['folder']}, trained on other data ({problem}); a notebook that needs it trains it.")
    return placed


def _staged_run(packed: zipfile.ZipFile, run: dict, layout: DatasetLayout, index: pd.DataFrame, scratch: Path,
                source: str) -> str | None:
    """Unpack the run in the scratch folder, pointed at the learner's data, its model rebuilt (or, from an older
    archive, checked to load in safe mode); or say why its split is not made of the learner's images."""
    folder = scratch / run["folder"]
    shared = {name: packed.read(f"runs/{run['folder']}/{name}") for name in run["files"]}
    run_folder.write_shared_files(folder, shared)
    problem = split_mismatch(run_folder.read_split(folder, layout.root), index)
    if problem:  # another dataset's run: no model is built for it
        return problem
    teacher_keras = run.get("keras") or run_folder.saved_with_keras(folder)
    try:
        rebuilt = run_folder.save_rebuilt_model(folder, shared, run.get("architecture"))
    except Exception as exc:  # noqa: BLE001 - whatever this Keras says of another's model: one line, both versions
        raise ArchiveRefused(_not_usable_here(run["folder"], teacher_keras, exc)) from None
    settings = run_folder.read_settings(folder)
    teacher_root, settings["data_root"] = settings["data_root"], str(Path(layout.root).resolve())  # as training
    run_folder.write_settings(folder, settings)
    files.write_json(folder / IMPORTED, {"from": source, "data_root": teacher_root, "sha256": run["files"],
                                         "keras": teacher_keras,
                                         "imported": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    if not rebuilt:  # an archive from before issue 34: the exporter's own model.keras
        _check_loads_safely(run_folder.model_path(folder), run["folder"], teacher_keras)
    return None


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


def _destination(folder: Path, run: dict, layout: DatasetLayout, out: Path | None, many: bool) -> Path:
    """Where the notebooks look for it: the course's folder for its dataset, profile, recipe, split and repeat
    (`run_folder.course_run_folder`), whatever folder the teacher trained it in; or where `out` says."""
    if out is not None:
        return out / PurePosixPath(run["folder"]).name if many else out
    settings = run_folder.read_settings(folder)
    return run_folder.course_run_folder(layout, Recipe.from_dict(settings["recipe"]),
                                        run_folder.read_split(folder, layout.root), settings["repeat"],
                                        run["profile"] or config.active_profile().name)


def unused_by_notebooks(run_dir, layout: DatasetLayout) -> str | None:
    """Why the notebooks will not use this run where it is, or None if one of them will: a notebook trains (or
    finds) one recipe on one of the course's splits (`splits.NOTEBOOK_SPLITS`) of the profile's data."""
    run = run_folder.Run(run_dir)
    profile = run.settings.get("profile") or config.active_profile().name
    if run.folder.parent != run_folder.course_runs(layout, profile):
        return f"it is not in {run_folder.course_runs(layout, profile)}, where they look (import it without --out)"
    known = RECIPES.get(run.name)
    if known is not None and known.to_dict() != run.recipe.to_dict():
        changed = sorted(k for k, v in run.recipe.to_dict().items() if known.to_dict().get(k) != v)
        return f"its recipe {run.name} differs from this course's ({', '.join(changed)})"
    scan, in_profile = scan_cached(layout), config.choose_profile({**os.environ, "CXR_PROFILE": profile})
    course = {name: saved_split(scan, mode, task, profile=in_profile) for (mode, task), name in NOTEBOOK_SPLITS.items()}
    if not any(_same_images(run.split(), split, run.repeat) for split in course.values()):
        return (f"its split is none of the notebooks' in the {profile} profile ({'; '.join(course)}): it was "
                "made another way (e.g. `train --per-class`, or a split file of its own)")
    return None


def _same_images(split: pd.DataFrame, other: pd.DataFrame, repeat: int) -> bool:
    return fingerprint(split[split["repeat"] == repeat]) == fingerprint(other[other["repeat"] == repeat])


def _put_in_place(staged: Path, target: Path, run: dict, layout: DatasetLayout, log) -> Path:
    """Move a checked run to `target` whole: copied next to it under a temporary name, then renamed."""
    if target.exists() and any(target.iterdir()):
        imported = files.read_json(target / IMPORTED) if (target / IMPORTED).exists() else None
        if imported and imported.get("sha256") == run["files"]:
            log(f"{target} already holds this run: left as it is.")
            return target
        raise ArchiveRefused(f"{target} already holds something else: delete it, or import with --out elsewhere")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
    try:
        shutil.copytree(staged, partial)
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
    """Where an imported run came from (its archive or URL), None for a run trained here."""
    path = Path(run_dir) / IMPORTED
    return files.read_json(path)["from"] if path.exists() else None

