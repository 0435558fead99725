"""The GPU paths, run before a GPU sees them: the device policy of every machine the course meets, several devices
(the CPU split with CXR_LOGICAL_DEVICES, as MirroredStrategy over Kaggle's two T4s), mixed precision with XLA, and
two workers on 127.0.0.1 (MultiWorkerMirroredStrategy through TF_CONFIG).

Several devices and several workers must be set before TensorFlow starts, so those runs are child processes
(tests/distributed_child.py); their splits have sizes that divide neither by the batch nor by the devices.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from helpers import cam, cli, config, models, pipeline
from helpers.cli import main
from helpers.engine import devices
from helpers.engine.resume import RunSettingsError
from helpers.engine.training import evaluate
from helpers.image_files import read_images
from helpers.runs import Run
from helpers.splits import fingerprint, load_split
from helpers.synthetic import generate_phantoms
from helpers.tasks import CLASSES
from tests.conftest import (
    TOY_IMPROVED,
    TOY_PAPER_A,
    InterruptAfter,
    Interrupted,
    phantom_split,
    toy_weights,
    train_tiny,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


@pytest.fixture(scope="module")
def odd_phantoms(tmp_path_factory) -> Path:
    """8 phantoms per class: a split of 23 training, 3 validation and 6 test images. With 16 images per device, two
    devices take 32 a step: every part fits in one batch that is not a multiple of the batch, and the training and
    validation parts are odd, as the 23 images on which the issue saw Keras fail on two devices."""
    return generate_phantoms(tmp_path_factory.mktemp("odd"), per_class=8, size=64, seed=0)


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize("gpus, cpus, workers, env, expected", [
    ([], 1, 1, {}, ("default", 1, False, False)),
    (["Tesla T4"], 0, 1, {}, ("default", 1, True, True)),
    (["Tesla T4", "Tesla T4"], 0, 1, {}, ("mirrored", 2, True, False)),  # Kaggle's GPU T4 x2: no XLA over 2 devices
    ([], 2, 1, {"CXR_LOGICAL_DEVICES": "2"}, ("mirrored", 2, False, False)),
    ([], 1, 2, {}, ("multi_worker", 2, False, False)),
    (["A100"] * 4, 0, 2, {}, ("multi_worker", 8, True, False)),
    ([], 1, 1, {"CXR_MIXED_PRECISION": "1", "CXR_XLA": "1"}, ("default", 1, True, True)),
    (["Tesla T4"], 0, 1, {"CXR_MIXED_PRECISION": "0", "CXR_XLA": "0"}, ("default", 1, False, False)),
    ([], 1, 1, {"CXR_UINT8_INPUTS": "1"}, ("default", 1, False, False)),
    (["Tesla T4"], 0, 1, {"CXR_UINT8_INPUTS": "0"}, ("default", 1, True, True)),
    (["Tesla T4"], 0, 1, {"CXR_EAGER": "1"}, ("default", 1, True, False)),  # eager steps: nothing for XLA to compile
])
def test_the_device_policy_of_each_machine(gpus, cpus, workers, env, expected):
    policy = devices.device_policy(gpus, cpus, workers, env)
    assert (policy.strategy, policy.replicas, policy.mixed_precision, policy.xla) == expected
    uint8 = env.get("CXR_UINT8_INPUTS", "1" if gpus else "0") == "1"  # a GPU is sent uint8 pixels unless told not
    assert policy.uint8_inputs == uint8 and ("uint8 inputs, normalised in the model" in policy.reason) == uint8
    assert policy.global_batch(16) == 16 * expected[1]
    eager = env.get("CXR_EAGER") == "1"
    assert policy.eager == eager and ("steps run eagerly, untraced" in policy.reason) == eager
    assert policy.to_dict()["dtype_policy"] == ("mixed_float16" if expected[2] else "float32")


def test_the_policy_says_why_and_refuses_what_cannot_work():
    t4x2 = devices.device_policy(["Tesla T4", "Tesla T4"], 0, 1, {})
    assert t4x2.reason == ("2 GPUs (Tesla T4 ×2); MirroredStrategy, 2 replicas; mixed_float16; "
                           "no XLA (not with several devices); uint8 inputs, normalised in the model")
    late = devices.device_policy([], 1, 1, {"CXR_LOGICAL_DEVICES": "2"})
    assert late.replicas == 1 and "came after TensorFlow started" in late.reason
    with pytest.raises(ValueError, match="CXR_XLA=1 cannot apply to several devices"):
        devices.device_policy(["Tesla T4", "Tesla T4"], 0, 1, {"CXR_XLA": "1"})
    with pytest.raises(ValueError, match="CXR_XLA=1 and CXR_EAGER=1 cannot go together"):
        devices.device_policy(["Tesla T4"], 0, 1, {"CXR_XLA": "1", "CXR_EAGER": "1"})
    with pytest.raises(ValueError, match=r"CXR_LOGICAL_DEVICES must be a whole number ≥ 1 .*found 'two'"):
        devices.device_policy([], 1, 1, {"CXR_LOGICAL_DEVICES": "two"})
    with pytest.raises(ValueError, match=r"CXR_MIXED_PRECISION must be 0 or 1; found 'maybe'"):
        devices.device_policy([], 1, 1, {"CXR_MIXED_PRECISION": "maybe"})
    tpu = devices.device_policy([], 1, 1, {"COLAB_TPU_ADDR": "10.0.0.2:8470"})
    assert tpu.strategy == "default" and "TPUs are not supported" in tpu.reason
    workers = devices.device_policy([], 2, 2, {"CXR_LOGICAL_DEVICES": "2"})
    assert workers.replicas == 2 and "CXR_LOGICAL_DEVICES ignored: with several workers" in workers.reason
    assert (t4x2.kind, t4x2.devices, late.kind, late.devices) == ("GPU", ("Tesla T4",) * 2, "CPU", ("CPU:0",))


def test_the_device_report_says_what_training_will_use(monkeypatch):
    report = devices.device_report()
    assert f"Training device policy: {devices.device_policy().reason}" in report
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert "With GPU T4 x2 the course trains on both (MirroredStrategy, mixed_float16" in devices.device_report()
    monkeypatch.setenv("TPU_NAME", "local")
    assert "A TPU runtime: TPUs are not supported by this course" in devices.device_report()
    monkeypatch.setenv("CXR_XLA", "sometimes")
    assert "Training device policy: cannot be chosen: CXR_XLA must be 0 or 1; found 'sometimes'" in \
        devices.device_report(), "a notebook's first cell reports a mistyped variable instead of failing"


def test_the_chief_of_a_cluster_is_read_from_tf_config():
    def tf_config(task, chief=False):
        jobs = {"worker": ["a:1", "b:2"], **({"chief": ["c:3"]} if chief else {})}
        return {"TF_CONFIG": json.dumps({"cluster": jobs, "task": task})}

    assert devices.cluster({}) == (1, 0) and devices.is_chief({})
    assert devices.cluster(tf_config({"type": "worker", "index": 1})) == (2, 1)
    assert devices.is_chief(tf_config({"type": "worker", "index": 0}))
    assert devices.is_chief(tf_config({"type": "chief", "index": 0}, chief=True))
    assert not devices.is_chief(tf_config({"type": "worker", "index": 0}, chief=True))
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON like"):
        devices.cluster({"TF_CONFIG": "{not json"})
    with pytest.raises(ValueError, match=r"task type must be \"worker\" or \"chief\".*found 'evaluator'"):
        devices.cluster(tf_config({"type": "evaluator", "index": 0}))


def test_the_command_line_says_in_one_line_what_is_wrong_with_the_devices(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXR_LOGICAL_DEVICES", "many")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == ("error: CXR_LOGICAL_DEVICES must be a whole number ≥ 1 (the CPU's logical "
                                       "devices); found 'many'\n")
    monkeypatch.delenv("CXR_LOGICAL_DEVICES")

    def lose_a_worker(args):
        raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: task 1 stopped\nmore")

    monkeypatch.setattr(cli, "_cmd_train", lose_a_worker)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: a worker of the cluster stopped (Collective ops is aborted by: task 1 stopped); "
                            "finished epochs are kept") and error.count("\n") == 1


def test_an_unfinished_run_resumes_only_with_the_global_batch_it_started_with(phantom_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3, callbacks=[InterruptAfter(0)])
    t4x2 = devices.device_policy(["Tesla T4"] * 2, 0, 1, {})
    monkeypatch.setattr(devices, "device_policy", lambda: t4x2)
    with pytest.raises(RunSettingsError, match=r"was training with a global batch of 8 \(8 per device\), and this "
                                               r"machine would continue it with 16: resume it on as many devices"):
        train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3)


# --------------------------------------------------------------------------- batches that split evenly


def test_training_batches_split_evenly_over_the_replicas_and_the_left_out_images_change(phantom_root):
    split = phantom_split(phantom_root)
    paths, labels = split["path"][:23], np.arange(23) % 4
    dataset = pipeline.build_dataset(paths, labels, 4, 32, 8, training=True, seed=1, replicas=2)
    epochs = [[int(np.argmax(label)) for _, label in batch_pairs(dataset)] for _ in range(3)]
    sizes = [[images.shape[0] for images, _ in dataset] for _ in range(2)]
    assert all(size % 2 == 0 for epoch in sizes for size in epoch) and sizes[0] == [8, 8, 6]
    assert all(len(epoch) == 22 for epoch in epochs), "each epoch leaves out 23 % 2 = 1 image"
    alone = pipeline.build_dataset(paths, labels, 4, 32, 8, training=True, seed=1)
    assert sum(images.shape[0] for images, _ in alone) == 23, "one device: every image, every epoch"
    left_out = [np.bincount(labels, minlength=4) - np.bincount(epoch, minlength=4) for epoch in epochs]
    assert len({tuple(counts) for counts in left_out}) > 1, "a different image left out in different epochs"
    with pytest.raises(ValueError, match="a batch for 2 replicas must be a multiple of 2; found 7"):
        pipeline.build_dataset(paths, labels, 4, 32, 7, training=True, replicas=2)
    with pytest.raises(ValueError, match="training on 4 devices needs at least 4 usable training images; found 3"):
        pipeline.build_dataset(paths[:3], labels[:3], 4, 32, 4, training=True, replicas=4)


def batch_pairs(dataset):
    for images, labels in dataset:
        yield from zip(images, labels)


def validation_images(run: Run):
    """The validation part of a run's own split, as one device evaluates it."""
    return pipeline.datasets_from_split(run.split(), run.classes, run.image_size, 8,
                                        normalisation=models.fed_normalisation(run.model, run.normalisation))["val"]


