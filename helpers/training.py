"""Training a recipe on a split into a run folder: resumable, atomic, device-aware, and honest about its weights.

A run folder holds everything needed to evaluate or resume it:
  settings.json   the recipe in full, the split's fingerprint, what was asked for and what was actually used
  split.csv       the exact train/val/test split it was given
  history.csv     one row per finished epoch, metrics named after the part they were measured on
  model.keras     the final model (without optimizer state)
  checkpoints/    for resuming: state.json, the newest epoch's full model (weights and optimizer), and the weights
                  alone of that epoch, of the one before (the fall-back) and of the best one; about 0.6 GB for
                  ResNet50, not 1.2 GB (benchmarks/README.md). Resuming from the fall-back restarts the optimizer.
                  A recipe that keeps its last epoch (Paper B) keeps the two newest full models instead.
Re-running the same call continues after the last finished epoch (a Colab disconnect, a kill). Every file is
written to a temporary name and renamed into place, so an interruption leaves the previous good state.

Keras' BackupAndRestore was weighed for resuming and not used: it writes the weights in place and the epoch
number in a second file (a kill between the two pairs one epoch's weights with another's count, a kill during
the write leaves a file it recovers from only on OSError and only with double_checkpoint), it knows nothing of
the history rows, the best epoch or early stopping's count, and each of the recipes' two phases is its own fit
with its own compile, after which BatchNorm re-estimation runs outside any fit.

SIGTERM (how Kaggle and Colab end a session) and Ctrl-C stop training politely: SIGTERM's handler only raises a flag
that is looked at after every batch, and either way the epoch under way is dropped (never saved as if complete),
the run is not marked finished, and `TrainingInterrupted` says in one line which epochs are kept and how to go on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import platform
import shutil
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from helpers import config, distribute, files, models, run_folder, sharing
from helpers.pipeline import build_dataset, datasets_from_split, left_out_line, unreadable_files
from helpers.recipes import SCRATCH_BATCHNORM_MOMENTUM, Recipe, split_epochs
from helpers.splits import fingerprint, load_split, save_split

# --------------------------------------------------------------------------- what a run is


@dataclasses.dataclass(frozen=True)
class _Devices:
    """Where a run trains: the machine's device policy, its tf.distribute strategy, and whether this process writes
    the run folder (the chief of several workers, or the only process)."""

    policy: config.DevicePolicy
    strategy: object
    writes: bool


class RunSettingsError(Exception):
    """A run folder holds a different run than the one asked for."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGTERM or Ctrl-C at a consistent point: the run folder holds its last finished epoch's
    checkpoint and is not marked finished. The one-line message says which epochs are kept and how to continue;
    `exit_code` is what a command exits with (128 + the signal's number: 143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class RunFolderError(ValueError):
    """A file of a run folder is there but cannot be used (cut short, edited by hand, written by an older version):
    the run is left as it is, never emptied or trained over, and the one-line message names the file and the run."""


def damaged(path: Path, run_dir: Path, why: str, remedy: str | None = None) -> RunFolderError:
    """The error for a damaged file of run `run_dir`: which file, why, and how to start again on purpose."""
    remedy = remedy or f"restore the file, or delete the folder {run_dir} to start the run again"
    return RunFolderError(f"{path} cannot be read ({why}); run {run_dir} was left as it is: {remedy}")


def read_run_json(path: Path, run_dir: Path, remedy: str | None = None):
    """The JSON object in a file of a run folder, None if there is no such file (a run not that far yet)."""
    try:
        found = files.read_json(path)
    except files.UnreadableFileError as exc:
        raise damaged(path, run_dir, exc.reason, remedy) from None
    if path.exists() and not isinstance(found, dict):
        raise damaged(path, run_dir, f"not a JSON object: {json.dumps(found)[:40]}", remedy)
    return found


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


# What makes two runs the same run: a folder holding another is refused, never silently continued.
IDENTITY = ("recipe", "classes", "data_root", "split_fingerprint", "repeat", "image_size", "epochs", "batch_size",
            "weights_requested", "seed")


def positive(name: str, value, default: int) -> int:
    """`value`, or `default` when it is None; 0, negative or non-whole numbers are refused, never replaced."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive whole number; found {value!r}")
    return int(value)


def profile_epochs(recipe: Recipe, profile: config.Profile) -> int:
    """The profile's epochs for this recipe: an upper bound if it stops early, else every one is trained."""
    return profile.epochs if recipe.early_stopping else (profile.fixed_epochs or profile.epochs)


def plan_settings(recipe: Recipe, split: pd.DataFrame, classes, data_root, *, repeat: int = 0, epochs=None,
                  image_size=None, batch_size=None, weights=None, seed: int = 0) -> dict:
    """What is asked for: the recipe's sizes shrunk to the active profile's (fast, demo) unless given."""
    profile = config.active_profile()
    image_size = positive("image_size", image_size, min(recipe.image_size, profile.image_size))
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 (ResNet50 shrinks its input 32-fold); found {image_size}")
    part = split[split["repeat"] == repeat]
    if part.empty or not (part["split"] == "train").any():
        raise ValueError(f"the split has no training images for repeat {repeat}; "
                         f"it has repeats {sorted(split['repeat'].unique())}")
    return {
        "recipe": recipe.to_dict(), "classes": list(classes), "data_root": str(Path(data_root).resolve()),
        "split_fingerprint": _repeat_fingerprint(split, repeat), "repeat": int(repeat), "image_size": image_size,
        "epochs": positive("epochs", epochs, min(recipe.epochs, profile_epochs(recipe, profile))),
        "batch_size": positive("batch_size", batch_size, min(recipe.batch_size, profile.batch_size)),
        "weights_requested": weights or profile.weights, "seed": int(seed),
        "monitored_on": "val" if (part["split"] == "val").any() else "test",
    }


def _repeat_fingerprint(split: pd.DataFrame, repeat: int) -> str:
    """What a run trains and tests on: the rows of its own repeat (other repeats of the split do not matter)."""
    return fingerprint(split[split["repeat"] == repeat])


def _skipped_by_scan(skipped, data_root) -> dict:
    """The scan's unreadable files as path → reason (paths as the pipeline names them), said in one line."""
    found = {str(Path(data_root) / item["path"]): item["reason"] for item in skipped}
    if found:
        print(left_out_line(found, why="the scan could not read (in no part of the split)"), file=sys.stderr)
    return found


def differences(old: dict, new: dict) -> list[str]:
    """The identity settings two runs disagree on, each as "name: old → new" (the split in words: its fingerprint
    is a hash that tells a reader nothing)."""
    return [SPLIT_CHANGED if key == "split_fingerprint" else f"{key}: {old.get(key)!r} → {new.get(key)!r}"
            for key in IDENTITY if old.get(key) != new.get(key)]


SPLIT_CHANGED = ("the split: its images differ from those the run was trained on (files added, removed or changed "
                 "since, or another split mode, task or seed)")


# --------------------------------------------------------------------------- training


def train(run_dir, split: pd.DataFrame, recipe: Recipe, classes, data_root, *, repeat: int = 0, epochs=None,
          image_size=None, batch_size=None, weights=None, seed: int = 0, callbacks=(), log=print,
          skipped=(), record: dict | None = None) -> dict:
    """Train `recipe` on repeat `repeat` of `split` (a table from `helpers.splits`, with image paths under
    `data_root`) into `run_dir`, or resume it there; returns the run's settings.

    Sizes default to the recipe's, shrunk to the active profile's; weights to the profile's ("imagenet", or
    "none" in the fast profile). Without validation images (Paper B's sub-samples) the test part is watched
    during training but nothing is selected on it: the recipe must keep its last epoch.

    The machine's device policy (`config.device_policy`) decides the numerics and the devices: on several, each
    replica takes `batch_size` images a step (`helpers.distribute`). Among several workers (TF_CONFIG) only the chief
    writes `run_dir`; the others read it to resume, and return their settings unfinished.

    `skipped` is the scan's list of files it could not read ({"path": relpath, "reason"}, `ScanResult.skipped`):
    a file that went bad after an earlier scan is in no split the new scan makes, so only this says it was left out.
    They are named in one line and recorded in settings.json `unreadable_files`, with those the pipeline could not
    decode. `record` (e.g. the command line's `data_used`: what was asked for and what was used) is kept in
    settings.json from the first epoch on, so an interrupted run says it too.
    """
    run_dir = Path(run_dir)
    settings = plan_settings(recipe, split, classes, data_root, repeat=repeat, epochs=epochs,
                             image_size=image_size, batch_size=batch_size, weights=weights, seed=seed)
    settings.update(record or {})
    settings["unreadable_files"] = _skipped_by_scan(skipped, data_root)
    if settings["monitored_on"] == "test" and recipe.select_best:
        raise ValueError(f"recipe {recipe.name} selects its best epoch on validation images, and this split has "
                         "none; use a split with a validation part, or a recipe that keeps its last epoch")
    policy = config.device_policy()
    settings["global_batch_size"] = policy.global_batch(settings["batch_size"])
    # One trainer per run folder: taken before anything in it is read to decide what to do (workers other than the
    # chief only read it). A run loaded to evaluate or predict takes no lock.
    with files.folder_lock(run_dir, log=log) if config.is_chief() else contextlib.nullcontext():
        previous = _existing_run(run_dir, settings, split, log)
        if previous is not None and previous.get("finished"):
            source = sharing.imported_from(run_dir)
            log(f"Using the run imported from {source} ({run_dir}); nothing to train." if source else
                f"{run_dir} is already trained; nothing to do.")
            return previous
        log(f"Device policy: {policy.reason}" + (f"; global batch {settings['global_batch_size']} = "
                                                 f"{policy.replicas} replicas × {settings['batch_size']}"
                                                 if policy.replicas > 1 else ""))
        # First: a multi-worker strategy must be made before any other TensorFlow operation.
        devices = _Devices(policy, distribute.strategy_for(policy), config.is_chief())
        saved = _saved_states(run_dir) if previous is not None else []
        # Before any variable is made:
        distribute.check_workers_agree(devices.strategy, saved[0]["epochs_done"] if saved else 0)
        if settings["weights_requested"] == "imagenet":  # asked once per process, and before seeding: the question
            models.imagenet_unavailable()  # builds a ResNet50, whose draws would otherwise shift the first build's
        keras.utils.set_random_seed(seed)  # initial weights only (a run's weights must depend on its seed alone)
        stop = _StopRequest()
        try:  # SIGTERM and Ctrl-C: the last finished epoch's checkpoint stays the run's state, and one line says so
            with _sigterm_stops(stop), distribute.global_dtype_policy(policy.dtype_policy):
                model, state = _build_or_resume(run_dir, settings, previous, saved, recipe, devices, log)
                data = datasets_from_split(split, classes, settings["image_size"], settings["global_batch_size"],
                                           repeat=repeat, flip=recipe.flip, seed=seed, progress=True,
                                           normalisation=models.fed_normalisation(model, recipe.normalisation),
                                           replicas=policy.replicas)
                settings = _record_start(run_dir, split, settings, recipe, devices)
                model = _fit_phases(model, data, settings, recipe, state, devices,
                                    [*callbacks, _StopWhenAsked(stop)], run_dir, log)
                stop.check()  # SIGTERM after the last batch: not marked finished, no final model
                if devices.writes:
                    settings = _finish(run_dir, model, data, split, settings, recipe, log)
                else:
                    log(f"Worker {config.cluster().index} done; the chief writes {run_dir}.")
        except KeyboardInterrupt:
            raise _interrupted(run_dir, settings, stop.signal_number or signal.SIGINT) from None
    distribute.wait_for_every_worker(devices.strategy)
    return settings


def _existing_run(run_dir: Path, settings: dict, split: pd.DataFrame, log):
    """The settings of the run already in `run_dir`, None for an empty (or never started) folder.

    A folder without settings.json (a command that failed half-way) is started again; one holding a different run is
    refused, saying what differs; one whose settings.json, split.csv (once an epoch was saved) or finished run's
    model.keras is there but unreadable, or missing, stops with `RunFolderError`: a typo must not delete work.
    """
    previous = read_run_json(run_dir / run_folder.SETTINGS, run_dir)
    if previous is None:
        if run_dir.exists() and any(run_dir.iterdir()):
            log(f"{run_dir} holds no complete run (no settings.json): starting it afresh.")
        return None
    changed = differences(previous, settings)
    if SPLIT_CHANGED in changed:
        changed[changed.index(SPLIT_CHANGED)] += _images_changed(run_dir / run_folder.SPLIT, split, settings)
    if changed:
        raise RunSettingsError(f"{run_dir} holds a different run; what differs: {'; '.join(changed)}. "
                               "Use another output folder, or delete this one to start over.")
    split_problem = _split_file_problem(run_dir / run_folder.SPLIT, settings, previous["split_fingerprint"])
    if split_problem:
        trained = (run_dir / run_folder.CHECKPOINTS).exists() or (run_dir / run_folder.HISTORY).exists()
        if previous.get("finished") or trained:
            raise damaged(run_dir / run_folder.SPLIT, run_dir, split_problem)  # epochs that must not be trained over
        log(f"{run_dir}'s split.csv is not usable ({split_problem}) and no epoch was saved: starting the run afresh.")
        return None
    if previous.get("finished"):
        _check_finished(run_dir, previous)
    started_with = previous.get("global_batch_size", previous["batch_size"])  # runs before several devices: one
    if not previous.get("finished") and started_with != settings["global_batch_size"]:
        raise RunSettingsError(
            f"{run_dir} was training with a global batch of {started_with} ({previous['batch_size']} per device), and "
            f"this machine would continue it with {settings['global_batch_size']}: resume it on as many devices as "
            "it started on, or train into another folder")
    return previous


def _split_file_problem(split_file: Path, settings: dict, fingerprint: str) -> str | None:
    """Why a run folder's split.csv is not the split its settings.json records (missing, unreadable, edited), or
    None. settings.json is written after split.csv, so with both there a mismatch is damage, not a half-done start."""
    if not split_file.exists():
        return "missing"
    try:
        saved = load_split(split_file, settings["data_root"])
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        return config.first_line(exc)
    if _repeat_fingerprint(saved, settings["repeat"]) != fingerprint:
        return "its rows are not the split its settings.json records: cut short or edited"
    return None


def _images_changed(split_file: Path, split: pd.DataFrame, settings: dict, shown: int = 3) -> str:
    """The images that differ between the split the run saved and `split`, by relpath (up to `shown` of each kind,
    then a count), as " [removed …; added …]": a user who deleted one training image must be told which. Empty when
    the saved split cannot be read."""
    try:
        old = load_split(split_file, settings["data_root"])
    except (OSError, ValueError, pd.errors.ParserError):  # EmptyDataError is a ValueError
        return ""
    old, new = (s[s["repeat"] == settings["repeat"]].drop_duplicates("relpath").set_index("relpath")
                for s in (old, split))
    both = old.index.intersection(new.index)
    changed = [p for p in both if pd.notna(old.at[p, "content_hash"]) and "content_hash" in new
               and pd.notna(new.at[p, "content_hash"]) and old.at[p, "content_hash"] != new.at[p, "content_hash"]]
    moved = [f"{p} ({old.at[p, 'split']} → {new.at[p, 'split']})" for p in both
             if old.at[p, "split"] != new.at[p, "split"]]
    kinds = {"removed": sorted(old.index.difference(new.index)), "added": sorted(new.index.difference(old.index)),
             "content changed": sorted(changed), "in another part": sorted(moved)}
    listed = [f"{kind} {', '.join(names[:shown])}" + (f" and {len(names) - shown} more" if len(names) > shown else "")
              for kind, names in kinds.items() if names]
    return f" [{'; '.join(listed)}]" if listed else ""


def _check_finished(run_dir: Path, settings: dict) -> None:
    """A run that says it is finished has what `_finish` wrote: its scores and a whole model.keras."""
    path = run_dir / run_folder.SETTINGS
    missing = [key for key in ("scores", "epochs_run", "pretrained", "weights_used") if key not in settings]
    if missing or settings.get("monitored_on", "val") not in settings["scores"]:
        raise damaged(path, run_dir, f"it says finished but has no {', '.join(missing) or 'scores of its part'}: "
                      "edited by hand, or written by an older version",
                      f'set "finished" back to false to resume the run, or delete the folder {run_dir} to start the '
                      "run again")
    problem = model_file_problem(run_dir / run_folder.MODEL)
    if problem:
        raise damaged(run_dir / run_folder.MODEL, run_dir, problem,
                      f"delete the folder {run_dir} to train the run again")


def _build_or_resume(run_dir: Path, settings: dict, previous, saved: list, recipe: Recipe, devices: _Devices, log):
    """(model, state): the checkpoint of the last finished epoch in `saved` (or the one before, if that one is
    unreadable), or a newly built model and state None. Only the writer of the run folder tidies it; with no readable
    checkpoint of those `saved` names it stops (`RunFolderError`): deleting them would lose every finished epoch."""
    checkpoints = run_dir / run_folder.CHECKPOINTS
    for folder in (run_dir, checkpoints) if devices.writes else ():  # half-written files of a killed process
        files.remove_leftovers(folder)
    with devices.strategy.scope():
        for state in saved:
            weights_only = state["checkpoint"] == best_weights_name(state["epochs_done"])  # the fall-back
            try:
                model = (_weights_only_model(checkpoints, state["epochs_done"], settings, previous, recipe,
                                             devices.policy)
                         if weights_only else keras.models.load_model(checkpoints / state["checkpoint"]))
            except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file, whatever Keras calls it
                log(f"Checkpoint {state['checkpoint']} could not be read ({config.first_line(exc)}); "
                    "trying the one before.")
                continue
            model.jit_compile = devices.policy.xla  # the saved compile settings would leave it to "auto"
            distribute.allow_multi_worker_fit(model, devices.strategy)
            settings.update({k: previous[k] for k in ("weights_used", "weights_fallback_reason")})
            log(f"Resuming {run_dir} after epoch {state['epochs_done']}." + (
                " Its checkpoint holds the weights only: optimizer state restarted." if weights_only else ""))
            return model, {**state, "weights_only": True} if weights_only else state
        if saved:
            raise damaged(checkpoints / saved[0]["checkpoint"], run_dir, "cut short or damaged, and so is the one "
                          "before it" if len(saved) > 1 else "cut short or damaged; there is none before it",
                          f"delete the folder {checkpoints} to train the run from its first epoch, or the folder "
                          f"{run_dir} to start it again")
        if previous is not None:
            log(f"No checkpoint in {checkpoints}: training {run_dir} from its first epoch.")
        if devices.writes:
            shutil.rmtree(checkpoints, ignore_errors=True)
            (run_dir / run_folder.HISTORY).unlink(missing_ok=True)
        model, weights_used, fallback = _fresh_model(recipe, settings, devices, log)
    settings.update({"weights_used": weights_used, "weights_fallback_reason": fallback})
    if weights_used == "none":
        models.set_batchnorm_momentum(model, SCRATCH_BATCHNORM_MOMENTUM)
    distribute.allow_multi_worker_fit(model, devices.strategy)
    return model, None


# The last model this process built for a new run, kept so that the next run of the same architecture, classes,
# size, weights, seed and devices (Paper B's repeats) starts from a fresh build's weights without building and
# tracing again: on a CPU the first epoch of a fit spends about 20 s tracing the training step.
_KEPT: dict = {}


def forget_kept_model() -> None:
    """Drop the model kept for the next run (tests that must build afresh; memory)."""
    _KEPT.clear()


def _fresh_model(recipe: Recipe, settings: dict, devices: _Devices, log):
    """(model, weights used, fallback reason) for a run's first epoch: the kept model with its initial weights put
    back, or a new build. A kept model trains exactly as a new one (tested): same weights, optimizer restarted by
    `_configure_phase`. Models with random layers (dropout draws from a generator that has moved on) and several
    workers (each would have to agree) are never kept."""
    key = (recipe.head, recipe.backbone, recipe.dropout, len(settings["classes"]), settings["image_size"],
           settings["weights_requested"], settings["seed"], repr(devices.policy), id(devices.strategy))
    if _KEPT.get("key") == key:
        _KEPT["model"].set_weights(_KEPT["initial_weights"])
        log("Reusing the model built and traced for the previous run of this architecture, its weights reset to "
            "those of a new build.")
        return _KEPT["model"], _KEPT["weights_used"], _KEPT["fallback"]
    _KEPT.clear()  # one model at a time: a ResNet50 with Adam's slots is about 300 MB
    model, weights_used, fallback = models.build_model(
        recipe.head, len(settings["classes"]), settings["image_size"], settings["weights_requested"],
        recipe.dropout, backbone=recipe.backbone, pixel_inputs=pixel_inputs(recipe, devices.policy))
    if devices.policy.workers == 1 and not models.has_random_layers(model):
        _KEPT.update(key=key, model=model, initial_weights=model.get_weights(), weights_used=weights_used,
                     fallback=fallback)
    return model, weights_used, fallback


def pixel_inputs(recipe: Recipe, policy: config.DevicePolicy) -> str | None:
    """The normalisation a new model does itself when the policy sends it uint8 pixels (a GPU's; `build_model`),
    else None. A resumed or loaded model is fed as it was built, whatever the policy now (`fed_normalisation`)."""
    return recipe.normalisation if policy.uint8_inputs and recipe.backbone in models.PIXEL_INPUT_BACKBONES else None


def _weights_only_model(checkpoints: Path, epoch: int, settings: dict, previous: dict, recipe: Recipe,
                        policy: config.DevicePolicy):
    """The recipe's model with the weights of a weights-only checkpoint (the fall-back); `_fit_phases` compiles it
    with a new optimizer. Built without downloading anything: every weight is then read from the file."""
    model, _, _ = models.build_model(recipe.head, len(settings["classes"]), settings["image_size"], "none",
                                     recipe.dropout, backbone=recipe.backbone,
                                     pixel_inputs=pixel_inputs(recipe, policy))
    if previous["weights_used"] == "none":
        models.set_batchnorm_momentum(model, SCRATCH_BATCHNORM_MOMENTUM)
    load_epoch_weights(model, checkpoints, epoch)
    return model


def _saved_states(run_dir: Path) -> list[dict]:
    """The newest state and the one before it, newest first (each names its own checkpoint file); none before the
    first epoch ends. A state.json there but unreadable, or not of this version's form, stops the run."""
    path = run_dir / run_folder.CHECKPOINTS / run_folder.STATE
    remedy = (f"delete the folder {path.parent} to train the run from its first epoch, or the folder {run_dir} to "
              "start it again")
    state = read_run_json(path, run_dir, remedy)
    found = [s for s in (state, (state or {}).get("previous")) if s]
    for s in found:
        missing = [key for key in ("phase", "epochs_done", "checkpoint", "history") if key not in s]
        if missing or not isinstance(s["history"], list) or len(s["history"]) < s["epochs_done"]:
            raise damaged(path, run_dir, f"no {', '.join(missing) or 'history of every epoch'}: written by an older "
                          "version, or edited by hand", remedy)
    return found


def _record_start(run_dir: Path, split: pd.DataFrame, settings: dict, recipe: Recipe, devices: _Devices) -> dict:
    """Write the split, then the settings (in that order: settings.json marks a folder as a complete run)."""
    pretrained = settings["weights_used"] != "none"
    warmup, main = split_epochs(recipe, settings["epochs"], pretrained)
    settings = {
        **settings, "pretrained": pretrained, "warmup_epochs": warmup, "main_epochs": main,
        "learning_rate": recipe.learning_rate if pretrained else recipe.scratch_learning_rate,
        "class_weights": _class_weights(split, settings["classes"], settings["repeat"]) if recipe.class_weights
        else None,
        "batchnorm": ("inference mode while fine-tuning" if pretrained and recipe.freeze_batchnorm
                      else "trainable" if pretrained
                      else f"momentum {SCRATCH_BATCHNORM_MOMENTUM}, re-estimated on training data after training"),
        "profile": config.active_profile().name, "profile_reason": config.active_profile().reason,
        "device_policy": devices.policy.to_dict(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
        "finished": False,
    }
    if devices.writes:
        save_split(split, run_dir / run_folder.SPLIT)
        files.write_json(run_dir / run_folder.SETTINGS, settings)
    return settings


def _fit_phases(model, data, settings: dict, recipe: Recipe, state, devices: _Devices, callbacks, run_dir, log):
    """The warm-up (backbone frozen) and the main phase, each continued from `state` where it was left."""
    warmup, main = settings["warmup_epochs"], settings["main_epochs"]
    progress = _Progress(run_dir, settings, recipe, state, devices.writes, log)
    watched = data[settings["monitored_on"]]
    validation = []  # on several replicas: their BatchNorm statistics averaged, a one-device copy validating
    if devices.policy.replicas > 1:
        twin = distribute.one_device_copy(model)
        twin.compile(loss="categorical_crossentropy", metrics=_metrics(len(settings["classes"])),
                     run_eagerly=devices.policy.eager)
        validation = [distribute.AverageBatchNormStatistics(devices.strategy),
                      distribute.ValidateOnOneDevice(twin, watched, devices.strategy, progress.stop_training_clock)]
    for phase, first, last in (("warmup", 0, warmup), ("main", warmup, warmup + main)):
        done = progress.epochs_done
        if last <= first or done >= last:
            continue
        if not (state is not None and state["phase"] == phase and done > first and not state.get("weights_only")):
            with devices.strategy.scope():  # a phase begins (or the state is of the other phase): set it up
                _configure_phase(model, recipe, phase, settings["pretrained"], devices.policy,
                                 len(settings["classes"]))
        log(f"{phase}: epochs {done + 1}–{last} of {warmup + main}")
        progress.phase = phase
        model.fit(data["train"], validation_data=None if validation else watched, initial_epoch=done, epochs=last,
                  class_weight=_as_class_weight(settings["class_weights"], settings["classes"]),
                  verbose="auto", shuffle=False,  # the tf.data pipeline shuffles
                  callbacks=[*validation, *progress.callbacks(phase), *callbacks])
        if progress.epochs_done < last:  # stopped early
            break
    if not devices.writes:  # another worker: the chief keeps the best epoch
        return model
    if recipe.select_best and progress.best_epoch is not None and progress.best_epoch != progress.epochs_done:
        load_epoch_weights(model, run_dir / run_folder.CHECKPOINTS, progress.best_epoch)
        log(f"Kept epoch {progress.best_epoch}, the one with the lowest validation loss.")
    return model


def _finish(run_dir: Path, model, data, split: pd.DataFrame, settings: dict, recipe: Recipe, log) -> dict:
    """Score the final model on the monitored part (before and after BatchNorm re-estimation for random-init
    backbones), save it for inference, mark the run finished, and remove the resume checkpoints. A model trained on
    several devices is first copied to one: what is scored is what is saved, each image counted once."""
    eager = bool(model.run_eagerly)  # as the policy compiled it (CXR_EAGER=1): then no tracing here either
    if model.distribute_strategy.num_replicas_in_sync > 1:
        model = distribute.one_device_copy(model)
    monitored = settings["monitored_on"]
    scores = {}
    if not settings["pretrained"]:
        scores[f"{monitored}_before_batchnorm_reestimation"] = evaluate(model, data[monitored])
        train_rows = split[(split["split"] == "train") & (split["repeat"] == settings["repeat"])]
        reference = build_dataset(train_rows["path"], train_rows["label"].map(settings["classes"].index),
                                  len(settings["classes"]), settings["image_size"], settings["batch_size"],
                                  normalisation=models.fed_normalisation(model, recipe.normalisation))
        settings["batchnorm_reestimation_batches"] = models.reestimate_batchnorm(model, reference, traced=not eager)
    scores[monitored] = evaluate(model, data[monitored])
    save_for_inference(model, run_dir / run_folder.MODEL)
    history = pd.read_csv(run_dir / run_folder.HISTORY)
    settings.update({
        "scores": scores, "epochs_run": int(len(history)),
        "stopped_early": bool(len(history) < settings["warmup_epochs"] + settings["main_epochs"]),
        "train_seconds": round(float(history["train_seconds"].iloc[-1]), 1),
        "unreadable_files": {**settings.get("unreadable_files", {}), **unreadable_files(split["path"])},
        "finished": True,
    })
    files.write_json(run_dir / run_folder.SETTINGS, settings)
    shutil.rmtree(run_dir / run_folder.CHECKPOINTS, ignore_errors=True)  # ~300 MB each with optimizer state
    log(f"Finished {run_dir}: {monitored} accuracy {scores[monitored]['accuracy']:.3f}.")
    return settings


def save_for_inference(model, path: Path) -> None:
    """Save weights and architecture without the optimizer state (a third of the size), atomically."""
    clean = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    clean.set_weights(model.get_weights())
    with files.atomic_path(path) as tmp:
        clean.save(tmp)


def evaluate(model, dataset) -> dict:
    """Loss and accuracy of `model` on a dataset, rounded for settings.json."""
    if not model.compiled:
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return {"loss": round(float(results["loss"]), 4), "accuracy": round(float(results["accuracy"]), 4)}


def _configure_phase(model, recipe: Recipe, phase: str, pretrained: bool, policy: config.DevicePolicy,
                     n_classes: int) -> None:
    if phase == "warmup":
        models.set_backbone_trainable(model, False)
        rate = recipe.warmup_learning_rate
    else:
        freeze_bn = pretrained and recipe.freeze_batchnorm
        models.set_backbone_trainable(model, True, batchnorm_trainable=False if freeze_bn else True)
        rate = recipe.learning_rate if pretrained else recipe.scratch_learning_rate
    compiled_as = (phase, rate, pretrained and recipe.freeze_batchnorm, policy.xla, policy.eager, n_classes)
    if _KEPT.get("model") is model and _KEPT.get("compiled_as") == compiled_as:  # its traced step stays
        for variable, value in zip(model.optimizer.variables, _KEPT["optimizer_start"]):
            variable.assign(value)  # Adam's step count and moments as a new optimizer has them
        return
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="categorical_crossentropy",
                  metrics=_metrics(n_classes), jit_compile=policy.xla, run_eagerly=policy.eager)
    _build_state_before_tracing(model, n_classes)
    if _KEPT.get("model") is model:
        _KEPT.update(compiled_as=compiled_as, optimizer_start=[v.numpy() for v in model.optimizer.variables])


def _build_state_before_tracing(model, n_classes: int) -> None:
    """Create Adam's slots and the metrics' counters now, not inside the first traced step: TensorFlow traces a
    step that creates variables twice. ResNet50's first fit at 64 px with its validation: 14.9 s against 22.4 s
    (benchmarks/first_step.py). Keras does this itself under a tf.distribute strategy only, through the private
    `_symbolic_build` used here (a Keras without it still trains, traced twice; a test says so)."""
    model.optimizer.build(model.trainable_variables)
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        images = keras.KerasTensor(model.inputs[0].shape, model.inputs[0].dtype)
        symbolic_build(data_batch=(images, keras.KerasTensor((None, n_classes), "float32")))


def _metrics(n_classes: int) -> list:
    """What every epoch reports, in training and validation alike."""
    return ["accuracy", BalancedAccuracy(n_classes)]


def _class_weights(split: pd.DataFrame, classes, repeat: int = 0) -> dict:
    labels = split.loc[(split["split"] == "train") & (split["repeat"] == repeat), "label"]
    present = [c for c in classes if c in set(labels)]
    weights = compute_class_weight("balanced", classes=np.array(present), y=labels.to_numpy())
    return {c: round(float(w), 4) for c, w in zip(present, weights)}


def _as_class_weight(by_name, classes):
    """Keras wants class weights by label index, in the task's class order."""
    return {i: by_name.get(c, 1.0) for i, c in enumerate(classes)} if by_name else None


# --------------------------------------------------------------------------- per-epoch bookkeeping


class _Progress:
    """What a run has done so far (epochs, history rows, the best epoch, early stopping's count), restored from
    a saved state and saved again, atomically, after every epoch."""

    def __init__(self, run_dir: Path, settings: dict, recipe: Recipe, state, writes: bool, log):
        self.run_dir, self.settings, self.recipe, self.writes, self.log = run_dir, settings, recipe, writes, log
        self.state = state or {}
        self.rows = list(self.state.get("history", []))[: self.state.get("epochs_done")]  # older states: one too many
        self.best_loss = self.state.get("best_val_loss", np.inf)
        self.best_epoch = self.state.get("best_epoch")
        self.phase = self.state.get("phase")
        self.timing = None
        if writes:
            _write_history(run_dir, self.rows)  # drops any row of an epoch the state does not know

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    def callbacks(self, phase: str) -> list:
        self.timing = _Timing(self)
        found = [self.timing, _SaveEpoch(self)]
        if phase == "main" and self.recipe.early_stopping:
            main_rows = self.rows[self.settings["warmup_epochs"]:]
            found.append(_ResumableEarlyStopping(self.recipe.patience, main_rows, self._monitored("loss")))
        return found

    def _monitored(self, metric: str) -> str:
        return f"{self.settings['monitored_on']}_{metric}"

    def stop_training_clock(self) -> None:
        """The epoch's training is over (validation begins): for validation that Keras does not run itself."""
        if self.timing is not None:
            self.timing.training_done()

    def epoch_finished(self, model, epoch: int, logs: dict) -> None:
        row = {"epoch": epoch}
        for key, value in logs.items():  # Keras calls the monitored part "val" even when it is the test part
            name = (self._monitored(key[4:]) if key.startswith("val_") else key if key in _Timing.KEYS
                    else f"train_{key}")
            row[name] = round(float(value), 6)
        loss = row.get(self._monitored("loss"), np.inf)
        if not self.writes:  # another worker writes the run folder: only keep count
            if self.recipe.select_best and loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch + 1
            self.rows.append(row)
            return
        checkpoints = self.run_dir / run_folder.CHECKPOINTS
        name = f"epoch-{epoch + 1:03d}.keras"
        # The weights alone (a third of the full model): the fall-back once the next epoch is saved, and the best
        # epoch's. Named after its epoch: a state never names weights it did not see. A recipe that keeps its last
        # epoch needs no best weights: its fall-back is the previous full model, as much on disk and less written.
        if self.recipe.select_best:
            save_weights(model, checkpoints / best_weights_name(epoch + 1))
        with files.atomic_path(checkpoints / name) as tmp:
            model.save(tmp)
        if self.recipe.select_best and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
        previous = None
        if self.state:  # the state as it was (its own rows, not the list that grows), named by its weights alone
            previous = {**{k: v for k, v in self.state.items() if k not in ("previous", "weights_only")},
                        "history": copy.deepcopy(self.rows)}
            if (checkpoints / best_weights_name(previous["epochs_done"])).exists():  # not in older versions' runs
                previous["checkpoint"] = best_weights_name(previous["epochs_done"])
        self.rows.append(row)
        self.state = {"phase": self.phase, "epochs_done": epoch + 1, "checkpoint": name, "history": self.rows,
                      "best_val_loss": self.best_loss, "best_epoch": self.best_epoch}
        files.write_json(checkpoints / run_folder.STATE, {**self.state, "previous": previous})
        _write_history(self.run_dir, self.rows)
        keep = {name, best_weights_name(epoch + 1), previous["checkpoint"] if previous else None}
        keep |= {pattern.format(s["best_epoch"]) for s in (self.state, previous or {}) if s.get("best_epoch")
                 for pattern in (EPOCH_WEIGHTS, OLD_BEST_WEIGHTS)}
        for old in [*checkpoints.glob("epoch-*.keras"), *checkpoints.glob("*epoch-*.weights.*")]:
            if old.name not in keep:  # one full model; the weights of this epoch, the one before and the best
                old.unlink(missing_ok=True)


def best_weights_name(epoch: int) -> str:
    """The weights alone of an epoch: its fall-back while it is the one before the newest, and the best epoch's."""
    return EPOCH_WEIGHTS.format(epoch)


EPOCH_WEIGHTS = "epoch-{:03d}.weights.npz"  # the weights alone, no optimizer: `save_weights`
OLD_BEST_WEIGHTS = "best-epoch-{:03d}.weights.h5"  # runs before issue 21: weights with the optimizer's slots


def save_weights(model, path: Path) -> None:
    """The model's weights without the optimizer's, atomically: `Model.save_weights` in Keras 3 also writes Adam's
    two slots per weight, which triples the file."""
    with files.atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, *model.get_weights())


