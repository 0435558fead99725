"""Which data a run uses, its cached scan, its saved splits, and the main job that prepares them."""

import json
import shutil

import pandas as pd
import pytest

from helpers import config, data, datasets, splits
from helpers.cli import main
from helpers.data import scan_cached
from helpers.engine import main_job
from helpers.synthetic import METADATA_NAME
from helpers.tasks import CLASSES


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Point data/, outputs/ and notebooks/ at empty temporary folders (and no Kaggle input)."""
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(config, "PHANTOM_DIR", tmp_path / "data" / "phantoms")
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")
    monkeypatch.setattr(config, "KAGGLE_INPUT", tmp_path / "kaggle" / "input")
    monkeypatch.setattr(main_job, "NOTEBOOK_DIR", tmp_path / "notebooks")
    (tmp_path / "data").mkdir()
    (tmp_path / "notebooks").mkdir()
    return tmp_path


FAST = config.choose_profile({"CXR_FAST": "1"})


def test_phantoms_stand_in_until_the_real_dataset_is_placed(workspace, phantom_root):
    layout = datasets.active_dataset(FAST, download=False)
    assert layout.is_phantom and layout.root.is_relative_to(workspace / "data" / "phantoms")
    real = workspace / "data" / "COVID-19_Radiography_Dataset"
    for cls in CLASSES:
        shutil.copytree(phantom_root / cls, real / cls)
    layout = datasets.active_dataset(FAST, download=False)
    assert not layout.is_phantom and layout.root == real


def test_the_active_dataset_says_which_images_it_is_unless_quiet(workspace, phantom_root, capsys):
    """Issue 25: a notebook's first cell both chooses the dataset and says which: one call, not two."""
    layout = datasets.active_dataset(FAST, download=False)  # the fast profile's phantoms: generated in a second
    assert capsys.readouterr().out == datasets.data_statement(layout, FAST) + "\n"
    datasets.active_dataset(FAST, download=False, paper_b=True)
    assert capsys.readouterr().out == datasets.data_statement(layout, FAST, paper_b=True) + "\n"
    assert "shrinks Paper B" in datasets.data_statement(layout, FAST, paper_b=True)
    datasets.active_dataset(FAST, download=False, quiet=True)
    assert capsys.readouterr().out == ""


def test_a_dataset_attached_to_a_kaggle_notebook_is_found_under_kaggle_input(workspace, phantom_root, monkeypatch):
    attached = workspace / "kaggle" / "input" / "covid19-radiography-database" / "COVID-19_Radiography_Dataset"
    for cls in CLASSES:
        shutil.copytree(phantom_root / cls, attached / cls, ignore=shutil.ignore_patterns("masks"))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    layout = datasets.active_dataset(FAST)  # on Kaggle: no download needed, the input is read in place
    assert layout.root == attached and not layout.is_phantom and not datasets.has_lung_masks(layout)


def test_another_chest_xray_dataset_attached_on_kaggle_is_named_and_the_course_falls_back(workspace, monkeypatch,
                                                                                          capsys):
    """NORMAL/PNEUMONIA folders (the pediatric pneumonia set) under /kaggle/input: not a traceback, but what was found,
    what is needed, and phantoms (the download is refused here: no network) as with nothing attached."""
    from tests.conftest import gray, write_png

    for part in ("train", "test"):
        for name in ("NORMAL", "PNEUMONIA"):
            write_png(workspace / "kaggle" / "input" / "chest-xray-pneumonia" / part / name / "a.png", gray(seed=1))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setattr(datasets, "download_dataset", lambda *a, **k: (_ for _ in ()).throw(
        datasets.DatasetError("could not download (no network)")))
    layout = datasets.active_dataset(FAST)
    said = capsys.readouterr().out
    assert layout.is_phantom
    assert f"The dataset attached under {workspace / 'kaggle' / 'input'} is not the one this course needs (missing " \
           "class(es) COVID, Lung_Opacity, Viral Pneumonia" in said and datasets.KAGGLE_HANDLE in said
    (workspace / "data" / "Normal").mkdir()  # placed by hand in data/: half a dataset stays an error to fix
    write_png(workspace / "data" / "Normal" / "a.png", gray(seed=2))
    with pytest.raises(datasets.DatasetError, match="missing class"):
        datasets.find_real_dataset()


def test_scan_cache_is_reused_until_a_file_changes(workspace, monkeypatch):
    layout = datasets.active_dataset(FAST, download=False)
    first = scan_cached(layout)
    calls, original = [], data.scan_dataset
    monkeypatch.setattr(data, "scan_dataset", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = scan_cached(layout)
    assert calls == [] and again.index.equals(first.index)
    (layout.image_dirs["COVID"] / "COVID-1.png").write_bytes(b"")  # a file changed on disk
    scan_cached(layout)
    assert calls == [1]


def test_the_scan_is_reused_on_a_new_machine_that_extracted_the_same_files_again(workspace, monkeypatch):
    """kagglehub on a new Colab VM writes the same files with new times; the scan cache is on Drive. Same bytes: no
    new scan. A file whose bytes changed, even at the same size: scanned again (what the cache guards)."""
    import os

    layout = datasets.active_dataset(FAST, download=False)
    first = scan_cached(layout)
    calls, original = [], data.scan_dataset
    monkeypatch.setattr(data, "scan_dataset", lambda *a, **k: calls.append(1) or original(*a, **k))
    every_file = [path for folder in layout.image_dirs.values() for path in folder.iterdir()]
    for path in every_file:
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # "re-extracted"
    again = scan_cached(layout)
    assert calls == [] and again.index.equals(first.index)
    victim = every_file[0]
    damaged = bytearray(victim.read_bytes())
    damaged[-20] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(damaged))  # a new time, as any write gives it
    scan_cached(layout)
    assert calls == [1]


