"""Training a recipe on a split into a run folder: resumable, atomic, device-aware, and honest about its weights.

A run folder (`helpers.engine.storage`) holds everything needed to evaluate or resume it. For resuming, its checkpoints
hold the newest epoch's full model (weights and optimizer) and the weights alone of that epoch, of the one before
(the fall-back) and of the best one: about 0.6 GB for ResNet50, not 1.2 GB (benchmarks/README.md). Resuming from the
fall-back restarts the optimizer. A recipe that keeps its last epoch (Paper B) keeps the two newest full models
instead. `helpers.engine.resume` decides whether a folder's run is the one asked for and restores its progress.

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

A random-init run that selects an epoch (or stops early) scores every epoch as it would be saved: its BatchNorm
statistics re-estimated on the training images first (`ValidateAsSaved`), the figures with the statistics as trained
kept beside them (`val_loss_as_trained`, …). Choosing on the as-trained loss kept untrained first epochs (issue 35).
The criterion stays the lowest (re-estimated) validation loss, not the highest balanced accuracy. Measured on the
demo's phantoms (experiments/kept_epoch_trial.py; figures in its README), both kept epoch 3 of the improved recipe;
for Paper A's, balanced accuracy on 60 images tied epochs 2 and 4 (31 of 60 right each), which the loss, continuous,
told apart (epoch 4; on test 0.383 against epoch 2's 0.367: two images of 120). Early stopping reads the same
figure. The re-estimation is a forward pass over every training image each epoch (there 16-24% of an epoch's training
time), not a few batches, so that the kept epoch's statistics are exactly those `_finish` computes again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from helpers import config, models
from helpers.engine import devices as machine  # `devices` names a run's devices below
from helpers.engine import distribute, locks, resume, sharing, storage
from helpers.engine.callbacks import StopRequest, StopWhenAsked, epoch_metrics, sigterm_stops
from helpers.engine.storage import RunSettings
from helpers.pipeline import build_dataset, datasets_from_split, left_out_line, unreadable_files
from helpers.recipes import SCRATCH_BATCHNORM_MOMENTUM, Recipe, split_epochs

# --------------------------------------------------------------------------- what a run is


@dataclasses.dataclass(frozen=True)
class _Devices:
    """Where a run trains: the machine's device policy, its tf.distribute strategy, and whether this process writes
    the run folder (the chief of several workers, or the only process)."""

    policy: machine.DevicePolicy
    strategy: object
    writes: bool


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGTERM or Ctrl-C at a consistent point: the run folder holds its last finished epoch's
    checkpoint and is not marked finished. The one-line message says which epochs are kept and how to continue;
    `exit_code` is what a command exits with (128 + the signal's number: 143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


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
                  image_size=None, batch_size=None, weights=None, seed: int = 0) -> RunSettings:
    """What is asked for: the recipe's sizes shrunk to the active profile's (fast, demo) unless given."""
    profile = config.active_profile()
    image_size = positive("image_size", image_size, recipe.image_size_under(profile))
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 (ResNet50 shrinks its input 32-fold); found {image_size}")
    part = split[split["repeat"] == repeat]
    if part.empty or not (part["split"] == "train").any():
        raise ValueError(f"the split has no training images for repeat {repeat}; "
                         f"it has repeats {sorted(split['repeat'].unique())}")
    return RunSettings(
        recipe=recipe.to_dict(), classes=list(classes), data_root=str(Path(data_root).resolve()),
        split_fingerprint=resume.repeat_fingerprint(split, repeat), repeat=int(repeat), image_size=image_size,
        epochs=positive("epochs", epochs, min(recipe.epochs, profile_epochs(recipe, profile))),
        batch_size=positive("batch_size", batch_size, min(recipe.batch_size, profile.batch_size)),
        weights_requested=weights or profile.weights, seed=int(seed),
        monitored_on="val" if (part["split"] == "val").any() else "test")


def _skipped_by_scan(skipped, data_root) -> dict:
    """The scan's unreadable files as path → reason (paths as the pipeline names them), said in one line."""
    found = {str(Path(data_root) / item["path"]): item["reason"] for item in skipped}
    if found:
        print(left_out_line(found, why="the scan could not read (in no part of the split)"), file=sys.stderr)
    return found


