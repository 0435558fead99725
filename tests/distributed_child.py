"""A training process for tests/test_devices.py. The CPU's logical devices (CXR_LOGICAL_DEVICES) and a multi-worker
cluster (TF_CONFIG) must be set before TensorFlow starts, so each such run is a process of its own:

    python -m tests.distributed_child train ROOT RUN RECIPE --epochs N [--weights FILE] [--pause-after K --marker F]
    python -m tests.distributed_child batchnorm

`train` trains RECIPE (a toy-backbone recipe of tests.conftest, or a course recipe) on a paper_a split of the phantom
set ROOT with `training.train`, as the command line does, then loads the finished run as the notebooks do and predicts
its test part. It prints one JSON line last: the settings, its log, the test predictions, every file it created, moved
or deleted, and every weights file it loaded.
With --pause-after K it stops after epoch K (once its files are written) and waits there to be killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

# isort: off
import helpers  # noqa: F401 - first: it splits the CPU (CXR_LOGICAL_DEVICES) before TensorFlow starts
# isort: on
import keras
import numpy as np

from helpers.datasets import find_dataset
from helpers.engine import devices, distribute, storage
from helpers.engine.training import train
from helpers.recipes import RECIPES
from helpers.runs import Run
from helpers.tasks import task_classes
from tests.conftest import TOY_IMPROVED, TOY_PAPER_A, phantom_split

TOY_RECIPES = {recipe.name: recipe for recipe in (TOY_PAPER_A, TOY_IMPROVED)}


class PauseAfter(keras.callbacks.Callback):
    """After epoch `epochs` (its checkpoint and state written), say so in `marker` and wait to be killed."""

    def __init__(self, epochs: int, marker: Path):
        super().__init__()
        self.epochs, self.marker = epochs, marker

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.marker.write_text(str(os.getpid()))
            time.sleep(600)


def record_changes() -> list:
    """Every file or folder this process creates, renames into place or deletes, in order ("replace PATH", …)."""
    changes = []

    def recording(module, name):
        real = getattr(module, name)

        def wrapper(path, *args, **kwargs):
            target = args[0] if name in ("replace", "rename") else path  # where a rename lands
            changes.append(f"{name} {target}")
            return real(path, *args, **kwargs)

        setattr(module, name, wrapper)

    for name in ("replace", "rename", "unlink", "remove", "mkdir", "rmdir"):
        recording(os, name)
    recording(shutil, "rmtree")
    return changes


def record_weight_loads() -> list:
    """Every epoch's weights this process loads into a model (best epochs), in order."""
    loaded = []
    real_load = storage.load_epoch_weights

    def load_epoch_weights(model, run_dir, epoch):
        loaded.append(str(storage.checkpoints(run_dir) / storage.weights_name(epoch)))
        return real_load(model, run_dir, epoch)

    storage.load_epoch_weights = load_epoch_weights
    return loaded


def train_child(args) -> dict:
    changes, loaded = record_changes(), record_weight_loads()
    strategy = distribute.strategy_for(devices.device_policy())  # as the CLI: before any other TensorFlow op
    recipe = TOY_RECIPES.get(args.recipe) or RECIPES[args.recipe]
    if args.learning_rate:  # one rate for every phase: a large one makes the validation loss go up and down
        recipe = dataclasses.replace(recipe, warmup_learning_rate=args.learning_rate, learning_rate=args.learning_rate,
                                     scratch_learning_rate=args.learning_rate)
    split = phantom_split(args.root)
    callbacks = [PauseAfter(args.pause_after, Path(args.marker))] if args.pause_after else []
    logs = []

    def log(line):
        logs.append(line)
        print(line, file=sys.stderr)

    settings = train(args.run, split, recipe, task_classes(4), find_dataset(args.root).root, epochs=args.epochs,
                     image_size=args.image_size, batch_size=args.batch_size, weights=args.weights,
                     callbacks=callbacks, log=log).to_dict()
    result = {"settings": settings, "replicas": strategy.num_replicas_in_sync, "changes": changes, "logs": logs,
              "loaded_weights": loaded}
    if settings.get("finished"):
        test = Run(args.run).predict_part("test", verbose=0)  # a run loaded as the notebooks load it
        result["test_relpaths"] = test["relpath"].tolist()
        result["test_probabilities"] = test[settings["classes"]].to_numpy().tolist()
    return result


def batchnorm_child(args) -> dict:
    """Keras 3 keeps BatchNorm's moving statistics per replica; after averaging, every replica holds their mean
    (moving means here: the variances' mean is not the variance of the whole batch)."""
    strategy = distribute.strategy_for(devices.device_policy())
    with strategy.scope():
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.BatchNormalization()])
        model.compile("sgd", "mse")
    images = np.concatenate([np.zeros((16, 8, 8, 1)), np.full((16, 8, 8, 1), 10.0)]).astype("float32")
    model.fit(images, images, batch_size=32, epochs=1, shuffle=False, verbose=0)  # replica 0: zeros, replica 1: tens

    def per_replica():
        return [float(np.mean(value)) for value in
                strategy.experimental_local_results(model.layers[0].moving_mean.value)]

    before = per_replica()
    average = distribute.batchnorm_averager(model, strategy)
    if average is not None:
        average()
    return {"before": before, "after": per_replica(), "averaged": average is not None}


def main() -> None:
    parser = argparse.ArgumentParser()
    roles = parser.add_subparsers(dest="role", required=True)
    training = roles.add_parser("train")
    training.add_argument("root")
    training.add_argument("run")
    training.add_argument("recipe")
    training.add_argument("--epochs", type=int, default=3)
    training.add_argument("--image-size", type=int, default=32)
    training.add_argument("--batch-size", type=int, default=8)
    training.add_argument("--weights", default="none")
    training.add_argument("--learning-rate", type=float, default=0.0)
    training.add_argument("--pause-after", type=int, default=0)
    training.add_argument("--marker", default="")
    roles.add_parser("batchnorm")
    args = parser.parse_args()
    result = train_child(args) if args.role == "train" else batchnorm_child(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
