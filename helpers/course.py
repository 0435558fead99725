"""`helpers.start()`: the one call every notebook opens with, after its collapsed install cell.

    import helpers
    from helpers import plots, recipes, runs
    course = helpers.start()

It says what this run computes on (device, versions, profile) and which images it uses (the real dataset or generated
phantoms), imports the runs a teacher shared (`CXR_RUNS_URL`, the install cell's RUNS_URL), and returns a `Course`:
the profile, the dataset's layout, its scan, and the caption every figure carries. TensorFlow is already imported,
quietly, by `import helpers`.
"""

from __future__ import annotations

import dataclasses

from helpers import config, data, datasets, plots
from helpers.engine import devices, sharing  # the report and a teacher's runs (a door to the engine, as runs is)


@dataclasses.dataclass(frozen=True)
class Course:
    """What a notebook needs from its start: read its attributes, e.g. `course.scan.index`."""

    profile: config.Profile  # sizes and epochs of this run (fast, demo or full)
    layout: datasets.DatasetLayout  # where the images are: real dataset or phantoms
    scan: data.ScanResult  # every file decoded once (cached): `.index`, one row per usable image
    caption: str  # a figure's footer: which images it shows, and the profile

    def __repr__(self) -> str:
        return f"Course(profile={self.profile.name!r}, images={self.layout.root}, usable={len(self.scan.index):,})"


def start(paper_b: bool = False, download: bool | None = None) -> Course:
    """Prints the device report and which dataset this notebook uses (with Paper B's sizes if `paper_b`), imports a
    teacher's shared runs if `CXR_RUNS_URL` is set, and returns the `Course`. `download` as in
    `datasets.active_dataset` (default: on Colab and Kaggle)."""
    profile = config.active_profile()
    print(devices.device_report(profile))
    layout = datasets.active_dataset(profile, download, paper_b=paper_b)  # prints which images
    scan = data.scan_cached(layout)
    sharing.import_from_environment(layout)
    return Course(profile, layout, scan, plots.caption(layout))
