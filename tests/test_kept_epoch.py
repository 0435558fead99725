"""Issue 35: a random-init run keeps the epoch its saved model scores best, scored with the BatchNorm statistics the
saved model uses (re-estimated on the training images), not with the statistics as trained."""

import dataclasses

import keras
import numpy as np
import pytest

from helpers import config, models, runs
from helpers.engine import training
from helpers.pipeline import datasets_from_split
from helpers.tasks import CLASSES
from tests.conftest import TOY_PAPER_A, phantom_split, train_tiny


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


class Weights(keras.callbacks.Callback):
    """Every epoch's trainable weights, as training left them."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([w.numpy().copy() for w in self.model.trainable_weights])


class UntrainedThenStale(keras.callbacks.Callback):
    """Sets what each epoch is validated as, before Keras validates it: epoch 1 untrained (a zero head: every class
    1/4), epoch 2 a network that knows the validation images (`good`) with stale BatchNorm statistics, as
    random-init runs have them (notebook 02's lesson)."""

    def __init__(self, good):
        super().__init__()
        self.good, self.epoch = good, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_test_begin(self, logs=None):
        if self.epoch == 0:
            head = self.model.get_layer(models.LOGITS)
            head.set_weights([np.zeros_like(w) for w in head.get_weights()])
        else:
            self.model.set_weights(self.good)
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.moving_variance.assign(layer.moving_variance * 1e-4)


def test_a_run_whose_stale_loss_rises_while_it_learns_keeps_the_epoch_it_learned(phantom_root, tmp_path):
    split = phantom_split(phantom_root)
    keras.utils.set_random_seed(1)
    knows = models.build_model("paper_a", 4, 32, "none", 0.0, backbone="toy").model
    knows.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    val = datasets_from_split(split, CLASSES, 32, 8, normalisation="rescale")["val"]
    knows.fit(val, epochs=40, verbose=0)
    recipe = dataclasses.replace(TOY_PAPER_A, dropout=0.0)
    run = train_tiny(tmp_path / "run", phantom_root, recipe, split=split, epochs=2,
                     callbacks=[UntrainedThenStale(knows.get_weights())])
    history, chance = run.history(), np.log(4)
    if "val_loss_as_trained" in history:  # the figures training saw before issue 35 are the as-trained ones
        assert history["val_loss_as_trained"].iloc[0] == pytest.approx(chance, abs=1e-4)
        assert history["val_loss_as_trained"].iloc[1] > chance, "the scenario: the stale loss rose"
    assert run.settings.epochs_run == 2 and run.score["loss"] < chance, f"kept the untrained epoch: {run.score}"
    assert history["val_loss"].iloc[1] < chance, "re-estimated, epoch 2 knows its validation images"
    assert history["val_accuracy"].iloc[1] > history["val_accuracy"].iloc[0]
    # What it was chosen on is what the saved model scores (its statistics re-estimated once more in _finish).
    assert run.score["loss"] == pytest.approx(history["val_loss"].iloc[1], abs=2e-3)
    assert run.score["accuracy"] == pytest.approx(history["val_accuracy"].iloc[1], abs=1e-6)
    before = run.scores["val_before_batchnorm_reestimation"]
    assert before["loss"] == pytest.approx(history["val_loss_as_trained"].iloc[1], abs=1e-4), "as trained"
    shown = runs.kept_and_last(run)  # notebook 03's table
    assert list(shown.index) == ["kept (epoch 2)", "last (epoch 2)"] and "val loss as trained" in shown


def test_rescoring_every_epoch_leaves_the_weights_as_training_leaves_them(phantom_root, tmp_path, monkeypatch):
    # Paper A's head has dropout: re-estimating must not move its random generator either.
    trajectories, rows = [], []
    for rescored in (True, False):
        monkeypatch.setattr(training, "scores_as_saved", lambda settings, recipe, on=rescored: on)
        weights = Weights()
        run = train_tiny(tmp_path / f"run_{rescored}", phantom_root, TOY_PAPER_A, epochs=2, callbacks=[weights])
        trajectories.append(weights.epochs)
        rows.append(run.history())
    assert "val_loss_as_trained" in rows[0] and "val_loss_as_trained" not in rows[1]
    for with_it, without in zip(*trajectories):
        for a, b in zip(with_it, without):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(rows[0]["train_loss"], rows[1]["train_loss"], rtol=1e-6)
    # The first epoch's statistics as trained are the same in both runs (later ones restart from re-estimated ones).
    assert rows[0]["val_loss_as_trained"].iloc[0] == pytest.approx(rows[1]["val_loss"].iloc[0], rel=1e-5)


def test_the_kept_epoch_line_shows_the_kept_and_the_last_epoch_side_by_side():
    rows = [{"val_loss": 0.9, "val_accuracy": 0.5, "val_balanced_accuracy": 0.45},
            {"val_loss": 0.7, "val_accuracy": 0.6, "val_balanced_accuracy": 0.55},
            {"val_loss": 0.8, "val_accuracy": 0.7, "val_balanced_accuracy": 0.65}]
    line = training.kept_epoch_line(rows, 2, "val")
    assert line == ("Kept epoch 2, the one with the lowest val loss: loss 0.700, accuracy 0.600, balanced_accuracy "
                    "0.550; the last, epoch 3: loss 0.800, accuracy 0.700, balanced_accuracy 0.650.")
    assert training.kept_epoch_line(rows[:2], 2, "val").startswith("Kept epoch 2, the last")
