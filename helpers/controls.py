"""Controls that edit the images to see what a run's predictions depend on: the shortcut marker added, and the
pair of lung controls (the lungs hidden, and an equal area hidden outside them), each edit scored on the same
images as they are (`score_edits`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt

from helpers.image_files import load_grayscale, read_images
from helpers.models import predict_pixels
from helpers.run_folder import as_run
from helpers.synthetic import add_marker as draw_marker

TOLD_APART = 0.5  # informedness at which a class counts as told apart
GONE = 0.2  # informedness at or below which an edit has lost a class (0 = guessing)


def _lung_masks(pixels, rows: pd.DataFrame, control: str) -> np.ndarray:
    if "mask_path" not in rows or rows["mask_path"].isna().any():
        missing = len(rows) if "mask_path" not in rows else int(rows["mask_path"].isna().sum())
        raise ValueError(f"{control} needs a lung mask for every image; {missing} of {len(rows)} have none")
    size = pixels.shape[-1]
    return np.stack([load_grayscale(path, size) > 127 for path in rows["mask_path"]])


def lung_fill_value(pixels, lungs) -> int:
    """One grey level for every image: the mean brightness inside the lungs over all the images given.

    One value, not each image's own mean: an image's own mean keeps what lies in its lungs (a bright lesion
    raises it), so the hidden lungs would still carry the evidence the control claims to remove.
    """
    return int(round(float(np.asarray(pixels)[lungs].mean()))) if lungs.any() else 0


def hide_lungs(pixels, rows: pd.DataFrame, value: int | None = None) -> np.ndarray:
    """The lung-blackout control: everything inside the lung masks set to one grey level (`value`; default
    `lung_fill_value`, the same for every image). The lungs' outline stays: see `hide_outside_lungs`."""
    lungs = _lung_masks(pixels, rows, "hiding the lungs")
    value = lung_fill_value(pixels, lungs) if value is None else value
    return np.where(lungs, value, pixels).astype(np.uint8)


def hide_outside_lungs(pixels, rows: pd.DataFrame, value: int | None = None) -> np.ndarray:
    """The matching control: as many pixels as each image's lungs cover, hidden *outside* them, with the same
    grey level as `hide_lungs`: the pixels farthest from the lungs first (the image's edges and corners, where
    text markers sit).

    An edit this large can upset a model wherever it falls. If hiding the lungs removes a class's evidence and
    hiding an equal area outside does not, the evidence is in the lungs; if both remove it, the pair cannot say.
    """
    lungs = _lung_masks(pixels, rows, "hiding an area outside the lungs")
    value = lung_fill_value(pixels, lungs) if value is None else value
    hidden = np.zeros_like(lungs)
    for i, mask in enumerate(lungs):
        distance = distance_transform_edt(~mask).ravel()  # 0 inside the lungs
        farthest = np.argsort(-distance, kind="stable")[:min(int(mask.sum()), int((~mask).sum()))]
        flat = np.zeros(mask.size, bool)
        flat[farthest] = True
        hidden[i] = flat.reshape(mask.shape)
    return np.where(hidden, value, pixels).astype(np.uint8)


LUNG_CONTROLS = {"lungs hidden": hide_lungs, "equal area outside hidden": hide_outside_lungs}


def add_marker(pixels, rows=None) -> np.ndarray:
    """The images with the phantoms' shortcut marker drawn in (see `synthetic.add_marker`)."""
    return draw_marker(pixels)


black_lungs = functools.partial(hide_lungs, value=0)


