"""A teacher's run that travels to another machine: trained as notebook 03 trains Paper A's run (fast profile,
phantoms), exported, and its probabilities on a few images written beside the archive, so that an environment with
other package versions (`make test-colab`: Colab's Keras) can import it and check it predicts the same.

    python -m tests.travelling_run export FOLDER    # FOLDER/data, FOLDER/class-runs.zip, FOLDER/expected.json
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import keras

from helpers import config, recipes, runs, splits
from helpers.data import scan_cached
from helpers.datasets import find_dataset
from helpers.engine import sharing
from helpers.synthetic import generate_phantoms

ARCHIVE, EXPECTED, DATA = "class-runs.zip", "expected.json", "data"
IMAGES = ("COVID/images/COVID-1.png", "Normal/images/Normal-2.png", "Viral Pneumonia/images/Viral Pneumonia-3.png")


@contextlib.contextmanager
def outputs_in(folder: Path):
    """Runs, scans and splits in `folder`, as CXR_OUTPUT_DIR=folder would put them (a teacher's, a learner's)."""
    saved = config.OUTPUT_DIR
    config.OUTPUT_DIR = Path(folder)
    try:
        yield
    finally:
        config.OUTPUT_DIR = saved


def course_split(layout):
    """The split notebooks 03-05 train Paper A's run on."""
    return splits.saved_split(scan_cached(layout), mode="paper_a", task=4)


def export(folder) -> Path:
    """Train Paper A's run as notebook 03 does, export it, and record its probabilities and this Keras' version."""
    folder = Path(folder)
    layout = find_dataset(generate_phantoms(folder / DATA, per_class=10, size=64, seed=0))
    with outputs_in(folder / "teacher-outputs"):
        run = runs.train_or_load(layout, recipes.PAPER_A, course_split(layout), log=lambda *_: None)
        sharing.export_runs(run.folder, folder / ARCHIVE)
        table = run.predict([layout.root / image for image in IMAGES])
    (folder / EXPECTED).write_text(json.dumps({
        "keras": keras.__version__, "images": list(IMAGES), "classes": run.classes,
        "probabilities": table[run.classes].to_numpy().tolist()}))
    return folder / ARCHIVE


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "export":
        sys.exit(__doc__)
    print(f"Exported a run trained with Keras {keras.__version__} to {export(sys.argv[2])}")
