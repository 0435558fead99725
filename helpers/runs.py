"""A trained run folder as an object (its settings, model, history and own split, predictions with it), and the
course's runs: where they live, trained when missing, resumed when interrupted, reused when finished.

See `helpers.training` for what a run folder holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy.stats import norm
from tqdm.auto import tqdm

from helpers import config, run_folder, sharing
from helpers.data import (
    CLASSES,
    MANIFEST_NAME,
    BadImageError,
    DatasetLayout,
    ScanResult,
    canonical_class,
    load_grayscale,
    scan_cached,
)
from helpers.datasets import dataset_tag
from helpers.models import fed_normalisation, inputs_for
from helpers.pipeline import build_dataset, left_out_line, unreadable_files
from helpers.recipes import Recipe
from helpers.splits import fingerprint, load_split
from helpers.training import damaged, model_file_problem, read_run_json, time_to_accuracy, train


class RunNotFoundError(Exception):
    """The folder is not a (finished) training run."""


class Run:
    """One run folder. Everything is read from disk when first asked for, the model included."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r})"

    def __fspath__(self) -> str:
        return str(self.folder)

    @cached_property
    def settings(self) -> dict:
        path = self.folder / run_folder.SETTINGS
        if not path.exists():
            raise RunNotFoundError(f"{self.folder} is not a training run: expected {path.name} (made by "
                                   "`python -m helpers train`); found none")
        return read_run_json(path, self.folder)  # a damaged file is named (json's own error names none)

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.settings["recipe"])

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def classes(self) -> list[str]:
        return self.settings["classes"]

    @property
    def image_size(self) -> int:
        return self.settings["image_size"]

    @property
    def normalisation(self) -> str:
        return self.recipe.normalisation

    @property
    def monitored_on(self) -> str:
        """"val", or "test" for runs without a validation part (Paper B's sub-samples)."""
        return self.settings["monitored_on"]

    @property
    def on_phantoms(self) -> bool:
        """Whether the run was trained on generated phantoms (its figures say so)."""
        return (Path(self.settings["data_root"]) / MANIFEST_NAME).exists()

    @property
    def score(self) -> dict:
        """Loss and accuracy of the final model on the part the run watched (after BatchNorm re-estimation for a
        random-init backbone); `settings["scores"]` has each, named after its part."""
        return self.settings["scores"][self.monitored_on]

    @cached_property
    def model(self):
        """The final model, loaded in Keras' safe mode (no Lambda layers or arbitrary code). A damaged file is named
        as such (Keras calls a truncated one "File not found")."""
        path = self.folder / run_folder.MODEL
        if not self.settings.get("finished"):
            raise RunNotFoundError(f"{self.folder} has not finished training: run the same command again to "
                                   "resume it")
        problem = model_file_problem(path)
        if problem:
            raise damaged(path, self.folder, problem, f"delete the folder {self.folder} and train the run again")
        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - a whole zip with damaged insides: Keras' error names no run
            raise damaged(path, self.folder, f"its contents do not load: {config.first_line(exc)}",
                          f"delete the folder {self.folder} and train the run again") from exc

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / run_folder.HISTORY)

    def held_out_curve(self, level: float = 0.95) -> pd.DataFrame:
        """Per epoch: training seconds so far, without evaluation and without the one-off tracing and compiling of
        the training step (`one_off_seconds`: the total left out so far), and balanced accuracy on the held-out part
        the run watched (validation, or a sub-sample's test part) with its `level` interval (`accuracy_interval`), so
        that runs watched on differently sized or balanced parts are each read at their own resolution. Before any
        BatchNorm re-estimation (see `score`).

        attrs: "class_images" (held-out images per class), "images", "effective_images", "level", and "one_off":
        "measured" during training, "estimated" from whole epochs for a run trained before it was measured, or
        "not measured" (then its time stays in: see `one_off_seconds`).
        """
        history = self.history()
        one_off, how = one_off_seconds(history, self.settings.get("warmup_epochs", 0))
        held_out = self.part(self.monitored_on)
        held_out = held_out[~held_out["path"].isin(list(self.settings.get("unreadable_files") or {}))]
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
        return load_split(self.folder / run_folder.SPLIT, self.settings["data_root"])

    def part(self, name: str = "test", scan: ScanResult | None = None) -> pd.DataFrame:
        """The images of one part of the run's own split (its own repeat), with the scan's mask paths if given
        (lungs; lesions on phantoms)."""
        split = self.split()
        rows = split[(split["split"] == name) & (split["repeat"] == self.settings["repeat"])]
        if rows.empty:
            raise ValueError(f"{self.folder}'s split has no '{name}' images for repeat {self.settings['repeat']}; "
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
        dataset = build_dataset(rows["path"], labels, len(self.classes), self.image_size, self.settings["batch_size"],
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
        pixels, errors = read.pixels, read.errors
        table = pd.DataFrame({"image": [str(p) for p in paths], "error": errors})
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


# --------------------------------------------------------------------------- reading a held-out curve


NOT_REACHED = "not reached"  # in a table's time to a threshold (and its interval) when a curve never got there


def one_off_seconds(history: pd.DataFrame, warmup_epochs: int = 0) -> tuple[pd.Series, str]:
    """Per epoch, the one-off seconds (tracing and compiling the training step) inside its training time, and how
    they were found: "measured" (history.csv has them: `training._Timing`), "estimated", or "not measured".

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


def resolution(curve: pd.DataFrame, threshold: float = 0.95) -> dict:
    """What a curve from `Run.held_out_curve` can tell apart: its held-out images, the points of balanced accuracy
    one error costs (by class: 100/(K·n_k); "points_per_error" is their mean over classes, 100/`effective_images`),
    the fewest right answers that reach `threshold` (errors put where they cost least), the interval's lower bound
    with every image right and whether it clears `threshold` (if not, no result on this set can show the threshold
    was reached), the balanced images that would be needed for that, and both in words ("text", "verdict")."""
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
    return {"images": total, "effective_images": effective_images(sizes), "one_error_points": one_error,
            "points_per_error": 100 / effective_images(sizes), "correct_needed": total - allowed,
            "low_if_all_correct": low, "can_show": low >= threshold, "images_needed": images_needed, "text": text,
            "verdict": verdict}


def _points(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


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
        about = resolution(curve, threshold)
        reached = curve[curve["balanced_accuracy"] >= threshold].head(1)
        seconds = time_to_accuracy(curve, threshold, "balanced_accuracy")
        low, high = (None, None) if reached.empty else (reached["low"].iloc[0], reached["high"].iloc[0])
        rows[name] = {
            "held-out images": about["images"],
            "points per error": round(about["points_per_error"], 2),
            f"correct needed for {threshold:.0%}": about["correct_needed"],
            "interval's lower bound if all correct": round(about["low_if_all_correct"], 3),
            f"training seconds to {threshold:.0%}": NOT_REACHED if seconds is None else seconds,
            f"{curve.attrs['level']:.0%} interval then": NOT_REACHED if low is None else f"{low:.3f} to {high:.3f}",
            f"shown above {threshold:.0%}": low is not None and bool(low >= threshold),
            "one-off seconds left out": round(float(curve["one_off_seconds"].iloc[-1]), 2),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- images in, probabilities out


@dataclasses.dataclass(frozen=True)
class Images:
    """What `read_images` read: the readable images (N, size, size) uint8, and per path its error or None."""

    pixels: np.ndarray
    errors: list


def read_images(paths, size: int) -> Images:
    """The readable images as one uint8 array, and per path its error or None, so one bad file is reported
    instead of stopping the rest."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_grayscale(path, size))
            errors.append(None)
        except BadImageError as exc:
            errors.append(str(exc))
    return Images(np.stack(images) if images else np.zeros((0, size, size), np.uint8), errors)


def predict_pixels(model, pixels, normalisation: str, batch_size: int = 64, progress: bool | None = None):
    """Class probabilities for uint8 grayscale images (N, H, W), a chunk at a time so that no float copy of a
    large set is ever held; with a progress bar for more than a few chunks."""
    starts = range(0, len(pixels), batch_size)
    if progress if progress is not None else len(starts) > 4:
        starts = tqdm(starts, desc="predicting", unit="batch")
    chunks = [np.asarray(model(inputs_for(model, pixels[i:i + batch_size, ..., np.newaxis], normalisation),
                               training=False), dtype=np.float64) for i in starts]
    return np.concatenate(chunks) if chunks else np.zeros((0, model.output.shape[-1]))


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


def compare_runs(runs) -> pd.DataFrame:
    """Key facts of several runs side by side, on the part each watched (the test set is for notebook 04)."""
    rows = {}
    runs = [as_run(run) for run in runs]
    for label, run in zip(run_labels(runs), runs):
        s = run.settings
        before = s["scores"].get(f"{run.monitored_on}_before_batchnorm_reestimation", {})
        rows[label] = {
            "backbone weights": s["weights_used"] + ("" if s["pretrained"] else "  (random init!)"),
            "image size": s["image_size"],
            "normalisation": run.normalisation,
            "epochs (warm-up + main)": f"{s['epochs_run']} ({s['warmup_epochs']} + "
                                       f"{s['epochs_run'] - s['warmup_epochs']})",
            "stopped early": s["stopped_early"],
            "BatchNorm": s["batchnorm"],
            f"{run.monitored_on} accuracy": run.score["accuracy"],
            f"{run.monitored_on} accuracy before BatchNorm re-estimation": before.get("accuracy"),
            "training seconds": s["train_seconds"],
        }
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the course's runs


def classes_of(split: pd.DataFrame) -> tuple[str, ...]:
    """The task's classes, in the canonical label order, from the labels a split holds."""
    return tuple(c for c in CLASSES if c in set(split["label"]))


def course_run_folder(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, repeat: int = 0,
                      profile: config.Profile | None = None) -> Path:
    """Where the course keeps a run: one per dataset, profile, recipe (contents, not only its name), split and
    repeat, so that a changed recipe or a changed split never lands in an old run's folder."""
    profile = profile or config.active_profile()
    own = split[split["repeat"] == repeat]  # other repeats of a sub-sample split do not change this run
    key = hashlib.blake2b(json.dumps([recipe.to_dict(), fingerprint(own)], sort_keys=True).encode(),
                          digest_size=4).hexdigest()
    task = len(classes_of(split))
    name = f"{recipe.name}_task{task}" + (f"_repeat{repeat}" if split["repeat"].nunique() > 1 else "") + f"-{key}"
    return config.OUTPUT_DIR / "runs" / dataset_tag(layout) / profile.name / name


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
    train(folder, split, recipe, classes, layout.root, repeat=repeat, log=log, skipped=skipped, **sizes)
    return Run(folder)


def cross_validate(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, threshold: float = 0.95, log=print):
    """Paper B's random sub-sample cross-validation: one run per repeat of `split`, each tested on its own 10%.

    Returns the runs and one row per repeat, read from one curve (`Run.held_out_curve`): the balanced accuracy at the
    last epoch, the training seconds until it first reached `threshold` (`NOT_REACHED` if it never did) next to the
    resolution of the repeat's test part (its images and the correct answers `threshold` needs: `resolution`), and
    the training seconds in all, one-off tracing left out (and shown); for random-init backbones also the accuracy
    after BatchNorm re-estimation (the saved model's, printed when the run finished), which the curve does not
    include.
    """
    found, rows = [], []
    for repeat in sorted(split["repeat"].unique()):
        run = train_or_load(layout, recipe, split, repeat=int(repeat), log=log)
        curve = run.held_out_curve()
        seconds, about = time_to_accuracy(curve, threshold, "balanced_accuracy"), resolution(curve, threshold)
        row = {"repeat": int(repeat), "balanced accuracy, last epoch": float(curve["balanced_accuracy"].iloc[-1]),
               f"training seconds to {threshold:.0%}": NOT_REACHED if seconds is None else seconds,
               "held-out images": about["images"], f"correct needed for {threshold:.0%}": about["correct_needed"],
               "training seconds": float(curve["train_seconds"].iloc[-1]),
               "one-off seconds left out": float(curve["one_off_seconds"].iloc[-1])}
        if not run.settings["pretrained"]:
            row["accuracy after BatchNorm re-estimation"] = run.score["accuracy"]
        found.append(run)
        rows.append(row)
    return found, pd.DataFrame(rows).set_index("repeat")
