"""Shared fixtures: small phantom datasets and a builder for hand-made dataset trees."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# isort: off
import helpers  # noqa: F401 - first: it imports TensorFlow with its start-up lines held back
# isort: on
import keras
import numpy as np
import pytest
from PIL import Image

from helpers import config
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.engine import storage
from helpers.engine.storage import RunSettings
from helpers.engine.training import forget_kept_model, train
from helpers.models import load_backbone
from helpers.recipes import IMPROVED, PAPER_A
from helpers.runs import Run
from helpers.splits import make_split
from helpers.synthetic import generate_phantoms
from helpers.tasks import CLASSES, task_classes
from tests.find_browser import say_what_was_not_run


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom set (10 per class, 64 px) shared read-only by many tests."""
    return generate_phantoms(tmp_path_factory.mktemp("phantoms"), per_class=10, size=64, seed=0)


NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def execute_notebook(name: str, timeout: int = 600) -> str:
    """Runs a course notebook top to bottom in a fresh kernel (this process's environment, the notebooks' folder as
    its working directory) and returns what its code cells printed."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()
    return "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []))


def gray(value: int = 128, size: int = 16, seed: int | None = None) -> np.ndarray:
    """A small grayscale picture: flat, or random when a seed is given (distinct content)."""
    if seed is None:
        return np.full((size, size), value, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, format="PNG")
    return path


@pytest.fixture
def make_tree(tmp_path):
    """Build a dataset tree: make_tree({"COVID": 3, ...}, layout="kaggle"|"flat", names=..., masks=True)."""

    made = []

    def build(counts=None, layout="kaggle", names=None, top="COVID-19_Radiography_Dataset", masks=True) -> Path:
        counts = counts or {c: 3 for c in CLASSES}
        names = names or {}
        made.append(tmp_path / ("download" if not made else f"download-{len(made) + 1}"))
        root = made[-1] / top
        for cls, n in counts.items():
            folder_name = names.get(cls, cls)
            images = root / folder_name / "images" if layout == "kaggle" else root / folder_name
            for i in range(1, n + 1):
                write_png(images / f"{folder_name}-{i}.png", gray(seed=1000 * CLASSES.index(cls) + i))
                if layout == "kaggle" and masks:
                    write_png(root / folder_name / "masks" / f"{folder_name}-{i}.png", gray(255))
        return made[-1]

    return build


class Interrupted(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


TINY = {"image_size": 32, "batch_size": 8, "weights": "none", "log": lambda *_: None}


def phantom_split(root, mode: str = "paper_a", task: int = 4, **options):
    """A split of a phantom set, with image paths."""
    layout = find_dataset(root)
    split = make_split(scan_dataset(layout).index, mode=mode, task=task, **options)
    split["path"] = [str(layout.root / p) for p in split["relpath"]]
    return split


@pytest.fixture(autouse=True)
def no_model_kept_from_another_test():
    """Each test builds its own first model: a run reusing another test's (training keeps the last one built for
    the next run of its kind) would skip the tracing some tests measure. The reuse itself has its own test."""
    forget_kept_model()
    yield
    forget_kept_model()


def train_tiny(run, root, recipe=PAPER_A, task: int = 4, split=None, **options):
    """Train a tiny run (32 px, random init) of `recipe` on a phantom set."""
    split = phantom_split(root, task=task) if split is None else split
    return Run(run, train(run, split, recipe, task_classes(task), find_dataset(root).root, **{**TINY, **options}))


# Paper A's recipe on the toy backbone: the run folder's machinery in seconds (the notebooks train ResNet50).
TOY_PAPER_A = dataclasses.replace(PAPER_A, name="paper_a_toy", backbone="toy")
# The improved recipe on the toy backbone: with a weights file (`toy_weights`) it warms up, then fine-tunes.
TOY_IMPROVED = dataclasses.replace(IMPROVED, name="improved_toy", backbone="toy")


def toy_weights(path: Path, image_size: int = 32) -> Path:
    """A weights file for the toy backbone: "pretrained" weights, so that a run warms up before fine-tuning."""
    if not path.exists():
        keras.utils.set_random_seed(0)  # the same weights whichever tests ran before (a run at 0.1 is chaotic)
        load_backbone("none", image_size, backbone="toy")[0].save_weights(path)
    return path


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, phantom_root):
    """A tiny paper_a run (toy backbone) interrupted after its 2nd epoch (of 3), then resumed by the same call:
    (run folder, settings, history at the interruption, epochs run after resuming)."""
    run = tmp_path_factory.mktemp("run") / "paper_a"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "OUTPUT_DIR", tmp_path_factory.mktemp("outputs"))
        with pytest.raises(Interrupted):
            train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3, callbacks=[InterruptAfter(1)])
        interrupted_history = Run(run).history()
        recorder = RecordEpochs()
        settings = train_tiny(run, phantom_root, TOY_PAPER_A, epochs=3, callbacks=[recorder]).settings
    return run, settings, interrupted_history, recorder.epochs


def fake_run(folder: Path, model, classes, image_size: int, normalisation: str = "rescale") -> Run:
    """A Run of a hand-built model: its settings as a run folder records them, its model given, not loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {**PAPER_A.to_dict(), "normalisation": normalisation}
    storage.write_settings(folder, RunSettings(
        recipe=recipe, classes=list(classes), data_root=str(folder), split_fingerprint="", repeat=0,
        image_size=image_size, epochs=1, batch_size=8, weights_requested="none", seed=0, monitored_on="val",
        pretrained=False, finished=True))
    run = Run(folder)
    run.__dict__["model"] = model  # what `Run.model` would load
    return run


# The test that runs in the notebooks' worker, after the notebooks (marked `last`): that outputs/ is as it was.
AFTER_THE_NOTEBOOKS = "tests/test_course_outputs.py::test_the_test_run_leaves_the_course_outputs_as_it_found_them"
# Tests in a real browser: in the notebooks' worker too (marked `last`), to reuse the runs the notebooks trained;
# the website's, to build it from the notebooks this worker executed.
BROWSER_TESTS = ("tests/test_browser.py", "tests/test_site.py")


def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (`make test` runs two workers), every notebook runs in one worker, in order: 04 and 05 reuse
    the runs 03 trained in the same output folder (the test run's own: conftest.py at the top), and nbval needs a
    notebook's cells in one kernel. Each test module is a unit of its own, spread over the workers."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            if nodeid.startswith(("notebooks/", *BROWSER_TESTS)) or nodeid == AFTER_THE_NOTEBOOKS:
                return "notebooks"
            return super()._split_scope(nodeid)

    return NotebooksTogether(config, log)


def pytest_terminal_summary(terminalreporter):
    """The browser tests skipped for want of a browser (tests/find_browser.py), named in one line at the end."""
    say_what_was_not_run(terminalreporter)
