"""Helpers behind notebooks 01 and 02: tables, figures, timings, device report, which data a run uses."""

import pathlib

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import config, data, datasets, pipeline, plots, tasks, timing  # noqa: E402
from helpers.data import scan_dataset
from helpers.datasets import find_dataset  # noqa: E402
from helpers.engine import devices
from helpers.tasks import CLASSES


@pytest.fixture(scope="module")
def scan(phantom_root):
    return scan_dataset(find_dataset(phantom_root))


@pytest.fixture
def figure_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path)
    return tmp_path / "figures"


def test_class_balance_and_majority_baseline():
    index = pd.DataFrame({"label": ["Normal"] * 6 + ["COVID"] * 3 + ["Viral Pneumonia"]})
    table = data.class_balance(index)
    assert table["images"].to_dict() == {"COVID": 3, "Lung_Opacity": 0, "Normal": 6, "Viral Pneumonia": 1}
    assert table.attrs["majority_baseline"] == pytest.approx(0.6)
    three = data.class_balance(index, tasks.TASK_CLASSES[3])
    assert list(three.index) == ["COVID", "Normal", "Viral Pneumonia"]
    assert three["share"].sum() == pytest.approx(1.0)


def test_sample_per_class_is_capped_and_reproducible(scan):
    sample = data.sample_per_class(scan.index, 3, seed=1)
    assert sample["label"].value_counts().to_dict() == {c: 3 for c in CLASSES}
    assert sample.equals(data.sample_per_class(scan.index, 3, seed=1))
    assert not sample.equals(data.sample_per_class(scan.index, 3, seed=2))
    assert len(data.sample_per_class(scan.index, 1000)) == len(scan.index)


def test_class_folders_link_exactly_the_rows_one_folder_per_class(scan, figure_dir):
    """04's reshuffling demonstration reads them with image_dataset_from_directory: these images, no mask, no other."""
    rows = data.sample_per_class(scan.index, 2)
    folder = data.class_folders(rows)
    assert folder.parent == config.OUTPUT_DIR / "class-folders", "by default under the outputs"
    linked = sorted(p for p in folder.rglob("*") if p.is_file())
    assert sorted(p.parent.name for p in linked) == sorted(rows["label"])
    assert sorted(str(p.resolve()) for p in linked) == sorted(str(pathlib.Path(p).resolve()) for p in rows["path"])
    other = data.class_folders(rows.head(3))
    assert other != folder and folder.exists(), "other rows, another folder: one call never empties another's"
    assert data.class_folders(rows) == folder and len(list(folder.rglob("*.png"))) == len(rows), "made again"


@pytest.mark.parametrize("draw, axes", [
    (lambda name: plots.confusion_matrices(np.array([[3, 1], [0, 2]]), ["COVID", "Normal"], save_as=name), 2),
    (lambda name: plots.image_versions({"a": np.zeros((2, 8, 8), np.uint8), "b": np.ones((2, 8, 8), np.uint8)},
                                       save_as=name), 4),
])
def test_figures_draw_one_panel_per_item_and_save(figure_dir, draw, axes):
    figure = draw("check")
    assert len(figure.axes) == axes
    assert (figure_dir / "check.png").stat().st_size > 1000
    assert draw(None) is not None and len(list(figure_dir.iterdir())) == 1


def test_figures_carry_what_they_show(phantom_root, make_tree):
    """Issue 25: the footer is each figure's own (`caption=`), never a module-wide setting that every later figure
    inherits. Issue 37: plain functions, no object that reaches them through a registry."""
    class FakeRun:
        def __init__(self, pretrained, on_phantoms):
            self.pretrained, self.on_phantoms = pretrained, on_phantoms

    caption = plots.caption(find_dataset(phantom_root), FakeRun(False, True))
    assert caption.startswith("images: generated PHANTOM radiographs · RANDOM-INIT (not pretrained) backbone "
                              "trained on PHANTOMS · profile ")
    figure = plots.confusion_matrices(np.eye(2, dtype=int), ["COVID", "Normal"], caption=caption)
    assert caption in [t.get_text() for t in figure.texts]
    real = plots.caption(find_dataset(make_tree()), FakeRun(True, False))
    assert "images: real radiographs" in real and "ImageNet-pretrained backbone trained on real" in real
    plain = plots.confusion_matrices(np.eye(2, dtype=int), ["COVID", "Normal"])
    assert not any("images:" in t.get_text() for t in plain.texts), "a figure drawn without a caption has none"
    assert not hasattr(plots, "Figures") and not hasattr(plots, "_FIGURES")


