"""A trained run folder as an object (its settings, model, history and own split, predictions with it), and the
course's runs: where they live, trained when missing, resumed when interrupted, reused when finished.

See `helpers.training` for what a run folder holds.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import config
from helpers.data import CLASSES, MANIFEST_NAME, BadImageError, DatasetLayout, ScanResult, load_grayscale
from helpers.datasets import dataset_tag
from helpers.pipeline import build_dataset, to_model_input, unreadable_files
from helpers.recipes import Recipe
from helpers.splits import fingerprint, load_split
from helpers.training import time_to_accuracy, train


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
        path = self.folder / "settings.json"
        if not path.exists():
            raise RunNotFoundError(f"{self.folder} is not a training run: expected {path.name} (made by "
                                   "`python -m helpers train`); found none")
        return json.loads(path.read_text())

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
        """The final model, loaded in Keras' safe mode (no Lambda layers or arbitrary code)."""
        path = self.folder / "model.keras"
        if not self.settings.get("finished") or not path.exists():
            raise RunNotFoundError(f"{self.folder} has not finished training: run the same command again to "
                                   "resume it")
        return keras.models.load_model(path, safe_mode=True)

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / "history.csv")

    def held_out_curve(self) -> pd.DataFrame:
        """Per epoch: training seconds so far (evaluation not counted) and balanced accuracy on the held-out part the
        run watched (validation, or a sub-sample's test part): curves of runs watched on differently sized or
        differently balanced parts compare like with like. Before any BatchNorm re-estimation (see `score`)."""
        history = self.history()
        return pd.DataFrame({"epoch": history["epoch"], "train_seconds": history["train_seconds"],
                             "balanced_accuracy": history[f"{self.monitored_on}_balanced_accuracy"]})

    def split(self) -> pd.DataFrame:
        return load_split(self.folder / "split.csv", self.settings["data_root"])

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
        dataset = build_dataset(rows["path"], labels, len(self.classes), self.image_size,
                                self.settings["batch_size"], normalisation=self.normalisation, cache=False)
        probabilities = np.asarray(self.model.predict(dataset, verbose=verbose), dtype=np.float64)
        unreadable = unreadable_files(rows["path"])
        if unreadable:  # in the dataset as blank images, so that every row kept its prediction: drop them
            print(f"Left out {len(unreadable)} {name} image(s) that could not be read: " +
                  "; ".join(f"{p} ({r})" for p, r in unreadable.items()), file=sys.stderr)
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
        pixels, errors = read_images(paths, self.image_size)
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


# --------------------------------------------------------------------------- images in, probabilities out


def read_images(paths, size: int) -> tuple[np.ndarray, list]:
    """The readable images as one uint8 array (N, size, size), and per path its error or None,
    so one bad file is reported instead of stopping the rest."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_grayscale(path, size))
            errors.append(None)
        except BadImageError as exc:
            errors.append(str(exc))
    return (np.stack(images) if images else np.zeros((0, size, size), np.uint8)), errors


def predict_pixels(model, pixels, normalisation: str, batch_size: int = 64, progress: bool | None = None):
    """Class probabilities for uint8 grayscale images (N, H, W), a chunk at a time so that no float copy of a
    large set is ever held; with a progress bar for more than a few chunks."""
    starts = range(0, len(pixels), batch_size)
    if progress if progress is not None else len(starts) > 4:
        starts = tqdm(starts, desc="predicting", unit="batch")
    chunks = [np.asarray(model(to_model_input(pixels[i:i + batch_size, ..., np.newaxis], normalisation),
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


def compare_runs(runs) -> pd.DataFrame:
    """Key facts of several runs side by side, on the part each watched (the test set is for notebook 04)."""
    rows = {}
    for run in map(as_run, runs):
        s = run.settings
        before = s["scores"].get(f"{run.monitored_on}_before_batchnorm_reestimation", {})
        rows[run.name] = {
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
    on having run 03. `sizes` (epochs, image_size, batch_size, weights) override the profile's."""
    folder = course_run_folder(layout, recipe, split, repeat)
    train(folder, split, recipe, classes_of(split), layout.root, repeat=repeat, log=log, **sizes)
    return Run(folder)


def cross_validate(layout: DatasetLayout, recipe: Recipe, split: pd.DataFrame, threshold: float = 0.95, log=print):
    """Paper B's random sub-sample cross-validation: one run per repeat of `split`, each tested on its own 10%.

    Returns the runs and one row per repeat, read from one curve (`Run.held_out_curve`): the balanced accuracy at the
    last epoch and the training seconds until it first reached `threshold`; for random-init backbones also the
    accuracy after BatchNorm re-estimation, which the curve does not include.
    """
    found, rows = [], []
    for repeat in sorted(split["repeat"].unique()):
        run = train_or_load(layout, recipe, split, repeat=int(repeat), log=log)
        curve = run.held_out_curve()
        row = {"repeat": int(repeat), "balanced accuracy, last epoch": float(curve["balanced_accuracy"].iloc[-1]),
               f"training seconds to {threshold:.0%}": time_to_accuracy(curve, threshold, "balanced_accuracy"),
               "training seconds": run.settings["train_seconds"]}
        if not run.settings["pretrained"]:
            row["accuracy after BatchNorm re-estimation"] = run.score["accuracy"]
        found.append(run)
        rows.append(row)
    return found, pd.DataFrame(rows).set_index("repeat")
