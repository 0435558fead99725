"""The tests never touch the course's outputs/: a teacher who runs them before a lesson still projects the course's
figures, not the fast profile's. The test run writes to its own folder (conftest.py at the repository's top)."""

import os
from pathlib import Path

import pytest

from helpers import config
from tests import outputs_guard


def test_under_pytest_outputs_go_to_the_test_runs_own_folder():
    assert config.OUTPUT_DIR.resolve() != outputs_guard.COURSE_OUTPUTS.resolve()
    assert config.OUTPUT_DIR.resolve() == Path(os.environ["CXR_OUTPUT_DIR"]).expanduser().resolve(), \
        "set in the environment, so that the notebooks' kernels and child processes write there too"


def test_the_fingerprint_sees_a_file_added_changed_or_removed(tmp_path):
    folder = tmp_path / "outputs"
    assert outputs_guard.changes(None, outputs_guard.fingerprint(folder)) == []
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "a.png").write_bytes(b"course")
    before = outputs_guard.fingerprint(folder)
    assert outputs_guard.changes(before, outputs_guard.fingerprint(folder)) == []
    (folder / "figures" / "a.png").write_bytes(b"fast profile")
    (folder / "runs").mkdir()
    assert outputs_guard.changes(before, outputs_guard.fingerprint(folder)) == [
        "added    outputs/runs", "modified outputs/figures/a.png"]
    (folder / "figures" / "a.png").unlink()
    assert outputs_guard.changes(before, outputs_guard.fingerprint(folder)) == [
        "added    outputs/runs", "removed  outputs/figures/a.png"]
    assert outputs_guard.changes(None, before) == ["outputs/ was created, with 2 entries"]


@pytest.mark.last
def test_the_test_run_leaves_the_course_outputs_as_it_found_them():
    """Runs after the notebooks, in their worker (tests/conftest.py); the main process checks again once every worker
    is done (conftest.py), so a unit test still running elsewhere cannot escape."""
    changed = outputs_guard.changes_since_start()
    assert not changed, outputs_guard.report(changed)