# --------------------------------------------------------------------------- training


def train(run_dir, split: pd.DataFrame, recipe: Recipe, classes, data_root, *, repeat: int = 0, epochs=None,
          image_size=None, batch_size=None, weights=None, seed: int = 0, callbacks=(), log=print,
          skipped=(), record: dict | None = None) -> RunSettings:
    """Train `recipe` on repeat `repeat` of `split` (a table from `helpers.splits`, with image paths under
    `data_root`) into `run_dir`, or resume it there; returns its settings (`helpers.runs.Run` reads the folder).

    Sizes default to the recipe's, shrunk to the active profile's; weights to the profile's ("imagenet", or
    "none" in the fast profile). Without validation images (Paper B's sub-samples) the test part is watched
    during training but nothing is selected on it: the recipe must keep its last epoch.

    The machine's device policy (`devices.device_policy`) decides the numerics and the devices: on several, each
    replica takes `batch_size` images a step (`engine.distribute`). Among several workers (TF_CONFIG) only the chief
    writes `run_dir`; the others read it to resume, and return their run unfinished (`Run.finished`).

    `skipped` is the scan's list of files it could not read ({"path": relpath, "reason"}, `ScanResult.skipped`):
    a file that went bad after an earlier scan is in no split the new scan makes, so only this says it was left out.
    They are named in one line and recorded in settings.json `unreadable_files`, with those the pipeline could not
    decode. `record` (e.g. the command line's `data_used`: what was asked for and what was used) is kept in
    settings.json from the first epoch on, so an interrupted run says it too.
    """
    run_dir = Path(run_dir)
    settings = plan_settings(recipe, split, classes, data_root, repeat=repeat, epochs=epochs,
                             image_size=image_size, batch_size=batch_size, weights=weights, seed=seed)
    policy = machine.device_policy()
    settings = settings.but(**(record or {}), unreadable_files=_skipped_by_scan(skipped, data_root),
                            global_batch_size=policy.global_batch(settings.batch_size))
    if settings.monitored_on == "test" and recipe.select_best:
        raise ValueError(f"recipe {recipe.name} selects its best epoch on validation images, and this split has "
                         "none; use a split with a validation part, or a recipe that keeps its last epoch")
    # One trainer per run folder: taken before anything in it is read to decide what to do (workers other than the
    # chief only read it). A run loaded to evaluate or predict takes no lock.
    with locks.folder_lock(run_dir, log=log) if machine.is_chief() else contextlib.nullcontext():
        previous = resume.existing_run(run_dir, settings, split, log)
        if previous is not None and previous.finished:
            source = sharing.imported_from(run_dir)
            log(f"Using the run imported from {source} ({run_dir}); nothing to train." if source else
                f"{run_dir} is already trained; nothing to do.")
            return previous
        log(f"Device policy: {policy.reason}" + (f"; global batch {settings.global_batch_size} = "
                                                 f"{policy.replicas} replicas × {settings.batch_size}"
                                                 if policy.replicas > 1 else ""))
        # First: a multi-worker strategy must be made before any other TensorFlow operation.
        devices = _Devices(policy, distribute.strategy_for(policy), machine.is_chief())
        saved = storage.read_states(run_dir) if previous is not None else []
        # Before any variable is made:
        distribute.check_workers_agree(devices.strategy, saved[0]["epochs_done"] if saved else 0)
        if settings.weights_requested == "imagenet":  # asked once per process, and before seeding: the question
            models.imagenet_unavailable()  # builds a ResNet50, whose draws would otherwise shift the first build's
        keras.utils.set_random_seed(seed)  # initial weights only (a run's weights must depend on its seed alone)
        stop = StopRequest()
        try:  # SIGTERM and Ctrl-C: the last finished epoch's checkpoint stays the run's state, and one line says so
            with sigterm_stops(stop), distribute.global_dtype_policy(policy.dtype_policy):
                model, state, settings = _build_or_resume(run_dir, settings, previous, saved, recipe, devices, log)
                data = datasets_from_split(split, classes, settings.image_size, settings.global_batch_size,
                                           repeat=repeat, flip=recipe.flip, seed=seed, progress=True,
                                           normalisation=models.fed_normalisation(model, recipe.normalisation),
                                           replicas=policy.replicas)
                settings = _record_start(run_dir, split, settings, recipe, devices)
                model = _fit_phases(model, data, split, settings, recipe, state, devices,
                                    [*callbacks, StopWhenAsked(stop)], run_dir, log)
                stop.check()  # SIGTERM after the last batch: not marked finished, no final model
                if devices.writes:
                    settings = _finish(run_dir, model, data, split, settings, recipe, log)
                else:
                    log(f"Worker {machine.cluster().index} done; the chief writes {run_dir}.")
        except KeyboardInterrupt:
            raise _interrupted(run_dir, settings, stop.signal_number or signal.SIGINT) from None
    distribute.wait_for_every_worker(devices.strategy)
    return settings


