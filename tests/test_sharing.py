"""Issue 24: runs a class can share. A teacher exports finished runs; a learner imports them (a path or a URL) and
the notebooks reuse them; a doubtful archive is refused in one line and writes nothing."""

from __future__ import annotations

import hashlib
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
from helpers.engine.storage import course_run_folder
from helpers.runs import Run
from helpers.synthetic import generate_phantoms
from tests.conftest import TOY_PAPER_A, phantom_split, train_tiny


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
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys, monkeypatch):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    with zipfile.ZipFile(archive) as packed:
        manifest = json.loads(packed.read("manifest.json"))
        assert sorted(packed.namelist()) == sorted(["manifest.json", *(f"runs/{teacher_run.name}/{name}" for name in (
            "settings.json", "split.csv", "history.csv", "model.weights.npz"))]), "weights, not a .keras file"
    settings = Run(teacher_run).settings
    [entry] = manifest["runs"]
    assert (entry["split_fingerprint"], entry["classes"], entry["profile"], entry["weights_used"]) == (
        settings.split_fingerprint, settings.classes, settings.profile, settings.weights_used)
    assert entry["architecture"] == {"head": "paper_a", "backbone": "toy", "dropout": TOY_PAPER_A.dropout,
                                     "n_classes": 4, "image_size": 32, "pixel_inputs": None}
    assert entry["keras"] == keras.__version__
    assert all(len(digest) == 64 for digest in entry["files"].values())

    monkeypatch.chdir(phantom_root.parent)  # the learner names the data by a relative path
    assert main(["run", "import", archive.as_uri(), "--data", phantom_root.name]) == 0
    layout = find_dataset(phantom_root)
    where = course_run_folder(layout, TOY_PAPER_A, Run(teacher_run).split(), 0, settings.profile)
    assert where.parent == learner_outputs / "runs" / dataset_tag(layout) / settings.profile
    said = capsys.readouterr().out
    assert f"Imported {teacher_run.name} into {where}" in said and "will not use it" not in said
    images = [next(phantom_root.rglob("COVID-1.png")), next(phantom_root.rglob("Normal-2.png"))]
    pd.testing.assert_frame_equal(Run(where).predict(images), Run(teacher_run).predict(images))
    assert Run(where).settings.data_root == str(layout.root)

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
    where = course_run_folder(find_dataset(phantom_root), TOY_PAPER_A, Run(teacher_run).split(), 0, "fast")
    assert f"Imported phantom-a/fast/{teacher_run.name} into {where}" in out
    assert f"Not imported: phantom-b/fast/{teacher_run.name}, trained on other data (" in out
    assert Run(where).settings.finished and len(list((learner_outputs / "runs").rglob("settings.json"))) == 1


def archive_before_issue_34(run, archive, model_file=None) -> Path:
    """An archive as `run export` made them before issue 34: the run's own model.keras (or `model_file`) inside."""
    shared = {name: (run / name).read_bytes() for name in ("settings.json", "split.csv", "history.csv")}
    shared["model.keras"] = Path(model_file or run / "model.keras").read_bytes()
    with zipfile.ZipFile(archive, "w") as packed:
        for name, data in shared.items():
            packed.writestr(f"runs/{run.name}/{name}", data)
        packed.writestr("manifest.json", json.dumps({"format": "cxr-course-runs/1", "runs": [{
            "folder": run.name, "profile": "fast", "classes": Run(run).classes, "repeat": 0,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in shared.items()}}]}))
    return archive