def test_saved_split_is_written_once_and_reused(workspace):
    scan = scan_cached(datasets.active_dataset(FAST, download=False))
    split = splits.saved_split(scan, "paper_a", 4)
    path = splits.saved_split_path(scan, "paper_a", 4)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    again = splits.saved_split(scan, "paper_a", 4)
    assert path.stat().st_mtime_ns == stamp
    assert again[["relpath", "split"]].equals(split[["relpath", "split"]])


def test_a_saved_split_belongs_to_the_images_it_was_made_from(workspace):
    """An image that was unreadable once (an interrupted unzip) is not left out forever: the key changes."""
    scan = scan_cached(datasets.active_dataset(FAST, download=False))
    fewer = data.ScanResult(scan.layout, scan.index.iloc[1:].reset_index(drop=True), [], 0)
    with_one_missing = splits.saved_split(fewer, "paper_a", 4)
    assert splits.saved_split_path(fewer, "paper_a", 4) != splits.saved_split_path(scan, "paper_a", 4)
    complete = splits.saved_split(scan, "paper_a", 4)
    assert len(complete) == len(with_one_missing) + 1
    assert splits.saved_split_path(scan, "paper_a", 4, seed=1) != splits.saved_split_path(scan, "paper_a", 4)


def test_real_data_on_a_cpu_is_sampled_per_class_and_phantoms_are_not(workspace, make_tree):
    layout = datasets.find_dataset(make_tree({c: 8 for c in CLASSES}))
    scan = scan_cached(layout)
    demo = config.choose_profile({"CXR_REAL_PER_CLASS": "5"}, has_gpu=False)
    sampled = splits.saved_split(scan, "paper_a", 4, profile=demo)
    assert sampled["label"].value_counts().to_dict() == {c: 5 for c in CLASSES}
    everything = splits.saved_split(scan, "paper_a", 4, profile=config.choose_profile({}, has_gpu=True))
    assert len(everything) == 32
    phantom_scan = scan_cached(datasets.phantom_dataset(FAST))
    assert len(splits.saved_split(phantom_scan, "paper_a", 4, profile=demo)) == len(phantom_scan.index)


def test_main_job_without_notebooks_checks_data_and_saves_splits(workspace, monkeypatch, capsys):
    monkeypatch.setenv("CXR_FAST", "1")
    config.active_profile.cache_clear()
    try:
        assert main(["run"]) == 0
        out = workspace / "outputs"
        report = json.loads((out / "data_check.json").read_text())
        assert report["phantom"] and report["classes"] == {c: FAST.phantom_per_class for c in CLASSES}
        summary = json.loads((out / "run_summary.json").read_text())
        assert len(summary["splits"]) == len(main_job.COURSE_SPLITS)
        assert any(name.startswith("paper_b_task3_seed0_12-n-per-class_2-repeats-") for name in summary["splits"])
        assert "No notebooks yet" in capsys.readouterr().out
    finally:
        config.active_profile.cache_clear()


def test_main_job_executes_notebooks_in_order_and_shows_each_cell(workspace, monkeypatch):
    import nbformat

    for name, code in (("01_first.ipynb", "print('epoch 1\\r', end=''); print('\\r\\x1b[1mepoch 1 done\\x1b[0m')"),
                       ("02_second.ipynb", "assert 1 + 1 == 2")):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(notebook, workspace / "notebooks" / name)
    monkeypatch.setenv("CXR_FAST", "1")
    config.active_profile.cache_clear()
    lines = []
    try:
        summary = main_job.run_course(log=lines.append)
        assert list(summary["notebooks"]) == ["01_first.ipynb", "02_second.ipynb"]
        executed = nbformat.read(workspace / "outputs" / "notebooks" / "02_second.ipynb", as_version=4)
        assert executed.cells[0].execution_count == 1
        assert any(line.startswith("  [02 · cell 1/1 · ") and line.endswith("assert 1 + 1 == 2") for line in lines)
        assert [line.strip() for line in lines if "epoch 1" in line and "cell" not in line] == ["epoch 1 done"], \
            "what a cell prints is echoed once per finished line"
        main_job.run_course(log=lines.append)  # a second run estimates from the first
        assert any("the last run took" in line for line in lines)
        failing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('broken')")])
        nbformat.write(failing, workspace / "notebooks" / "02_second.ipynb")
        (workspace / "outputs" / "run_summary.json").unlink()
        with pytest.raises(Exception, match="broken"):
            main_job.run_course(log=lines.append)
        lines.clear()
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 2")]),
                       workspace / "notebooks" / "02_second.ipynb")
        main_job.run_course(log=lines.append)  # the failed run still left the first notebook's time
        assert any(line.startswith("  [01 · cell 1/1 · ") and " of ~" in line for line in lines)
    finally:
        config.active_profile.cache_clear()


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
    clean, shortcut = datasets.phantom_dataset(FAST), datasets.phantom_dataset(FAST, shortcut_class="COVID")
    assert clean.root != shortcut.root and datasets.dataset_tag(shortcut).endswith("-shortcut-COVID")
    markers = pd.read_csv(shortcut.root / METADATA_NAME).groupby("label")["marker"].mean()
    assert markers["COVID"] == 1.0 and markers.drop("COVID").sum() == 0
    half = datasets.phantom_dataset(FAST, shortcut_class="COVID", shortcut_rate=0.5)
    assert datasets.dataset_tag(half).endswith("-shortcut-COVID-0.5")