def _build_or_resume(run_dir: Path, settings: RunSettings, previous, saved: list, recipe: Recipe, devices: _Devices,
                     log):
    """(model, state, settings with the weights used): the checkpoint of the last finished epoch in `saved` (or the
    one before, if that one is unreadable), or a newly built model and state None. Only the writer of the run folder
    tidies it; with no readable checkpoint of those `saved` names it stops (`RunFolderError`): deleting them would lose
    every finished epoch."""
    if devices.writes:  # half-written files of a killed process
        storage.remove_leftovers(run_dir)
    with devices.strategy.scope():
        for state in saved:
            weights_only = state["checkpoint"] == storage.weights_name(state["epochs_done"])  # the fall-back
            try:
                model = (_weights_only_model(run_dir, state["epochs_done"], settings, previous, recipe,
                                             devices.policy)
                         if weights_only else storage.load_checkpoint(run_dir, state["checkpoint"]))
            except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file, whatever Keras calls it
                log(f"Checkpoint {state['checkpoint']} could not be read ({config.first_line(exc)}); "
                    "trying the one before.")
                continue
            model.jit_compile = devices.policy.xla  # the saved compile settings would leave it to "auto"
            distribute.allow_multi_worker_fit(model, devices.strategy)
            settings = settings.but(weights_used=previous.weights_used,
                                    weights_fallback_reason=previous.weights_fallback_reason)
            log(f"Resuming {run_dir} after epoch {state['epochs_done']}." + (
                " Its checkpoint holds the weights only: optimizer state restarted." if weights_only else ""))
            return model, {**state, "weights_only": True} if weights_only else state, settings
        if saved:
            checkpoints = storage.checkpoints(run_dir)
            raise storage.damaged(checkpoints / saved[0]["checkpoint"], run_dir,
                                     "cut short or damaged, and so is the one before it" if len(saved) > 1
                                     else "cut short or damaged; there is none before it",
                                     f"delete the folder {checkpoints} to train the run from its first epoch, or "
                                     f"the folder {run_dir} to start it again")
        if previous is not None:
            log(f"No checkpoint in {storage.checkpoints(run_dir)}: training {run_dir} from its first epoch.")
        if devices.writes:
            storage.remove_checkpoints(run_dir)
            storage.write_history(run_dir, [])
        model, weights_used, fallback = _fresh_model(recipe, settings, devices, log)
    if weights_used == "none":
        models.set_batchnorm_momentum(model, SCRATCH_BATCHNORM_MOMENTUM)
    distribute.allow_multi_worker_fit(model, devices.strategy)
    return model, None, settings.but(weights_used=weights_used, weights_fallback_reason=fallback)


# The last model this process built for a new run, kept so that the next run of the same architecture, classes,
# size, weights, seed and devices (Paper B's repeats) starts from a fresh build's weights without building and
# tracing again: on a CPU the first epoch of a fit spends about 20 s tracing the training step.
_KEPT: dict = {}


