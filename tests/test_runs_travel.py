"""Issue 34: a run archive made in one environment is imported and used in another with other package versions.
`make test-colab` exports it with this machine's Keras (CXR_TRAVELLING_RUN names the folder) and runs this test on
Colab's Keras; `make test` runs it within one environment, the archive made here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import explorers, recipes, runs
from helpers.datasets import find_dataset
from helpers.engine import sharing
from tests import travelling_run


@pytest.fixture(scope="module")
def travelled(tmp_path_factory) -> Path:
    """The folder holding the archive, its data and the teacher's probabilities: another environment's if given."""
    given = os.environ.get("CXR_TRAVELLING_RUN")
    if given:
        return Path(given)
    folder = tmp_path_factory.mktemp("travelling")
    travelling_run.export(folder)
    return folder


@pytest.mark.slow
def test_an_archive_from_another_environment_is_found_by_the_notebooks_and_predicts_the_same(travelled, tmp_path):
    expected = json.loads((travelled / travelling_run.EXPECTED).read_text())
    print(f"exported with Keras {expected['keras']}, imported with Keras {keras.__version__}")
    layout = find_dataset(travelled / travelling_run.DATA)
    logs = []
    with travelling_run.outputs_in(tmp_path / "learner-outputs"):
        [placed] = sharing.import_runs(travelled / travelling_run.ARCHIVE, layout, log=logs.append)
        assert not [line for line in logs if "will not use it" in line], logs
        run = runs.train_or_load(layout, recipes.PAPER_A, travelling_run.course_split(layout), log=logs.append)
        assert logs[-1] == f"Using the run imported from {travelled / travelling_run.ARCHIVE} ({placed}); nothing " \
                           "to train.", "notebook 03's own call finds the imported run"
        table = run.predict([layout.root / image for image in expected["images"]])
        assert run.classes == expected["classes"]
        np.testing.assert_allclose(table[run.classes].to_numpy(), expected["probabilities"], rtol=0, atol=1e-5)
        verdict = explorers.judge(run, layout.root / expected["images"][0])  # 03's upload explorer
        np.testing.assert_allclose(verdict.probabilities.to_numpy(), expected["probabilities"][0], atol=1e-5)
        assert len(run.predict_part("test", verbose=0)) > 0  # notebook 04's first use