def load_epoch_weights(model, checkpoints: Path, epoch: int) -> None:
    """Epoch `epoch`'s weights (written by `save_weights`, or by a version before it) into `model`."""
    path = checkpoints / best_weights_name(epoch)
    if not path.exists() and (checkpoints / OLD_BEST_WEIGHTS.format(epoch)).exists():
        model.load_weights(checkpoints / OLD_BEST_WEIGHTS.format(epoch))
        return
    with np.load(path) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    model.set_weights(weights)  # refuses a file of another architecture, naming the shapes


def _write_history(run_dir: Path, rows: list) -> None:
    if rows:
        with files.atomic_path(run_dir / run_folder.HISTORY) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    else:
        (run_dir / run_folder.HISTORY).unlink(missing_ok=True)


class _Timing(keras.callbacks.Callback):
    """Adds to each epoch's logs the seconds since the run began (across resumes), the seconds spent training
    without evaluation (Paper B's time-to-accuracy curves compare runs whose monitored parts differ in size, so only
    training time is comparable), and the one-off seconds inside that training time.

    One-off: the first epoch of every `fit` (a phase, or a resume) also traces and compiles the training step, on its
    first batch and again on a smaller last batch; a longer run pays it once, a short one mostly pays it. It is
    measured as that epoch's training time minus its number of steps times the median of its later steps (each step
    timed from one batch's start to the next, without the per-batch synchronisation an end-of-batch hook would add);
    0 in other epochs, NaN where an epoch of one step leaves nothing to compare with.
    """

    KEYS = ("elapsed_seconds", "train_seconds", "one_off_seconds")

    def __init__(self, progress: _Progress):
        super().__init__()
        last = progress.rows[-1] if progress.rows else {}
        self.elapsed_before = last.get("elapsed_seconds", 0.0)
        self.trained_before = last.get("train_seconds", 0.0)
        self.trained = 0.0
        self.traces = True  # this fit's first epoch has not ended yet

    def on_train_begin(self, logs=None):
        self.origin = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started, self.epoch_trained, self.step_starts = time.perf_counter(), None, []

    def on_train_batch_begin(self, batch, logs=None):
        self.step_starts.append(time.perf_counter())

    def on_test_begin(self, logs=None):  # Keras' own validation, after the epoch's training batches
        self.training_done()

    def training_done(self) -> None:
        if self.epoch_trained is None:
            self.steps_ended = time.perf_counter()
            self.epoch_trained = self.steps_ended - self.epoch_started

    def on_epoch_end(self, epoch, logs=None):
        self.training_done()
        if logs is not None:
            self.trained += self.epoch_trained
            logs["train_seconds"] = round(self.trained_before + self.trained, 2)
            logs["elapsed_seconds"] = round(self.elapsed_before + time.perf_counter() - self.origin, 2)
            logs["one_off_seconds"] = round(self._one_off(), 2) if self.traces else 0.0
        self.traces = False

    def _one_off(self) -> float:
        steps = np.diff([*self.step_starts, self.steps_ended])
        if len(steps) < 2:
            return float("nan")
        return max(0.0, self.epoch_trained - len(steps) * float(np.median(steps[1:])))


