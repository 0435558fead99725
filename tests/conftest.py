"""Shared fixtures: small phantom datasets and a builder for hand-made dataset trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data import CLASSES
from helpers.synthetic import generate_phantoms


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