# --------------------------------------------------------------------------- mixed precision, one device


def test_a_mixed_precision_xla_run_saves_a_model_that_evaluates_predicts_and_maps_like_its_float32_twin(
        phantom_root, tmp_path, monkeypatch):
    """The one-GPU path (mixed_float16, XLA, uint8 pixels normalised in the model), forced on the CPU. Tolerances:
    float16 keeps ~3 significant digits, so probabilities agree to 0.01 and maps (each scaled to [0, 1]) to 0.05."""
    monkeypatch.setenv("CXR_MIXED_PRECISION", "1")
    monkeypatch.setenv("CXR_XLA", "1")
    monkeypatch.setenv("CXR_UINT8_INPUTS", "1")
    seen = {}

    class Inspect(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.update(optimizer=type(self.model.optimizer).__name__, jit=self.model.jit_compile,
                        output=self.model.output.dtype, loss=logs["loss"])

    run = tmp_path / "mixed"
    weights = str(toy_weights(tmp_path / "toy.weights.h5"))
    settings = train_tiny(run, phantom_root, TOY_IMPROVED, epochs=2, weights=weights, callbacks=[Inspect()]).settings
    assert keras.config.dtype_policy().name == "float32", "training leaves the notebook's own policy as it was"
    assert settings.device_policy["dtype_policy"] == "mixed_float16" and settings.device_policy["xla"]
    assert seen["optimizer"] == "LossScaleOptimizer" and seen["jit"] is True and np.isfinite(seen["loss"])
    assert seen["output"] == "float32", "the softmax, and so the loss on it, computed in float32"

    mixed = Run(run).model  # reloaded as every notebook and command loads it
    assert models.takes_pixels(mixed) and mixed.get_layer(models.PIXELS_LAYER).compute_dtype == "float32"
    assert mixed.get_layer("toy1_conv").compute_dtype == "float16"
    assert mixed.get_layer("probabilities").compute_dtype == "float32"
    twin = models.float32_copy(mixed)
    assert all(layer.compute_dtype == "float32" for layer in twin.layers)

    test = Run(run).predict_part("test", verbose=0)
    pixels = read_images(test["path"], settings.image_size).pixels
    images = models.inputs_for(mixed, pixels[..., np.newaxis], "resnet50").numpy()
    np.testing.assert_allclose(test[settings.classes].to_numpy(), twin.predict(images, verbose=0), atol=0.01)
    val = validation_images(Run(run))
    assert evaluate(mixed, val)["accuracy"] == evaluate(twin, val)["accuracy"]
    assert abs(evaluate(mixed, val)["loss"] - evaluate(twin, val)["loss"]) < 0.01
    assert abs(settings.scores["val"]["loss"] - evaluate(twin, val)["loss"]) < 0.01
    for method in ("cam", "grad-cam"):
        maps_mixed = cam.maps(mixed, images, method).maps
        maps_twin = cam.maps(twin, images, method).maps
        np.testing.assert_allclose(maps_mixed, maps_twin, atol=0.05)


# --------------------------------------------------------------------------- several devices


def child(*args, env=None, **popen):
    environment = {**os.environ, "CXR_FAST": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tests.distributed_child", *map(str, args)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def result_of(process, timeout=300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def kill_when(processes, ready, timeout=240) -> None:
    """Wait until `ready()`, then SIGKILL every process (a lost machine)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            ended = [p for p in processes if p.poll() is not None]
            assert not ended, f"a child ended early: {ended[0].stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the children never reached the pause"
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=60)


def state_epochs(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


def test_batchnorm_statistics_are_averaged_over_the_replicas():
    alone = result_of(child("batchnorm"))
    two = result_of(child("batchnorm", env={"CXR_LOGICAL_DEVICES": "2"}))
    assert not alone["averaged"] and two["averaged"]
    assert two["before"][0] != pytest.approx(two["before"][1]), "Keras 3 keeps them per replica"
    assert two["after"] == pytest.approx([alone["after"][0]] * 2), "the mean of the moving means: one device's"


@pytest.mark.slow
def test_two_devices_train_both_recipes_resume_after_a_kill_and_score_as_one_device(odd_phantoms, tmp_path):
    phantom_root = odd_phantoms
    sizes = phantom_split(phantom_root)["split"].value_counts()
    assert all(sizes[part] % 2 for part in ("train", "val")) and sizes["train"] < 32, "sizes that do not divide"
    two = {"CXR_LOGICAL_DEVICES": "2", "CXR_OUTPUT_DIR": str(tmp_path / "outputs")}
    weights = toy_weights(tmp_path / "toy.weights.h5")
    improved, marker = tmp_path / "improved", tmp_path / "paused"
    common = ("--batch-size", 16, "--weights", weights)
    first = child("train", phantom_root, improved, "improved_toy", "--epochs", 4, *common, "--pause-after", 3,
                  "--marker", marker, env=two)  # warm-up 2, fine-tuning 2: killed in the second
    kill_when([first], marker.exists)
    assert state_epochs(improved) == 3
    resumed = result_of(child("train", phantom_root, improved, "improved_toy", "--epochs", 4, *common, env=two))
    assert f"Resuming {improved} after epoch 3." in resumed["logs"]
    paper_a = result_of(child("train", phantom_root, tmp_path / "paper_a", "paper_a_toy", "--epochs", 2,
                              "--batch-size", 16, env=two))

    for result, folder in ((resumed, improved), (paper_a, tmp_path / "paper_a")):
        settings = result["settings"]
        assert result["replicas"] == 2 and settings["finished"]
        assert settings["device_policy"]["strategy"] == "mirrored" and settings["device_policy"]["replicas"] == 2
        assert settings["global_batch_size"] == 2 * settings["batch_size"] == 32
        history = Run(folder).history()
        assert list(history["epoch"]) == list(range(settings["epochs_run"])), "every epoch once"
        run = Run(folder)
        assert evaluate(run.model, validation_images(run)) == settings["scores"]["val"], "it scores what it says"
        alone = run.predict_part("test", verbose=0)  # this process: one device
        assert result["test_relpaths"] == alone["relpath"].tolist() and len(alone) == sizes["test"]
        np.testing.assert_allclose(result["test_probabilities"], alone[run.classes].to_numpy(), atol=1e-6)
    assert resumed["settings"]["warmup_epochs"] == 2 and resumed["settings"]["pretrained"]
    validated = Run(improved).history()["val_loss"].min()  # the kept epoch, as validated while training
    assert validated == pytest.approx(resumed["settings"]["scores"]["val"]["loss"], abs=1e-4)
    assert "re-estimated" in paper_a["settings"]["batchnorm"] and paper_a["settings"]["batchnorm_reestimation_batches"]


@pytest.mark.slow
def test_the_command_line_trains_evaluates_and_maps_on_two_devices(tmp_path):
    """The issue's check: the improved ResNet50 recipe, 2 epochs, 32 phantoms, 64 px, on 2 logical devices, fed uint8
    pixels as two GPUs would be (float32 here: float16 convolutions are emulated on a CPU, tens of times slower)."""
    env = {**os.environ, "CXR_FAST": "1", "CXR_LOGICAL_DEVICES": "2", "CXR_OUTPUT_DIR": str(tmp_path / "outputs"),
           "CXR_UINT8_INPUTS": "1", "PYTHONPATH": str(REPO)}

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    root = tmp_path / "phantoms"
    cli("data", "synth", root, "--per-class", 8, "--size", 96)
    weights = tmp_path / "resnet50.weights.h5"  # "pretrained": the run warms up, then fine-tunes
    keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3)).save_weights(weights)
    run = tmp_path / "run"
    trained = cli("train", "--data", root, "--recipe", "improved", "--out", run, "--epochs", 2, "--image-size", 64,
                  "--weights", weights)
    assert "Device policy: 2 logical CPU devices (CXR_LOGICAL_DEVICES=2); MirroredStrategy, 2 replicas" in \
        trained.stdout
    settings = json.loads((run / "settings.json").read_text())
    assert settings["device_policy"]["strategy"] == "mirrored" and settings["warmup_epochs"] == 1
    assert models.takes_pixels(Run(run).model) and settings["device_policy"]["uint8_inputs"]
    metrics = json.loads(cli("evaluate", "--run", run, "--json", "--resamples", 20).stdout)
    assert metrics["n"] == (Run(run).split()["split"] == "test").sum()
    image = next(root.rglob("COVID-1.png"))
    predicted = json.loads(cli("predict", image, "--run", run, "--json", "--cam", tmp_path / "maps").stdout)
    assert Path(predicted[0]["overlay"]).exists()
    alone = Run(run).predict([image])  # one device, this process
    assert predicted[0]["probabilities"] == pytest.approx(alone.loc[0, Run(run).classes].to_dict(), abs=1e-5)


# --------------------------------------------------------------------------- several workers


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_one_run_the_chief_alone_writes_it_and_it_resumes_after_a_kill(odd_phantoms, tmp_path):
    phantom_root, run, marker = odd_phantoms, tmp_path / "run", tmp_path / "paused"
    weights = toy_weights(tmp_path / "toy.weights.h5")

    def workers(*extra, other_folder=run):
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        return [child("train", phantom_root, other_folder if index else run, "improved_toy", "--epochs", 3,
                      "--batch-size", 16, "--weights", weights, "--learning-rate", 0.1,  # a best epoch before the last
                      *(extra if index == 1 else ()), env={
                          "CXR_OUTPUT_DIR": str(tmp_path / f"outputs-{index}"),
                          "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                   "task": {"type": "worker", "index": index}})})
                for index in range(2)]

    chief, lost = workers("--pause-after", 2, "--marker", marker)  # worker 1 stops after epoch 2, then is killed
    kill_when([lost], lambda: marker.exists() and state_epochs(run) == 2)
    _, stopped = chief.communicate(timeout=240)
    assert chief.returncode != 0 and "UnavailableError" in stopped, "the chief stops when it loses a worker"
    assert state_epochs(run) == 2
    for process in workers(other_folder=tmp_path / "not-shared"):  # worker 1 sees no run: it would start afresh
        _, refused = process.communicate(timeout=240)
        assert process.returncode and "the workers would resume this run from different epochs (0 and 2)" in refused
    chief, other = (result_of(process) for process in workers())

    settings = chief["settings"]
    assert settings["finished"] and not other["settings"]["finished"]
    assert settings["device_policy"]["strategy"] == "multi_worker" and settings["device_policy"]["workers"] == 2
    assert chief["replicas"] == other["replicas"] == 2
    assert all(f"Resuming {run} after epoch 2." in worker["logs"] for worker in (chief, other))
    assert [change for change in other["changes"] if str(run) in change] == [], "only the chief changes the run"
    assert any(line.startswith("Kept epoch 1,") for line in chief["logs"]), "the chief keeps an earlier epoch…"
    assert other["loaded_weights"] == [], "…which the others never read: the chief may have removed it already"
    assert f"replace {run / 'model.keras'}" in chief["changes"] and f"rmtree {run / 'checkpoints'}" in chief["changes"]
    history = Run(run).history()
    assert list(history["epoch"]) == [0, 1, 2], "resumed after epoch 2: every epoch once"
    saved = load_split(run / "split.csv", settings["data_root"])
    assert fingerprint(saved[saved["repeat"] == 0]) == settings["split_fingerprint"]
    assert evaluate(Run(run).model, validation_images(Run(run))) == settings["scores"]["val"], "it scores what it says"
    np.testing.assert_allclose(chief["test_probabilities"],
                               Run(run).predict_part("test", verbose=0)[list(CLASSES)].to_numpy(), atol=1e-6)
    assert pd.Series(history["val_loss"]).notna().all()


def test_a_reused_model_trains_as_a_new_build_on_two_devices_in_float32_and_mixed_float16(tmp_path):
    """Paper B's repeats reuse one model (issue 22); on several devices its weights and optimizer live on each
    replica. The reuse test, run again in a process whose CPU is split into two logical devices."""
    env = {**os.environ, "CXR_LOGICAL_DEVICES": "2", "CXR_FAST": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q",
                           "tests/test_training.py", "-k", "reuses and not resnet50"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:]
