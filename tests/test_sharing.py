"""Issue 24: runs a class can share. A teacher exports finished runs; a learner imports them (a path or a URL) and
the notebooks reuse them; a doubtful archive is refused in one line and writes nothing."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import keras
import pandas as pd
import pytest

from helpers import config
from helpers.cli import main
from helpers.datasets import dataset_tag, find_dataset
from helpers.run_folder import Run
from helpers.synthetic import generate_phantoms
from tests.conftest import TOY_PAPER_A, train_tiny


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, phantom_root):
    folder = tmp_path_factory.mktemp("teacher") / "runs" / "paper_a_toy_task4-0123abcd"
    train_tiny(folder, phantom_root, TOY_PAPER_A, epochs=1)
    return folder


@pytest.fixture
def learner_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "learner-outputs")
    return config.OUTPUT_DIR


def exported(run, archive, capsys) -> Path:
    assert main(["run", "export", str(run), str(archive)]) == 0
    assert f"Exported 1 run(s) to {archive}: {run.name}" in capsys.readouterr().out
    return archive


def refusal(capsys, *argv) -> str:
    """The one line an import refuses with."""
    assert main(["run", "import", *map(str, argv)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    return error


def rewritten(archive, target, change) -> None:
    """A copy of `archive` with `change(name, data)` applied to every entry's bytes (None drops it)."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = change(info.filename, source.read(info.filename))
            if data is not None:
                copy.writestr(info.filename, data)