def test_an_older_archive_still_imports_and_one_from_a_keras_that_cannot_be_read_is_named_in_one_line(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    assert main(["run", "import", str(archive_before_issue_34(teacher_run, tmp_path / "old.zip")), "--data",
                 str(phantom_root)]) == 0
    assert f"Imported {teacher_run.name} into " in capsys.readouterr().out

    # A newer Keras' config that this one cannot read (Colab's Keras 3.13 met 3.15's "input_axes" this way).
    other_keras = tmp_path / "other-keras.keras"
    with zipfile.ZipFile(teacher_run / "model.keras") as source, zipfile.ZipFile(other_keras, "w") as copy:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                data = data.replace(b'"seed": null', b'"seed": null, "spread_axes": [0]')
            copy.writestr(info, data)
    shutil.rmtree(learner_outputs)
    settings = json.loads((teacher_run / "settings.json").read_text())
    newer = tmp_path / "newer" / teacher_run.name
    shutil.copytree(teacher_run, newer)
    (newer / "settings.json").write_text(json.dumps({**settings, "versions": {**settings["versions"], "keras": "9.1"}}))
    error = refusal(capsys, archive_before_issue_34(newer, tmp_path / "newer.zip", other_keras), "--data",
                    phantom_root)
    assert f"exported with Keras 9.1, cannot be used with this Keras {keras.__version__}: " in error
    assert "spread_axes" in error and "export it again" in error and "keras==9.1" in error
    assert not (learner_outputs / "runs").exists(), "nothing written where the notebooks look"


def test_a_model_that_needs_unsafe_deserialisation_is_refused_on_export_and_in_an_older_archive(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    run = tmp_path / "unsafe" / teacher_run.name
    shutil.copytree(teacher_run, run)
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(run / "model.keras")
    assert main(["run", "export", str(run), str(tmp_path / "unsafe.zip")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: run {run} cannot be exported: ") and "unsafe" in error.lower()
    assert not (tmp_path / "unsafe.zip").exists()
    archive = archive_before_issue_34(run, tmp_path / "unsafe-old.zip")
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
    from helpers.engine import sharing

    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    layout = find_dataset(phantom_root)
    assert sharing.import_from_environment(layout) == [], "no CXR_RUNS_URL: nothing"
    monkeypatch.setenv("CXR_RUNS_URL", archive.as_uri())
    logs = []
    [where] = sharing.import_from_environment(layout, log=logs.append)
    assert logs[0] == f"Importing the runs your teacher shared (CXR_RUNS_URL={archive.as_uri()}) …"
    archive.unlink()  # imported once per outputs folder: not fetched again
    assert sharing.import_from_environment(layout, log=logs.append) == [] and len(logs) == 2
    assert Run(where).settings.finished


def test_a_run_trained_under_any_folder_name_lands_where_the_notebooks_look_and_one_they_will_not_use_is_named(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    """`train --out NAME` names a run as the teacher likes; the notebooks look runs up by recipe, split and profile."""
    from helpers.engine.storage import course_runs

    renamed = tmp_path / "teacher" / "my-best-run"
    shutil.copytree(teacher_run, renamed)
    assert main(["run", "import", str(exported(renamed, tmp_path / "renamed.zip", capsys)), "--data",
                 str(phantom_root)]) == 0
    layout = find_dataset(phantom_root)
    where = course_run_folder(layout, TOY_PAPER_A, Run(teacher_run).split(), 0, "fast")
    assert f"Imported my-best-run into {where}" in capsys.readouterr().out
    logs = []
    train_tiny(where, phantom_root, TOY_PAPER_A, epochs=1, log=logs.append)  # what a notebook's train_or_load does
    assert logs == [f"Using the run imported from {tmp_path / 'renamed.zip'} ({where}); nothing to train."]

    # Trained on a split no notebook makes (here: another seed): imported, and said to be of no use to them.
    other_split = tmp_path / "teacher" / "seed-1"
    train_tiny(other_split, phantom_root, TOY_PAPER_A, split=phantom_split(phantom_root, seed=1), epochs=1)
    assert main(["run", "import", str(exported(other_split, tmp_path / "seed1.zip", capsys)), "--data",
                 str(phantom_root)]) == 0
    said = capsys.readouterr().out.splitlines()
    [unused] = [line for line in said if "will not use it" in line]
    assert unused.strip().startswith("The notebooks will not use it: its split is none of the notebooks' in the fast "
                                     "profile (Paper A's 4-class split (notebooks 03, 04, 05); ")
    assert "python -m helpers evaluate --run " in unused
    assert main(["run", "import", str(tmp_path / "seed1.zip"), "--data", str(phantom_root), "--out",
                 str(tmp_path / "elsewhere")]) == 0
    assert f"it is not in {course_runs(layout, 'fast')}, where they look" in capsys.readouterr().out


def test_a_drive_share_link_is_downloaded_as_the_file_and_a_web_page_is_refused_with_how_to_share(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    from helpers.engine import sharing

    direct = "https://drive.usercontent.google.com/download?id=1AbC-d_9&export=download&confirm=t"
    for link in ("https://drive.google.com/file/d/1AbC-d_9/view?usp=sharing",
                 "https://drive.google.com/open?id=1AbC-d_9", "https://drive.google.com/uc?export=download&id=1AbC-d_9"):
        assert sharing.download_url(link) == direct
    assert sharing.download_url("https://example.org/runs.zip") == "https://example.org/runs.zip"
    page = tmp_path / "page.zip"
    page.write_text("\n<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>")
    error = refusal(capsys, page.as_uri(), "--data", phantom_root)
    assert "gave a web page, not a zip archive: on Google Drive, share the file with 'Anyone with the link'" in error


def test_a_teachers_url_that_fails_is_one_line_in_the_notebook_which_goes_on(phantom_root, learner_outputs,
                                                                              tmp_path, monkeypatch):
    from helpers.engine import sharing

    layout = find_dataset(phantom_root)
    for url in (f"{tmp_path.as_uri()}/missing.zip", "http://127.0.0.1:9/refused.zip"):
        monkeypatch.setenv("CXR_RUNS_URL", url)
        logs = []
        assert sharing.import_from_environment(layout, log=logs.append) == []
        assert logs[1].startswith(f"Could not use the runs your teacher shared: could not download {url}: ")
        assert logs[1].endswith("This notebook trains its own instead.") and len(logs) == 2
        assert sharing.import_from_environment(layout, log=logs.append) == [] and len(logs) == 2, "said once"


def test_a_manifest_that_is_not_a_runs_manifest_is_refused_in_one_line(phantom_root, learner_outputs, tmp_path,
                                                                       capsys):
    """Each said in one line naming the manifest (tests/test_import_attacks.py has the rest of issue 36's)."""
    for name, manifest, said in (
            ("no-runs", b'{"format": "cxr-course-runs/2", "runs": []}', "lists no runs"),
            ("not-json", b"{runs", "is not JSON"), ("empty", b"", "is empty"),
            ("no-files", b'{"format": "cxr-course-runs/2", "runs": [{"folder": "a"}]}', "run a lists no files"),
            ("empty-files", b'{"format": "cxr-course-runs/2", "runs": [{"folder": "a", "files": {}}]}',
             "run a lists no files"),
            ("runs-not-objects", b'{"format": "cxr-course-runs/2", "runs": [1]}', "lists a run that is int"),
            ("absolute", b'{"format": "cxr-course-runs/2", "runs": [{"folder": "/tmp/x", "classes": [], '
                         b'"files": {}}]}', "'/tmp/x', which would be written outside its folder")):
        archive = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as packed:
            packed.writestr("manifest.json", manifest)
        error = refusal(capsys, archive, "--data", phantom_root)
        assert error.startswith(f"error: manifest.json in {archive}") and said in error, error
    assert not (learner_outputs / "runs").exists()


def test_an_architecture_out_of_bounds_in_the_manifest_is_refused_before_anything_is_built(
        teacher_run, phantom_root, learner_outputs, tmp_path, capsys):
    archive = exported(teacher_run, tmp_path / "class.zip", capsys)
    huge = tmp_path / "huge.zip"
    rewritten(archive, huge, lambda name, data: data.replace(b'"image_size": 32', b'"image_size": 100000')
              if name == "manifest.json" else data)
    error = refusal(capsys, huge, "--data", phantom_root)
    assert "a model of 100000 px and 4 classes is not one the course builds" in error
    assert not (learner_outputs / "runs").exists()
