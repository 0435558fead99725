"""Held-out accuracy curves over training time, read honestly (Paper B's time to 95%): the one-off seconds of
tracing left out, an interval on every point, the training seconds until a threshold, and how finely a held-out set
can tell whether the threshold was reached at all.

A curve comes from `Run.held_out_curve` (helpers.engine.storage); these functions need only its table and attrs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy.stats import norm

NOT_REACHED = "not reached"  # in a table's time to a threshold (and its interval) when a curve never got there


def one_off_seconds(history: pd.DataFrame, warmup_epochs: int = 0) -> tuple[pd.Series, str]:
    """Per epoch, the one-off seconds (tracing and compiling the training step) inside its training time, and how
    they were found: "measured" (history.csv has them: `callbacks.Timing`), "estimated", or "not measured".

    Runs trained before they were measured get an estimate from whole epochs, as every epoch of a phase runs the same
    steps: the first epoch of each phase minus the median of that phase's other epochs. It misses a resume's
    retracing, and a phase of one epoch has nothing to compare with: NaN there, "not measured", its time left in.
    """
    if "one_off_seconds" in history:
        measured = history["one_off_seconds"]
        return measured, "measured" if measured.notna().all() else "not measured"
    seconds = history["train_seconds"].diff().fillna(history["train_seconds"])
    estimate = pd.Series(0.0, index=history.index)
    for phase in (history["epoch"] < warmup_epochs, history["epoch"] >= warmup_epochs):
        epochs = seconds[phase]
        if len(epochs) == 1:
            estimate[epochs.index[0]] = np.nan
        elif len(epochs) > 1:
            estimate[epochs.index[0]] = max(0.0, epochs.iloc[0] - float(epochs.iloc[1:].median()))
    return estimate, "estimated" if estimate.notna().all() else "not measured"


def effective_images(class_images) -> float:
    """The number of images of a balanced held-out set whose balanced accuracy is as precise as this set's:
    K² / Σ 1/n_k over the K classes present (an error in class k moves balanced accuracy by 1/(K·n_k); this is one
    over the mean of that). On a balanced set it is the number of images."""
    counts = np.asarray(list(dict(class_images).values()), dtype=float)
    counts = counts[counts > 0]
    if not len(counts):
        raise ValueError("the held-out part has no images: nothing to score accuracy on")
    return float(len(counts) ** 2 / np.sum(1 / counts))


def accuracy_interval(accuracy, class_images, level: float = 0.95):
    """(low, high): the Wilson score interval of a balanced accuracy measured on held-out images with
    `class_images` per class (a dict or Series), for one value or an array of them.

    On a balanced set balanced accuracy is plain accuracy, a share of n images, and this is the Wilson interval on
    n. On an unbalanced set it is the mean of the per-class recalls, of variance Σ p_k(1-p_k)/n_k / K²; with every
    recall taken equal to the balanced accuracy (a history records no per-class counts) that is p(1-p)/n_eff, so the
    Wilson interval on n_eff = `effective_images` (its smallest classes weigh most). Wilson rather than the plain
    p ± z·SE: at 18 of 18 right that has zero width, and it runs past 100%.
    """
    n = effective_images(class_images)
    z = norm.ppf(0.5 + level / 2)
    p = np.asarray(accuracy, dtype=float)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What a held-out set can tell apart at a threshold: its images, the points of balanced accuracy one error costs
    (by class: 100/(K·n_k); `points_per_error` is their mean over classes, 100/`effective_images`), the fewest right
    answers that reach the threshold (errors put where they cost least), the interval's lower bound with every image
    right and whether it clears the threshold (if not, no result on this set can show it was reached), the balanced
    images that would be needed for that, and both in words (`text`, `verdict`)."""

    images: int
    effective_images: float
    one_error_points: list
    points_per_error: float
    correct_needed: int
    low_if_all_correct: float
    can_show: bool
    images_needed: int
    text: str
    verdict: str

    @property
    def table(self) -> pd.DataFrame:
        """One row: the numbers behind `text` and `verdict`."""
        return pd.DataFrame([{"held-out images": self.images, "effective images": self.effective_images,
                              "points per error": self.points_per_error, "correct needed": self.correct_needed,
                              "lower bound if all correct": self.low_if_all_correct, "can show": self.can_show,
                              "images needed": self.images_needed}])

    def describe(self) -> str:
        """`text` and `verdict`, one a line."""
        return f"{self.text};\n{self.verdict}."


