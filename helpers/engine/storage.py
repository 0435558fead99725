"""A run folder: its files, named once and read and written only here, and `Run`, a run folder as an object.

`training` writes a run through these functions, `Run` reads it, `evaluation` adds its metrics, `sharing` packs the
finished ones: a renamed file is renamed everywhere, and a damaged one is named the same way wherever it is met.

  settings.json          what was asked and used (recipe, sizes, data, device policy), scores once finished
  split.csv              the split the run trained, validated and was tested on (with each image's content hash)
  history.csv            one row per epoch: losses, accuracies, seconds
  model.keras            the final model, without optimizer state (written when the run finishes)
  checkpoints/           for resuming (removed at the end): state.json (the last finished epoch and the files that
                         hold it), the newest epoch's full model, and the weights alone of the epochs still needed
  metrics.json, test_predictions.csv   written by `evaluation.evaluate_run`, through the functions below
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from helpers import config, files
from helpers.datasets import DatasetLayout, dataset_tag
from helpers.models import architecture, keras_error_line, rebuild, weights_by_path
from helpers.recipes import Recipe
from helpers.splits import fingerprint, load_split, save_split
from helpers.tasks import CLASSES

SETTINGS = "settings.json"
SPLIT = "split.csv"
HISTORY = "history.csv"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
STATE = "state.json"  # in CHECKPOINTS
METRICS = "metrics.json"
TEST_PREDICTIONS = "test_predictions.csv"
PORTABLE_WEIGHTS = "model.weights.npz"  # in a run archive: every weight by path, the model rebuilt on import
SHARED = (SETTINGS, SPLIT, HISTORY, PORTABLE_WEIGHTS)  # what a finished run is, for another machine (`sharing`)
SHARED_BEFORE_ISSUE_34 = (SETTINGS, SPLIT, HISTORY, MODEL)  # archives that carried the exporter's .keras file
EPOCH_WEIGHTS = "epoch-{:03d}.weights.npz"  # in CHECKPOINTS: the weights alone, no optimizer (`save_weights`)
OLD_BEST_WEIGHTS = "best-epoch-{:03d}.weights.h5"  # runs before issue 21: weights with the optimizer's slots
EPOCH_MODEL = "epoch-{:03d}.keras"  # in CHECKPOINTS: an epoch's full model, optimizer included


class RunFolderError(ValueError):
    """A file of a run folder is there but cannot be used (cut short, edited by hand, written by an older version):
    the run is left as it is, never emptied or trained over, and the one-line message names the file and the run."""


class RunNotFoundError(Exception):
    """The folder is not a (finished) training run."""


def damaged(path: Path, run_dir: Path, why: str, remedy: str | None = None) -> RunFolderError:
    """The error for a damaged file of run `run_dir`: which file, why, and how to start again on purpose."""
    remedy = remedy or f"restore the file, or delete the folder {run_dir} to start the run again"
    return RunFolderError(f"{path} cannot be read ({why}); run {run_dir} was left as it is: {remedy}")


def _read_object(path: Path, run_dir: Path, remedy: str | None = None):
    """The JSON object in a file of a run folder, None if there is no such file (a run not that far yet)."""
    try:
        found = files.read_json(path)
    except files.UnreadableFileError as exc:
        raise damaged(path, run_dir, exc.reason, remedy) from None
    if path.exists() and not isinstance(found, dict):
        raise damaged(path, run_dir, f"not a JSON object: {json.dumps(found)[:40]}", remedy)
    return found


# --------------------------------------------------------------------------- settings, split, history


def course_runs(layout: DatasetLayout, profile_name: str) -> Path:
    """Where the course keeps its runs of one dataset and profile: the notebooks look there, `run import` puts a
    teacher's runs there."""
    return config.OUTPUT_DIR / "runs" / dataset_tag(layout) / profile_name


def classes_of(split: pd.DataFrame) -> tuple[str, ...]:
    """The task's classes, in the canonical label order, from the labels a split holds."""
    return tuple(c for c in CLASSES if c in set(split["label"]))


