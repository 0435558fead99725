"""Issue 36: `run import` takes archives from a teacher's link, so whoever controls that file controls what it asks a
learner's machine to write. Each archive here is forged as an attacker would: its manifest's hashes all consistent,
so only the checks of names, landing places, sizes, claims and locks stand between it and the learner's files.
A victim folder and file sit beside the destination (the learner's outputs); nothing outside it may change."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from helpers import config
from helpers.cli import main
from helpers.datasets import dataset_tag, find_dataset
from helpers.engine import locks, sharing
from helpers.engine.storage import course_run_folder
from helpers.runs import Run
from tests.conftest import TOY_PAPER_A, train_tiny
from tests.test_sharing import exported, refusal

KEEP = object()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, phantom_root):
    folder = tmp_path_factory.mktemp("teacher") / "runs" / "paper_a_toy_task4-0123abcd"
    train_tiny(folder, phantom_root, TOY_PAPER_A, epochs=1)
    return folder


@pytest.fixture
def learner_outputs(tmp_path, monkeypatch):
    """The destination: the learner's outputs folder, where the notebooks look for runs."""
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "learner-outputs")
    return config.OUTPUT_DIR


def forged(archive: Path, target: Path, folder: str | None = None, profile=KEEP, settings=None, run_change=None,
           entries=None) -> Path:
    """A copy of a one-run `archive` as an attacker makes it: run folder, profile (manifest and settings.json),
    settings and manifest entry changed, extra bytes per file (`entries`: {name: bytes}), every hash made to match."""
    with zipfile.ZipFile(archive) as source:
        manifest = json.loads(source.read("manifest.json"))
        [run] = manifest["runs"]
        data = {name: source.read(f"runs/{run['folder']}/{name}") for name in run["files"]}
    own = json.loads(data["settings.json"])
    if profile is not KEEP:
        run["profile"] = own["profile"] = profile
    if settings:
        settings(own)
    data["settings.json"] = json.dumps(own).encode()
    data.update(entries or {})
    run["folder"] = run["folder"] if folder is None else folder
    run["files"] = {name: hashlib.sha256(value).hexdigest() for name, value in data.items()}
    if run_change:
        run_change(run)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as packed:
        for name, value in data.items():
            packed.writestr(f"runs/{run['folder']}/{name}", value)
        packed.writestr("manifest.json", json.dumps(manifest))
    return target


def snapshot(top: Path, destination: Path) -> dict:
    """Every file and folder under `top` but inside `destination`: its kind and bytes (links not followed)."""
    found = {}
    for folder, dirs, names in os.walk(top):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != destination]
        for name in dirs + names:
            path = here / name
            found[str(path.relative_to(top))] = ("link", os.readlink(path)) if path.is_symlink() else (
                ("dir",) if path.is_dir() else ("file", path.read_bytes()))
    return found


