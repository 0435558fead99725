"""Resuming a run: is the folder's run the one asked for, and what it has done so far (epochs, history rows, the best
epoch, early stopping's count), restored from its saved state and saved again after every epoch.

A folder holding another run is refused, saying what differs; a damaged file stops the run with its name
(`storage.RunFolderError`): a typo must never delete finished epochs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from helpers import config
from helpers.engine import callbacks, storage
from helpers.engine.storage import RunSettings
from helpers.recipes import Recipe
from helpers.splits import fingerprint


class RunSettingsError(Exception):
    """A run folder holds a different run than the one asked for."""


# What makes two runs the same run: a folder holding another is refused, never silently continued.
IDENTITY = ("recipe", "classes", "data_root", "split_fingerprint", "repeat", "image_size", "epochs", "batch_size",
            "weights_requested", "seed")


def repeat_fingerprint(split: pd.DataFrame, repeat: int) -> str:
    """What a run trains and tests on: the rows of its own repeat (other repeats of the split do not matter)."""
    return fingerprint(split[split["repeat"] == repeat])


def differences(old: RunSettings, new: RunSettings) -> list[str]:
    """The identity settings two runs disagree on, each as "name: old → new" (the split in words: its fingerprint
    is a hash that tells a reader nothing)."""
    return [SPLIT_CHANGED if key == "split_fingerprint" else f"{key}: {getattr(old, key)!r} → {getattr(new, key)!r}"
            for key in IDENTITY if getattr(old, key) != getattr(new, key)]


SPLIT_CHANGED = ("the split: its images differ from those the run was trained on (files added, removed or changed "
                 "since, or another split mode, task or seed)")


def existing_run(run_dir: Path, settings: RunSettings, split: pd.DataFrame, log):
    """The settings of the run already in `run_dir`, None for an empty (or never started) folder.

    A folder without settings.json (a command that failed half-way) is started again; one holding a different run is
    refused, saying what differs; one whose settings.json, split.csv (once an epoch was saved) or finished run's
    model.keras is there but unreadable, or missing, stops with `RunFolderError`: a typo must not delete work.
    """
    previous = storage.read_settings(run_dir)
    if previous is None:
        if run_dir.exists() and any(run_dir.iterdir()):
            log(f"{run_dir} holds no complete run (no settings.json): starting it afresh.")
        return None
    changed = differences(previous, settings)
    if SPLIT_CHANGED in changed:
        changed[changed.index(SPLIT_CHANGED)] += _images_changed(run_dir, split, settings)
    if changed:
        raise RunSettingsError(f"{run_dir} holds a different run; what differs: {'; '.join(changed)}. "
                               "Use another output folder, or delete this one to start over.")
    split_problem = _split_file_problem(run_dir, settings, previous.split_fingerprint)
    if split_problem:
        if previous.finished or storage.has_trained(run_dir):
            # epochs that must not be trained over
            raise storage.damaged(storage.split_path(run_dir), run_dir, split_problem)
        log(f"{run_dir}'s split.csv is not usable ({split_problem}) and no epoch was saved: starting the run afresh.")
        return None
    if previous.finished:
        _check_finished(run_dir, previous)
    started_with = previous.global_batch_size or previous.batch_size  # runs before several devices: one
    if not previous.finished and started_with != settings.global_batch_size:
        raise RunSettingsError(
            f"{run_dir} was training with a global batch of {started_with} ({previous.batch_size} per device), and "
            f"this machine would continue it with {settings.global_batch_size}: resume it on as many devices as "
            "it started on, or train into another folder")
    return previous


def _split_file_problem(run_dir: Path, settings: RunSettings, fingerprint: str) -> str | None:
    """Why a run folder's split.csv is not the split its settings.json records (missing, unreadable, edited), or
    None. settings.json is written after split.csv, so with both there a mismatch is damage, not a half-done start."""
    if not storage.split_path(run_dir).exists():
        return "missing"
    try:
        saved = storage.read_split(run_dir, settings.data_root)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        return config.first_line(exc)
    if repeat_fingerprint(saved, settings.repeat) != fingerprint:
        return "its rows are not the split its settings.json records: cut short or edited"
    return None


def _images_changed(run_dir: Path, split: pd.DataFrame, settings: RunSettings, shown: int = 3) -> str:
    """The images that differ between the split the run saved and `split`, by relpath (up to `shown` of each kind,
    then a count), as " [removed …; added …]": a user who deleted one training image must be told which. Empty when
    the saved split cannot be read."""
    try:
        old = storage.read_split(run_dir, settings.data_root)
    except (OSError, ValueError, pd.errors.ParserError):  # EmptyDataError is a ValueError
        return ""
    old, new = (s[s["repeat"] == settings.repeat].drop_duplicates("relpath").set_index("relpath")
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


def _check_finished(run_dir: Path, settings: RunSettings) -> None:
    """A run that says it is finished has what `_finish` wrote: its scores and a whole model.keras."""
    path = storage.settings_path(run_dir)
    missing = [key for key in ("scores", "epochs_run", "pretrained", "weights_used") if getattr(settings, key) is None]
    if missing or settings.monitored_on not in settings.scores:
        raise storage.damaged(
            path, run_dir, f"it says finished but has no {', '.join(missing) or 'scores of its part'}: "
                           "edited by hand, or written by an older version",
            f'set "finished" back to false to resume the run, or delete the folder {run_dir} to start the '
                      "run again")
    problem = storage.model_file_problem(storage.model_path(run_dir))
    if problem:
        raise storage.damaged(storage.model_path(run_dir), run_dir, problem,
                      f"delete the folder {run_dir} to train the run again")


# Logs that are about the epoch, not its training images: kept under their own names in the history.
UNPREFIXED = (*callbacks.Timing.KEYS, "reestimation_seconds")


class Progress:
    """What a run has done so far (epochs, history rows, the best epoch, early stopping's count), restored from
    a saved state and saved again, atomically, after every epoch."""

    def __init__(self, run_dir: Path, settings: RunSettings, recipe: Recipe, state, writes: bool, log):
        self.run_dir, self.settings, self.recipe, self.writes, self.log = run_dir, settings, recipe, writes, log
        self.state = state or {}
        self.rows = list(self.state.get("history", []))[: self.state.get("epochs_done")]  # older states: one too many
        self.best_loss = self.state.get("best_val_loss", np.inf)
        self.best_epoch = self.state.get("best_epoch")
        self.phase = self.state.get("phase")
        self.timing = None
        if writes:
            storage.write_history(run_dir, self.rows)  # drops any row of an epoch the state does not know

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    def callbacks(self, phase: str) -> list:
        self.timing = callbacks.Timing(progress_rows=self.rows)
        found = [self.timing, SaveEpoch(self)]
        if phase == "main" and self.recipe.early_stopping:
            main_rows = self.rows[self.settings.warmup_epochs:]
            found.append(callbacks.ResumableEarlyStopping(self.recipe.patience, main_rows, self._monitored("loss")))
        return found

    def _monitored(self, metric: str) -> str:
        return f"{self.settings.monitored_on}_{metric}"

    def stop_training_clock(self) -> None:
        """The epoch's training is over (validation begins): for validation that Keras does not run itself."""
        if self.timing is not None:
            self.timing.training_done()

    def epoch_finished(self, model, epoch: int, logs: dict) -> None:
        row = {"epoch": epoch}
        for key, value in logs.items():  # Keras calls the monitored part "val" even when it is the test part
            name = (self._monitored(key[4:]) if key.startswith("val_") else key if key in UNPREFIXED
                    else f"train_{key}")
            row[name] = round(float(value), 6)
        loss = row.get(self._monitored("loss"), np.inf)
        if not self.writes:  # another worker writes the run folder: only keep count
            if self.recipe.select_best and loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch + 1
            self.rows.append(row)
            return
        # The weights alone (a third of the full model) are kept too: the fall-back once the next epoch is saved,
        # and the best epoch's. Named after its epoch: a state never names weights it did not see. A recipe that
        # keeps its last epoch needs no best weights: its fall-back is the previous full model, as much on disk and
        # less written.
        if self.recipe.select_best and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
        previous = None
        if self.state:  # the state as it was (its own rows, not the list that grows), named by its weights alone
            previous = {**{k: v for k, v in self.state.items() if k not in ("previous", "weights_only")},
                        "history": copy.deepcopy(self.rows)}
            if storage.has_weights(self.run_dir, previous["epochs_done"]):  # not in older versions' runs
                previous["checkpoint"] = storage.weights_name(previous["epochs_done"])
        self.rows.append(row)
        self.state = {"phase": self.phase, "epochs_done": epoch + 1, "history": self.rows,
                      "best_val_loss": self.best_loss, "best_epoch": self.best_epoch}
        self.state["checkpoint"] = storage.save_checkpoint(model, self.run_dir, epoch + 1,
                                                              {**self.state, "previous": previous},
                                                              keep_weights=self.recipe.select_best)
        storage.write_history(self.run_dir, self.rows)


class SaveEpoch(keras.callbacks.Callback):
    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        self.progress.epoch_finished(self.model, epoch, logs or {})
