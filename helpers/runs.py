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


def read_images(paths, size: int) -> tuple[np.ndarray, list]:
    """The readable images as one uint8 array (N, size, size), and per path its error or None,
    so one bad file is reported instead of stopping the rest."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_grayscale(path, size))
            errors.append(None)
        except BadImageError as exc:
            errors.append(str(exc))
    return (np.stack(images) if images else np.zeros((0, size, size), np.uint8)), errors


def predict_pixels(model, pixels, normalisation: str, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for uint8 grayscale images (N, H, W), a chunk at a time so that no float
    copy of a large set is ever held."""
    chunks = [np.asarray(model(to_model_input(pixels[i:i + batch_size, ..., np.newaxis], normalisation),
                               training=False), dtype=np.float64)
              for i in range(0, len(pixels), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, model.output.shape[-1]))


def predict_images(run_dir, paths, model=None) -> pd.DataFrame:
    """One row per image: the probability of every class, the predicted class, and an error if the
    image could not be read (the other images are still predicted)."""
    settings = read_settings(run_dir)
    model = model or load_model(run_dir)
    classes = settings["classes"]
    pixels, errors = read_images(paths, settings["image_size"])
    table = pd.DataFrame({"image": [str(p) for p in paths], "error": errors})
    for cls in classes:
        table[cls] = np.nan
    table["predicted"] = None
    if len(pixels):
        probabilities = predict_pixels(model, pixels, settings["normalisation"])
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