@pytest.fixture
def victim(tmp_path):
    """A folder and a file beside the destination (the learner's outputs), as an attacker would aim at them."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "history.csv").write_text("the victim's own bytes\n")
    (tmp_path / "victim.txt").write_text("the victim's own bytes\n")
    return folder


TRICKS = {  # name: (what forged() is given, the words of the refusal)
    "double slash in the run folder": (lambda v: {"folder": "baseline//sub"}, "which would be written outside"),
    "absolute path after the run prefix": (lambda v: {"folder": f"baseline/{v}"}, "which would be written outside"),
    "absolute run folder": (lambda v: {"folder": str(v)}, "which would be written outside"),
    "'..' in the profile": (lambda v: {"profile": "../../../victim"}, "'s profile '../../../victim'"),
    "absolute profile": (lambda v: {"profile": str(v)}, "'s profile '/"),
    "'..' in the recipe name": (lambda v: {"settings": lambda s: s["recipe"].update(name="../../../../victim/x")},
                                "names the recipe '../../../../victim/x'"),
}


@pytest.mark.parametrize("trick", TRICKS)
def test_a_path_trick_is_refused_in_one_line_and_nothing_outside_the_destination_changes(
        trick, teacher_run, phantom_root, learner_outputs, victim, tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "archives" / "class.zip", capsys)
    given, said = TRICKS[trick]
    attack = forged(archive, tmp_path / "archives" / "attack.zip", **given(victim))
    before = snapshot(tmp_path, learner_outputs)
    code = main(["run", "import", str(attack), "--data", str(phantom_root)])
    assert snapshot(tmp_path, learner_outputs) == before, "nothing outside the destination changed"
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and said in error and "refused" in error, error
    assert not (learner_outputs / "runs").exists() or not list((learner_outputs / "runs").rglob("*.csv"))


def test_a_link_inside_the_destination_that_leads_outside_is_refused(teacher_run, phantom_root, learner_outputs,
                                                                      victim, tmp_path, capsys):
    """Where the notebooks look (outputs/runs/<dataset tag>) is a link to a folder beside the outputs: checked where
    each file lands, the run would leave the destination."""
    archive = exported(teacher_run, tmp_path / "archives" / "class.zip", capsys)
    tag = dataset_tag(find_dataset(phantom_root))
    (learner_outputs / "runs").mkdir(parents=True)
    (learner_outputs / "runs" / tag).symlink_to(victim, target_is_directory=True)
    before = snapshot(tmp_path, learner_outputs)
    code = main(["run", "import", str(archive), "--data", str(phantom_root)])
    assert snapshot(tmp_path, learner_outputs) == before, "nothing outside the destination changed"
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert f"would be written to {victim}/fast/" in error and f"outside {learner_outputs / 'runs'}" in error, error


def test_the_notebooks_runs_url_refuses_the_same_tricks(teacher_run, phantom_root, learner_outputs, victim,
                                                        tmp_path, capsys, monkeypatch):
    archive = exported(teacher_run, tmp_path / "archives" / "class.zip", capsys)
    attack = forged(archive, tmp_path / "archives" / "attack.zip", profile="../../../victim")
    monkeypatch.setenv("CXR_RUNS_URL", attack.as_uri())
    before, logs = snapshot(tmp_path, learner_outputs), []
    assert sharing.import_from_environment(find_dataset(phantom_root), log=logs.append) == []
    assert snapshot(tmp_path, learner_outputs) == before, "nothing outside the destination changed"
    assert logs[1].startswith(f"Could not use the runs your teacher shared: manifest.json in {attack.as_uri()} "
                              f"names run {teacher_run.name}'s profile '../../../victim': expected a plain name")
    assert len(logs) == 2, logs


def test_an_archive_larger_than_runs_hold_is_refused_before_unpacking_and_the_bound_can_be_raised(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys, monkeypatch):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    with zipfile.ZipFile(archive) as packed:
        history = packed.read(f"runs/{teacher_run.name}/history.csv")
    padded = history + b"0" * (65 * 2 ** 20)  # 65 MB: more than a history holds (64 MB), compressed to kilobytes
    big = forged(archive, tmp_path / "big.zip", entries={"history.csv": padded})
    assert big.stat().st_size < 2 ** 20
    error = refusal(capsys, big, "--data", phantom_root)
    assert f"runs/{teacher_run.name}/history.csv unpacks to 65 MB, more than the 64 MB a run's history.csv may " \
           "hold: refused before unpacking (set CXR_IMPORT_SCALE=2 or more" in error, error
    assert not (learner_outputs / "runs").exists()

    with monkeypatch.context() as bounds:
        bounds.setattr(sharing, "TOTAL_MB", 1)
        assert "unpacks to 65 MB, more than the 1 MB an archive of runs may hold" in refusal(capsys, big, "--data",
                                                                                           phantom_root)
        bounds.setattr(sharing, "ENTRIES", 3)
        assert "holds 5 entries, more than 3" in refusal(capsys, big, "--data", phantom_root)

    monkeypatch.setenv("CXR_IMPORT_SCALE", "lots")
    assert refusal(capsys, big, "--data", phantom_root) == \
        "error: CXR_IMPORT_SCALE must be a number of at least 1 (how many times the usual bounds); found 'lots'"
    monkeypatch.setenv("CXR_IMPORT_SCALE", "2")  # the rare larger run: allowed when asked for
    assert main(["run", "import", str(big), "--data", str(phantom_root)]) == 0
    assert f"Imported {teacher_run.name} into {learner_outputs}" in capsys.readouterr().out


def test_hashing_an_entry_keeps_memory_flat_whatever_its_size(teacher_run, phantom_root, learner_outputs, tmp_path,
                                                              capsys, monkeypatch):
    """Measured, not timed: Python's own allocations while an archive with a 64 MB entry is checked (its hash is
    wrong, so the import stops at hashing). Read whole, the entry alone would take 64 MB."""
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    large = forged(archive, tmp_path / "large.zip", entries={"history.csv": bytes(64 * 2 ** 20)},
                   run_change=lambda run: run["files"].update({"history.csv": "0" * 64}))
    monkeypatch.setenv("CXR_IMPORT_SCALE", "8")
    tracemalloc.start()
    try:
        with pytest.raises(sharing.ArchiveRefused, match="history.csv does not match its SHA-256"):
            sharing.import_runs(large, find_dataset(phantom_root))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MB while hashing a 64 MB entry"


def test_the_manifests_claims_are_checked_against_the_runs_own_files(teacher_run, phantom_root, learner_outputs,
                                                                     tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    for change, said in (
            (lambda run: run.update(classes=["Normal", "COVID"]), "classes: the manifest says ['Normal', 'COVID']"),
            (lambda run: run.update(split_fingerprint="0" * 16), "split_fingerprint: the manifest says '000"),
            (lambda run: run.update(profile="full"), "profile: the manifest says 'full', its settings.json 'fast'")):
        error = refusal(capsys, forged(archive, tmp_path / "claims.zip", run_change=change), "--data", phantom_root)
        assert f"run {teacher_run.name} is not what its manifest says ({said}" in error, error
    untrue = forged(archive, tmp_path / "untrue.zip",
                    settings=lambda s: s.update(split_fingerprint="1" * 16), run_change=lambda run: run.update(
                        split_fingerprint="1" * 16))  # settings and manifest agree; the split file does not
    assert "split_fingerprint: settings.json says '1111111111111111', its split.csv is" in refusal(
        capsys, untrue, "--data", phantom_root)
    assert not (learner_outputs / "runs").exists()


def test_an_import_takes_the_trainers_lock_and_a_changed_import_is_not_reported_as_that_import(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    layout = find_dataset(phantom_root)
    where = course_run_folder(layout, TOY_PAPER_A, Run(teacher_run).split(), 0, "fast")
    with locks.folder_lock(where):  # a trainer holds the folder
        error = refusal(capsys, archive, "--data", phantom_root)
    assert f"{where} is being trained or imported by another process (pid {os.getpid()} on host " in error, error
    assert not where.exists() or not any(where.iterdir()), "nothing was written into the held folder"

    assert main(["run", "import", str(archive), "--data", str(phantom_root)]) == 0
    record = json.loads((where / "imported.json").read_text())
    assert sorted(record["files"]) == ["history.csv", "model.keras", "settings.json", "split.csv"]
    assert all("/" not in name for name in [*record["files"], *record["sha256"]]), "only relative names"
    assert sharing.imported_from(where) == str(archive)

    with open(where / "history.csv", "a") as history:  # what a trainer writing over the import would do
        history.write("9,0.1,0.1,0.1,0.1,1.0\n")
    assert sharing.imported_from(where) is None, "no longer the import it records"
    error = refusal(capsys, archive, "--data", phantom_root)
    assert f"{where} already holds something else (or an import whose files were changed since)" in error


def test_a_full_disk_while_placing_a_run_is_one_line_and_leaves_no_partial_folder(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys, monkeypatch):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    copyfile, copyfileobj = shutil.copyfile, shutil.copyfileobj

    def full(path) -> None:
        if ".partial-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def copyfile_full(src, dst, *args, **kwargs):
        full(dst)
        return copyfile(src, dst, *args, **kwargs)

    def copyfileobj_full(src, dst, *args, **kwargs):
        full(getattr(dst, "name", ""))
        return copyfileobj(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile_full)
    monkeypatch.setattr(shutil, "copyfileobj", copyfileobj_full)
    error = refusal(capsys, archive, "--data", phantom_root)
    assert "could not be written: No space left on device; nothing half-written was kept" in error, error
    assert not list(learner_outputs.rglob(".partial-*")) and not list(learner_outputs.rglob("settings.json"))


EXPORT_KILLED = """
import os, signal, sys
from helpers import cli
from helpers.engine import storage
shared_files = storage.shared_files
def interrupted(run_dir):
    found = shared_files(run_dir)
    os.kill(os.getpid(), signal.{signal})
    return found