def test_an_exported_run_imported_from_a_url_predicts_the_same_and_the_notebooks_reuse_it(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    with zipfile.ZipFile(archive) as packed:
        manifest = json.loads(packed.read("manifest.json"))
        assert sorted(packed.namelist()) == sorted(["manifest.json", *(f"runs/{teacher_run.name}/{name}" for name in (
            "settings.json", "split.csv", "history.csv", "model.keras"))])
    settings = Run(teacher_run).settings
    [entry] = manifest["runs"]
    assert (entry["split_fingerprint"], entry["classes"], entry["profile"], entry["weights_used"]) == (
        settings["split_fingerprint"], settings["classes"], settings["profile"], settings["weights_used"])
    assert all(len(digest) == 64 for digest in entry["files"].values())

    assert main(["run", "import", archive.as_uri(), "--data", str(phantom_root)]) == 0
    layout = find_dataset(phantom_root)
    where = learner_outputs / "runs" / dataset_tag(layout) / settings["profile"] / teacher_run.name
    assert f"Imported {teacher_run.name} into {where}" in capsys.readouterr().out
    images = [next(phantom_root.rglob("COVID-1.png")), next(phantom_root.rglob("Normal-2.png"))]
    pd.testing.assert_frame_equal(Run(where).predict(images), Run(teacher_run).predict(images))
    assert Run(where).settings["data_root"] == str(layout.root)

    logs = []
    train_tiny(where, phantom_root, TOY_PAPER_A, epochs=1, log=logs.append)  # what a notebook's train_or_load does
    assert logs == [f"Using the run imported from {archive.as_uri()} ({where}); nothing to train."]
    assert main(["run", "import", str(archive), "--data", str(phantom_root)]) == 0
    assert "already holds this run: left as it is" in capsys.readouterr().out


def test_a_tampered_archive_a_zip_slip_entry_and_another_dataset_are_each_refused_in_one_line(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)

    tampered = tmp_path / "tampered.zip"
    rewritten(archive, tampered, lambda name, data: data.replace(b'"seed": 0', b'"seed": 1')
              if name.endswith("settings.json") else data)
    error = refusal(capsys, tampered, "--data", phantom_root)
    assert f"runs/{teacher_run.name}/settings.json does not match its SHA-256 in the manifest" in error

    slip = tmp_path / "slip.zip"
    shutil.copy(archive, slip)
    with zipfile.ZipFile(slip, "a") as packed:
        packed.writestr("../../outside.txt", "x")
    assert "'../../outside.txt', which would be written outside its folder: refused" in refusal(
        capsys, slip, "--data", phantom_root)
    assert not (tmp_path / "outside.txt").exists() and not (learner_outputs / "outside.txt").exists()

    other = generate_phantoms(tmp_path / "other", per_class=10, size=64, seed=1)
    error = refusal(capsys, archive, "--data", other)
    assert f"run {teacher_run.name} was not trained on your data: " in error and "missing or different" in error
    assert not (learner_outputs / "runs").exists(), "nothing written where the notebooks look"


def test_an_archive_of_several_datasets_runs_imports_those_of_the_learners_data_and_names_the_others(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    """A teacher exports outputs/runs whole: it also holds runs of 05's own phantom sets, keyed by dataset."""
    teacher = tmp_path / "teacher-outputs" / "runs"
    shutil.copytree(teacher_run, teacher / "phantom-a" / "fast" / teacher_run.name)
    other = generate_phantoms(tmp_path / "other", per_class=10, size=64, seed=1)
    train_tiny(teacher / "phantom-b" / "fast" / teacher_run.name, other, TOY_PAPER_A, epochs=1)
    assert main(["run", "export", str(teacher), str(tmp_path / "all.zip")]) == 0
    assert "Exported 2 run(s)" in capsys.readouterr().out

    assert main(["run", "import", str(tmp_path / "all.zip"), "--data", str(phantom_root)]) == 0
    out = capsys.readouterr().out
    where = learner_outputs / "runs" / dataset_tag(find_dataset(phantom_root)) / "fast" / teacher_run.name
    assert f"Imported phantom-a/fast/{teacher_run.name} into {where}" in out
    assert f"Not imported: phantom-b/fast/{teacher_run.name}, trained on other data (" in out
    assert Run(where).settings["finished"] and len(list((learner_outputs / "runs").rglob("settings.json"))) == 1


def test_a_model_that_needs_unsafe_deserialisation_is_refused(teacher_run, phantom_root, learner_outputs, tmp_path,
                                                              capsys):
    run = tmp_path / "unsafe" / teacher_run.name
    shutil.copytree(teacher_run, run)
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(run / "model.keras")
    archive = exported(run, tmp_path / "unsafe.zip", capsys)
    assert "model needs unsafe deserialisation" in refusal(capsys, archive, "--data", phantom_root)
    assert not (learner_outputs / "runs").exists()


def test_an_unfinished_run_or_an_empty_folder_is_not_exported(teacher_run, tmp_path, capsys):
    run = tmp_path / "unfinished" / teacher_run.name
    shutil.copytree(teacher_run, run)
    settings = json.loads((run / "settings.json").read_text())
    (run / "settings.json").write_text(json.dumps({**settings, "finished": False}))
    assert main(["run", "export", str(run), str(tmp_path / "a.zip")]) == 2
    assert "has not finished training" in capsys.readouterr().err and not (tmp_path / "a.zip").exists()
    (tmp_path / "empty").mkdir()
    assert main(["run", "export", str(tmp_path / "empty"), str(tmp_path / "b.zip")]) == 2
    assert "holds no run folder" in capsys.readouterr().err


def test_a_teachers_url_in_cxr_runs_url_is_imported_once_and_the_run_is_used(teacher_run, phantom_root,
                                                                               learner_outputs, tmp_path, monkeypatch,
                                                                               capsys):
    from helpers import sharing

    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    layout = find_dataset(phantom_root)
    assert sharing.import_from_environment(layout) == [], "no CXR_RUNS_URL: nothing"
    monkeypatch.setenv("CXR_RUNS_URL", archive.as_uri())
    logs = []
    [where] = sharing.import_from_environment(layout, log=logs.append)
    assert logs[0] == f"Importing the runs your teacher shared (CXR_RUNS_URL={archive.as_uri()}) …"
    archive.unlink()  # imported once per outputs folder: not fetched again
    assert sharing.import_from_environment(layout, log=logs.append) == [] and len(logs) == 2
    assert Run(where).settings["finished"]
