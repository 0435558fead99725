"""Small, honest timing helpers shared by the notebooks and benchmarks/.

They time whole epochs or repeated calls after a warm-up, and report rates, never single runs of
a few milliseconds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers.data import class_folders
from helpers.pipeline import build_dataset


def epoch_rates(dataset, epochs: int = 2) -> list[float]:
    """Images per second of each full pass over a batched dataset."""
    rates = []
    for _ in range(epochs):
        started, images = time.perf_counter(), 0
        for batch, _labels in dataset:
            images += int(batch.shape[0])
        rates.append(images / (time.perf_counter() - started))
    return rates


def seconds_per_call(function, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of `function()` after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(sorted(times)[len(times) // 2])


def compare_input_pipelines(index: pd.DataFrame, classes, image_size: int, batch_size: int = 32,
                            epochs: int = 2, cache: bool = True) -> pd.DataFrame:
    """Images per second, epoch by epoch, of the course pipeline and of
    `keras.utils.image_dataset_from_directory` on the same files, size, batch and normalisation; with `cache`
    False, the course pipeline decodes every file every epoch too, to see what its cache saves."""
    class_id = {c: i for i, c in enumerate(classes)}
    started = time.perf_counter()
    ours = build_dataset(index["path"], index["label"].map(class_id), len(classes), image_size,
                         batch_size, training=True, cache=cache)  # decodes every file into its cache: part of epoch 1
    filling = time.perf_counter() - started
    rates = epoch_rates(ours, epochs)
    rates[0] = len(index) / (filling + len(index) / rates[0])
    name = "helpers.pipeline" if cache else "helpers.pipeline, no cache"
    rows = [(name, e + 1, r) for e, r in enumerate(rates)]
    with tempfile.TemporaryDirectory() as tmp:
        baseline = keras.utils.image_dataset_from_directory(
            class_folders(index, Path(tmp)), label_mode="categorical", class_names=list(classes),
            image_size=(image_size, image_size), batch_size=batch_size, seed=0, follow_links=True,
            verbose=False,
        )
        preprocess = keras.applications.resnet50.preprocess_input
        baseline = baseline.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        baseline = baseline.prefetch(tf.data.AUTOTUNE)
        rows += [("image_dataset_from_directory", e + 1, r)
                 for e, r in enumerate(epoch_rates(baseline, epochs))]
    return pd.DataFrame(rows, columns=["pipeline", "epoch", "images_per_second"])


def resolution_costs(sizes=(128, 224), batch_size: int = 4, repeats: int = 3) -> pd.DataFrame:
    """What an input size costs a ResNet50 (no top, random weights: only the shapes and time matter):
    the last block's feature map, i.e. the grid a class activation map is drawn on, and the measured
    time of one forward pass."""
    rows = []
    for size in sizes:
        backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))
        batch = np.zeros((batch_size, size, size, 3), dtype=np.float32)
        seconds = seconds_per_call(lambda b=backbone, x=batch: b(x, training=False), repeats=repeats)
        grid = backbone.output_shape[1]
        rows.append({"image_size": size, "pixels": size * size, "feature_map": f"{grid}×{grid}×2048",
                     "cam_cells": grid * grid, "seconds_per_batch": seconds})
        keras.backend.clear_session()
    table = pd.DataFrame(rows)
    table["relative_time"] = table["seconds_per_batch"] / table["seconds_per_batch"].iloc[0]
    table["relative_pixels"] = table["pixels"] / table["pixels"].iloc[0]
    return table
