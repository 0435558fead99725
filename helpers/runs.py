"""The course's runs: where they live, trained when missing, resumed when interrupted, reused when finished, and
read side by side. A single run folder is a `Run` (helpers.run_folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from helpers import sharing
from helpers.curves import NOT_REACHED, time_to_accuracy
from helpers.data import scan_cached
from helpers.datasets import DatasetLayout
from helpers.recipes import Recipe
from helpers.run_folder import Run, as_run, classes_of, course_run_folder
from helpers.tasks import canonical_class
from helpers.training import kept_row, train


def format_predictions(table: pd.DataFrame, classes) -> str:
    """A table like Paper B's Tables I and II: one image per row, a probability per class."""
    name_width = max(12, *(len(Path(p).name) for p in table["image"])) + 2
    header = f"{'image':<{name_width}}" + "".join(f"{c:>17}" for c in classes) + f"  {'predicted':<16}"
    lines = [header, "-" * len(header)]
    for _, row in table.iterrows():
        name = f"{Path(row['image']).name:<{name_width}}"
        if isinstance(row["error"], str):
            lines.append(name + f"error: {row['error']}")
        else:
            lines.append(name + "".join(f"{row[c]:>17.4f}" for c in classes) + f"  {row['predicted']:<16}")
    return "\n".join(lines)


def run_labels(runs) -> list[str]:
    """A name per run for a table's columns: its recipe, or, where two runs share one (two repeats, two seeds), the
    recipe and its folder, so that no run hides another."""
    runs = [as_run(run) for run in runs]
    names = [run.name for run in runs]
    return [name if names.count(name) == 1 else f"{name} ({run.folder.name})" for name, run in zip(names, runs)]


def kept_and_last(run) -> pd.DataFrame:
    """The epoch a run kept next to its last one, on the part it watched: what selection chose, and what training
    had reached by its end. For random-init runs the figures are with re-estimated BatchNorm statistics, as their saved
    model has them, and the as-trained loss is shown beside them (runs trained before issue 35 have only that one)."""
    run = as_run(run)
    history, part = run.history(), run.monitored_on
    kept = kept_row(history, run.settings, run.recipe)
    columns = {f"{part}_{name}": f"{part} {name.replace('_', ' ')}"
               for name in ("loss", "accuracy", "balanced_accuracy", "loss_as_trained")}
    rows = {f"kept (epoch {int(kept['epoch']) + 1})": kept, f"last (epoch {len(history)})": history.iloc[-1]}
    return pd.DataFrame(rows).T[[c for c in columns if c in history]].rename(columns=columns).astype(float)


def compare_runs(runs) -> pd.DataFrame:
    """Key facts of several runs side by side, on the part each watched (the test set is for notebook 04)."""
    rows = {}
    runs = [as_run(run) for run in runs]
    for label, run in zip(run_labels(runs), runs):
        before = run.scores.get(f"{run.monitored_on}_before_batchnorm_reestimation", {})
        rows[label] = {
            "backbone weights": run.weights_used + ("" if run.pretrained else "  (random init!)"),
            "image size": run.image_size,
            "normalisation": run.normalisation,
            "epochs (warm-up + main)": f"{run.epochs_run} ({run.warmup_epochs} + "
                                       f"{run.epochs_run - run.warmup_epochs})",
            "stopped early": run.stopped_early,
            "BatchNorm": run.batchnorm,
            f"{run.monitored_on} accuracy": run.score["accuracy"],
            f"{run.monitored_on} accuracy before BatchNorm re-estimation": before.get("accuracy"),
            "training seconds": run.train_seconds,
        }
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the course's runs


def train_or_load(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, repeat: int = 0, log=print,
                  **sizes) -> Run:
    """The course's run of `recipe` on `split`: trained now if missing (this can take a while), resumed if it was
    interrupted, loaded if it is finished. This is how every notebook after 03 gets its models without depending
    on having run 03. `sizes` (epochs, image_size, batch_size, weights) override the profile's. The files of the
    task's classes the scan could not read (the notebook's own scan, from its cache) are named and recorded by the run.
    """
    sharing.import_from_environment(layout, log=log)  # a teacher's runs (CXR_RUNS_URL), before looking for this one
    folder = course_run_folder(layout, recipe, split, repeat)
    classes = classes_of(split)
    skipped = [s for s in scan_cached(layout).skipped if canonical_class(Path(s["path"]).parts[0]) in classes]
    return train(folder, split, recipe, classes, layout.root, repeat=repeat, log=log, skipped=skipped, **sizes)


@dataclasses.dataclass(frozen=True)
class RepeatsInterval:
    """The mean of scores over sub-sample repeats, with its plain and corrected resampled t intervals (low, high)."""

    mean: float
    repeats: int
    level: float
    plain: tuple
    corrected: tuple
    widening: float

    @property
    def table(self) -> pd.DataFrame:
        """One row: the mean, both intervals' ends, and how much wider the corrected one is."""
        return pd.DataFrame([{"mean": self.mean, "repeats": self.repeats, "level": self.level,
                              "plain low": self.plain[0], "plain high": self.plain[1],
                              "corrected low": self.corrected[0], "corrected high": self.corrected[1],
                              "widening": self.widening}])

    def describe(self) -> str:
        return (f"Mean {self.mean:.3f} over {self.repeats} repeats. {self.level:.0%} interval: "
                f"{self.corrected[0]:.3f} to {self.corrected[1]:.3f} corrected for the repeats' shared images "
                f"(resampled t), {self.widening:.2f}× as wide as the plain t interval {self.plain[0]:.3f} to "
                f"{self.plain[1]:.3f}.")