class _SaveEpoch(keras.callbacks.Callback):
    def __init__(self, progress: _Progress):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        self.progress.epoch_finished(self.model, epoch, logs or {})


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on the monitored loss, whose count of epochs without improvement survives a resume
    (plain EarlyStopping starts counting again at every fit)."""

    def __init__(self, patience: int, rows: list, column: str):
        super().__init__(monitor="val_loss", mode="min", patience=patience)
        self.history_losses = [row[column] for row in rows if column in row]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        for loss in self.history_losses:  # the epochs before the resume, counted as EarlyStopping counts them
            self.wait += 1
            if self._is_improvement(loss, self.best):
                self.best, self.wait = loss, 0


class _StopRequest:
    """SIGTERM's handler: it only records the signal (a handler that raised could break a checkpoint's write
    half-way); `check`, after every batch, turns it into the KeyboardInterrupt that `train` reports."""

    def __init__(self):
        self.signal_number = None

    def __call__(self, signal_number, frame) -> None:
        self.signal_number = signal_number

    def check(self) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_stops(stop: _StopRequest):
    """SIGTERM calls `stop` while the block runs, then the handler before it is put back. Only the main thread can
    install a handler: elsewhere SIGTERM keeps its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class _StopWhenAsked(keras.callbacks.Callback):
    """Ends the fit after the batch during which SIGTERM came (or after the epoch's saving, if it came then), by
    raising: `model.stop_training` would let Keras validate and end the cut epoch, which `_SaveEpoch` would then keep
    as if it were complete. The last of the callbacks, so that an epoch that did end is saved first."""

    def __init__(self, stop: _StopRequest):
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch, logs=None):
        self.stop.check()

    def on_epoch_end(self, epoch, logs=None):
        self.stop.check()