def resolution(curve: pd.DataFrame, threshold: float = 0.95) -> Resolution:
    """What the held-out images of a curve from `Run.held_out_curve` can tell apart at `threshold`."""
    if "class_images" not in curve.attrs:
        raise ValueError("resolution needs a curve from Run.held_out_curve (its attrs say how many images it scores)")
    sizes = {c: n for c, n in curve.attrs["class_images"].items() if n > 0}
    level, total = curve.attrs["level"], sum(sizes.values())
    costs = sorted(1 / (len(sizes) * n) for n in sizes.values() for _ in range(n))  # each possible error's cost
    allowed = int(np.searchsorted(np.cumsum(costs), 1 - threshold + 1e-9, side="right"))
    low = float(accuracy_interval(1.0, sizes, level)[0])
    z = norm.ppf(0.5 + level / 2)
    images_needed = math.ceil(z**2 * threshold / (1 - threshold) - 1e-9)  # Wilson's low end at n of n: n/(n+z²)
    one_error = sorted({round(100 * c, 6) for c in costs})
    if len(one_error) == 1:
        text = f"{total:,} held-out images: one error = {_points(one_error[0])} points; {threshold:.0%} needs "
    else:
        text = (f"{total:,} held-out images: one error = {_points(one_error[0])} to {_points(one_error[-1])} points "
                f"(by class); {threshold:.0%} needs at least ")
    text += f"{total - allowed:,} of {total:,} correct"
    all_correct = f"{total:,} of {total:,} correct gives a {level:.0%} interval with lower bound {low:.1%}"
    verdict = (f"can show {threshold:.0%}: {all_correct}" if low >= threshold else
               f"cannot show {threshold:.0%}: even {all_correct}; showing it takes at least {images_needed} balanced "
               "held-out images, all correct")
    return Resolution(images=total, effective_images=effective_images(sizes), one_error_points=one_error,
                      points_per_error=100 / effective_images(sizes), correct_needed=total - allowed,
                      low_if_all_correct=low, can_show=bool(low >= threshold), images_needed=images_needed, text=text,
                      verdict=verdict)


def _points(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


@dataclasses.dataclass(frozen=True)
class TimeToAccuracy:
    """When a curve first reached a threshold, read at its own resolution: the training seconds until then (None if
    it never did), the interval at that epoch, and what its held-out images can show at all (`resolution`; None for
    a plain history without them)."""

    threshold: float
    seconds: float | None
    low: float | None
    high: float | None
    resolution: Resolution | None

    @property
    def reached(self) -> bool:
        return self.seconds is not None

    @property
    def shown_above(self) -> bool:
        """Whether the interval at the epoch it was reached lies above the threshold: a result, not a point."""
        return self.low is not None and bool(self.low >= self.threshold)

    @property
    def table(self) -> pd.DataFrame:
        """One row: the threshold, the seconds and the interval then (NaN if never reached or not known), whether
        it was reached and shown above, and the resolution's numbers (`Resolution.table`) when there is one."""
        known = lambda value: np.nan if value is None else value  # noqa: E731
        row = pd.DataFrame([{"threshold": self.threshold, "seconds": known(self.seconds), "low": known(self.low),
                             "high": known(self.high), "reached": self.reached, "shown above": self.shown_above}])
        return row if self.resolution is None else row.join(self.resolution.table)

    def describe(self) -> str:
        if not self.reached:
            said = f"The curve never reached {self.threshold:.0%}."
        else:
            said = f"The curve reached {self.threshold:.0%} after {self.seconds:.1f} training seconds"
            said += ("." if self.low is None else f" (interval then {self.low:.3f} to {self.high:.3f}: "
                     f"{'shown above' if self.shown_above else 'not shown above'} {self.threshold:.0%}).")
        return said if self.resolution is None else f"{said}\n{self.resolution.describe()}"


def time_to_accuracy(curve: pd.DataFrame, threshold: float = 0.95, column: str = "balanced_accuracy",
                     clock: str = "train_seconds") -> TimeToAccuracy:
    """When `column` first reached `threshold`. Read from a `Run.held_out_curve`, the seconds leave out evaluation
    and one-off tracing, and the result carries the interval then and the curve's resolution."""
    reached = curve[curve[column] >= threshold].head(1)
    seconds = float(reached[clock].iloc[0]) if len(reached) else None
    low, high = ((float(reached["low"].iloc[0]), float(reached["high"].iloc[0]))
                 if len(reached) and "low" in curve else (None, None))
    about = resolution(curve, threshold) if "class_images" in curve.attrs else None
    return TimeToAccuracy(threshold, seconds, low, high, about)


def time_to_accuracy_table(curves: dict, threshold: float = 0.95) -> pd.DataFrame:
    """One row per curve ({name: `Run.held_out_curve()`}), in numbers. First what its held-out images can show:
    how many there are, the points of balanced accuracy one error costs (on an unbalanced part, the mean over
    classes: see `resolution`), the correct answers `threshold` needs, and the interval's lower bound with every
    image right (below `threshold`: this set cannot show it at all). Then what the run did: the training seconds
    until balanced accuracy first reached `threshold` (one-off tracing and evaluation left out, and shown), the
    interval at that epoch and whether it lies above `threshold`. A curve that never reached `threshold` reads
    `NOT_REACHED` in the seconds and the interval, and False in "shown above"."""
    rows = {}
    for name, curve in curves.items():
        when = time_to_accuracy(curve, threshold)
        about = when.resolution or resolution(curve, threshold)  # a curve without its images is refused here
        rows[name] = {
            "held-out images": about.images,
            "points per error": round(about.points_per_error, 2),
            f"correct needed for {threshold:.0%}": about.correct_needed,
            "interval's lower bound if all correct": round(about.low_if_all_correct, 3),
            f"training seconds to {threshold:.0%}": when.seconds if when.reached else NOT_REACHED,
            f"{curve.attrs['level']:.0%} interval then": (f"{when.low:.3f} to {when.high:.3f}" if when.reached
                                                          else NOT_REACHED),
            f"shown above {threshold:.0%}": when.shown_above,
            "one-off seconds left out": round(float(curve["one_off_seconds"].iloc[-1]), 2),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
