"""Nothing lost, nothing stale: a training process killed (SIGKILL, by PID) at chosen moments, including while a
checkpoint is being written, resumes to a complete run with every epoch once; a corrupt newest checkpoint falls
back to the one before; a stray split left by a failed command is never reused; a second trainer of a run folder is
refused while the first holds it, and a killed one leaves no lock stuck. SIGTERM and Ctrl-C during an epoch, and a
full disk while a checkpoint or the final model is written, stop in one line saying what was kept and how to go on.

The runs use the toy backbone (seconds per run): what is tested is the run folder's bookkeeping, not ResNet50.
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import config, files
from helpers.datasets import find_dataset
from helpers.engine import locks
from helpers.recipes import PAPER_A
from helpers.runs import Run
from tests.conftest import InterruptAfter, Interrupted, RecordEpochs, phantom_split, train_tiny

TOY = dataclasses.replace(PAPER_A, name="paper_a_toy", backbone="toy", early_stopping=False)
REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import dataclasses, os, sys, time
    from pathlib import Path
    import keras
    from helpers import files
    from helpers.tasks import CLASSES
    from helpers.data import scan_dataset
    from helpers.datasets import find_dataset
    from helpers.recipes import PAPER_A
    from helpers.splits import make_split
    from helpers.engine.training import train

    root, run, pause, marker = sys.argv[1:5]
    what, epoch = pause.split(":")

    def stop_here():
        Path(marker).write_text(str(os.getpid()))
        time.sleep(600)  # the test kills us here

    real_replace = os.replace
    def replace(src, dst):
        name = Path(dst).name
        if (what == "state" and name == "state.json" or what == "history" and name == "history.csv") and \\
                len(list((Path(run) / "checkpoints").glob(f"epoch-{int(epoch):03d}.keras"))):
            stop_here()
        if what == "weights" and name == f"epoch-{int(epoch):03d}.weights.npz":
            stop_here()  # written to its temporary name, not yet in place
        real_replace(src, dst)
    os.replace = replace

    real_save = keras.Model.save
    def save(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        if what == "checkpoint" and Path(path).name.endswith(f"epoch-{int(epoch):03d}.keras"):
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])  # half written, as at the moment of the kill
            stop_here()
    keras.Model.save = save

    layout = find_dataset(root)
    split = make_split(scan_dataset(layout).index, mode="paper_a", task=4)
    split["path"] = [str(layout.root / p) for p in split["relpath"]]
    toy = dataclasses.replace(PAPER_A, name="paper_a_toy", backbone="toy", early_stopping=False)
    train(run, split, toy, CLASSES, layout.root, epochs=3, image_size=32, batch_size=8, weights="none",
          log=lambda *_: None)
""")