def course_run_folder(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, repeat: int = 0,
                      profile_name: str | None = None) -> Path:
    """Where the course keeps a run: one per dataset, profile, recipe (contents, not only its name), split and
    repeat, so that a changed recipe or a changed split never lands in an old run's folder. The notebooks look for
    their runs there, and `run import` puts a teacher's there, whatever folder they were trained in."""
    own = split[split["repeat"] == repeat]  # other repeats of a sub-sample split do not change this run
    key = hashlib.blake2b(json.dumps([recipe.to_dict(), fingerprint(own)], sort_keys=True).encode(),
                          digest_size=4).hexdigest()
    task = len(classes_of(split))
    name = f"{recipe.name}_task{task}" + (f"_repeat{repeat}" if split["repeat"].nunique() > 1 else "") + f"-{key}"
    return course_runs(layout, profile_name or config.active_profile().name) / name


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a run is: settings.json as one object, the only author of its keys. Training builds it stage by stage
    (asked for, the weights found, started, finished) with `dataclasses.replace`; resume, sharing and `Run` read its
    attributes. Keys another version of the course wrote, and this one does not know, are kept in `extra`."""

    # asked for: these ten are the run's identity (`resume.IDENTITY`)
    recipe: dict
    classes: list
    data_root: str
    split_fingerprint: str
    repeat: int
    image_size: int
    epochs: int
    batch_size: int
    weights_requested: str
    seed: int
    monitored_on: str = "val"
    data_used: dict | None = None
    unreadable_files: dict = dataclasses.field(default_factory=dict)
    global_batch_size: int | None = None
    # the backbone's weights as found
    weights_used: str | None = None
    weights_fallback_reason: str | None = None
    # written when training starts
    pretrained: bool | None = None
    warmup_epochs: int = 0
    main_epochs: int | None = None
    learning_rate: float | None = None
    class_weights: dict | None = None
    batchnorm: str | None = None
    profile: str | None = None
    profile_reason: str | None = None
    device_policy: dict | None = None
    versions: dict | None = None
    finished: bool = False
    # once finished
    scores: dict | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    train_seconds: float | None = None
    batchnorm_reestimation_batches: int | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    _TYPES = {"recipe": dict, "classes": list, "data_root": str, "split_fingerprint": str, "repeat": int,
              "image_size": int, "epochs": int, "batch_size": int, "weights_requested": str, "seed": int}

    @classmethod
    def from_dict(cls, raw: dict) -> RunSettings:
        """Checked: a required key missing or of the wrong JSON type is a ValueError that names it."""
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object; found {type(raw).__name__}")
        for key, kind in cls._TYPES.items():
            if not isinstance(raw.get(key), kind) or (kind is int and isinstance(raw.get(key), bool)):
                raise ValueError(f"{key!r} should be {kind.__name__}; found {raw.get(key)!r:.60}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in raw.items() if k in known and v is not None},
                   extra={k: v for k, v in raw.items() if k not in known})

    def to_dict(self) -> dict:
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **found}

    def but(self, **changes) -> RunSettings:
        """A copy with `changes` (its unknown keys kept)."""
        return dataclasses.replace(self, **changes)


def read_settings(run_dir, remedy: str | None = None) -> RunSettings | None:
    """settings.json, or None in a folder no run has started in; a damaged one is named."""
    path = Path(run_dir) / SETTINGS
    found = _read_object(path, Path(run_dir), remedy)
    if found is None:
        return None
    try:
        return RunSettings.from_dict(found)
    except ValueError as exc:
        raise damaged(path, Path(run_dir), str(exc), remedy) from None


def write_settings(run_dir, settings: RunSettings) -> None:
    files.write_json(Path(run_dir) / SETTINGS, settings.to_dict())


def settings_path(run_dir) -> Path:
    """Where settings.json is: for messages that name it, and to tell a run folder from any other."""
    return Path(run_dir) / SETTINGS


def is_run_folder(path) -> bool:
    return settings_path(path).exists()


def run_folders_under(source) -> list[Path]:
    """Every run folder beneath `source` (never a checkpoint's own files)."""
    return sorted(found.parent for found in Path(source).rglob(SETTINGS) if CHECKPOINTS not in found.parts)


def read_split(run_dir, data_root) -> pd.DataFrame:
    """The split the run was given, its paths resolved against `data_root` (raises if missing or unreadable)."""
    return load_split(Path(run_dir) / SPLIT, data_root)


def write_split(run_dir, split: pd.DataFrame) -> None:
    save_split(split, Path(run_dir) / SPLIT)


def split_path(run_dir) -> Path:
    return Path(run_dir) / SPLIT


def has_trained(run_dir) -> bool:
    """Whether an epoch of the run was saved (a checkpoint or a history row): work that must not be trained over."""
    return (Path(run_dir) / CHECKPOINTS).exists() or (Path(run_dir) / HISTORY).exists()


def read_history(run_dir) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / HISTORY)