@dataclasses.dataclass(frozen=True)
class CrossValidation:
    """Paper B's sub-sample cross-validation: one run per repeat, one row per repeat (`table`), and the images each
    repeat trained and was tested on (the first repeat's: every repeat draws as many)."""

    runs: list[Run]
    table: pd.DataFrame
    n_train: int
    n_test: int

    def interval(self, level: float = 0.95) -> RepeatsInterval:
        """The mean balanced accuracy over the repeats, with both intervals (`corrected_resampled_t_interval`)."""
        return corrected_resampled_t_interval(self.table["balanced accuracy, last epoch"], self.n_train, self.n_test,
                                              level)

    def describe(self) -> str:
        """The repeats' range of balanced accuracy, how many reached the threshold, and the interval (`interval`)."""
        scores = self.table["balanced accuracy, last epoch"]
        lines = [f"{len(scores)} repeats, each trained on {self.n_train:,} images and tested on {self.n_test:,}: "
                 f"balanced accuracy at the last epoch {scores.min():.3f} to {scores.max():.3f}."]
        for column in [c for c in self.table.columns if str(c).startswith("training seconds to ")]:
            reached = int((self.table[column] != NOT_REACHED).sum())
            lines.append(f"{reached} of {len(scores)} reached {column[len('training seconds to '):]}.")
        if len(scores) > 1:
            lines.append(self.interval().describe())
        return "\n".join(lines)


def cross_validate(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, threshold: float = 0.95,
                   log=print) -> CrossValidation:
    """Paper B's random sub-sample cross-validation: one run per repeat of `split`, each tested on its own 10%.

    Returns its runs and one row per repeat, read from one curve (`Run.held_out_curve`): the balanced accuracy at the
    last epoch, the training seconds until it first reached `threshold` (`NOT_REACHED` if it never did) next to the
    resolution of the repeat's test part (its images and the correct answers `threshold` needs:
    `curves.resolution`), and the training seconds in all, one-off tracing left out (and shown); for random-init
    backbones also the accuracy after BatchNorm re-estimation (the saved model's, printed when the run finished),
    which the curve does not include.
    """
    found, rows = [], []
    for repeat in sorted(split["repeat"].unique()):
        run = train_or_load(layout, recipe, split, repeat=int(repeat), log=log)
        curve = run.held_out_curve()
        when = time_to_accuracy(curve, threshold)
        row = {"repeat": int(repeat), "balanced accuracy, last epoch": float(curve["balanced_accuracy"].iloc[-1]),
               f"training seconds to {threshold:.0%}": when.seconds if when.reached else NOT_REACHED,
               "held-out images": when.resolution.images,
               f"correct needed for {threshold:.0%}": when.resolution.correct_needed,
               "training seconds": float(curve["train_seconds"].iloc[-1]),
               "one-off seconds left out": float(curve["one_off_seconds"].iloc[-1])}
        if not run.pretrained:
            row["accuracy after BatchNorm re-estimation"] = run.score["accuracy"]
        found.append(run)
        rows.append(row)
    own = split[split["repeat"] == split["repeat"].min()]["split"]
    return CrossValidation(found, pd.DataFrame(rows).set_index("repeat"), n_train=int((own == "train").sum()),
                           n_test=int((own == "test").sum()))


def corrected_resampled_t_interval(scores, n_train: int, n_test: int, level: float = 0.95) -> RepeatsInterval:
    """Mean of J scores from random sub-sample repeats (each trained on n_train images, tested on n_test), with the
    plain Student-t interval and the corrected resampled t interval of Nadeau & Bengio (2003, Machine Learning 52).

    Repeats drawn from one pool share training and test images, so their scores are correlated and the plain
    variance/J understates the mean's variance; the correction multiplies the variance by (1/J + n_test/n_train)
    instead of 1/J (J - 1 degrees of freedom in both). "widening" is how much wider the corrected interval is:
    sqrt((1/J + n_test/n_train) / (1/J)).
    """
    values = np.asarray(scores, dtype=float).ravel()
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"need at least 2 finite scores (one per repeat); found {values.tolist()}")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive whole number of images; found {n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1 (e.g. 0.95); found {level!r}")
    repeats, mean, variance = values.size, float(values.mean()), float(values.var(ddof=1))
    quantile = float(student_t.ppf(0.5 + level / 2, df=repeats - 1))
    plain, corrected = 1 / repeats, 1 / repeats + n_test / n_train
    return RepeatsInterval(
        mean=mean, repeats=repeats, level=level,
        plain=tuple(float(mean + side * quantile * np.sqrt(variance * plain)) for side in (-1, 1)),
        corrected=tuple(float(mean + side * quantile * np.sqrt(variance * corrected)) for side in (-1, 1)),
        widening=float(np.sqrt(corrected / plain)),
    )
