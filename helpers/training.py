"""Training a recipe into a run folder: resumable, device-aware, and honest about its weights.

A run folder holds everything needed to evaluate or resume it:
  settings.json   what was asked for and what was actually used (weights, sizes, profile, devices)
  split.csv       the exact train/val/test split
  history.csv     one row per epoch (Keras CSVLogger)
  model.keras     the final model (best validation loss)
  checkpoints/    best.keras, last.keras and state.json, for resuming after an interruption
Re-running the same command continues from the last finished epoch (Colab disconnects).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from helpers import config, models
from helpers.data import find_dataset, task_classes
from helpers.pipeline import build_dataset, datasets_from_split
from helpers.recipes import SCRATCH_BATCHNORM_MOMENTUM, get_recipe, split_epochs
from helpers.splits import load_split, save_split

# --------------------------------------------------------------------------- devices


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    mixed_precision: bool  # float16 compute, float32 variables and softmax
    xla: bool  # jit_compile=True
    distribute: str  # "none" or "mirrored"
    reason: str


def device_policy(gpu_names) -> DevicePolicy:
    """What to switch on for these visible GPUs: nothing on CPU; mixed precision and XLA on a GPU;
    also MirroredStrategy across several GPUs."""
    gpus = list(gpu_names)
    if not gpus:
        return DevicePolicy(False, False, "none", "no GPU: float32, no XLA")
    if len(gpus) == 1:
        return DevicePolicy(True, True, "none", f"1 GPU ({gpus[0]}): mixed_float16 and XLA")
    return DevicePolicy(True, True, "mirrored", f"{len(gpus)} GPUs: mixed_float16, XLA, MirroredStrategy")


def visible_gpus() -> list[str]:
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    return names


def apply_device_policy(policy: DevicePolicy):
    """Set the global dtype policy and return the distribution strategy to build models under."""
    keras.mixed_precision.set_global_policy("mixed_float16" if policy.mixed_precision else "float32")
    return tf.distribute.MirroredStrategy() if policy.distribute == "mirrored" else tf.distribute.get_strategy()


# --------------------------------------------------------------------------- run bookkeeping


class RunSettingsError(Exception):
    """A run folder holds a different run than the one asked for."""


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)  # atomic: an interruption never leaves half a file


class _SaveProgress(keras.callbacks.Callback):
    """After each epoch: save the full model (weights and optimizer) and record how far the run got."""

    def __init__(self, checkpoints: Path, phase: str, best_val_loss: float):
        super().__init__()
        self.checkpoints, self.phase, self.best = checkpoints, phase, best_val_loss

    def on_epoch_end(self, epoch, logs=None):
        self.best = min(self.best, float((logs or {}).get("val_loss", np.inf)))
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.model.save(self.checkpoints / "last.keras")
        _write_json(self.checkpoints / "state.json",
                    {"phase": self.phase, "epochs_done": epoch + 1, "best_val_loss": self.best,
                     "finished": False})


def read_history(run_dir) -> pd.DataFrame:
    """The per-epoch history; an epoch repeated after a resume keeps its last row."""
    history = pd.read_csv(Path(run_dir) / "history.csv")
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def _identity(settings: dict) -> dict:
    keys = ("recipe", "task", "data_root", "image_size", "epochs", "batch_size", "weights_requested", "seed",
            "split_mode", "repeat")
    older_runs = {"split_mode": "paper_a", "repeat": 0}  # runs saved before Paper B's protocol existed
    return {k: settings.get(k, older_runs.get(k)) for k in keys}


# --------------------------------------------------------------------------- training


def train_run(run_dir, data_root, recipe: str = "paper_a", task: int = 4, *, epochs: int | None = None,
              image_size: int | None = None, batch_size: int | None = None, weights: str | None = None,
              seed: int = 0, split_mode: str = "paper_a", repeat: int = 0, callbacks=(), log=print) -> dict:
    """Train `recipe` on the dataset under `data_root` into `run_dir`, or resume it; returns settings.

    Sizes default to the recipe's, shrunk to the active profile's (fast/demo); weights default to the
    profile's ("imagenet", or "none" in the fast profile). `split_mode` "paper_b" trains on sub-sample
    `repeat` of Paper B's cross-validation; having no validation part, it monitors its test part
    without selecting anything on it (fixed epochs, last epoch kept).
    """
    run_dir, profile, plan = Path(run_dir), config.active_profile(), get_recipe(recipe)
    checkpoints = run_dir / "checkpoints"
    classes = task_classes(task)
    settings = {
        "recipe": plan.name, "task": task, "classes": list(classes),
        "data_root": str(find_dataset(data_root, classes=classes).root),
        "image_size": image_size or min(plan.image_size, profile.image_size),
        "epochs": epochs or min(plan.epochs, profile.epochs),
        "batch_size": batch_size or min(plan.batch_size, profile.batch_size),
        "weights_requested": weights or profile.weights, "seed": seed,
        "split_mode": split_mode, "repeat": repeat,
    }
    previous = _read_json(run_dir / "settings.json")
    state = _read_json(checkpoints / "state.json") if previous is not None else None
    if previous is not None:
        if _identity(previous) != _identity(settings):
            raise RunSettingsError(
                f"{run_dir} holds a different run ({_identity(previous)}); asked for {_identity(settings)}. "
                "Use another output folder, or delete this one to start over.")
        if previous.get("finished"):
            log(f"{run_dir} is already trained; nothing to do.")
            return previous
        log(f"Resuming {run_dir} after epoch {state['epochs_done'] if state else 0}.")

    keras.utils.set_random_seed(seed)
    policy = device_policy(visible_gpus())
    strategy = apply_device_policy(policy)
    split = _run_split(run_dir, settings, classes)
    data = datasets_from_split(split, classes, settings["image_size"], settings["batch_size"], repeat=repeat,
                               flip=plan.flip, normalisation=plan.normalisation, seed=seed)
    monitor = "val" if "val" in data else "test"
    if monitor == "test" and plan.select_best:
        raise ValueError(f"recipe {plan.name} selects its best epoch on validation images, and this split "
                         f"({split_mode}) has none; use split_mode='paper_a' or the paper_b recipe")

    with strategy.scope():
        if state is not None and (checkpoints / "last.keras").exists():
            model = keras.models.load_model(checkpoints / "last.keras")
            model.jit_compile = policy.xla  # the saved compile settings would leave it to "auto"
            weights_used, fallback = previous["weights_used"], previous["weights_fallback_reason"]
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)
            (run_dir / "history.csv").unlink(missing_ok=True)
            model, weights_used, fallback = models.build_model(
                plan.head, len(classes), settings["image_size"], settings["weights_requested"], plan.dropout,
                backbone=plan.backbone)
            state = None
    pretrained = weights_used != "none"
    warmup, main = split_epochs(plan, settings["epochs"], pretrained)
    settings.update({
        "weights_used": weights_used, "pretrained": pretrained, "weights_fallback_reason": fallback,
        "warmup_epochs": warmup, "main_epochs": main,
        "learning_rate": plan.learning_rate if pretrained else plan.scratch_learning_rate,
        "normalisation": plan.normalisation, "flip": plan.flip, "head": plan.head, "backbone": plan.backbone,
        "monitored_on": monitor, "selects_best_epoch": plan.select_best,
        "class_weights": _class_weights(split, classes, repeat) if plan.class_weights else None,
        "batchnorm": ("inference mode while fine-tuning" if pretrained and plan.freeze_batchnorm
                      else "trainable" if pretrained
                      else f"momentum {SCRATCH_BATCHNORM_MOMENTUM}, re-estimated on training data after training"),
        "profile": profile.name, "profile_reason": profile.reason,
        "devices": visible_gpus() or ["CPU"], "device_policy": dataclasses.asdict(policy),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "finished": False,
    })
    _write_json(run_dir / "settings.json", settings)
    if not pretrained and state is None:
        models.set_batchnorm_momentum(model, SCRATCH_BATCHNORM_MOMENTUM)

    started = time.perf_counter()
    elapsed_before = float(read_history(run_dir)["elapsed_seconds"].max()) if state else 0.0
    done = state["epochs_done"] if state else 0
    best = state["best_val_loss"] if state else np.inf
    phases = [("warmup", 0, warmup), ("main", warmup, warmup + main)]
    last_is_best = False  # whether the weights in memory are the best epoch's (then no reload)
    for phase, first, last in phases:
        if last <= first or done >= last:
            continue
        resumed_here = state is not None and state["phase"] == phase
        if not resumed_here:
            with strategy.scope():
                _configure_phase(model, plan, phase, pretrained, policy)
        log(f"{phase}: epochs {max(first, done) + 1}–{last} of {warmup + main}")
        history = model.fit(
            data["train"], validation_data=data[monitor], initial_epoch=max(first, done), epochs=last,
            class_weight=_as_class_weight(settings["class_weights"], classes), verbose=2,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=[
                _ElapsedTime(started - elapsed_before),  # first, so CSVLogger records it
                keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
                *([keras.callbacks.ModelCheckpoint(str(checkpoints / "best.keras"), monitor="val_loss",
                                                   save_best_only=True, initial_value_threshold=best)]
                  if plan.select_best else []),
                *([keras.callbacks.EarlyStopping(monitor="val_loss", patience=plan.patience)]
                  if phase == "main" and plan.early_stopping else []),
                _SaveProgress(checkpoints, phase, best),
                *callbacks,
            ],
        )
        done = max(first, done) + len(history.epoch)
        best = min([best, *history.history.get("val_loss", [])])
        last_is_best = bool(history.history.get("val_loss")) and history.history["val_loss"][-1] <= best
        state = None
        if done < last:  # early stopping
            break

    if plan.select_best and not last_is_best and (checkpoints / "best.keras").exists():
        model = keras.models.load_model(checkpoints / "best.keras")
    if not pretrained:
        settings["validation_before_batchnorm_reestimation"] = _evaluate(model, data[monitor])
        train = split[(split["split"] == "train") & (split["repeat"] == repeat)]
        reference = build_dataset(train["path"], train["label"].map(classes.index),
                                  len(classes), settings["image_size"], settings["batch_size"],
                                  normalisation=plan.normalisation)
        settings["batchnorm_reestimation_batches"] = models.reestimate_batchnorm(model, reference)
    settings["validation"] = _evaluate(model, data[monitor])
    _save_for_inference(model, run_dir / "model.keras")
    history = read_history(run_dir)
    settings.update({
        "epochs_run": int(len(history)), "stopped_early": bool(len(history) < warmup + main),
        "best_val_loss": float(history["val_loss"].min()),
        "train_seconds_this_session": round(time.perf_counter() - started, 1), "finished": True,
    })
    _write_json(run_dir / "settings.json", settings)
    _write_json(checkpoints / "state.json", {"phase": "done", "epochs_done": int(len(history)),
                                            "best_val_loss": settings["best_val_loss"], "finished": True})
    for checkpoint in checkpoints.glob("*.keras"):  # 300 MB each with optimizer state; model.keras remains
        checkpoint.unlink()
    return settings


def _save_for_inference(model, path: Path) -> None:
    """Save weights and architecture without the optimizer state (a third of the size)."""
    clean = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    clean.set_weights(model.get_weights())
    clean.save(path)


def _run_split(run_dir: Path, settings: dict, classes) -> pd.DataFrame:
    """The run's own copy of the course split (made and saved once per dataset and task)."""
    path = run_dir / "split.csv"
    if not path.exists():
        from helpers.course import course_split, scan_cached

        scan = scan_cached(find_dataset(settings["data_root"], classes=classes))
        save_split(course_split(scan, mode=settings["split_mode"], task=settings["task"], seed=settings["seed"]),
                   path)
    return load_split(path, settings["data_root"])


