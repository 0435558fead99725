"""What a learner types or breaks: relative paths, links that loop or lead nowhere, a folder where a file is
expected, a full disk. Each gives one line saying what failed and where, or is handled as the scan promises."""

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import config, files
from helpers.cli import main
from helpers.data import scan_cached, scan_dataset
from helpers.datasets import find_dataset
from helpers.runs import Run
from helpers.splits import save_split
from tests.conftest import TOY_PAPER_A, fake_run, phantom_split, train_tiny

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


def test_a_run_made_from_a_relative_path_is_found_from_anywhere_and_resumes_with_the_absolute_one(
        phantom_root, tmp_path, monkeypatch):
    copy = tmp_path / "data" / "set"
    shutil.copytree(phantom_root.parent, copy)
    monkeypatch.chdir(tmp_path / "data")
    settings = train_tiny(tmp_path / "run", Path("set"), TOY_PAPER_A, epochs=1,
                          split=phantom_split(Path("set"))).settings
    assert settings.data_root == str((copy / phantom_root.name).resolve()), "stored resolved"
    monkeypatch.chdir(tmp_path)  # somewhere else
    assert Run(tmp_path / "run").split()["path"].map(os.path.exists).all()
    again = train_tiny(tmp_path / "run", copy, TOY_PAPER_A, epochs=1, split=phantom_split(copy))
    assert again.finished and again.train_seconds == settings.train_seconds, "the same run, not another"


def test_links_that_loop_or_lead_nowhere_are_skipped_alike_by_data_check_and_training(make_tree):
    root = find_dataset(make_tree()).root
    images = root / "COVID" / "images"
    (images / "nowhere.png").symlink_to(images / "gone.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    expected = {"COVID/images/loop.png": "a link that loops back on itself",
                "COVID/images/nowhere.png": "file not found (a link that leads nowhere)"}
    checked = {s["path"]: s["reason"] for s in scan_dataset(find_dataset(root)).skipped}
    cached = {s["path"]: s["reason"] for s in scan_cached(find_dataset(root)).skipped}  # what training uses
    assert checked == cached == expected


def test_a_file_where_a_folder_is_expected_is_one_line(tmp_path, capsys):
    not_a_folder = tmp_path / "data.zip"
    not_a_folder.write_bytes(b"PK")
    assert main(["data", "check", str(not_a_folder)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: expected a folder holding the dataset;") and error.count("\n") == 1


def test_an_output_folder_that_is_a_file_is_one_line(phantom_root, tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    assert main(["data", "synth", str(blocker / "phantoms"), "--per-class", "1", "--size", "32"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: Not a directory: {blocker / 'phantoms'}") and error.count("\n") == 1


def test_a_full_disk_is_one_line_and_leaves_no_half_file(tmp_path):
    """`ulimit -f`: writes beyond the limit fail with "File too large" (Python ignores SIGXFSZ)."""
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    done = subprocess.run([sys.executable, "-m", "helpers", "data", "synth", str(tmp_path / "out"), "--per-class",
                           "1", "--size", "299"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=small_files)
    assert done.returncode == 2
    assert done.stderr.startswith("error: File too large") and done.stderr.count("\n") == 1


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path):
    target = files.write_text(tmp_path / "settings.json", '{"finished": true}\n')
    with pytest.raises(OSError), files.atomic_path(target) as tmp:
        tmp.write_text('{"fini')
        raise OSError(27, "File too large")
    assert target.read_text() == '{"finished": true}\n' and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("damaged", ["settings.json", "model.keras"])
def test_a_damaged_run_folder_is_named_in_one_line_by_predict_and_evaluate(phantom_root, tmp_path, capsys, command,
                                                                          damaged):
    """Once: `error: Expecting value: line 1 column 14 (char 13)` naming no file, or Keras' "File not found" for a
    model.keras that is there but cut short."""
    run = tmp_path / "run"
    fake_run(run, None, ["COVID", "Normal"], 32)
    settings = json.loads((run / "settings.json").read_text())
    (run / "settings.json").write_text(json.dumps({**settings, "data_root": str(find_dataset(phantom_root).root)}))
    save_split(phantom_split(phantom_root, task=2), run / "split.csv")
    (run / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    if damaged == "settings.json":
        (run / "settings.json").write_text('{"recipe": ')
    image = str(phantom_root / "COVID" / "images" / "COVID-1.png")
    assert main([command, *([image] if command == "predict" else []), "--run", str(run)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {run / damaged} cannot be read (") and error.count("\n") == 1
    assert f"delete the folder {run}" in error