storage.shared_files = interrupted
sys.exit(cli.main(["run", "export", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_an_export_interrupted_removes_its_partial_archive_and_keeps_the_one_there(teacher_run, tmp_path, name):
    archive = tmp_path / "class.zip"
    archive.write_bytes(b"the archive exported before")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "CXR_OUTPUT_DIR": str(tmp_path / "outputs")}
    done = subprocess.run([sys.executable, "-c", EXPORT_KILLED.format(signal=name), str(teacher_run), str(archive)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent,
                          timeout=300)
    assert done.returncode == 128 + getattr(signal, name), done.stderr[-2000:]
    how = "SIGTERM" if name == "SIGTERM" else "Ctrl-C (SIGINT)"
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted by {how}: {archive} was not written (its partial file was removed; an archive already there "
        "is as it was)")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "outputs") == ["class.zip"], "no .partial-*"
    assert archive.read_bytes() == b"the archive exported before"


def test_a_damaged_entry_or_a_missing_manifest_is_one_line(teacher_run, phantom_root, learner_outputs, tmp_path,
                                                           capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    padded = forged(archive, tmp_path / "padded.zip", entries={"history.csv": b"epoch\n" + b"0" * 2 ** 20})
    with zipfile.ZipFile(padded) as packed:
        info = packed.getinfo(f"runs/{teacher_run.name}/history.csv")
    data = bytearray(padded.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # its deflated bytes
    data[start + info.compress_size // 2] ^= 0xFF  # one byte flipped: zlib or the CRC says so when it is read
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    error = refusal(capsys, damaged, "--data", phantom_root)
    assert f"runs/{teacher_run.name}/history.csv in {damaged} cannot be read (" in error, error
    assert "the archive is damaged or was not made by `run export`" in error

    without = tmp_path / "without.zip"
    with zipfile.ZipFile(without, "w") as packed:
        packed.writestr(f"runs/{teacher_run.name}/settings.json", "{}")
    assert refusal(capsys, without, "--data", phantom_root) == \
        f"error: {without} has no manifest.json: it was not made by `run export`"
    assert not (learner_outputs / "runs").exists()
