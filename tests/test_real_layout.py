"""The notebooks on data as it comes: a real-layout tree without masks/ (as older releases and copies), grayscale and
RGB files mixed, no phantom manifest. Notebooks 01 and 02 run on it top to bottom (03-06 train, and are run on such
a tree by hand: see the closing notes), and say what they skip."""

import json
import os
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from helpers import cli, config, datasets
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.engine.training import train
from helpers.tasks import CLASSES
from tests.conftest import TOY_PAPER_A, execute_notebook, gray, write_png


@pytest.fixture(scope="module")
def maskless_tree(tmp_path_factory, phantom_root):
    """data/COVID-19_Radiography_Dataset/<Class>/images/*.png, a third of them RGB, no masks, no manifest."""
    data_dir = tmp_path_factory.mktemp("real-data")
    for cls in CLASSES:
        target = data_dir / "COVID-19_Radiography_Dataset" / cls / "images"
        target.mkdir(parents=True)
        for i, source in enumerate(sorted((phantom_root / cls / "images").glob("*.png"))):
            image = Image.open(source)
            (image.convert("RGB") if i % 3 == 0 else image).save(target / source.name)
    return data_dir


def test_the_tree_is_real_mixed_and_without_masks(maskless_tree):
    layout = find_dataset(maskless_tree)
    scan = scan_dataset(layout)
    assert not layout.is_phantom and not datasets.has_lung_masks(layout)
    assert set(scan.index["mode"]) == {"L", "RGB"} and scan.index["mask_path"].isna().all()


@pytest.mark.parametrize("name", ["01_dataset_exploration.ipynb", "02_preprocessing.ipynb"])
def test_notebook_runs_on_it_and_says_what_it_skips(maskless_tree, tmp_path, monkeypatch, name):
    monkeypatch.setenv("CXR_FAST", "1")
    monkeypatch.setenv("CXR_DATA_DIR", str(maskless_tree))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "outputs"))
    printed = execute_notebook(name)
    assert "This run uses the real COVID-19 Radiography Database" in printed
    assert "This copy has no lung masks" in printed
    if name.startswith("01"):
        assert "No lung masks in this copy of the dataset" in printed  # the overlays and exercise 3 say so
        assert "No usable metadata sheets" in printed  # issue 38: the sources section says it, and goes on
    assert (tmp_path / "outputs" / "cache").is_dir() and not os.listdir(tmp_path / "outputs" / "cache") == []
    shutil.rmtree(tmp_path / "outputs", ignore_errors=True)


# --------------------------------------------------------------------------- what the command line trains on


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    """A real-layout tree larger than the demo profile's cap of 150: 160 distinct images per class (16 px)."""
    root = tmp_path_factory.mktemp("big-real") / "COVID-19_Radiography_Dataset"
    for k, cls in enumerate(CLASSES):
        for i in range(160):
            write_png(root / cls / "images" / f"{cls}-{i + 1}.png", gray(seed=1000 * k + i))
    return root.parent


@pytest.fixture
def cpu_command_line(tmp_path, monkeypatch):
    """The command line on a machine without a GPU, no profile named; `train` only keeps the split it is given."""
    for var in ("CXR_FAST", "CXR_PROFILE", "CXR_REAL_PER_CLASS", "CXR_SUBSAMPLE_PER_CLASS"):
        monkeypatch.setenv(var, "")  # restored after the test, even when --profile sets CXR_PROFILE
    monkeypatch.setattr(config, "visible_gpus", lambda: ())
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")
    config.active_profile.cache_clear()
    given = {}

    def keep_the_split(run_dir, split, *args, **options):
        given.update(split=split, profile=config.active_profile())
        return SimpleNamespace(finished=False)  # settings as a worker other than the chief has them: nothing to report

    monkeypatch.setattr(cli, "train", keep_the_split)
    yield given
    config.active_profile.cache_clear()


ALL_640 = "640 (COVID 160, Lung_Opacity 160, Normal 160, Viral Pneumonia 160)"


def test_the_command_line_trains_on_every_usable_image_when_no_profile_is_named(big_tree, cpu_command_line,
                                                                               tmp_path, capsys):
    assert cli.main(["train", "--data", str(big_tree), "--out", str(tmp_path / "run")]) == 0
    assert cpu_command_line["profile"].name == "demo", "a CPU, as in the issue"
    assert len(cpu_command_line["split"]) == 640, "every usable image, not the demo profile's 150 per class"
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"Using every usable image: {ALL_640}")
    assert "the demo profile's cap of 150 per class is for notebooks on a CPU; --per-class N" in first


def test_per_class_samples_that_many_and_says_how_to_lift_it(big_tree, cpu_command_line, tmp_path, capsys):
    assert cli.main(["train", "--data", str(big_tree), "--out", str(tmp_path / "run"), "--per-class", "20"]) == 0
    assert cpu_command_line["split"]["label"].value_counts().to_dict() == {c: 20 for c in CLASSES}
    assert capsys.readouterr().out.splitlines()[0] == (
        f"Using 20 images per class (80 in all) of {ALL_640} usable (--per-class 20; --per-class 0 for every image)")


@pytest.mark.parametrize("option, env, named", [(["--profile", "demo"], "", "--profile demo"),
                                                ([], "demo", "CXR_PROFILE=demo")])
def test_a_named_profile_keeps_its_cap_and_says_so(big_tree, cpu_command_line, tmp_path, capsys, monkeypatch,
                                                   option, env, named):
    monkeypatch.setenv("CXR_PROFILE", env)
    assert cli.main(["train", "--data", str(big_tree), "--out", str(tmp_path / "run"), *option]) == 0
    assert cpu_command_line["profile"].name == "demo"
    assert cpu_command_line["split"]["label"].value_counts().to_dict() == {c: 150 for c in CLASSES}
    assert capsys.readouterr().out.splitlines()[0] == (
        f"Using 150 images per class (600 in all) of {ALL_640} usable (the demo profile's cap, {named}; "
        "--per-class N or --profile full to change it)")


def test_the_run_folder_records_what_was_asked_and_used(big_tree, cpu_command_line, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "train", train)  # a real run, on the toy backbone
    monkeypatch.setattr(cli, "get_recipe", lambda name: TOY_PAPER_A)
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(big_tree), "--out", str(run), "--per-class", "5", "--epochs", "1",
                     "--image-size", "32", "--batch-size", "8", "--weights", "none"]) == 0
    settings = json.loads((run / "settings.json").read_text())
    used = settings["data_used"]
    assert (used["per_class_asked"], used["per_class_used"], used["images_usable"], used["images_used"]) == (
        5, 5, 640, 20)
    assert used["cap"] == "--per-class 5" and used["plan"] == {"per_class": 5}
    assert used["statement"].startswith("Using 5 images per class (20 in all) of 640")
    assert len(pd.read_csv(run / "split.csv")) == 20 and settings["finished"]


def test_a_notebooks_data_statement_gives_the_cap_with_numbers_and_how_to_lift_it(big_tree):
    demo, full = config.choose_profile({}, has_gpu=False), config.choose_profile({}, has_gpu=True)
    layout = find_dataset(big_tree)
    for scan in (None, scan_dataset(layout)):  # before the scan (the files), or with it (the usable images)
        statement = datasets.data_statement(layout, demo, scan)
        assert f"training and testing use 150 images per class sampled from it, of {ALL_640}" in statement
        assert "the demo profile's cap" in statement and "CXR_REAL_PER_CLASS=0 (or CXR_PROFILE=full)" in statement
    assert "sampled" not in datasets.data_statement(layout, full)
