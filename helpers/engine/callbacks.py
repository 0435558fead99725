"""What runs inside every training epoch: Keras callbacks that time it, stop early across resumes and stop politely
on SIGTERM, and the balanced-accuracy metric every epoch reports.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import keras
import numpy as np


class Timing(keras.callbacks.Callback):
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

    def __init__(self, progress_rows: list):
        super().__init__()
        last = progress_rows[-1] if progress_rows else {}  # the history rows of the epochs before this fit
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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
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


class StopRequest:
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
def sigterm_stops(stop: StopRequest):
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


class StopWhenAsked(keras.callbacks.Callback):
    """Ends the fit after the batch during which SIGTERM came (or after the epoch's saving, if it came then), by
    raising: `model.stop_training` would let Keras validate and end the cut epoch, which `resume.SaveEpoch` would then
    keep as if it were complete. The last of the callbacks, so that an epoch that did end is saved first."""

    def __init__(self, stop: StopRequest):
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch, logs=None):
        self.stop.check()

    def on_epoch_end(self, epoch, logs=None):
        self.stop.check()


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


def epoch_metrics(n_classes: int) -> list:
    """What every epoch reports, in training and validation alike."""
    return ["accuracy", BalancedAccuracy(n_classes)]
