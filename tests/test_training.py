"""Training runs: device policy, resume after an interruption, two-phase recipes, train → predict."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.cli import main
from helpers.recipes import IMPROVED, PAPER_A, split_epochs
from helpers.runs import RunNotFoundError, predict_images, read_settings
from helpers.training import RunSettingsError, device_policy, read_history, time_to_accuracy, train_run
from tests.conftest import TINY


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


def test_device_policy_is_a_function_of_the_visible_gpus():
    cpu = device_policy([])
    assert (cpu.mixed_precision, cpu.xla, cpu.distribute) == (False, False, "none")
    one = device_policy(["Tesla T4"])
    assert (one.mixed_precision, one.xla, one.distribute) == (True, True, "none")
    assert device_policy(["A100", "A100"]).distribute == "mirrored"


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
    assert list(read_history(run)["epoch"]) == [0, 1, 2]
    assert settings["finished"] and settings["epochs_run"] == 3


def test_run_folder_records_what_was_actually_used(resumed_run):
    run, settings, _, _ = resumed_run
    for name in ("model.keras", "history.csv", "split.csv", "settings.json"):
        assert (run / name).exists()
    assert (run / "model.keras").stat().st_size < 150e6, "saved without the optimizer state (~100 MB, not ~300)"
    assert not list((run / "checkpoints").glob("*.keras")), "resume checkpoints are removed once finished"
    saved = json.loads((run / "settings.json").read_text())
    assert saved["weights_used"] == "none" and saved["pretrained"] is False
    assert saved["profile"] == "fast" and saved["image_size"] == 32
    assert saved["device_policy"]["mixed_precision"] is False
    assert "re-estimated" in saved["batchnorm"] and saved["batchnorm_reestimation_batches"] > 0
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}


def test_finished_run_is_not_retrained_and_a_different_run_is_refused(resumed_run, phantom_root):
    run, settings, _, _ = resumed_run
    again = train_run(run, phantom_root, "paper_a", epochs=3, log=lambda *_: None, **TINY)
    assert again["train_seconds_this_session"] == settings["train_seconds_this_session"]
    with pytest.raises(RunSettingsError, match="holds a different run"):
        train_run(run, phantom_root, "improved", epochs=3, log=lambda *_: None, **TINY)


def test_predict_gives_probabilities_per_class_and_per_image_errors(resumed_run, phantom_root, tmp_path):
    run, settings, _, _ = resumed_run
    good = [phantom_root / "COVID" / "images" / "COVID-1.png", phantom_root / "Normal" / "images" / "Normal-2.png"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    table = predict_images(run, [*good, tmp_path / "missing.png", broken])
    probabilities = table[settings["classes"]].to_numpy()
    np.testing.assert_allclose(probabilities[:2].sum(axis=1), 1.0, rtol=1e-5)
    assert table["predicted"].iloc[0] in settings["classes"]
    assert list(table["error"].iloc[2:]) == ["file not found", "not an image: no image format recognised in its bytes"]


def test_predict_cli_prints_a_table_and_json(resumed_run, phantom_root, capsys):
    run, settings, _, _ = resumed_run
    image = str(phantom_root / "COVID" / "images" / "COVID-1.png")
    assert main(["predict", image, "--run", str(run)]) == 0
    assert "Viral Pneumonia" in capsys.readouterr().out
    assert main(["predict", image, "nowhere.png", "--run", str(run), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert rows[1]["error"] == "file not found" and rows[1]["probabilities"] is None


def test_predict_needs_a_finished_run(tmp_path):
    with pytest.raises(RunNotFoundError, match="is not a training run"):
        read_settings(tmp_path)


def test_improved_recipe_warms_up_then_fine_tunes_with_batchnorm_frozen(phantom_root, tmp_path):
    donor = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    weights = tmp_path / "notop.weights.h5"
    donor.save_weights(weights)
    run = tmp_path / "improved"
    settings = train_run(run, phantom_root, "improved", epochs=2, log=lambda *_: None,
                         **{**TINY, "weights": str(weights)})
    assert settings["pretrained"] and (settings["warmup_epochs"], settings["main_epochs"]) == (1, 1)
    assert settings["class_weights"] is not None and settings["flip"] is True
    model = keras.models.load_model(run / "model.keras")
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert model.get_layer("conv1_conv").trainable


def test_train_cli_end_to_end(phantom_root, tmp_path, capsys):
    run = tmp_path / "cli-run"
    assert main(["train", "--data", str(phantom_root), "--recipe", "improved", "--task", "2", "--out", str(run),
                 "--epochs", "1", "--image-size", "32", "--weights", "none"]) == 0
    assert "RANDOM-INIT" in capsys.readouterr().out
    assert read_settings(run)["classes"] == ["COVID", "Normal"]


def test_paper_b_protocol_trains_on_a_sub_sample_and_selects_nothing_on_its_test_part(phantom_root, tmp_path):
    run = tmp_path / "paper_b"
    settings = train_run(run, phantom_root, "paper_b", epochs=2, split_mode="paper_b", repeat=2,
                         log=lambda *_: None, **{**TINY, "task": 3})
    assert settings["monitored_on"] == "test" and settings["selects_best_epoch"] is False
    assert settings["classes"] == ["COVID", "Normal", "Viral Pneumonia"]
    history = read_history(run)
    assert list(history["epoch"]) == [0, 1] and history["elapsed_seconds"].is_monotonic_increasing
    split = pd.read_csv(run / "split.csv")
    assert set(split["repeat"]) == {0, 1, 2} and set(split["split"]) == {"train", "test"}
    with pytest.raises(ValueError, match="has none; use split_mode='paper_a' or the paper_b recipe"):
        train_run(tmp_path / "x", phantom_root, "improved", epochs=1, split_mode="paper_b",
                  log=lambda *_: None, **{**TINY, "task": 3})


def test_time_to_accuracy_reads_the_first_epoch_over_the_line():
    history = pd.DataFrame({"val_accuracy": [0.5, 0.96, 0.94, 0.99], "elapsed_seconds": [10, 20, 30, 40]})
    assert time_to_accuracy(history, 0.95) == 20
    assert time_to_accuracy(history, 0.995) is None


def test_predict_cli_writes_one_cam_overlay_per_image(resumed_run, phantom_root, tmp_path, capsys):
    """Paper A's head has no linear CAM, so this exercises Grad-CAM (at an earlier block, too)."""
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
                 "--cam-layer", "conv4_block6_out"]) == 0
    assert "1 overlay(s) written" in capsys.readouterr().out