def kill_training_at(phantom_root, run: Path, pause: str, tmp_path: Path) -> None:
    """Start a training child, wait until it reaches `pause` ("weights:2": while epoch 2's weights alone are
    written; "checkpoint:2": while epoch 2's checkpoint is
    written; "state:2": after it, before the state that points at it; "history:2": before history.csv), kill it."""
    marker = tmp_path / f"reached-{pause.replace(':', '-')}"
    env = {**os.environ, "CXR_FAST": "1", "CXR_OUTPUT_DIR": str(tmp_path / "outputs"), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(phantom_root), str(run), pause, str(marker)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if child.poll() is not None:
                raise AssertionError(f"the child ended before {pause}: {child.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"the child never reached {pause}"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")


@pytest.mark.parametrize("pause", ["weights:2", "checkpoint:2", "state:2", "history:2"])
def test_a_kill_at_any_moment_of_saving_an_epoch_loses_nothing_and_repeats_nothing(phantom_root, tmp_path, pause):
    run = tmp_path / "run"
    kill_training_at(phantom_root, run, pause, tmp_path)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == (2 if pause == "history:2" else 1), "the state names the last complete epoch"
    settings = train_tiny(run, phantom_root, TOY, epochs=3).settings
    history = Run(run).history()
    assert settings.finished and list(history["epoch"]) == [0, 1, 2], "each epoch once"
    assert not list(run.glob(".partial-*")) and not (run / "checkpoints").exists()


def test_the_best_weights_a_state_names_are_those_of_its_best_epoch(phantom_root, tmp_path):
    """Killed after epoch 2's files, before the state that knows them: the best weights the state names are epoch 1's
    (once, one `best.weights.h5` held the forgotten epoch 2, and a resumed run kept them as "epoch 1")."""
    import keras
    import numpy as np

    from helpers.engine.storage import load_epoch_weights

    run = tmp_path / "run"
    kill_training_at(phantom_root, run, "state:2", tmp_path)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["best_epoch"] == 1
    model = keras.models.load_model(run / "checkpoints" / state["checkpoint"])
    epoch_1 = model.get_weights()
    load_epoch_weights(model, run, state["best_epoch"])  # the weights alone
    assert all(np.array_equal(a, b) for a, b in zip(epoch_1, model.get_weights()))
    assert train_tiny(run, phantom_root, TOY, epochs=3).finished


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(phantom_root, tmp_path):
    run = tmp_path / "run"
    kill_training_at(phantom_root, run, "history:3", tmp_path)  # epochs 1-3 saved, not yet finished
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    newest = run / "checkpoints" / state["checkpoint"]
    newest.write_bytes(newest.read_bytes()[:1000])  # e.g. a disk that filled up under another program
    logs = []
    settings = train_tiny(run, phantom_root, TOY, epochs=3, log=logs.append).settings
    assert any("could not be read" in line and "trying the one before" in line for line in logs)
    assert any(line.startswith(f"Resuming {run} after epoch 2") for line in logs)
    assert settings.finished and list(Run(run).history()["epoch"]) == [0, 1, 2]


def test_a_stray_split_left_by_a_failed_command_is_never_reused(phantom_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stray = phantom_split(phantom_root, seed=0)
    stray.to_csv(run / "split.csv", index=False)  # written, then the command failed before settings.json
    wanted = phantom_split(phantom_root, seed=3)
    logs = []
    settings = train_tiny(run, phantom_root, TOY, epochs=1, seed=3, split=wanted, log=logs.append).settings
    assert any("holds no complete run" in line for line in logs)
    saved = pd.read_csv(run / "split.csv")
    assert sorted(saved.loc[saved["split"] == "test", "relpath"]) == sorted(
        wanted.loc[wanted["split"] == "test", "relpath"])
    assert settings.seed == 3


def test_an_epoch_never_hangs_on_a_file_corrupted_after_the_scan(phantom_root, tmp_path):
    """Once, an unreadable file reached tf.data mid-epoch and the process hung in about 3 runs of 8; now the
    process ends, naming the file."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(phantom_root, copy)
    bad = copy / "COVID" / "images" / "COVID-4.png"
    good = bad.read_bytes()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.test_interruptions import TOY
        from tests.conftest import phantom_split, train_tiny
        split = phantom_split({str(copy)!r})
        Path({str(bad)!r}).write_bytes(b"\\x89PNG broken")  # same name, after the split was made
        train_tiny({str(tmp_path / 'run')!r}, {str(copy)!r}, TOY, epochs=1, split=split)
    """)
    for _ in range(3):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        bad.write_bytes(good)
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "CXR_FAST": "1", "CXR_OUTPUT_DIR": str(tmp_path / "outputs")})
        assert done.returncode == 0, done.stderr[-2000:]
        assert re.search(rf"Left out 1 (train |val |test )?image\(s\) that could not be read: {re.escape(str(bad))} \(",
                         done.stderr), done.stderr[-2000:]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_and_interrupted(phantom_root, tmp_path_factory):
    """A finished run (1 epoch) and one interrupted after epoch 1 of 2, trained once and copied by each test."""
    base = tmp_path_factory.mktemp("damaged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "OUTPUT_DIR", base / "outputs")
        train_tiny(base / "finished", phantom_root, TOY, epochs=1)
        with pytest.raises(Interrupted):
            train_tiny(base / "interrupted", phantom_root, TOY, epochs=2, callbacks=[InterruptAfter(0)])
    return base


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit_json(path: Path, change) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


DAMAGES = {  # (which run, damaged file, how)
    "a typo in a finished run's settings": ("finished", "settings.json",
                                            lambda p: p.write_text(p.read_text().replace('"seed"', ', "seed"'))),
    "a truncated settings.json": ("interrupted", "settings.json", _cut),
    "settings.json that is not an object": ("finished", "settings.json", lambda p: p.write_text("null\n")),
    "a truncated model.keras": ("finished", "model.keras", _cut),
    "an empty model.keras": ("finished", "model.keras", lambda p: p.write_bytes(b"")),
    "a hand-set finished": ("interrupted", "settings.json", lambda p: _edit_json(p, lambda s: s.update(finished=True))),
    "a truncated state.json": ("interrupted", "checkpoints/state.json", _cut),
    "an older state.json": ("interrupted", "checkpoints/state.json", lambda p: _edit_json(p, lambda s: s.pop(
        "checkpoint"))),
    "no readable checkpoint": ("interrupted", "checkpoints/epoch-001.keras", _cut),
    "a finished run's split.csv cut short": ("finished", "split.csv", lambda p: p.write_text(
        "".join(p.read_text().splitlines(keepends=True)[:-6]))),
    "an interrupted run's split.csv deleted": ("interrupted", "split.csv", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_folder_is_never_emptied_or_trained_over_and_the_error_names_the_file(
        finished_and_interrupted, phantom_root, tmp_path, damage):
    """Once, one extra comma in settings.json made the run "no complete run": its checkpoints and history deleted,
    a finished model.keras trained over. Files that are there but cannot be read now stop the command, in one line."""
    from helpers.engine.storage import RunFolderError

    which, name, spoil = DAMAGES[damage]
    run = tmp_path / which
    shutil.copytree(finished_and_interrupted / which, run)
    spoil(run / name)
    before = _snapshot(run)
    with pytest.raises(RunFolderError) as caught:
        train_tiny(run, phantom_root, TOY, epochs=1 if which == "finished" else 2)
    message = str(caught.value)
    assert "\n" not in message and str(run / name) in message and f"delete the folder {run}" in message
    assert _snapshot(run) == before, "nothing emptied, nothing written"


def test_a_model_keras_whose_insides_are_damaged_is_named_with_its_run(finished_and_interrupted, tmp_path):
    """A whole zip whose weights are garbage passes the quick look; loading it must still name the file and run."""
    import zipfile

    from helpers.engine.storage import RunFolderError

    run = tmp_path / "finished"
    shutil.copytree(finished_and_interrupted / "finished", run)
    path = run / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["model.weights.h5"] = b"not an HDF5 file" * 100
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(RunFolderError) as caught:
        _ = Run(run).model
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and f"delete the folder {run}" in message


def test_the_fall_back_checkpoint_resumes_after_the_epoch_it_names(phantom_root, tmp_path):
    """Once, the previous state shared its history with the newest one, so falling back to it skipped an epoch
    ("Resuming … after epoch 2." then nothing left to train). States written that way are trimmed to their epoch."""
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_tiny(run, phantom_root, TOY, epochs=3, callbacks=[InterruptAfter(2)])  # epochs 1-3 saved
    path = run / "checkpoints" / "state.json"
    state = json.loads(path.read_text())
    assert state["epochs_done"] == 3 and [len(s["history"]) for s in (state, state["previous"])] == [3, 2]
    state["previous"]["history"] = state["history"]  # as the state was written before the fix
    path.write_text(json.dumps(state))
    newest = run / "checkpoints" / state["checkpoint"]
    newest.write_bytes(newest.read_bytes()[:1000])
    logs, recorder = [], RecordEpochs()
    settings = train_tiny(run, phantom_root, TOY, epochs=3, callbacks=[recorder], log=logs.append).settings
    assert any(line.startswith(f"Resuming {run} after epoch 2.") for line in logs)
    assert "main: epochs 3–3 of 3" in logs and recorder.epochs == [2], "epoch 3 trained again, after epoch 2"
    assert settings.finished and list(Run(run).history()["epoch"]) == [0, 1, 2]


def test_the_checkpoints_hold_one_full_model_and_the_weights_alone_of_the_epoch_before(phantom_root, tmp_path):
    """Issue 21: two full checkpoints (with Adam's slots, three times the weights) an epoch filled a Drive. The
    fall-back is the weights alone of the epoch before; the best epoch's weights are the same kind of file."""
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_tiny(run, phantom_root, TOY, epochs=3, callbacks=[InterruptAfter(1)])  # epochs 1-2 saved
    checkpoints = run / "checkpoints"
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["checkpoint"] == "epoch-002.keras" and state["previous"]["checkpoint"] == "epoch-001.weights.npz"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch-001.weights.npz", "epoch-002.keras", "epoch-002.weights.npz", "state.json"]
    full, fall_back = (checkpoints / n for n in ("epoch-002.keras", "epoch-001.weights.npz"))
    assert fall_back.stat().st_size < full.stat().st_size / 2, "no optimizer slots in the fall-back"
    held = sum(p.stat().st_size for p in checkpoints.glob("epoch-*"))
    assert held < 2 * full.stat().st_size, "less than the two full checkpoints kept before"


def test_a_resume_from_the_weights_only_fall_back_restarts_the_optimizer_and_repeats_no_epoch(phantom_root, tmp_path):
    import keras
    import numpy as np

    from helpers.engine.storage import load_epoch_weights

    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_tiny(run, phantom_root, TOY, epochs=3, callbacks=[InterruptAfter(1)])  # epochs 1-2 saved
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    newest = run / "checkpoints" / state["checkpoint"]
    epoch_1 = keras.models.load_model(newest)
    load_epoch_weights(epoch_1, run, state["previous"]["epochs_done"])
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = []

    class FirstWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            resumed.append([w.copy() for w in self.model.get_weights()])

    logs, recorder = [], RecordEpochs()
    settings = train_tiny(run, phantom_root, TOY, epochs=3, callbacks=[recorder, FirstWeights()],
                          log=logs.append).settings
    assert any(line.startswith(f"Resuming {run} after epoch 1.") and "optimizer state restarted" in line
               for line in logs)
    assert all(np.array_equal(a, b) for a, b in zip(epoch_1.get_weights(), resumed[0])), "epoch 1's weights"
    assert recorder.epochs == [1, 2], "epochs 2 and 3 trained again, each once"
    assert settings.finished and list(Run(run).history()["epoch"]) == [0, 1, 2]


def test_an_epochs_weights_load_from_this_versions_file_and_from_the_best_file_of_a_run_before_it(tmp_path):
    """A run interrupted before issue 21 names its best epoch's weights `best-epoch-NNN.weights.h5` (with Adam's
    slots); resumed now, it must still keep that epoch. A file of another model is refused, naming the shapes."""
    import keras
    import numpy as np

    from helpers.engine.storage import OLD_BEST_WEIGHTS, checkpoints, load_epoch_weights, save_weights, weights_name

    def model(units=3):
        built = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        built.compile("adam", "mse")
        built.fit(np.ones((4, 4)), np.ones((4, units)), verbose=0)  # Adam's slots exist
        return built

    trained = model()
    checkpoints(tmp_path).mkdir()
    save_weights(trained, checkpoints(tmp_path) / weights_name(2))
    trained.save_weights(checkpoints(tmp_path) / OLD_BEST_WEIGHTS.format(1))
    for epoch in (1, 2):
        fresh = model()
        load_epoch_weights(fresh, tmp_path, epoch)
        assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), fresh.get_weights())), epoch
    with pytest.raises(ValueError, match="shape"):
        load_epoch_weights(model(units=5), tmp_path, 2)


