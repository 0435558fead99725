"""The notebooks on data as it comes: a real-layout tree without masks/ (as older releases and copies), grayscale and
RGB files mixed, no phantom manifest. Notebooks 01 and 02 run on it top to bottom (03-06 train, and are run on such
a tree by hand: see the closing notes), and say what they skip."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from helpers import datasets
from helpers.data import CLASSES, find_dataset, scan_dataset

REPO = Path(__file__).resolve().parent.parent


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
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    printed = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                        for output in cell.get("outputs", []))
    assert "This run uses the real COVID-19 Radiography Database" in printed
    assert "This copy has no lung masks" in printed
    if name.startswith("01"):
        assert "No lung masks in this copy of the dataset" in printed  # the overlays and exercise 3 say so
    assert (tmp_path / "outputs" / "cache").is_dir() and not os.listdir(tmp_path / "outputs" / "cache") == []
    shutil.rmtree(tmp_path / "outputs", ignore_errors=True)
