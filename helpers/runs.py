"""The course's runs: where they live, trained when missing, resumed when interrupted, reused when finished, and
read side by side. A single run folder is a `Run`: what it was trained with, its history, model and predictions.

This module is one of the two doors to `helpers.engine` (the other is the CLI): the lessons train and read runs here.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from helpers.curves import NOT_REACHED, accuracy_interval, effective_images, one_off_seconds, time_to_accuracy
from helpers.data import ScanResult, scan_cached
from helpers.datasets import DatasetLayout
from helpers.engine import sharing, storage
from helpers.engine.storage import (
    RunNotFoundError,
    RunSettings,
    classes_of,
    course_run_folder,
    load_model,
    read_history,
    read_settings,
    read_split,
    settings_path,
)
from helpers.engine.training import kept_row, train
from helpers.image_files import read_images
from helpers.models import fed_normalisation, predict_pixels
from helpers.pipeline import build_dataset, left_out_line, unreadable_files
from helpers.recipes import Recipe
from helpers.synthetic import MANIFEST_NAME
from helpers.tasks import canonical_class


class Run:
    """One run folder. Everything is read from disk when first asked for, the model included; what a run was
    trained with is a property (`pretrained`, `epochs_run`, ...), and `settings` is the whole record (`RunSettings`)."""

    def __init__(self, folder, settings: RunSettings | None = None):
        self.folder = Path(folder)
        if settings is not None:  # as training left it (a worker other than the chief never writes it)
            self.__dict__["settings"] = settings

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r})"

    def __fspath__(self) -> str:
        return str(self.folder)

    @cached_property
    def settings(self) -> RunSettings:
        found = read_settings(self.folder)  # a damaged file is named (json's own error names none)
        if found is None:
            raise RunNotFoundError(f"{self.folder} is not a training run: expected "
                                   f"{settings_path(self.folder).name} (made by `python -m helpers train`); found none")
        return found

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.settings.recipe)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def classes(self) -> list[str]:
        return self.settings.classes

    @property
    def image_size(self) -> int:
        return self.settings.image_size

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def repeat(self) -> int:
        return self.settings.repeat

    @property
    def normalisation(self) -> str:
        return self.recipe.normalisation

    @property
    def finished(self) -> bool:
        return self.settings.finished

    @property
    def pretrained(self) -> bool:
        """Whether the backbone started from ImageNet weights (False: random init, not transfer learning)."""
        return self.settings.pretrained

    @property
    def weights_used(self) -> str:
        """The backbone's starting weights: "imagenet", a weights file, or "none"."""
        return self.settings.weights_used

    @property
    def warmup_epochs(self) -> int:
        return self.settings.warmup_epochs

    @property
    def epochs_run(self) -> int:
        return self.settings.epochs_run

    @property
    def stopped_early(self) -> bool:
        return self.settings.stopped_early

    @property
    def train_seconds(self) -> float:
        """Seconds of training (evaluation left out), across resumes."""
        return self.settings.train_seconds

    @property
    def batchnorm(self) -> str:
        """How BatchNorm layers were trained, in words."""
        return self.settings.batchnorm

    @property
    def monitored_on(self) -> str:
        """"val", or "test" for runs without a validation part (Paper B's sub-samples)."""
        return self.settings.monitored_on

    @property
    def on_phantoms(self) -> bool:
        """Whether the run was trained on generated phantoms (its figures say so)."""
        return (Path(self.settings.data_root) / MANIFEST_NAME).exists()

    @property
    def scores(self) -> dict:
        """Loss and accuracy of the final model, by part ("val" or "test", and for a random-init backbone the same
        part before BatchNorm re-estimation)."""
        return self.settings.scores

    @property
    def score(self) -> dict:
        """Loss and accuracy of the final model on the part the run watched (after BatchNorm re-estimation for a
        random-init backbone)."""
        return self.scores[self.monitored_on]

    @property
    def unreadable_files(self) -> dict:
        """Images left out because they could not be read: path → reason."""
        return self.settings.unreadable_files

    @cached_property
    def model(self):
        """The final model, loaded in Keras' safe mode (no Lambda layers or arbitrary code)."""
        if not self.finished:
            raise RunNotFoundError(f"{self.folder} has not finished training: run the same command again to "
                                   "resume it")
        return load_model(self.folder)

    def history(self) -> pd.DataFrame:
        return read_history(self.folder)

    def saved_metrics(self) -> dict | None:
        """What `evaluation.evaluate_run` saved (None before it ran), and whether the model is newer than it."""
        return storage.read_metrics(self.folder)

    def metrics_predate_model(self) -> bool:
        return storage.metrics_predate_model(self.folder)

    def save_evaluation(self, metrics: dict, predictions: pd.DataFrame) -> None:
        storage.write_metrics(self.folder, metrics)
        storage.write_test_predictions(self.folder, predictions)

    def test_predictions(self) -> pd.DataFrame:
        """Each test image's probabilities as `evaluate_run` saved them."""
        return storage.read_test_predictions(self.folder)

    def held_out_curve(self, level: float = 0.95) -> pd.DataFrame:
        """Per epoch: training seconds so far, without evaluation and without the one-off tracing and compiling of
        the training step (`curves.one_off_seconds`: the total left out so far), and balanced accuracy on the
        held-out part the run watched (validation, or a sub-sample's test part) with its `level` interval
        (`curves.accuracy_interval`), so that runs watched on differently sized or balanced parts are each read at
        their own resolution. Before any BatchNorm re-estimation (see `score`).

        attrs: "class_images" (held-out images per class), "images", "effective_images", "level", and "one_off":
        "measured" during training, "estimated" from whole epochs for a run trained before it was measured, or
        "not measured" (then its time stays in: see `curves.one_off_seconds`).
        """
        history = self.history()
        one_off, how = one_off_seconds(history, self.warmup_epochs)
        held_out = self.part(self.monitored_on)
        held_out = held_out[~held_out["path"].isin(list(self.unreadable_files))]
        sizes = held_out["label"].value_counts().reindex(self.classes, fill_value=0)
        accuracy = history[f"{self.monitored_on}_balanced_accuracy"]
        low, high = accuracy_interval(accuracy, sizes, level)
        left_out = one_off.fillna(0.0).cumsum()
        curve = pd.DataFrame({"epoch": history["epoch"], "train_seconds": history["train_seconds"] - left_out,
                              "one_off_seconds": left_out, "balanced_accuracy": accuracy, "low": low, "high": high})
        curve.attrs = {"class_images": {c: int(n) for c, n in sizes.items()}, "images": int(sizes.sum()),
                       "effective_images": effective_images(sizes), "level": level, "one_off": how}
        return curve

    def split(self) -> pd.DataFrame:
        return read_split(self.folder, self.settings.data_root)

    def part(self, name: str = "test", scan: ScanResult | None = None) -> pd.DataFrame:
        """The images of one part of the run's own split (its own repeat), with the scan's mask paths if given
        (lungs; lesions on phantoms)."""
        split = self.split()
        rows = split[(split["split"] == name) & (split["repeat"] == self.repeat)]
        if rows.empty:
            raise ValueError(f"{self.folder}'s split has no '{name}' images for repeat {self.repeat}; "
                             f"it has {sorted(split['split'].unique())}")
        rows = rows[["relpath", "path", "label"]].reset_index(drop=True)
        if scan is None:
            return rows
        masks = scan.index[["relpath", "mask_path", "lesion_mask_path"]]
        return rows.merge(masks, on="relpath", how="left")

    def predict_part(self, name: str = "test", verbose="auto") -> pd.DataFrame:
        """Probabilities of every class on one part of the run's own split, one row per image. An image that can
        no longer be read is left out and named (the rest are still predicted)."""
        rows = self.part(name)
        labels = rows["label"].map(self.classes.index)
        dataset = build_dataset(rows["path"], labels, len(self.classes), self.image_size, self.batch_size,
                                normalisation=fed_normalisation(self.model, self.normalisation), cache=False)
        probabilities = np.asarray(self.model.predict(dataset, verbose=verbose), dtype=np.float64)
        unreadable = unreadable_files(rows["path"])
        if unreadable:  # in the dataset as blank images, so that every row kept its prediction: drop them
            print(left_out_line(unreadable, f"{name} image(s)"), file=sys.stderr)
            keep = ~rows["path"].isin(unreadable).to_numpy()
            rows, labels, probabilities = (rows[keep].reset_index(drop=True), labels[keep].reset_index(drop=True),
                                           probabilities[keep])
        table = rows.copy()
        table["y_true"] = labels.to_numpy()
        table[self.classes] = probabilities
        table["predicted"] = [self.classes[i] for i in probabilities.argmax(axis=1)]
        table["confidence"] = probabilities.max(axis=1)
        return table

    def predict(self, paths) -> pd.DataFrame:
        """One row per image file: the probability of every class, the predicted class, and an error if the image
        could not be read (the other images are still predicted)."""
        read = read_images(paths, self.image_size)
        pixels = read.pixels
        table = pd.DataFrame({"image": [str(p) for p in paths], "error": read.errors})
        for cls in self.classes:
            table[cls] = np.nan
        table["predicted"] = None
        if len(pixels):
            probabilities = predict_pixels(self.model, pixels, self.normalisation)
            ok = table["error"].isna().to_numpy()
            table.loc[ok, self.classes] = probabilities
            table.loc[ok, "predicted"] = [self.classes[i] for i in probabilities.argmax(axis=1)]
        return table[["image", *self.classes, "predicted", "error"]]


def as_run(run) -> Run:
    """A Run from a Run or a folder path."""
    return run if isinstance(run, Run) else Run(run)


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
    return Run(folder, train(folder, split, recipe, classes, layout.root, repeat=repeat, log=log, skipped=skipped,
                             **sizes))


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
