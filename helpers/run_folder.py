"""The files of a run folder, named once. `training` writes them, `runs.Run` reads them, `evaluation` adds its
metrics, `sharing` packs the finished ones: each by these names, so that a renamed file is renamed everywhere.

  settings.json          what was asked and used (recipe, sizes, data, device policy), scores once finished
  split.csv              the split the run trained, validated and was tested on (with each image's content hash)
  history.csv            one row per epoch: losses, accuracies, seconds
  model.keras            the final model, without optimizer state (written when the run finishes)
  checkpoints/state.json for resuming: the last finished epoch and the files that hold it (removed at the end)
  metrics.json, test_predictions.csv   written by `evaluation.evaluate_run`, through the functions at the end
"""

from pathlib import Path

import pandas as pd

from helpers import files

SETTINGS = "settings.json"
SPLIT = "split.csv"
HISTORY = "history.csv"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
STATE = "state.json"  # in CHECKPOINTS
METRICS = "metrics.json"
TEST_PREDICTIONS = "test_predictions.csv"
SHARED = (SETTINGS, SPLIT, HISTORY, MODEL)  # what a finished run is, for another machine: never its checkpoints


# --------------------------------------------------------------------------- what evaluation adds


def write_metrics(folder, metrics: dict) -> Path:
    """metrics.json, whole or absent (an interrupted write leaves the previous one)."""
    return files.write_json(Path(folder) / METRICS, metrics)


def read_metrics(folder) -> dict | None:
    """The saved metrics.json as written, or None if the run was never evaluated."""
    return files.read_json(Path(folder) / METRICS)


def write_test_predictions(folder, predictions: pd.DataFrame) -> Path:
    """One row per scored test image: its relpath, label, probabilities, prediction and confidence."""
    with files.atomic_path(Path(folder) / TEST_PREDICTIONS) as tmp:
        predictions.to_csv(tmp, index=False)
    return Path(folder) / TEST_PREDICTIONS


def read_test_predictions(folder) -> pd.DataFrame:
    """The saved test predictions, indexed by relpath (what a paired comparison matches images by)."""
    path = Path(folder) / TEST_PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: evaluate the run first (`python -m helpers evaluate --run "
                                f"{folder}`)")
    return pd.read_csv(path).set_index("relpath")


def metrics_predate_model(folder) -> bool:
    """Whether the saved metrics were computed before the run's model was last written (retrained since)."""
    metrics, model = Path(folder) / METRICS, Path(folder) / MODEL
    return metrics.exists() and model.exists() and metrics.stat().st_mtime < model.stat().st_mtime