def test_describe_inputs_reports_each_channel():
    grey = np.full((2, 4, 4, 1), 255, dtype=np.uint8)
    inputs = {n: pipeline.to_model_input(grey, n).numpy() for n in ("rescale", "resnet50")}
    table = pipeline.describe_inputs(inputs)
    assert table.loc[("rescale", 0), "max"] == 1.0
    assert table.loc[("resnet50", 2), "mean"] == pytest.approx(255 - 123.68, abs=1e-3)


def test_pipeline_comparison_covers_both_pipelines_and_epochs(scan):
    table = timing.compare_input_pipelines(scan.index, CLASSES, image_size=32, batch_size=8, epochs=2)
    assert len(table) == 4 and (table["images_per_second"] > 0).all()
    assert table.groupby("pipeline")["epoch"].apply(list).to_dict() == {
        "helpers.pipeline": [1, 2], "image_dataset_from_directory": [1, 2]}


def test_pipeline_comparison_without_the_cache_decodes_every_file_every_epoch(scan, monkeypatch):
    """Issue 25: notebook 02's first exercise measures what the cache saves with the same function."""
    calls = []
    original = pipeline.load_grayscale
    monkeypatch.setattr(pipeline, "load_grayscale", lambda *a: calls.append(a) or original(*a))
    index = data.sample_per_class(scan.index, 3)
    table = timing.compare_input_pipelines(index, CLASSES, image_size=32, batch_size=8, epochs=2, cache=False)
    assert len(calls) == 2 * len(index), "decoded again in the second epoch"
    assert set(table["pipeline"]) == {"helpers.pipeline, no cache", "image_dataset_from_directory"}
    calls.clear()
    timing.compare_input_pipelines(index, CLASSES, image_size=32, batch_size=8, epochs=2)
    assert len(calls) == len(index), "decoded once, into the cache"


def test_seconds_per_call_is_the_median_after_warmup():
    calls = []
    assert timing.seconds_per_call(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5


def test_device_report_names_versions_devices_and_profile():
    report = devices.device_report(config.choose_profile({"CXR_FAST": "1"}))
    assert "TensorFlow" in report and "Keras" in report
    assert "Devices: CPU only" in report or "Devices:" in report
    assert "profile 'fast'" in report


def test_data_statement_says_phantom_or_real_sampled_or_not_and_masks_or_not(phantom_root, make_tree):
    demo, full = config.choose_profile({}, has_gpu=False), config.choose_profile({}, has_gpu=True)
    assert "GENERATED PHANTOM" in datasets.data_statement(find_dataset(phantom_root), demo)
    real = find_dataset(make_tree())
    statement = datasets.data_statement(real, demo)
    assert "real COVID-19 Radiography Database" in statement
    assert f"use {demo.real_per_class} images per class sampled from it" in statement
    assert "sampled" not in datasets.data_statement(real, full) and "no lung masks" not in statement
    without_masks = find_dataset(make_tree(masks=False))
    assert "This copy has no lung masks" in datasets.data_statement(without_masks, full)


def test_paper_bs_statement_says_what_the_profile_shrinks_even_on_phantoms(phantom_root):
    demo, full = config.choose_profile({}, has_gpu=False), config.choose_profile({}, has_gpu=True)
    layout = find_dataset(phantom_root)
    statement = datasets.data_statement(layout, demo, paper_b=True)
    assert "GENERATED PHANTOM" in statement
    assert f"draws {demo.subsample_per_class} images per class instead of the paper's 900" in statement
    assert f"trains {demo.fixed_epochs} epochs instead of 20 (CXR_FIXED_EPOCHS)" in statement
    assert "shrinks" not in datasets.data_statement(layout, demo)  # only where Paper B is run
    assert "shrinks" not in datasets.data_statement(layout, full, paper_b=True)  # the paper's sizes


def test_failed_download_falls_back_to_phantoms_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(config, "PHANTOM_DIR", tmp_path / "data" / "phantoms")

    def offline():
        raise datasets.DatasetError("could not download it (offline)")

    monkeypatch.setattr(datasets, "download_dataset", offline)
    layout = datasets.active_dataset(config.choose_profile({"CXR_FAST": "1"}), download=True)
    assert layout.is_phantom
    printed = capsys.readouterr().out
    assert "Using generated phantoms instead of the real dataset: could not download" in printed