def _interrupted(run_dir: Path, settings: dict, signal_number: int) -> TrainingInterrupted:
    """The one line for a run stopped by `signal_number`: the epochs its saved state keeps, and how to go on."""
    state = None
    with contextlib.suppress(ValueError, OSError):  # a state that cannot be read: the next run says so
        state = files.read_json(run_dir / run_folder.CHECKPOINTS / run_folder.STATE)
    kept = state.get("epochs_done", 0) if isinstance(state, dict) else 0
    kept = kept if isinstance(kept, int) else 0
    total = settings["warmup_epochs"] + settings["main_epochs"]
    how = "SIGTERM" if signal_number == signal.SIGTERM else "Ctrl-C (SIGINT)"
    if kept == 0:
        return TrainingInterrupted(f"Stopped by {how} during epoch 1: run {run_dir} has no finished epoch yet; run "
                                   "the same command again to start it.", signal_number)
    epochs = "epoch 1" if kept == 1 else f"epochs 1–{kept}"
    when, goal = (f"during epoch {kept + 1}", "resume") if kept < total else ("after its last epoch", "finish it")
    return TrainingInterrupted(f"Stopped by {how} {when}: run {run_dir} keeps {epochs}; run the same command again "
                               f"to {goal}.", signal_number)


@keras.saving.register_keras_serializable(package="cxr_course")
class BalancedAccuracy(keras.metrics.Metric):
    """Accuracy averaged over classes (each class's recall, then the mean): on an imbalanced set it equals the
    accuracy the model would have on a balanced one, so runs monitored on different parts compare fairly."""

    def __init__(self, n_classes: int, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = n_classes
        self.hits = self.add_variable(shape=(n_classes,), initializer="zeros", name="hits")
        self.support = self.add_variable(shape=(n_classes,), initializer="zeros", name="support")

    def update_state(self, y_true, y_pred, sample_weight=None):  # class weights do not weigh a recall
        true = keras.ops.one_hot(keras.ops.argmax(y_true, axis=-1), self.n_classes, dtype=self.dtype)
        right = keras.ops.cast(keras.ops.argmax(y_true, axis=-1) == keras.ops.argmax(y_pred, axis=-1), self.dtype)
        self.support.assign_add(keras.ops.sum(true, axis=0))
        self.hits.assign_add(keras.ops.sum(true * right[:, None], axis=0))

    def result(self):
        present = keras.ops.cast(self.support > 0, self.dtype)
        recall = self.hits / keras.ops.maximum(self.support, 1.0)
        return keras.ops.sum(recall * present) / keras.ops.maximum(keras.ops.sum(present), 1.0)

    def reset_state(self):
        self.hits.assign(keras.ops.zeros_like(self.hits))
        self.support.assign(keras.ops.zeros_like(self.support))

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


def time_to_accuracy(history: pd.DataFrame, threshold: float = 0.95, column: str = "test_accuracy",
                     clock: str = "train_seconds"):
    """Seconds of training until `column` first reached `threshold`, or None if it never did. Read from a
    `Run.held_out_curve`, they leave out evaluation and one-off tracing; `runs.resolution` says how finely the curve's
    held-out images can tell whether `threshold` was reached."""
    reached = history[history[column] >= threshold]
    return float(reached[clock].iloc[0]) if len(reached) else None