# --------------------------------------------------------------------------- one trainer per run folder

LOCKS = ["flock", "exclusive file"]  # the second: a file system that refuses flock (some FUSE mounts)

HOLD = textwrap.dedent("""
    import errno, fcntl, sys, time
    from pathlib import Path
    from helpers.engine import locks
    folder, marker, mode = sys.argv[1:4]
    if mode == "exclusive file":
        def refuse(*_):
            raise OSError(errno.ENOLCK, "No locks available")
        fcntl.flock = refuse
    with locks.folder_lock(folder, log=lambda *_: None):
        Path(marker).write_text("held")
        time.sleep(600)  # the test kills us
""")


def _no_flock(*_):
    raise OSError(errno.ENOLCK, "No locks available")


@contextlib.contextmanager
def lock_held_by_child(folder: Path, tmp_path: Path, mode: str):
    """A child process holding `folder`'s lock through `locks.folder_lock`, killed on leaving the block."""
    marker = tmp_path / "lock-held"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(marker), mode], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                raise AssertionError(f"the child ended before holding the lock: {child.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "the child never held the lock"
            time.sleep(0.1)
        yield child
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()


@pytest.mark.parametrize("mode", LOCKS)
def test_a_second_trainer_of_a_run_folder_is_refused_in_one_line_naming_the_holder(
        finished_and_interrupted, phantom_root, tmp_path, monkeypatch, mode):
    """Once, a second identical command deleted the first one's checkpoints and history, and the first then ended
    with a "finished" run of 3 epochs holding one epoch's history."""
    run = tmp_path / "interrupted"
    shutil.copytree(finished_and_interrupted / "interrupted", run)
    before = _snapshot(run)
    with lock_held_by_child(run, tmp_path, mode) as holder:
        if mode == "exclusive file":
            monkeypatch.setattr(fcntl, "flock", _no_flock)
        with pytest.raises(locks.FolderInUseError) as caught:
            train_tiny(run, phantom_root, TOY, epochs=2)
    message = str(caught.value)
    assert "\n" not in message and f"pid {holder.pid} on host {socket.gethostname()}, started " in message
    assert _snapshot(run) == before, "nothing read-modified-written, nothing deleted"


@pytest.mark.parametrize("mode", LOCKS)
def test_the_lock_of_a_killed_trainer_does_not_block_the_next_one(phantom_root, tmp_path, monkeypatch, mode):
    run = tmp_path / "run"
    lock = locks.lock_path(run)
    lock = lock.with_name(lock.name + ".held") if mode == "exclusive file" else lock
    with lock_held_by_child(run, tmp_path, mode) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    assert json.loads(lock.read_text())["pid"] == holder.pid, "the killed holder left its lock file behind"
    if mode == "exclusive file":
        monkeypatch.setattr(fcntl, "flock", _no_flock)
    logs = []
    assert train_tiny(run, phantom_root, TOY, epochs=1, log=logs.append).finished
    if mode == "exclusive file":
        assert not lock.exists() and sum("advisory" in line for line in logs) == 1
    else:
        assert lock.read_text() == "", "released: it names nobody"


def test_a_refused_resume_names_the_training_image_that_was_deleted(phantom_root, tmp_path):
    from helpers.engine.resume import RunSettingsError

    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_tiny(run, data, TOY, epochs=2, callbacks=[InterruptAfter(0)])
    saved = pd.read_csv(run / "split.csv")
    gone = sorted(saved.loc[saved["split"] == "train", "relpath"])[0]
    (find_dataset(data).root / gone).unlink()
    with pytest.raises(RunSettingsError) as caught:
        train_tiny(run, data, TOY, epochs=2)
    message = str(caught.value)
    assert "\n" not in message and f"removed {gone}" in message


# --------------------------------------------------------------------------- stopped politely

CLI_ARGS = ["train", "--task", "4", "--epochs", "3", "--image-size", "32", "--batch-size", "8", "--weights", "none"]

# `python -m helpers train` on the toy backbone; with a marker, it waits after epoch 2's first batch for the test's
# SIGTERM (and the marker's ".sent" twin), as a Kaggle or Colab session that ends then.
CLI_CHILD = textwrap.dedent("""
    import dataclasses, functools, sys, time
    from pathlib import Path
    import keras
    from helpers import cli
    from helpers.engine import training
    from helpers.recipes import PAPER_A

    root, run, marker = sys.argv[1:4]

    class WaitForSigterm(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                Path(marker).write_text("epoch 2")
                deadline = time.monotonic() + 60
                while not Path(marker + ".sent").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)

    cli.get_recipe = lambda name: dataclasses.replace(PAPER_A, name="paper_a_toy", backbone="toy",
                                                      early_stopping=False)
    if marker:
        cli.train = functools.partial(training.train, callbacks=[WaitForSigterm()])
    sys.exit(cli.main([*CLI_ARGS, "--data", root, "--out", run]))
""").replace("CLI_ARGS", repr(CLI_ARGS))


def _train_command(phantom_root, run: Path, tmp_path: Path, marker: Path | None = None):
    """The CLI's train in a child; with `marker`, SIGTERM is sent once it is in its second epoch."""
    env = {**os.environ, "CXR_FAST": "1", "CXR_OUTPUT_DIR": str(tmp_path / "outputs"), "PYTHONPATH": str(REPO),
           "CUDA_VISIBLE_DEVICES": ""}
    child = subprocess.Popen([sys.executable, "-c", CLI_CHILD, str(phantom_root), str(run), str(marker or "")],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if marker is not None:
            deadline = time.monotonic() + 240
            while not marker.exists():
                if child.poll() is not None:
                    raise AssertionError(f"the child ended before epoch 2: {child.stderr.read()[-2000:]}")
                assert time.monotonic() < deadline, "the child never reached epoch 2"
                time.sleep(0.1)
            os.kill(child.pid, signal.SIGTERM)
            Path(f"{marker}.sent").write_text("sent")
        out, err = child.communicate(timeout=300)
    finally:
        child.kill()
        child.wait(timeout=60)
    return child.returncode, out, err


def _left_at_epoch_1(run: Path) -> None:
    """What an epoch-boundary kill after epoch 1 leaves: not finished, no final model, epoch 1's state and row."""
    assert not json.loads((run / "settings.json").read_text())["finished"]
    assert not (run / "model.keras").exists()
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epochs_done"] == 1
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*.keras")) == ["epoch-001.keras"]
    assert list(Run(run).history()["epoch"]) == [0]
    assert not list(run.rglob(".partial-*"))


def test_sigterm_during_an_epoch_stops_in_one_line_and_the_same_command_resumes(phantom_root, tmp_path):
    """Kaggle and Colab end a session with SIGTERM: once, it killed training with no word of what was kept."""
    run = tmp_path / "run"
    code, out, err = _train_command(phantom_root, run, tmp_path, marker=tmp_path / "in-epoch-2")
    said = [line for line in err.splitlines() if "Stopped by" in line]
    assert code == 143, err[-2000:]
    assert said == [f"Stopped by SIGTERM during epoch 2: run {run} keeps epoch 1; run the same command again to "
                    "resume."], err[-2000:]
    assert "Traceback" not in err
    _left_at_epoch_1(run)
    code, out, err = _train_command(phantom_root, run, tmp_path)
    assert code == 0, err[-2000:]
    assert f"Resuming {run} after epoch 1." in out and "Trained paper_a_toy" in out
    settings = json.loads((run / "settings.json").read_text())
    assert settings["finished"] and settings["epochs_run"] == 3
    assert list(Run(run).history()["epoch"]) == [0, 1, 2], "each epoch once"


class CtrlCInEpoch2(RecordEpochs):
    def on_train_batch_end(self, batch, logs=None):
        if self.epochs[-1] == 1 and batch == 0:
            raise KeyboardInterrupt


def test_ctrl_c_during_an_epoch_stops_in_one_line_and_the_same_command_resumes(phantom_root, tmp_path, monkeypatch,
                                                                                capsys):
    from helpers import cli
    from helpers.engine import training

    run = tmp_path / "run"
    monkeypatch.setattr(cli, "get_recipe", lambda name: TOY)
    monkeypatch.setattr(cli, "train", lambda *a, **k: training.train(*a, **k, callbacks=[CtrlCInEpoch2()]))
    argv = [*CLI_ARGS, "--data", str(phantom_root), "--out", str(run)]
    try:
        code = cli.main(argv)
    except KeyboardInterrupt as exc:  # never past the test: pytest would end the whole session
        code = f"escaped: {exc!r}"
    assert code == 130
    err = capsys.readouterr().err
    assert err == (f"Stopped by Ctrl-C (SIGINT) during epoch 2: run {run} keeps epoch 1; run the same command again "
                   "to resume.\n")
    _left_at_epoch_1(run)
    recorder = RecordEpochs()
    monkeypatch.setattr(cli, "train", lambda *a, **k: training.train(*a, **k, callbacks=[recorder]))
    assert cli.main(argv) == 0
    assert recorder.epochs == [1, 2] and list(Run(run).history()["epoch"]) == [0, 1, 2], "each epoch once"
    assert json.loads((run / "settings.json").read_text())["finished"]


def test_a_sigterm_handler_is_put_back_and_never_installed_outside_the_main_thread(phantom_root, tmp_path):
    import threading

    from helpers.engine import callbacks

    before = signal.getsignal(signal.SIGTERM)
    assert train_tiny(tmp_path / "run", phantom_root, TOY, epochs=1).finished
    assert signal.getsignal(signal.SIGTERM) is before
    seen = []

    def in_a_thread():
        with callbacks.sigterm_stops(callbacks.StopRequest()):
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join(timeout=60)
    assert seen == [before]


@pytest.mark.parametrize("target", ["checkpoints/epoch-002.keras", "model.keras"])
@pytest.mark.parametrize("full", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_while_saving_names_the_file_and_keeps_nothing_half_written(phantom_root, tmp_path, monkeypatch,
                                                                                target, full):
    import zipfile

    from helpers import cli

    run = tmp_path / "run"
    real_open = zipfile.ZipFile.open

    def open_on_a_full_disk(self, name, mode="r", **kwargs):  # where Keras writes a .keras file's parts
        if mode == "w" and str(self.filename).endswith(f"-{Path(target).name}"):
            raise OSError(full, os.strerror(full))
        return real_open(self, name, mode, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(files.DiskFullError) as caught:
        patch.setattr(zipfile.ZipFile, "open", open_on_a_full_disk)
        train_tiny(run, phantom_root, TOY, epochs=3)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{run / target} could not be written: {os.strerror(full)}; ")
    assert "nothing half-written was kept" in message and "free some space and run the same command again" in message
    assert cli.describe_error(caught.value) == message, "the command says it in the same one line"
    assert not list(run.rglob(".partial-*")) and not (run / target).exists()
    assert not json.loads((run / "settings.json").read_text())["finished"]
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == (1 if target.startswith("checkpoints") else 3), "the last complete epoch"
    settings = train_tiny(run, phantom_root, TOY, epochs=3).settings
    assert settings.finished and list(Run(run).history()["epoch"]) == [0, 1, 2], "each epoch once"