class _ElapsedTime(keras.callbacks.Callback):
    """Adds wall-clock seconds since the run began (across resumes) to each epoch's logs: Paper B's
    time-to-accuracy curves need it."""

    def __init__(self, origin: float):
        super().__init__()
        self.origin = origin

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed_seconds"] = round(time.perf_counter() - self.origin, 2)


def time_to_accuracy(history: pd.DataFrame, threshold: float = 0.95, column: str = "val_accuracy"):
    """Seconds of training until `column` first reached `threshold`, or None if it never did."""
    reached = history[history[column] >= threshold]
    return float(reached["elapsed_seconds"].iloc[0]) if len(reached) else None


def _class_weights(split: pd.DataFrame, classes, repeat: int = 0) -> dict:
    labels = split.loc[(split["split"] == "train") & (split["repeat"] == repeat), "label"]
    present = [c for c in classes if c in set(labels)]
    weights = compute_class_weight("balanced", classes=np.array(present), y=labels.to_numpy())
    return {c: round(float(w), 4) for c, w in zip(present, weights)}


def _as_class_weight(by_name, classes):
    """Keras wants class weights by label index, in the task's class order."""
    if not by_name:
        return None
    return {i: by_name.get(c, 1.0) for i, c in enumerate(classes)}


def _configure_phase(model, plan, phase: str, pretrained: bool, policy: DevicePolicy) -> None:
    if phase == "warmup":
        models.set_backbone_trainable(model, False)
        rate = plan.warmup_learning_rate
    else:
        freeze_bn = pretrained and plan.freeze_batchnorm
        models.set_backbone_trainable(model, True, batchnorm_trainable=False if freeze_bn else True)
        rate = plan.learning_rate if pretrained else plan.scratch_learning_rate
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=policy.xla)


def _evaluate(model, dataset) -> dict:
    if not model.compiled:
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(dataset, verbose=0)
    return {"loss": round(float(loss), 4), "accuracy": round(float(accuracy), 4)}