def forget_kept_model() -> None:
    """Drop the model kept for the next run (tests that must build afresh; memory)."""
    _KEPT.clear()


def _fresh_model(recipe: Recipe, settings: RunSettings, devices: _Devices, log):
    """(model, weights used, fallback reason) for a run's first epoch: the kept model with its initial weights put
    back, or a new build. A kept model trains exactly as a new one (tested): same weights, optimizer restarted by
    `_configure_phase`. Models with random layers (dropout draws from a generator that has moved on) and several
    workers (each would have to agree) are never kept."""
    key = (recipe.head, recipe.backbone, recipe.dropout, len(settings.classes), settings.image_size,
           settings.weights_requested, settings.seed, repr(devices.policy), id(devices.strategy))
    if _KEPT.get("key") == key:
        _KEPT["model"].set_weights(_KEPT["initial_weights"])
        log("Reusing the model built and traced for the previous run of this architecture, its weights reset to "
            "those of a new build.")
        return _KEPT["model"], _KEPT["weights_used"], _KEPT["fallback"]
    _KEPT.clear()  # one model at a time: a ResNet50 with Adam's slots is about 300 MB
    built = models.build_model(
        recipe.head, len(settings.classes), settings.image_size, settings.weights_requested,
        recipe.dropout, backbone=recipe.backbone, pixel_inputs=pixel_inputs(recipe, devices.policy))
    model, weights_used, fallback = built.model, built.weights_used, built.fallback_reason
    if devices.policy.workers == 1 and not models.has_random_layers(model):
        _KEPT.update(key=key, model=model, initial_weights=model.get_weights(), weights_used=weights_used,
                     fallback=fallback)
    return model, weights_used, fallback


def pixel_inputs(recipe: Recipe, policy: machine.DevicePolicy) -> str | None:
    """The normalisation a new model does itself when the policy sends it uint8 pixels (a GPU's; `build_model`),
    else None. A resumed or loaded model is fed as it was built, whatever the policy now (`fed_normalisation`)."""
    return recipe.normalisation if policy.uint8_inputs and recipe.backbone in models.PIXEL_INPUT_BACKBONES else None


def _weights_only_model(run_dir: Path, epoch: int, settings: RunSettings, previous: RunSettings, recipe: Recipe,
                        policy: machine.DevicePolicy):
    """The recipe's model with the weights of a weights-only checkpoint (the fall-back); `_fit_phases` compiles it
    with a new optimizer. Built without downloading anything: every weight is then read from the file."""
    model = models.build_model(recipe.head, len(settings.classes), settings.image_size, "none",
                               recipe.dropout, backbone=recipe.backbone,
                               pixel_inputs=pixel_inputs(recipe, policy)).model
    if previous.weights_used == "none":
        models.set_batchnorm_momentum(model, SCRATCH_BATCHNORM_MOMENTUM)
    storage.load_epoch_weights(model, run_dir, epoch)
    return model


