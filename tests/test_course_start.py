"""`helpers.start()`, every notebook's first call (issue 37): the device report and which images, a teacher's runs
imported, and a frozen `Course` with what a notebook needs."""

import dataclasses

import pytest

import helpers
from helpers import course as course_module


def test_start_says_what_runs_where_on_which_images_and_returns_a_frozen_course(capsys, monkeypatch):
    imported = []
    monkeypatch.setattr(course_module.sharing, "import_from_environment", lambda layout, **_: imported.append(layout))
    course = helpers.start()
    said = capsys.readouterr().out
    assert said.index("Devices: ") < said.index("Training device policy: ") < said.index("This run uses ")
    assert imported == [course.layout], "a teacher's runs (CXR_RUNS_URL) are imported at the start, once"
    assert course.scan.layout == course.layout and len(course.scan.index) > 0
    assert course.caption.startswith("images: ") and course.profile.name in course.caption
    with pytest.raises(dataclasses.FrozenInstanceError):
        course.profile = None  # type: ignore[misc]


def test_start_for_paper_b_says_how_the_profile_shrinks_its_protocol(capsys, monkeypatch):
    monkeypatch.setattr(course_module.sharing, "import_from_environment", lambda layout, **_: [])
    helpers.start(paper_b=True)
    assert "Paper B's protocol" in capsys.readouterr().out