@dataclasses.dataclass(frozen=True)
class EditScores:
    """What `score_edits` measured: `table`, per true class and "all", the accuracy and informedness (recall minus
    the share of other images called that class) as is and after each edit (columns: (edit, measure)); and, when
    the edits are the pair of `LUNG_CONTROLS`, what the pair supports per class (`verdicts`).
    """

    table: pd.DataFrame
    majority_baseline: float  # the accuracy of always answering the largest class

    def called(self, class_name: str) -> pd.DataFrame:
        """Per true class (rows) and edit (columns): the share of images called `class_name`, the class `score_edits`
        watched (`watch_class`)."""
        measure = f"predicted {class_name}"
        if measure not in set(self.table.columns.get_level_values(1)):
            raise ValueError(f"these scores did not watch {class_name!r}: pass watch_class={class_name!r} to "
                             "score_edits")
        return self.table.xs(measure, axis=1, level=1)

    @property
    def verdicts(self) -> pd.DataFrame | None:
        """Per class: informedness as is, with the lungs hidden and with an equal area outside them hidden, and a
        verdict; None without the pair of lung controls.

        A class is told apart at informedness ≥ `TOLD_APART` as is; an edit "keeps" it if at least half that is
        left (and more than `GONE`), and "loses" it at ≤ `GONE`. Anything else leaves the pair unsettled.
        """
        edits = set(self.table.columns.get_level_values(0))
        if not set(LUNG_CONTROLS) <= edits:
            return None
        informedness = self.table.xs("informedness", axis=1, level=1)[["as is", *LUNG_CONTROLS]].drop(index="all")
        return informedness.assign(verdict=[_lung_verdict(row) for row in informedness.itertuples(index=False)])

    def describe(self) -> str:
        """In sentences: per edit, accuracy and informedness against the unedited images and the classes still
        told apart; then the lung controls' verdicts, one class a line."""
        table = self.table
        as_is = table["as is"]
        lines = [f"As is: accuracy {as_is.loc['all', 'accuracy']:.0%} (always answering the largest class: "
                 f"{self.majority_baseline:.0%}); informedness {as_is.loc['all', 'informedness']:.2f} "
                 "(recall minus false alarms, averaged over classes; 0 = guessing, 1 = perfect)."]
        for edit in [e for e in table.columns.get_level_values(0).unique() if e != "as is"]:
            scores = table[edit]
            kept = scores["informedness"].drop("all")
            kept = kept[kept >= TOLD_APART]
            lines.append(f"{edit}: accuracy {scores.loc['all', 'accuracy']:.0%}, informedness "
                         f"{scores.loc['all', 'informedness']:.2f}. " +
                         ("Still told apart: " + ", ".join(f"{c} ({v:.2f})" for c, v in kept.items()) + "."
                          if len(kept) else "No class is told apart any more."))
        verdicts = self.verdicts
        if verdicts is not None:
            lines += [f"  {c}: {v}" for c, v in verdicts["verdict"].items()]
        return "\n".join(lines)


def _lung_verdict(row) -> str:
    as_is, *edited = row
    if as_is < TOLD_APART:
        return "not told apart even as is: nothing to locate"
    lungs, outside = ("kept" if v >= max(as_is / 2, GONE + 1e-9) else "lost" if v <= GONE else "partly kept"
                      for v in edited)
    return {
        ("lost", "kept"): "lost with the lungs hidden, kept with an equal area outside hidden: the evidence is in "
                          "the lungs",
        ("kept", "lost"): "kept with the lungs hidden, lost with an equal area outside hidden: the evidence is "
                          "outside the lungs, in the area the second control hides",
        ("kept", "kept"): "kept under both edits: no one hidden area holds all of it (it may lie in both, elsewhere, "
                          "or in the lungs' outline, which the fill keeps)",
        ("lost", "lost"): "lost under both edits: the edit itself upsets the model, the pair cannot say where the "
                          "evidence is",
    }.get((lungs, outside), f"{lungs} with the lungs hidden, {outside} with an equal area outside hidden: the pair "
                            "does not settle where the evidence is")


def score_edits(run, rows: pd.DataFrame, edits: dict = LUNG_CONTROLS, watch_class: str | None = None) -> EditScores:
    """A run's predictions on `rows`' images as they are and after each edit (name → function(pixels, rows) →
    pixels; default: the pair of lung controls), per true class; with `watch_class`, also the share predicted as
    that class.

    A model that still scores far above the majority baseline with the lungs hidden has learned something
    outside the lungs; one that calls Normal images COVID once a marker is added has learned the marker.
    """
    run = as_run(run)
    classes = run.classes
    images = read_images(rows["path"], run.image_size)
    if any(images.errors):
        errors = images.errors
        bad = next(i for i, e in enumerate(errors) if e)
        raise ValueError(f"{sum(map(bool, errors))} image(s) could not be read, e.g. {rows['path'].iloc[bad]}: "
                         f"{errors[bad]}")
    labels = rows["label"].to_numpy()
    present = [c for c in classes if c in set(labels)]
    columns = {}
    for name, edit in {"as is": None, **edits}.items():
        edited = edit(images.pixels, rows) if edit else images.pixels
        predicted = np.array(classes)[predict_pixels(run.model, edited, run.normalisation).argmax(axis=1)]
        recall = pd.Series({c: np.mean(predicted[labels == c] == c) for c in present})
        false_alarms = pd.Series({c: np.mean(predicted[labels != c] == c) if (labels != c).any() else 0.0
                                  for c in present})
        informedness = recall - false_alarms
        columns[(name, "accuracy")] = pd.concat([recall, pd.Series({"all": np.mean(predicted == labels)})])
        columns[(name, "informedness")] = pd.concat([informedness, pd.Series({"all": informedness.mean()})])
        if watch_class:
            shares = {c: np.mean(predicted[labels == c] == watch_class) for c in present}
            shares["all"] = np.mean(predicted == watch_class)
            columns[(name, f"predicted {watch_class}")] = pd.Series(shares)
    majority = float(pd.Series(labels).value_counts(normalize=True).iloc[0])
    return EditScores(pd.DataFrame(columns), majority)