def _record_start(run_dir: Path, split: pd.DataFrame, settings: RunSettings, recipe: Recipe,
                  devices: _Devices) -> RunSettings:
    """Write the split, then the settings (in that order: settings.json marks a folder as a complete run)."""
    pretrained = settings.weights_used != "none"
    warmup, main = split_epochs(recipe, settings.epochs, pretrained)
    settings = settings.but(
        pretrained=pretrained, warmup_epochs=warmup, main_epochs=main,
        learning_rate=recipe.learning_rate if pretrained else recipe.scratch_learning_rate,
        class_weights=_class_weights(split, settings.classes, settings.repeat) if recipe.class_weights else None,
        batchnorm=("inference mode while fine-tuning" if pretrained and recipe.freeze_batchnorm
                   else "trainable" if pretrained
                   else f"momentum {SCRATCH_BATCHNORM_MOMENTUM}, re-estimated on training data "
                        + ("after every epoch, before it is scored" if recipe.select_best or recipe.early_stopping
                           else "after training")),
        profile=config.active_profile().name, profile_reason=config.active_profile().reason,
        device_policy=devices.policy.to_dict(),
        versions={"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
        finished=False)
    if devices.writes:
        storage.write_split(run_dir, split)
        storage.write_settings(run_dir, settings)
    return settings


def _fit_phases(model, data, split: pd.DataFrame, settings: RunSettings, recipe: Recipe, state, devices: _Devices,
                callbacks, run_dir, log):
    """The warm-up (backbone frozen) and the main phase, each continued from `state` where it was left."""
    warmup, main = settings.warmup_epochs, settings.main_epochs
    progress = resume.Progress(run_dir, settings, recipe, state, devices.writes, log)
    watched = data[settings.monitored_on]
    validation, twin = [], None  # several replicas: their BatchNorm statistics averaged, a one-device copy validating
    if devices.policy.replicas > 1:
        twin = distribute.one_device_copy(model)
        twin.compile(loss="categorical_crossentropy", metrics=epoch_metrics(len(settings.classes)),
                     run_eagerly=devices.policy.eager)
        validation = [distribute.AverageBatchNormStatistics(devices.strategy),
                      distribute.ValidateOnOneDevice(twin, watched, devices.strategy, progress.stop_training_clock)]
    if scores_as_saved(settings, recipe):  # after the as-trained validation, before the epoch is saved
        validation.append(ValidateAsSaved(reference_dataset(split, settings, recipe, model), watched, twin=twin,
                                          strategy=devices.strategy, traced=not devices.policy.eager,
                                          before_evaluation=progress.stop_training_clock))
    for phase, first, last in (("warmup", 0, warmup), ("main", warmup, warmup + main)):
        done = progress.epochs_done
        if last <= first or done >= last:
            continue
        if not (state is not None and state["phase"] == phase and done > first and not state.get("weights_only")):
            with devices.strategy.scope():  # a phase begins (or the state is of the other phase): set it up
                _configure_phase(model, recipe, phase, settings.pretrained, devices.policy,
                                 len(settings.classes))
        log(f"{phase}: epochs {done + 1}–{last} of {warmup + main}")
        progress.phase = phase
        model.fit(data["train"], validation_data=None if devices.policy.replicas > 1 else watched,
                  initial_epoch=done, epochs=last,
                  class_weight=_as_class_weight(settings.class_weights, settings.classes),
                  verbose="auto", shuffle=False,  # the tf.data pipeline shuffles
                  callbacks=[*validation, *progress.callbacks(phase), *callbacks])
        if progress.epochs_done < last:  # stopped early
            break
    if not devices.writes:  # another worker: the chief keeps the best epoch
        return model
    if recipe.select_best and progress.best_epoch is not None and progress.best_epoch != progress.epochs_done:
        storage.load_epoch_weights(model, run_dir, progress.best_epoch)
    if recipe.select_best and progress.best_epoch is not None:
        log(kept_epoch_line(progress.rows, progress.best_epoch, settings.monitored_on))
    return model


def scores_as_saved(settings: RunSettings, recipe: Recipe) -> bool:
    """Whether every epoch is scored with its BatchNorm statistics re-estimated (`ValidateAsSaved`): random-init runs
    whose epochs' figures decide something (the kept epoch, early stopping). A keep-last recipe (Paper B) is
    re-estimated once, after training: re-estimating every epoch would only cost it time."""
    return not settings.pretrained and (recipe.select_best or recipe.early_stopping)


def reference_dataset(split: pd.DataFrame, settings: RunSettings, recipe: Recipe, model):
    """The run's training images, in order, without augmentation: what BatchNorm statistics are re-estimated on,
    after every epoch and at the end alike (the same batches, so the same statistics for the same weights)."""
    rows = split[(split["split"] == "train") & (split["repeat"] == settings.repeat)]
    return build_dataset(rows["path"], rows["label"].map(settings.classes.index), len(settings.classes),
                         settings.image_size, settings.batch_size,
                         normalisation=models.fed_normalisation(model, recipe.normalisation))


class ValidateAsSaved(keras.callbacks.Callback):
    """Random-init runs: every epoch is scored as it will be saved. Its BatchNorm statistics are re-estimated on the
    training images (`models.reestimate_batchnorm`), then `dataset` is evaluated; those figures become the epoch's
    val_loss, val_accuracy, … (what selection and early stopping read), and the figures with the statistics as
    trained, from the validation before it, are kept as val_loss_as_trained, …. The epoch is saved afterwards, so
    the kept epoch's file holds the statistics it was scored with. Moving statistics take no part in a
    training-mode step, so training goes on as it would have (tested); they restart from the re-estimated ones.

    On several replicas `twin` (the one-device copy of `distribute.ValidateOnOneDevice`) is re-estimated and scored,
    and its statistics are copied back; several workers average their figures (they agree: same weights, same
    images). Adds `reestimation_seconds`, the time this took."""

    def __init__(self, reference, dataset, *, twin=None, strategy=None, traced: bool = True,
                 before_evaluation=lambda: None):
        super().__init__()
        self.reference, self.dataset, self.twin, self.strategy = reference, dataset, twin, strategy
        self.traced, self.before_evaluation = traced, before_evaluation

    def on_epoch_end(self, epoch, logs=None):
        self.before_evaluation()
        started = time.perf_counter()
        scored = self.model if self.twin is None else self.twin
        if self.twin is not None:
            self.twin.set_weights(self.model.get_weights())
        models.reestimate_batchnorm(scored, self.reference, traced=self.traced)
        results = scored.evaluate(self.dataset, verbose=0, return_dict=True)
        if self.twin is not None:
            for layer in self.twin.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    trained = self.model.get_layer(layer.name)
                    trained.moving_mean.assign(layer.moving_mean.numpy())
                    trained.moving_variance.assign(layer.moving_variance.numpy())
        if distribute.several_workers(self.strategy):
            results = distribute.agreed(self.strategy, results)
        if logs is not None:
            logs.update({f"{key}_as_trained": logs.pop(key) for key in [k for k in logs if k.startswith("val_")]})
            logs.update({f"val_{name}": float(value) for name, value in results.items()})
            logs["reestimation_seconds"] = round(time.perf_counter() - started, 2)


def kept_row(history: pd.DataFrame, settings: RunSettings, recipe: Recipe):
    """The history row of the epoch the run keeps (its best by the monitored loss, or its last), or None."""
    if history.empty:
        return None
    loss = f"{settings.monitored_on}_loss"
    if recipe.select_best and loss in history:
        return history.loc[history[loss].idxmin()]
    return history.iloc[-1]


def kept_epoch_line(rows: list, best_epoch: int, monitored: str) -> str:
    """"Kept epoch N, …": the kept and the last epoch's monitored figures side by side (loss, accuracy, balanced
    accuracy), so that a reader sees what keeping an earlier epoch gave up or gained."""
    def figures(row):
        shown = [(name, f"{monitored}_{name}") for name in ("loss", "accuracy", "balanced_accuracy")]
        return ", ".join(f"{name} {row[key]:.3f}" for name, key in shown if key in row)

    kept, last = rows[best_epoch - 1], rows[-1]
    if best_epoch == len(rows):
        return f"Kept epoch {best_epoch}, the last and the one with the lowest {monitored} loss: {figures(kept)}."
    return (f"Kept epoch {best_epoch}, the one with the lowest {monitored} loss: {figures(kept)}; "
            f"the last, epoch {len(rows)}: {figures(last)}.")


def _finish(run_dir: Path, model, data, split: pd.DataFrame, settings: RunSettings, recipe: Recipe, log) -> RunSettings:
    """Score the final model on the monitored part (before and after BatchNorm re-estimation for random-init
    backbones), save it for inference, mark the run finished, and remove the resume checkpoints. A model trained on
    several devices is first copied to one: what is scored is what is saved, each image counted once."""
    eager = bool(model.run_eagerly)  # as the policy compiled it (CXR_EAGER=1): then no tracing here either
    if model.distribute_strategy.num_replicas_in_sync > 1:
        model = distribute.one_device_copy(model)
    monitored = settings.monitored_on
    scores = {}
    history = storage.read_history(run_dir)
    if not settings.pretrained:
        before = kept_row(history, settings, recipe)  # scored at its epoch's end, before its statistics were replaced
        reference = reference_dataset(split, settings, recipe, model)
        if before is not None and f"{monitored}_loss_as_trained" in before:
            # Re-estimated at that epoch's end (`ValidateAsSaved`) and saved with its weights: a second pass over the
            # same batches would give the same statistics again (it took 13 s a run in the demo's 03).
            scores[f"{monitored}_before_batchnorm_reestimation"] = {
                "loss": round(float(before[f"{monitored}_loss_as_trained"]), 4),
                "accuracy": round(float(before[f"{monitored}_accuracy_as_trained"]), 4)}
            batches = int(reference.cardinality())  # what that pass went through
        else:  # a keep-last recipe: its statistics are as trained until now
            scores[f"{monitored}_before_batchnorm_reestimation"] = evaluate(model, data[monitored])
            batches = models.reestimate_batchnorm(model, reference, traced=not eager)
        settings = settings.but(batchnorm_reestimation_batches=batches)
    scores[monitored] = evaluate(model, data[monitored])
    storage.save_model(model, run_dir)
    settings = settings.but(
        scores=scores, epochs_run=int(len(history)),
        stopped_early=bool(len(history) < settings.warmup_epochs + settings.main_epochs),
        train_seconds=round(float(history["train_seconds"].iloc[-1]), 1),
        unreadable_files={**settings.unreadable_files, **unreadable_files(split["path"])}, finished=True)
    storage.write_settings(run_dir, settings)
    storage.remove_checkpoints(run_dir)
    log(f"Finished {run_dir}: {monitored} accuracy {scores[monitored]['accuracy']:.3f}.")
    return settings


def evaluate(model, dataset) -> dict:
    """Loss and accuracy of `model` on a dataset, rounded for settings.json."""
    if not model.compiled:
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return {"loss": round(float(results["loss"]), 4), "accuracy": round(float(results["accuracy"]), 4)}


def _configure_phase(model, recipe: Recipe, phase: str, pretrained: bool, policy: machine.DevicePolicy,
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
                  metrics=epoch_metrics(n_classes), jit_compile=policy.xla, run_eagerly=policy.eager)
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


def _class_weights(split: pd.DataFrame, classes, repeat: int = 0) -> dict:
    labels = split.loc[(split["split"] == "train") & (split["repeat"] == repeat), "label"]
    present = [c for c in classes if c in set(labels)]
    weights = compute_class_weight("balanced", classes=np.array(present), y=labels.to_numpy())
    return {c: round(float(w), 4) for c, w in zip(present, weights)}


def _as_class_weight(by_name, classes):
    """Keras wants class weights by label index, in the task's class order."""
    return {i: by_name.get(c, 1.0) for i, c in enumerate(classes)} if by_name else None


def _interrupted(run_dir: Path, settings: RunSettings, signal_number: int) -> TrainingInterrupted:
    """The one line for a run stopped by `signal_number`: the epochs its saved state keeps, and how to go on."""
    kept = storage.epochs_kept(run_dir)
    total = settings.warmup_epochs + settings.main_epochs
    how = "SIGTERM" if signal_number == signal.SIGTERM else "Ctrl-C (SIGINT)"
    if kept == 0:
        return TrainingInterrupted(f"Stopped by {how} during epoch 1: run {run_dir} has no finished epoch yet; run "
                                   "the same command again to start it.", signal_number)
    epochs = "epoch 1" if kept == 1 else f"epochs 1–{kept}"
    when, goal = (f"during epoch {kept + 1}", "resume") if kept < total else ("after its last epoch", "finish it")
    return TrainingInterrupted(f"Stopped by {how} {when}: run {run_dir} keeps {epochs}; run the same command again "
                               f"to {goal}.", signal_number)


