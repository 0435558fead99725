"""Loaded by pytest before the tests' and the notebooks' own set-up, whatever paths it is given: the test run writes
its runs, caches, splits and figures to its own folder (.test-outputs/ unless CXR_OUTPUT_DIR says otherwise), never to
the course's outputs/, and fails if outputs/ changed all the same (tests/test_course_outputs.py, and at the end)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests import outputs_guard

# Now, before helpers/config.py reads it, and before xdist starts its workers and nbval their kernels (which inherit
# it): one folder for the whole run, so that notebooks 04-06 reuse the runs notebook 03 trained.
outputs_guard.use_test_outputs()

_snapshot = pytest.StashKey[Path]()  # the fingerprint of outputs/ taken at the start (main process only)
_changed = pytest.StashKey[list]()  # what changed in outputs/, found at the end


def pytest_configure(config):
    config.addinivalue_line("markers", "last: runs after every other test of its process (tests/conftest.py: "
                                       "with xdist, in the notebooks' worker, after the notebooks)")
    if not hasattr(config, "workerinput"):  # the main process, before any test runs and before the workers start
        handle, name = tempfile.mkstemp(prefix="cxr-outputs-before-", suffix=".json")
        os.close(handle)
        outputs_guard.save_snapshot(Path(name))
        config.stash[_snapshot] = Path(name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The notebooks' kernels (nbval starts one per notebook, before its first cell, with this process's environment)
    run Keras' steps eagerly: in the fast profile each run takes a few steps, and tracing ResNet50's step costs more
    than running them (alone on 2 cores: notebook 03 in 132 s against 204 s traced, 06 in about 150 against 221).
    The traced path, ResNet50's included, is what the unit tests train through; `make run` traces as learners do."""
    if item.nodeid.startswith("notebooks/"):
        os.environ["CXR_EAGER"] = "1"
    else:
        os.environ.pop("CXR_EAGER", None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """nbval runs a notebook's cells in one kernel and keeps each cell's outputs: they are saved as an executed
    notebook in the test run's outputs folder (notebooks/, as `make run` saves the course's), so that the site test
    builds the course website from the fast profile's notebooks without running them again."""
    yield
    outputs = getattr(item, "test_outputs", None)
    if call.when == "call" and outputs is not None and item.nodeid.startswith("notebooks/"):
        import nbformat

        from helpers import config, files

        item.cell.outputs, item.cell.execution_count = outputs, item.cell_num + 1
        with files.atomic_path(config.OUTPUT_DIR / "notebooks" / item.parent.path.name) as partial:
            nbformat.write(item.parent.nb, str(partial))


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)  # stable: the rest keep their order


def pytest_sessionfinish(session):
    """The whole run, every worker included, seen from the main process: outputs/ as it was at the start."""
    if hasattr(session.config, "workerinput") or _snapshot not in session.config.stash:
        return
    changed = outputs_guard.changes_since_start()
    if changed:
        session.config.stash[_changed] = changed
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    changed = config.stash.get(_changed, None)
    if changed:
        terminalreporter.write_sep("=", "outputs/ changed: the test run fails", red=True, bold=True)
        terminalreporter.write_line(outputs_guard.report(changed))


def pytest_unconfigure(config):
    if _snapshot in config.stash:
        config.stash[_snapshot].unlink(missing_ok=True)
