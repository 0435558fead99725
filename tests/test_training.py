"""Training runs: device policy, resume after an interruption, two-phase recipes, train → predict, and the
run folder's promises (it records its recipe in full, refuses a different run and says what differs)."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from helpers import config, curves, image_files, runs
from helpers.cli import main
from helpers.curves import time_to_accuracy
from helpers.engine.resume import RunSettingsError
from helpers.engine.storage import RunNotFoundError
from helpers.engine.training import plan_settings
from helpers.models import load_backbone
from helpers.recipes import IMPROVED, PAPER_A, PAPER_B, split_epochs
from helpers.runs import Run
from helpers.tasks import CLASSES
from tests.conftest import TOY_PAPER_A, InterruptAfter, Interrupted, phantom_split, train_tiny

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


@pytest.mark.parametrize("recipe, epochs, pretrained, expected", [
    (IMPROVED, 30, True, (3, 27)), (IMPROVED, 4, True, (2, 2)), (IMPROVED, 1, True, (0, 1)),
    (IMPROVED, 30, False, (0, 30)), (PAPER_A, 100, True, (0, 100)),
])
def test_warmup_only_protects_pretrained_weights(recipe, epochs, pretrained, expected):
    assert split_epochs(recipe, epochs, pretrained) == expected


def test_resume_continues_at_the_first_unfinished_epoch(resumed_run):
    run, settings, interrupted_history, resumed_epochs = resumed_run
    assert list(interrupted_history["epoch"]) == [0, 1]
    assert resumed_epochs == [2]
    assert list(Run(run).history()["epoch"]) == [0, 1, 2]
    assert settings.finished and settings.epochs_run == 3


def test_run_folder_records_what_was_actually_used(resumed_run):
    run, settings, _, _ = resumed_run
    for name in ("model.keras", "history.csv", "split.csv", "settings.json"):
        assert (run / name).exists()
    assert (run / "model.keras").stat().st_size < 150e6, "saved without the optimizer state (~100 MB, not ~300)"
    assert not (run / "checkpoints").exists(), "resume checkpoints are removed once finished"
    saved = json.loads((run / "settings.json").read_text())
    assert saved["recipe"] == TOY_PAPER_A.to_dict(), "the recipe in full, not only its name"
    assert saved["weights_used"] == "none" and saved["pretrained"] is False
    assert saved["profile"] == "fast" and saved["image_size"] == 32
    assert saved["device_policy"]["mixed_precision"] is False and saved["device_policy"]["replicas"] == 1
    assert saved["global_batch_size"] == saved["batch_size"]
    assert "re-estimated" in saved["batchnorm"] and saved["batchnorm_reestimation_batches"] > 0
    assert set(saved["scores"]) == {"val", "val_before_batchnorm_reestimation"}, "scores named after their part"
    named_after_part = {"train_loss", "train_accuracy", "val_accuracy", "val_balanced_accuracy", "train_seconds"}
    assert named_after_part <= set(Run(run).history().columns)
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}


def test_finished_run_is_not_retrained_and_a_different_run_is_refused_saying_what_differs(resumed_run,
                                                                                          phantom_root):
    run, settings, _, _ = resumed_run
    again = train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3)
    assert isinstance(again, Run) and again.folder == run and again.train_seconds == settings.train_seconds
    with pytest.raises(RunSettingsError, match=r"what differs: recipe: .*seed: 0 → 3"):
        train_tiny(run, phantom_root, IMPROVED, epochs=3, seed=3)
    with pytest.raises(RunSettingsError, match=r"what differs: the split: its images differ from those the run was "):
        train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3, split=phantom_split(phantom_root, seed=5))


def test_a_modified_recipe_reloads_from_its_folder_without_any_registry(phantom_root, tmp_path):
    no_dropout = dataclasses.replace(PAPER_A, name="paper_a_no_dropout", dropout=0.0, backbone="toy")
    train_tiny(tmp_path / "run", phantom_root, no_dropout, epochs=1)
    assert Run(tmp_path / "run").recipe == no_dropout


def test_predict_gives_probabilities_per_class_and_per_image_errors(resumed_run, phantom_root, tmp_path):
    run, settings, _, _ = resumed_run
    good = [phantom_root / "COVID" / "images" / "COVID-1.png", phantom_root / "Normal" / "images" / "Normal-2.png"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    table = Run(run).predict([*good, tmp_path / "missing.png", broken])
    probabilities = table[settings.classes].to_numpy()
    np.testing.assert_allclose(probabilities[:2].sum(axis=1), 1.0, rtol=1e-5)
    assert table["predicted"].iloc[0] in settings.classes
    assert list(table["error"].iloc[2:]) == ["file not found", "not an image: no image format recognised in its bytes"]


def test_predict_cli_prints_a_table_and_json_and_warns_about_non_radiographs(resumed_run, phantom_root, tmp_path,
                                                                             capsys):
    from tests.conftest import write_png

    run, settings, _, _ = resumed_run
    image = str(phantom_root / "COVID" / "images" / "COVID-1.png")
    assert main(["predict", image, "--run", str(run)]) == 0
    captured = capsys.readouterr()
    assert "Viral Pneumonia" in captured.out and "warning" not in captured.err
    tiny = str(write_png(tmp_path / "dot.png", np.full((1, 1), 7, np.uint8)))
    ramp = str(write_png(tmp_path / "ramp.png", np.tile(np.linspace(0, 255, 128), (128, 1)).astype(np.uint8)))
    assert main(["predict", image, "nowhere.png", tiny, ramp, "--run", str(run), "--json"]) == 1
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) and rows[0]["warning"] is None
    assert rows[1]["error"] == "file not found" and rows[1]["probabilities"] is None
    assert rows[2]["warning"] == "is only 1×1 px" and "smooth gradient" in rows[3]["warning"]
    assert f"warning: {tiny} is only 1×1 px: far from a chest radiograph" in captured.err


def test_predict_needs_a_training_run(tmp_path, capsys):
    with pytest.raises(RunNotFoundError, match="is not a training run"):
        _ = Run(tmp_path).settings
    assert main(["predict", "x.png", "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_improved_recipe_warms_up_then_fine_tunes_with_batchnorm_frozen(phantom_root, tmp_path):
    donor, _, _ = load_backbone("none", 32, backbone="toy")
    weights = tmp_path / "notop.weights.h5"
    donor.save_weights(weights)
    run = tmp_path / "improved"
    settings = train_tiny(run, phantom_root, dataclasses.replace(IMPROVED, backbone="toy"), epochs=2,
                          weights=str(weights)).settings
    assert settings.pretrained and (settings.warmup_epochs, settings.main_epochs) == (1, 1)
    assert settings.class_weights is not None and settings.recipe["flip"] is True
    assert set(settings.scores) == {"val"}, "a pretrained backbone keeps its BatchNorm statistics"
    model = keras.models.load_model(run / "model.keras")
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert model.get_layer("toy1_conv").trainable


def test_train_cli_end_to_end(phantom_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXR_EAGER", "1")  # one epoch of a few steps: quicker untraced (the two-device CLI test traces)
    run = tmp_path / "cli-run"
    assert main(["train", "--data", str(phantom_root), "--recipe", "improved", "--task", "2", "--out", str(run),
                 "--epochs", "1", "--image-size", "32", "--weights", "none"]) == 0
    assert "RANDOM-INIT" in capsys.readouterr().out
    assert Run(run).classes == ["COVID", "Normal"]


def test_paper_b_protocol_trains_on_a_sub_sample_and_selects_nothing_on_its_test_part(phantom_root, tmp_path):
    run = tmp_path / "paper_b"
    split = phantom_split(phantom_root, "paper_b", task=3)
    settings = train_tiny(run, phantom_root, dataclasses.replace(PAPER_B, backbone="toy"), task=3, split=split,
                          epochs=2, repeat=2).settings
    assert settings.monitored_on == "test" and settings.recipe["select_best"] is False
    assert settings.classes == ["COVID", "Normal", "Viral Pneumonia"]
    history = Run(run).history()
    assert list(history["epoch"]) == [0, 1] and history["elapsed_seconds"].is_monotonic_increasing
    assert {"test_accuracy", "test_balanced_accuracy"} <= set(history.columns) and "val_accuracy" not in history
    assert (history["train_seconds"] <= history["elapsed_seconds"]).all(), "training time leaves out evaluation"
    assert "reestimation_seconds" not in history, "it selects nothing: its epochs are not re-estimated (a cost)"
    assert set(settings.scores) == {"test", "test_before_batchnorm_reestimation"}
    assert Run(run).part("test")["relpath"].isin(split.loc[(split["repeat"] == 2) & (split["split"] == "test"),
                                                           "relpath"]).all(), "its own repeat's test part"
    with pytest.raises(ValueError, match="selects its best epoch on validation images, and this split has none"):
        train_tiny(tmp_path / "x", phantom_root, IMPROVED, task=3, split=split, epochs=1)


@pytest.mark.parametrize("mixed,backbone", [(False, "toy"), (True, "toy"), (False, "resnet50")],
                         ids=["float32", "mixed_float16", "resnet50"])
def test_a_run_that_reuses_the_previous_runs_model_trains_exactly_as_a_new_build(phantom_root, tmp_path, monkeypatch,
                                                                                  mixed, backbone):
    """Issue 22: Paper B's repeats reuse one built and traced model instead of tracing each (about 20 s a run on a
    CPU). Reused, a run must give the history and weights of a new build: initial weights and Adam restarted.

    With ResNet50 the first run also asks, once per process, whether ImageNet weights can be had, which builds a
    ResNet50: asked after seeding, its draws shifted the first run's initial weights only, so the run reusing them
    differed from the one built afresh (a run's weights must depend on its seed alone)."""
    from helpers import models
    from helpers.engine import training

    if mixed:
        monkeypatch.setenv("CXR_MIXED_PRECISION", "1")
    recipe = dataclasses.replace(PAPER_B, backbone=backbone)
    split = phantom_split(phantom_root, "paper_b", task=3)
    logs = {}

    weights = "imagenet" if backbone == "resnet50" else "none"  # offline, ResNet50 falls back to random weights

    def run(name, repeat, epochs):
        logs[name] = []
        train_tiny(tmp_path / name, phantom_root, recipe, task=3, split=split, repeat=repeat, epochs=epochs,
                   weights=weights, log=logs[name].append)
        return Run(tmp_path / name)

    models.imagenet_unavailable.cache_clear()  # the first run asks again
    training.forget_kept_model()
    run("first", repeat=0, epochs=2)  # builds, traces and trains the model it keeps
    traced_step = training._KEPT["model"].train_function
    reused = run("reused", repeat=1, epochs=3)
    assert training._KEPT["model"].train_function is traced_step, "the reused run traced its training step again"
    training.forget_kept_model()
    built = run("built", repeat=1, epochs=3)
    assert [any(line.startswith("Reusing the model") for line in logs[n]) for n in logs] == [False, True, False]
    columns = [c for c in reused.history() if "seconds" not in c]
    pd.testing.assert_frame_equal(reused.history()[columns], built.history()[columns])
    assert all(np.array_equal(a, b) for a, b in zip(reused.model.get_weights(), built.model.get_weights()))


class RecordEagerness(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.eager = []

    def on_train_begin(self, logs=None):
        self.eager.append(self.model.run_eagerly)


def test_an_eager_run_trains_as_a_traced_one_and_resumes_eagerly(phantom_root, tmp_path, monkeypatch):
    """CXR_EAGER=1 (the tests' notebooks) skips tracing, not a number: same seed, same history and weights."""
    from helpers.engine import training

    recipe = dataclasses.replace(PAPER_B, backbone="toy")
    split = phantom_split(phantom_root, "paper_b", task=3)
    seen = {}
    for name, eager in (("traced", "0"), ("eager", "1")):
        monkeypatch.setenv("CXR_EAGER", eager)
        training.forget_kept_model()
        seen[name] = RecordEagerness()
        settings = train_tiny(tmp_path / name, phantom_root, recipe, task=3, split=split, epochs=2,
                              callbacks=[seen[name]]).settings
        assert settings.device_policy["eager"] is (eager == "1")
    assert (seen["traced"].eager, seen["eager"].eager) == ([False], [True])
    traced, eager = Run(tmp_path / "traced"), Run(tmp_path / "eager")
    columns = [c for c in traced.history() if "seconds" not in c]
    pd.testing.assert_frame_equal(eager.history()[columns], traced.history()[columns], atol=1e-5)
    for a, b in zip(eager.model.get_weights(), traced.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)

    with pytest.raises(Interrupted):
        train_tiny(tmp_path / "resumed", phantom_root, recipe, task=3, split=split, epochs=2,
                   callbacks=[InterruptAfter(0)])
    resumed = RecordEagerness()
    train_tiny(tmp_path / "resumed", phantom_root, recipe, task=3, split=split, epochs=2, callbacks=[resumed])
    assert resumed.eager == [True], "a loaded checkpoint runs as the policy says, not as it was saved"


class RecordStateAtTrainBegin(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.built = []

    def on_train_begin(self, logs=None):
        self.built.append((self.model.optimizer.built, all(metric.variables for metric in self.model.metrics)))


def test_each_phase_creates_its_optimizer_and_metric_state_before_its_first_traced_step(phantom_root, tmp_path):
    """A traced step that creates variables is traced twice: ResNet50's first fit took 22 s instead of 15. Each phase
    (warm-up, fine-tuning: a new optimizer) must start with Adam's slots and the metrics' counters made."""
    from tests.conftest import TOY_IMPROVED, toy_weights

    seen = RecordStateAtTrainBegin()
    settings = train_tiny(tmp_path / "run", phantom_root, TOY_IMPROVED, epochs=2, callbacks=[seen],
                          weights=str(toy_weights(tmp_path / "toy.weights.h5"))).settings
    assert settings.warmup_epochs == 1 and seen.built == [(True, True), (True, True)]


def test_a_run_fed_uint8_pixels_trains_scores_predicts_and_maps_as_one_fed_normalised_images(phantom_root, tmp_path,
                                                                                            monkeypatch):
    """Issue 22, the GPU's input path forced on the CPU: batches leave the pipeline as uint8 grayscale and the model
    normalises them itself. Same seed, same numbers: history, scores, weights, probabilities and maps. A run begun
    that way resumes where the policy feeds normalised images, fed as its model was built."""
    from helpers import cam, models
    from helpers.engine import training

    recipe = dataclasses.replace(PAPER_B, backbone="toy")  # no dropout: two runs of one seed train alike
    split = phantom_split(phantom_root, "paper_b", task=3)
    trained = {}
    for name, uint8 in (("normalised", "0"), ("pixels", "1")):
        monkeypatch.setenv("CXR_UINT8_INPUTS", uint8)
        training.forget_kept_model()
        trained[name] = train_tiny(tmp_path / name, phantom_root, recipe, task=3, split=split, epochs=2).settings
    fed, own = Run(tmp_path / "normalised"), Run(tmp_path / "pixels")
    assert not models.takes_pixels(fed.model) and models.takes_pixels(own.model)
    assert trained["pixels"].device_policy["uint8_inputs"] and "uint8 inputs" in trained["pixels"].device_policy[
        "reason"]
    columns = [c for c in fed.history() if "seconds" not in c]
    pd.testing.assert_frame_equal(own.history()[columns], fed.history()[columns], atol=1e-6)
    assert trained["pixels"].scores == trained["normalised"].scores  # rounded to 4 places
    for a, b in zip(own.model.get_weights(), fed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    test = own.part("test")
    pd.testing.assert_frame_equal(own.predict_part("test", verbose=0), fed.predict_part("test", verbose=0), atol=1e-5)
    pixels = image_files.read_images(test["path"], own.image_size).pixels
    for method in ("cam", "grad-cam"):
        np.testing.assert_allclose(cam.maps(own, pixels, method).maps, cam.maps(fed, pixels, method).maps, atol=1e-4)

    monkeypatch.setenv("CXR_UINT8_INPUTS", "1")
    with pytest.raises(Interrupted):
        train_tiny(tmp_path / "resumed", phantom_root, recipe, task=3, split=split, epochs=2,
                   callbacks=[InterruptAfter(0)])
    monkeypatch.setenv("CXR_UINT8_INPUTS", "0")
    logs = []
    settings = train_tiny(tmp_path / "resumed", phantom_root, recipe, task=3, split=split, epochs=2,
                          log=logs.append).settings
    assert settings.finished and f"Resuming {tmp_path / 'resumed'} after epoch 1." in logs
    assert models.takes_pixels(Run(tmp_path / "resumed").model), "fed as it was built"


def test_a_model_with_dropout_is_never_reused(phantom_root, tmp_path):
    """Dropout draws from a generator that a finished run has moved on: a reused model would train differently."""
    from helpers.engine import training

    logs = []
    training.forget_kept_model()
    for name in ("one", "two"):
        train_tiny(tmp_path / name, phantom_root, TOY_PAPER_A, epochs=1, log=logs.append)
    assert not any(line.startswith("Reusing the model") for line in logs)


def test_time_to_accuracy_reads_the_first_epoch_over_the_line():
    history = pd.DataFrame({"test_accuracy": [0.5, 0.96, 0.94, 0.99], "train_seconds": [10, 20, 30, 40]})
    reached = time_to_accuracy(history, 0.95, column="test_accuracy")
    assert reached.seconds == 20 and reached.reached and reached.resolution is None, "a plain history: no images"
    never = time_to_accuracy(history, 0.995, column="test_accuracy")
    assert never.seconds is None and not never.reached and not never.shown_above


@pytest.mark.parametrize("option, value, message", [
    ("epochs", 0, "epochs must be a positive whole number; found 0"),
    ("image_size", 0, "image_size must be a positive whole number; found 0"),
    ("image_size", 16, "image_size must be at least 32"),
    ("batch_size", -4, "batch_size must be a positive whole number; found -4"),
])
def test_numbers_mean_what_they_say(phantom_root, tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        train_tiny(tmp_path / "run", phantom_root, **{option: value})
    assert not (tmp_path / "run").exists(), "nothing is written before the settings are known to be sound"


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--image-size", "-1"), ("--batch-size", "0")])
def test_cli_refuses_zero_and_negative_numbers_in_one_line(phantom_root, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(phantom_root), "--out", str(tmp_path / "run"), flag, value])
    assert f"{flag}: must be at least 1, found {value}" in capsys.readouterr().err


def test_predict_cli_writes_one_cam_overlay_per_image(resumed_run, phantom_root, tmp_path, capsys):
    """Paper A's head has no linear CAM, so this exercises Grad-CAM (at an earlier layer, too)."""
    run, _, _, _ = resumed_run
    images = [str(phantom_root / c / "images" / f"{c}-1.png") for c in ("COVID", "Normal")]
    out = tmp_path / "maps"
    assert main(["predict", *images, "nowhere.png", "--run", str(run), "--cam", str(out), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [r["overlay"] is not None for r in rows] == [True, True, False]
    assert sorted(p.name for p in out.iterdir()) == ["COVID-1_cam.png", "Normal-1_cam.png"]
    assert main(["predict", images[0], "--run", str(run), "--cam", str(out), "--cam-method", "cam"]) == 2
    assert "CAM needs a linear head" in capsys.readouterr().err
    assert main(["predict", images[0], "--run", str(run), "--cam", str(tmp_path / "fine"),
                 "--cam-layer", "toy1_out"]) == 0
    assert "1 overlay(s) written" in capsys.readouterr().out
    assert main(["predict", images[0], "--run", str(run), "--cam", str(tmp_path / "x"), "--cam-layer", "conv9"]) == 2
    assert capsys.readouterr().err.startswith("error: No such layer: conv9")


def test_the_one_off_tracing_is_measured_in_the_first_epoch_of_every_fit_and_left_out_of_the_curve(resumed_run):
    run, _, _, _ = resumed_run  # epochs 0-1, interrupted, then epoch 2 in a new fit: traced twice
    history = Run(run).history()
    one_off = history["one_off_seconds"]
    assert one_off[0] > 0 and one_off[2] > 0 and one_off[1] == 0, "tracing at the start of each fit, not between"
    assert (one_off < history["train_seconds"].diff().fillna(history["train_seconds"])).all(), "a part of its epoch"
    curve = Run(run).held_out_curve()
    np.testing.assert_allclose(curve["train_seconds"], history["train_seconds"] - one_off.cumsum())
    assert curve.attrs["one_off"] == "measured"
    assert curve.attrs["images"] == len(Run(run).part("val")) and (curve["low"] <= curve["balanced_accuracy"]).all()


def test_runs_trained_before_the_one_off_was_measured_get_an_estimate_from_whole_epochs():
    old = pd.DataFrame({"epoch": [0, 1, 2, 3], "train_seconds": [30.0, 40.0, 70.0, 80.0]})
    one_off, how = curves.one_off_seconds(old, warmup_epochs=2)  # each phase: a 30 s epoch, then a 10 s one
    np.testing.assert_allclose(one_off, [20, 0, 20, 0])
    assert how == "estimated"
    one_off, how = curves.one_off_seconds(old.head(1))
    assert np.isnan(one_off[0]) and how == "not measured", "one epoch: nothing to compare with"


def test_the_interval_is_wilsons_on_a_balanced_set_and_on_the_effective_size_otherwise():
    for right in (18, 17, 9):
        wilson = binomtest(right, 18).proportion_ci(0.95, method="wilson")
        np.testing.assert_allclose(curves.accuracy_interval(right / 18, {"a": 6, "b": 6, "c": 6}),
                                   [wilson.low, wilson.high])
    assert curves.effective_images({"a": 2, "b": 1, "c": 1, "d": 0}) == pytest.approx(9 / 2.5), "K² / Σ 1/n_k"


def curve_on(class_images: dict, accuracy=(0.5, 1.0)) -> pd.DataFrame:
    curve = pd.DataFrame({"epoch": range(len(accuracy)), "train_seconds": [10.0 * (i + 1) for i in range(len(
        accuracy))], "one_off_seconds": 3.0, "balanced_accuracy": accuracy})
    curve["low"], curve["high"] = curves.accuracy_interval(curve["balanced_accuracy"], class_images)
    curve.attrs = {"class_images": class_images, "level": 0.95}
    return curve


def test_the_resolution_says_what_one_error_costs_and_whether_95_percent_can_be_shown_at_all():
    demo = curves.resolution(curve_on({"a": 6, "b": 6, "c": 6}))
    assert demo.text == "18 held-out images: one error = 5.6 points; 95% needs 18 of 18 correct"
    assert not demo.can_show and demo.low_if_all_correct == pytest.approx(18 / (18 + 1.959964**2))
    assert demo.images_needed == 73 and demo.verdict.startswith(
        "cannot show 95%: even 18 of 18 correct gives a 95% interval with lower bound 82.4%")
    assert demo.points_per_error == pytest.approx(100 / 18)
    assert curves.resolution(curve_on({"a": 37, "b": 37})).can_show, "74 images, all right: just above 95%"
    assert not curves.resolution(curve_on({"a": 36, "b": 36})).can_show
    assert curves.resolution(curve_on({"a": 20, "b": 20})).correct_needed == 38, "95% of 40 allows 2 errors"
    uneven = curves.resolution(curve_on({"a": 100, "b": 10})).text
    assert uneven == ("110 held-out images: one error = 0.5 to 5.0 points (by class); 95% needs at least 100 of 110 "
                      "correct"), "errors where they cost least: 10 in the large class"
    assert curves.resolution(curve_on({"a": 100, "b": 10})).points_per_error == pytest.approx(2.75), "0.5 and 5.0"


def test_the_time_to_95_table_puts_the_resolution_next_to_the_result_in_numbers():
    table = curves.time_to_accuracy_table({"small": curve_on({"a": 6, "b": 6, "c": 6}),
                                         "large": curve_on({"a": 500, "b": 500}, accuracy=(0.9, 0.97)),
                                         "never": curve_on({"a": 6, "b": 6}, accuracy=(0.5, 0.9))})
    assert table.loc["small", "training seconds to 95%"] == 20.0 and table.loc["large", "shown above 95%"]
    assert table.loc["small", "95% interval then"] == "0.824 to 1.000" and not table.loc["small", "shown above 95%"]
    assert table.loc["small", "correct needed for 95%"] == 18 and table.loc["small", "held-out images"] == 18
    assert table.loc["small", "points per error"] == 5.56 and table.loc["never", "points per error"] == 8.33
    assert table.loc["small", "interval's lower bound if all correct"] == 0.824, "below 95%: cannot show it at all"
    assert table.loc["large", "correct needed for 95%"] == 950
    never = table.loc["never"]
    assert never["training seconds to 95%"] == never["95% interval then"] == "not reached" == curves.NOT_REACHED
    assert not never["shown above 95%"] and table["shown above 95%"].dtype == bool
    assert table["held-out images"].dtype.kind == table["correct needed for 95%"].dtype.kind == "i"
    assert not table.isna().any().any(), "no None or NaN: a run that never got there says so"
    when = curves.time_to_accuracy(curve_on({"a": 500, "b": 500}, accuracy=(0.9, 0.97)))
    assert when.seconds == 20.0 and when.shown_above and when.resolution.correct_needed == 950
    assert (when.low, when.high) == pytest.approx(tuple(curves.accuracy_interval(0.97, {"a": 500, "b": 500})))


def test_an_image_that_went_bad_after_the_scan_is_named_by_training_and_recorded_in_the_run(tmp_path, capsys):
    """One image cut short after the scan (its modification time put back) is skipped by the new scan, so in no
    part of the split; another spoiled in place after it (same size and time: the scan cache still trusts it) fails
    in the pipeline. Training names both, in one line each, and the run records both."""
    import os
    import shutil

    from helpers.data import scan_cached
    from helpers.datasets import find_dataset
    from helpers.splits import saved_split
    from helpers.synthetic import generate_phantoms

    root = generate_phantoms(tmp_path / "phantoms", per_class=6, size=32, seed=0)
    layout = find_dataset(root, classes=("COVID", "Normal"))

    def spoil(path, cut: bool):
        stat, data = path.stat(), path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if cut else bytes(16) + data[16:])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    first = saved_split(scan_cached(layout), task=2)
    cut = layout.root / first.loc[first["split"] == "train", "relpath"].iloc[0]
    spoil(cut, cut=True)
    scan = scan_cached(layout)
    split = saved_split(scan, task=2)
    assert [s["path"] for s in scan.skipped] == [cut.relative_to(layout.root).as_posix()]
    spoiled = layout.root / split.loc[split["split"] == "train", "relpath"].iloc[0]
    spoil(spoiled, cut=False)
    assert scan_cached(layout).skipped == scan.skipped, "the cache still trusts the spoiled file"
    capsys.readouterr()
    run = runs.train_or_load(layout, TOY_PAPER_A, split, epochs=1, image_size=32, batch_size=8, weights="none",
                             log=lambda *_: None)
    said = capsys.readouterr().err
    assert f"Left out 1 image(s) that the scan could not read (in no part of the split): {cut} (truncated" in said
    assert f"Left out 1 train image(s) that could not be read: {spoiled} (not an image" in said
    assert set(run.settings.unreadable_files) == {str(cut), str(spoiled)}
    shutil.rmtree(root)


def test_a_recipes_image_size_under_a_profile_is_one_rule_used_by_training_and_by_notebook_03(phantom_root,
                                                                                                monkeypatch):
    """Issue 37: one named rule (`Recipe.image_size_under`) decides the size: training plans with it, 03 builds by
    it."""
    split = phantom_split(phantom_root)
    for name in ("fast", "demo", "full"):
        profile = config.choose_profile({"CXR_PROFILE": name}, has_gpu=False)
        monkeypatch.setattr(config, "active_profile", lambda profile=profile: profile)
        for recipe in (PAPER_A, IMPROVED, PAPER_B):
            planned = plan_settings(recipe, split, CLASSES, phantom_root).image_size
            assert planned == recipe.image_size_under(profile) == min(recipe.image_size, profile.image_size)
    notebook = json.loads((REPO / "notebooks" / "03_transfer_learning_resnet50.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "image_size_under(" in code and "min(recipes." not in code
