"""Shared fixtures: small phantom datasets and a builder for hand-made dataset trees."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import config
from helpers.data import CLASSES
from helpers.synthetic import generate_phantoms
from helpers.training import read_history, train_run


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom set (10 per class, 64 px) shared read-only by many tests."""
    return generate_phantoms(tmp_path_factory.mktemp("phantoms"), per_class=10, size=64, seed=0)


def gray(value: int = 128, size: int = 16, seed: int | None = None) -> np.ndarray:
    """A small grayscale picture: flat, or random when a seed is given (distinct content)."""
    if seed is None:
        return np.full((size, size), value, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, format="PNG")
    return path


@pytest.fixture
def make_tree(tmp_path):
    """Build a dataset tree: make_tree({"COVID": 3, ...}, layout="kaggle"|"flat", names=...)."""

    def build(counts=None, layout="kaggle", names=None, top="COVID-19_Radiography_Dataset") -> Path:
        counts = counts or {c: 3 for c in CLASSES}
        names = names or {}
        root = tmp_path / "download" / top
        for cls, n in counts.items():
            folder_name = names.get(cls, cls)
            images = root / folder_name / "images" if layout == "kaggle" else root / folder_name
            for i in range(1, n + 1):
                write_png(images / f"{folder_name}-{i}.png", gray(seed=1000 * CLASSES.index(cls) + i))
                if layout == "kaggle":
                    write_png(root / folder_name / "masks" / f"{folder_name}-{i}.png", gray(255))
        return tmp_path / "download"

    return build


class Interrupted(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


TINY = {"task": 4, "image_size": 32, "batch_size": 8, "weights": "none"}


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, phantom_root):
    """A tiny paper_a run interrupted after its 2nd epoch (of 3), then resumed by the same call:
    (run folder, settings, history at the interruption, epochs run after resuming)."""
    run = tmp_path_factory.mktemp("run") / "paper_a"
    quiet = {"log": lambda *_: None, **TINY}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "OUTPUT_DIR", tmp_path_factory.mktemp("outputs"))
        with pytest.raises(Interrupted):
            train_run(run, phantom_root, "paper_a", epochs=3, callbacks=[InterruptAfter(1)], **quiet)
        interrupted_history = read_history(run)
        recorder = RecordEpochs()
        settings = train_run(run, phantom_root, "paper_a", epochs=3, callbacks=[recorder], **quiet)
    return run, settings, interrupted_history, recorder.epochs