def write_history(run_dir, rows: list) -> None:
    """One row per finished epoch; no rows, no file (a run started again)."""
    path = Path(run_dir) / HISTORY
    if rows:
        with files.atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the model


def model_file_problem(path: Path) -> str | None:
    """Why a saved .keras file cannot be loaded, or None if it looks whole: a zip archive holding the model's config
    and weights. Keras calls a truncated or empty one "File not found", although it is there."""
    if not path.exists():
        return "missing"
    if path.stat().st_size == 0:
        return "empty"
    try:
        with zipfile.ZipFile(path) as archive:
            absent = {"config.json", "model.weights.h5"} - set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return f"cut short or not a Keras file: {path.stat().st_size:,} bytes that are no zip archive"
    return f"cut short or not a Keras file: no {' or '.join(sorted(absent))} inside" if absent else None


def model_path(run_dir) -> Path:
    return Path(run_dir) / MODEL


def save_model(model, run_dir) -> None:
    """The final model's weights and architecture without the optimizer state (a third of the size), atomically."""
    clean = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    clean.set_weights(model.get_weights())
    with files.atomic_path(model_path(run_dir)) as tmp:
        clean.save(tmp)


def load_model(run_dir):
    """The final model, in Keras' safe mode (no Lambda layers or arbitrary code). A damaged file is named as such
    (Keras calls a truncated one "File not found")."""
    path, remedy = model_path(run_dir), f"delete the folder {run_dir} and train the run again"
    problem = model_file_problem(path)
    if problem:
        raise damaged(path, Path(run_dir), problem, remedy)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - a whole zip with damaged insides: Keras' error names no run
        why, saved_by = f"its contents do not load: {keras_error_line(exc)}", saved_with_keras(run_dir)
        if saved_by and saved_by != keras.__version__:  # one Keras may not read another's configuration
            why = f"it was saved by Keras {saved_by} and does not load on this Keras {keras.__version__} ({why})"
            remedy = (f"install keras=={saved_by}, or export the run where it was trained (`python -m helpers run "
                      "export`: its archives load on any Keras 3) and import that")
        raise damaged(path, Path(run_dir), why, remedy) from exc


def saved_with_keras(run_dir) -> str | None:
    """The Keras version that trained the run (settings.json records it), or None if unknown."""
    with contextlib.suppress(ValueError, OSError):
        versions = getattr(read_settings(run_dir), "versions", None)
        return versions.get("keras") if isinstance(versions, dict) else None
    return None


def shared_files(run_dir) -> tuple[dict[str, bytes], dict]:
    """A finished run as another machine takes it, whatever its Keras: ({name: bytes} of `SHARED`, architecture).
    Its settings, split and history as they are, and its model as weights by path plus the architecture that
    `models.rebuild` makes again there; never its checkpoints. Rebuilt here first, so that a run the course's code
    cannot make again is refused before a class receives it."""
    run_dir = Path(run_dir)
    model, recipe = load_model(run_dir), Recipe.from_dict(read_settings(run_dir).recipe)
    built = architecture(model, recipe.head, recipe.backbone, recipe.dropout, recipe.normalisation)
    weights = weights_by_path(model)
    rebuild(built, weights)
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    found = {name: (run_dir / name).read_bytes() for name in SHARED if name != PORTABLE_WEIGHTS}
    return {**found, PORTABLE_WEIGHTS: buffer.getvalue()}, built


