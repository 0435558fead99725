"""What notebooks and the main job share: which data, cached scans, saved splits, the run itself."""

import json
import shutil

import pytest

from helpers import config, course
from helpers.cli import main
from helpers.data import CLASSES


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Point data/, outputs/ and notebooks/ at empty temporary folders."""
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(config, "PHANTOM_DIR", tmp_path / "data" / "phantoms")
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")
    monkeypatch.setattr(course, "NOTEBOOK_DIR", tmp_path / "notebooks")
    (tmp_path / "data").mkdir()
    (tmp_path / "notebooks").mkdir()
    return tmp_path


FAST = config.choose_profile({"CXR_FAST": "1"})


def test_phantoms_stand_in_until_the_real_dataset_is_placed(workspace, phantom_root):
    layout = course.course_dataset(FAST)
    assert layout.is_phantom and layout.root.is_relative_to(workspace / "data" / "phantoms")
    real = workspace / "data" / "COVID-19_Radiography_Dataset"
    for cls in CLASSES:
        shutil.copytree(phantom_root / cls, real / cls)
    layout = course.course_dataset(FAST)
    assert not layout.is_phantom and layout.root == real


def test_scan_cache_is_reused_until_a_file_changes(workspace, monkeypatch):
    layout = course.course_dataset(FAST)
    first = course.scan_cached(layout)
    calls, original = [], course.scan_dataset
    monkeypatch.setattr(course, "scan_dataset", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = course.scan_cached(layout)
    assert calls == [] and again.index.equals(first.index)
    (layout.image_dirs["COVID"] / "COVID-1.png").write_bytes(b"")  # a file changed on disk
    course.scan_cached(layout)
    assert calls == [1]


def test_course_split_is_written_once_and_reused(workspace):
    scan = course.scan_cached(course.course_dataset(FAST))
    split = course.course_split(scan, "paper_a", 4)
    path = course.split_file(scan.layout, "paper_a", 4)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    again = course.course_split(scan, "paper_a", 4)
    assert path.stat().st_mtime_ns == stamp
    assert again[["relpath", "split"]].equals(split[["relpath", "split"]])


def test_main_job_without_notebooks_checks_data_and_saves_splits(workspace, monkeypatch, capsys):
    monkeypatch.setenv("CXR_FAST", "1")
    config.active_profile.cache_clear()
    assert main(["run"]) == 0
    out = workspace / "outputs"
    report = json.loads((out / "data_check.json").read_text())
    assert report["phantom"] and report["classes"] == {c: FAST.phantom_per_class for c in CLASSES}
    summary = json.loads((out / "run_summary.json").read_text())
    layout = course.course_dataset(FAST)
    assert set(summary["splits"]) == {course.split_file(layout, mode, task).name for mode, task in course.COURSE_SPLITS}
    assert "paper_b_task3_seed0_12-per-class.csv" in summary["splits"]
    assert "No notebooks yet" in capsys.readouterr().out


def test_main_job_executes_notebooks_in_order(workspace, monkeypatch):
    import nbformat

    for name, code in (("01_first.ipynb", "x = 1"), ("02_second.ipynb", "assert 1 + 1 == 2")):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(notebook, workspace / "notebooks" / name)
    monkeypatch.setenv("CXR_FAST", "1")
    config.active_profile.cache_clear()
    summary = course.run_course(log=lambda *_: None)
    assert list(summary["notebooks"]) == ["01_first.ipynb", "02_second.ipynb"]
    executed = nbformat.read(workspace / "outputs" / "notebooks" / "02_second.ipynb", as_version=4)
    assert executed.cells[0].execution_count == 1


def test_download_without_network_or_credentials_explains_the_manual_route(monkeypatch, capsys):
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    assert main(["data", "download"]) == 2
    error = capsys.readouterr().err
    assert "could not download tawsifurrahman/covid19-radiography-database" in error
    assert "data/COVID-19_Radiography_Dataset/COVID/images/COVID-1.png" in error


def test_shortcut_set_is_the_phantom_set_with_a_marker_on_one_class(workspace):
    import pandas as pd

    from helpers.synthetic import METADATA_NAME

    clean, shortcut = course.phantom_dataset(FAST), course.shortcut_dataset(FAST, "COVID")
    assert clean.root != shortcut.root and course.dataset_tag(shortcut).endswith("-shortcut-COVID")
    markers = pd.read_csv(shortcut.root / METADATA_NAME).groupby("label")["marker"].mean()
    assert markers["COVID"] == 1.0 and markers.drop("COVID").sum() == 0
    assert course.run_folder(clean, "improved") != course.run_folder(shortcut, "improved")


def test_run_part_adds_the_scans_mask_paths_to_the_runs_own_split(workspace):
    layout = course.phantom_dataset(FAST)
    scan = course.scan_cached(layout)
    split = course.course_split(scan, mode="paper_a", task=4)
    run = workspace / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"data_root": str(layout.root)}))
    split.drop(columns="path").to_csv(run / "split.csv", index=False)
    test = course.run_part(run, scan, "test")
    assert set(test["relpath"]) == set(split.loc[split["split"] == "test", "relpath"])
    assert test["mask_path"].notna().all() and test["lesion_mask_path"].notna().all()
    assert all(p.endswith(r.rsplit("/", 1)[-1]) for p, r in zip(test["lesion_mask_path"], test["relpath"]))
    with pytest.raises(ValueError, match="has no 'holdout' images"):
        course.run_part(run, scan, "holdout")
