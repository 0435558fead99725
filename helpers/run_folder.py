"""The files of a run folder, named once. `training` writes them, `runs.Run` reads them, `evaluation` adds its
metrics, `sharing` packs the finished ones: each by these names, so that a renamed file is renamed everywhere.

  settings.json          what was asked and used (recipe, sizes, data, device policy), scores once finished
  split.csv              the split the run trained, validated and was tested on (with each image's content hash)
  history.csv            one row per epoch: losses, accuracies, seconds
  model.keras            the final model, without optimizer state (written when the run finishes)
  checkpoints/state.json for resuming: the last finished epoch and the files that hold it (removed at the end)
  metrics.json, test_predictions.csv   written by `evaluation.evaluate_run`
"""

SETTINGS = "settings.json"
SPLIT = "split.csv"
HISTORY = "history.csv"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
STATE = "state.json"  # in CHECKPOINTS
METRICS = "metrics.json"
TEST_PREDICTIONS = "test_predictions.csv"
SHARED = (SETTINGS, SPLIT, HISTORY, MODEL)  # what a finished run is, for another machine: never its checkpoints