def write_shared_files(run_dir, shared: dict[str, bytes]) -> None:
    """A run folder's files from `shared_files`' output (or an older archive's, with the exporter's model.keras), but
    for the weights: `save_rebuilt_model` makes the model from them."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in shared.items():
        if name != PORTABLE_WEIGHTS:
            (run_dir / name).write_bytes(data)


def save_rebuilt_model(run_dir, shared: dict[str, bytes], built: dict | None) -> bool:
    """The model of `shared_files`' output, rebuilt by this machine's code and Keras, saved as its own model.keras;
    False for an older archive's files, which hold the exporter's model.keras instead of weights."""
    if PORTABLE_WEIGHTS not in shared:
        return False
    if not isinstance(built, dict):
        raise ValueError("the manifest does not describe the model's architecture")
    with np.load(io.BytesIO(shared[PORTABLE_WEIGHTS]), allow_pickle=False) as saved:
        weights = {name: saved[name] for name in saved.files}
    save_model(rebuild(built, weights), run_dir)
    return True


# --------------------------------------------------------------------------- checkpoints, for resuming


def checkpoints(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINTS


def remove_checkpoints(run_dir) -> None:
    shutil.rmtree(checkpoints(run_dir), ignore_errors=True)  # ~300 MB each with optimizer state


def read_states(run_dir) -> list[dict]:
    """The newest saved state and the one before it, newest first (each names its own checkpoint file); none before
    the first epoch ends. A state.json there but unreadable, or not of this version's form, stops the run."""
    run_dir = Path(run_dir)
    path = checkpoints(run_dir) / STATE
    remedy = (f"delete the folder {path.parent} to train the run from its first epoch, or the folder {run_dir} to "
              "start it again")
    state = _read_object(path, run_dir, remedy)
    found = [s for s in (state, (state or {}).get("previous")) if s]
    for s in found:
        missing = [key for key in ("phase", "epochs_done", "checkpoint", "history") if key not in s]
        if missing or not isinstance(s["history"], list) or len(s["history"]) < s["epochs_done"]:
            raise damaged(path, run_dir, f"no {', '.join(missing) or 'history of every epoch'}: written by an older "
                          "version, or edited by hand", remedy)
    return found


def epochs_kept(run_dir) -> int:
    """The finished epochs the saved state keeps, 0 if none or if it cannot be read (the next run says why)."""
    state = None
    with contextlib.suppress(ValueError, OSError):
        state = files.read_json(checkpoints(run_dir) / STATE)
    kept = state.get("epochs_done", 0) if isinstance(state, dict) else 0
    return kept if isinstance(kept, int) else 0


def save_checkpoint(model, run_dir, epoch: int, state: dict, keep_weights: bool) -> str:
    """After epoch `epoch` (counted from 1): its full model, with `keep_weights` its weights alone too (the fall-back
    once the next epoch is saved, and the best epoch's), then the state naming them, written last. Files of older
    epochs are removed unless `state` (or its "previous") still names them. Returns the full model's file name."""
    folder = checkpoints(run_dir)
    name = EPOCH_MODEL.format(epoch)
    if keep_weights:
        save_weights(model, folder / weights_name(epoch))
    with files.atomic_path(folder / name) as tmp:
        model.save(tmp)
    files.write_json(folder / STATE, {**state, "checkpoint": name})
    previous = state.get("previous") or {}
    keep = {name, weights_name(epoch), previous.get("checkpoint")}
    keep |= {pattern.format(s["best_epoch"]) for s in (state, previous) if s.get("best_epoch")
             for pattern in (EPOCH_WEIGHTS, OLD_BEST_WEIGHTS)}
    for old in [*folder.glob("epoch-*.keras"), *folder.glob("*epoch-*.weights.*")]:
        if old.name not in keep:  # one full model; the weights of this epoch, the one before and the best
            old.unlink(missing_ok=True)
    return name


def load_checkpoint(run_dir, name: str):
    """A full model with its optimizer, as `save_checkpoint` wrote it."""
    return keras.models.load_model(checkpoints(run_dir) / name)


def weights_name(epoch: int) -> str:
    """The weights alone of an epoch: its fall-back while it is the one before the newest, and the best epoch's."""
    return EPOCH_WEIGHTS.format(epoch)


def has_weights(run_dir, epoch: int) -> bool:
    return (checkpoints(run_dir) / weights_name(epoch)).exists()


def save_weights(model, path: Path) -> None:
    """The model's weights without the optimizer's, atomically: `Model.save_weights` in Keras 3 also writes Adam's
    two slots per weight, which triples the file."""
    with files.atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, *model.get_weights())


def load_epoch_weights(model, run_dir, epoch: int) -> None:
    """Epoch `epoch`'s weights (written by `save_weights`, or by a version before it) into `model`."""
    folder = checkpoints(run_dir)
    path = folder / weights_name(epoch)
    if not path.exists() and (folder / OLD_BEST_WEIGHTS.format(epoch)).exists():
        model.load_weights(folder / OLD_BEST_WEIGHTS.format(epoch))
        return
    with np.load(path) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    model.set_weights(weights)  # refuses a file of another architecture, naming the shapes


def remove_leftovers(run_dir) -> None:
    """Half-written files of a killed process, in the run folder and its checkpoints."""
    for folder in (Path(run_dir), checkpoints(run_dir)):
        files.remove_leftovers(folder)


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


# --------------------------------------------------------------------------- a run folder as an object
