"""A trained run folder (see `helpers.training`): its settings, its model, and predictions with it."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from helpers.data import BadImageError, load_grayscale
from helpers.pipeline import to_model_input


class RunNotFoundError(Exception):
    """The folder is not a finished training run."""


def read_settings(run_dir) -> dict:
    path = Path(run_dir) / "settings.json"
    if not path.exists():
        raise RunNotFoundError(f"{run_dir} is not a training run: expected {path.name} (made by "
                               "`python -m helpers train`); found none")
    return json.loads(path.read_text())


def load_model(run_dir):
    """The run's final model, loaded in Keras' safe mode (no Lambda layers or arbitrary code)."""
    settings = read_settings(run_dir)
    path = Path(run_dir) / "model.keras"
    if not settings.get("finished") or not path.exists():
        raise RunNotFoundError(f"{run_dir} has not finished training: re-run the same train command to resume")
    return keras.models.load_model(path, safe_mode=True)


def predict_images(run_dir, paths, model=None) -> pd.DataFrame:
    """One row per image: the probability of every class, the predicted class, and an error if the
    image could not be read (the other images are still predicted)."""
    settings = read_settings(run_dir)
    model = model or load_model(run_dir)
    classes, size = settings["classes"], settings["image_size"]
    rows, images = [], []
    for path in paths:
        row = {"image": str(path), "error": None}
        try:
            images.append(load_grayscale(path, size)[..., np.newaxis])
        except BadImageError as exc:
            row["error"] = str(exc)
        rows.append(row)
    table = pd.DataFrame(rows)
    for cls in classes:
        table[cls] = np.nan
    table["predicted"] = None
    if images:
        batch = to_model_input(np.stack(images), settings["normalisation"])
        probabilities = np.asarray(model.predict(batch, verbose=0), dtype=np.float64)
        ok = table["error"].isna().to_numpy()
        table.loc[ok, list(classes)] = probabilities
        table.loc[ok, "predicted"] = [classes[i] for i in probabilities.argmax(axis=1)]
    return table[["image", *classes, "predicted", "error"]]


def format_predictions(table: pd.DataFrame, classes) -> str:
    """A table like Paper B's Tables I and II: one image per row, a probability per class."""
    name_width = max(12, *(len(Path(p).name) for p in table["image"])) + 2
    header = f"{'image':<{name_width}}" + "".join(f"{c:>17}" for c in classes) + f"  {'predicted':<16}"
    lines = [header, "-" * len(header)]
    for _, row in table.iterrows():
        name = f"{Path(row['image']).name:<{name_width}}"
        if isinstance(row["error"], str):
            lines.append(name + f"error: {row['error']}")
        else:
            lines.append(name + "".join(f"{row[c]:>17.4f}" for c in classes) + f"  {row['predicted']:<16}")
    return "\n".join(lines)


def compare_runs(run_dirs) -> pd.DataFrame:
    """Key facts of several runs side by side (validation only: the test set is for notebook 04)."""
    rows = {}
    for run_dir in run_dirs:
        s = read_settings(run_dir)
        rows[s["recipe"]] = {
            "backbone weights": s["weights_used"] + ("" if s["pretrained"] else "  (random init!)"),
            "image size": s["image_size"],
            "normalisation": s["normalisation"],
            "epochs (warm-up + main)": f"{s['epochs_run']} ({s['warmup_epochs']} + "
                                       f"{s['epochs_run'] - s['warmup_epochs']})",
            "stopped early": s["stopped_early"],
            "BatchNorm": s["batchnorm"],
            "validation accuracy": s["validation"]["accuracy"],
            "validation accuracy before BatchNorm re-estimation":
                s.get("validation_before_batchnorm_reestimation", {}).get("accuracy"),
            "training seconds": s["train_seconds_this_session"],
        }
    return pd.DataFrame(rows)
