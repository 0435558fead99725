"""Controls that edit the images to see what a run's predictions depend on: the shortcut marker added, and the
pair of lung controls (the lungs hidden, and an equal area of the body outside them hidden with the same pixel
change), each edit scored on the same images as they are (`score_edits`), the pair judged with bootstrap intervals.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt

from helpers.image_files import load_grayscale, read_images
from helpers.models import predict_pixels
from helpers.runs import as_run
from helpers.synthetic import add_marker as draw_marker

TOLD_APART = 0.5  # informedness at which a class counts as told apart


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


OUTSIDE_REGIONS = 4  # random regions the outside control hides per image
OUTSIDE_DRAWS = 16  # draws of those regions per image; the one whose pixel change best matches the lungs' is kept


def pixel_change(before, after) -> np.ndarray:
    """Per image, the mean absolute change in grey levels per pixel of the whole image: how big an edit is, so
    that two edits compared as controls can be seen to be of one size."""
    return np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).mean(axis=(-2, -1))


def body_outside_lungs(image, lungs, value: int) -> np.ndarray:
    """Where the outside control may hide: the body around the lungs, i.e. pixels outside them brighter than
    halfway from the image's darkest level (its 1st percentile: the black background) to the lungs' fill `value`.

    So it hides places like the lungs (in the patient), not the empty frame, whose black turned grey made the
    bigger edit."""
    dark = float(np.percentile(image, 1))
    return ~lungs & (image > (dark + value) / 2)


def _outside_regions(image, lungs, body, rng, regions: int) -> np.ndarray:
    """As many pixels as the lungs cover, outside them: `regions` blobs grown around seeds drawn in the body,
    body pixels first (nearest a seed first), other pixels outside the lungs only if the body is too small."""
    pool = np.flatnonzero(body) if body.any() else np.flatnonzero(~lungs)
    seeds = np.zeros(image.shape, bool)
    seeds.flat[rng.choice(pool, size=min(regions, len(pool)), replace=False)] = True
    distance = distance_transform_edt(~seeds) + np.where(body, 0, image.size)  # the body before anything else
    distance[lungs] = np.inf
    order = np.argsort(distance, axis=None, kind="stable")[:min(int(lungs.sum()), int((~lungs).sum()))]
    hidden = np.zeros(image.shape, bool)
    hidden.flat[order] = True
    return hidden


def _matching_fill(hidden_pixels, target: float, value: int) -> tuple[int, float]:
    """The grey level whose fill changes `hidden_pixels` by a total nearest `target` (ties: the one nearest the
    lungs' fill `value`), and the mismatch left."""
    counts = np.bincount(hidden_pixels.ravel(), minlength=256)
    levels = np.arange(256)
    totals = np.abs(levels[:, None] - levels[None, :]) @ counts  # total change for each fill level
    mismatch = np.abs(totals - target)
    best = np.lexsort((np.abs(levels - value), mismatch))[0]
    return int(best), float(mismatch[best])


def hide_outside_lungs(pixels, rows: pd.DataFrame, value: int | None = None, regions: int = OUTSIDE_REGIONS,
                       draws: int = OUTSIDE_DRAWS, seed: int = 0) -> np.ndarray:
    """The matching control of `hide_lungs` (see `outside_control`): the edited images."""
    return outside_control(pixels, rows, value, regions, draws, seed)[0]


def outside_control(pixels, rows: pd.DataFrame, value: int | None = None, regions: int = OUTSIDE_REGIONS,
                    draws: int = OUTSIDE_DRAWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The matching control: as many pixels as each image's lungs cover, hidden *outside* them, in `regions`
    random blobs of the body around the lungs (`body_outside_lungs`), with one grey level chosen so that the edit
    changes the image by as much as `hide_lungs` (fill `value`) does: matched in area, place and size of edit.

    Of `draws` seeded draws of the blobs per image, the one whose best fill matches the lungs' pixel change most
    closely is kept (`pixel_change` reports both). An edit can upset a model wherever it falls; only a class that
    one edit of the pair costs more than the other says where its evidence is (`EditScores.verdicts`). The fill is
    each image's own (the size match needs it), so it keeps a trace of the hidden places' brightness, one grey level
    of it. Returns the edited images and, per image, the pixels hidden.
    """
    if regions < 1 or draws < 1:
        raise ValueError(f"need regions >= 1 and draws >= 1; found regions={regions}, draws={draws}")
    lungs = _lung_masks(pixels, rows, "hiding an area outside the lungs")
    pixels = np.asarray(pixels, np.uint8)
    value = lung_fill_value(pixels, lungs) if value is None else value
    edited, hidden_all = pixels.copy(), np.zeros_like(lungs)
    for i, (image, mask) in enumerate(zip(pixels, lungs)):
        if not mask.any() or mask.all():
            continue
        target = float(np.abs(image[mask].astype(int) - value).sum())  # what hiding this image's lungs changes
        body = body_outside_lungs(image, mask, value)
        rng = np.random.default_rng([seed, i])
        best = None
        for _ in range(draws):
            hidden = _outside_regions(image, mask, body, rng, regions)
            fill, mismatch = _matching_fill(image[hidden], target, value)
            if best is None or mismatch < best[0]:
                best = (mismatch, hidden, fill)
        edited[i][best[1]], hidden_all[i] = best[2], best[1]
    return edited, hidden_all


LUNG_CONTROLS = {"lungs hidden": hide_lungs, "equal area outside hidden": hide_outside_lungs}


def add_marker(pixels, rows=None) -> np.ndarray:
    """The images with the phantoms' shortcut marker drawn in (see `synthetic.add_marker`)."""
    return draw_marker(pixels)


black_lungs = functools.partial(hide_lungs, value=0)


@dataclasses.dataclass(frozen=True)
class EditScores:
    """What `score_edits` measured: `table`, per true class and "all", the accuracy and informedness (recall minus
    the share of other images called that class) as is and after each edit, and each edit's mean `pixel_change`
    (columns: (edit, measure)); per image, the true `labels` and each version's `predicted` classes and each edit's
    `changes`; and, when the edits are the pair of `LUNG_CONTROLS`, what the pair supports per class (`verdicts`).
    """

    table: pd.DataFrame
    majority_baseline: float  # the accuracy of always answering the largest class
    labels: np.ndarray | None = None
    predicted: dict | None = None  # version ("as is", then each edit) → predicted class per image
    changes: dict | None = None  # edit → mean absolute pixel change per image

    def called(self, class_name: str) -> pd.DataFrame:
        """Per true class (rows) and edit (columns): the share of images called `class_name`, the class `score_edits`
        watched (`watch_class`)."""
        measure = f"predicted {class_name}"
        if measure not in set(self.table.columns.get_level_values(1)):
            raise ValueError(f"these scores did not watch {class_name!r}: pass watch_class={class_name!r} to "
                             "score_edits")
        return self.table.xs(measure, axis=1, level=1)

    @functools.cached_property
    def verdicts(self) -> pd.DataFrame | None:
        """Per class, what the pair of lung controls supports (see `pair_verdicts`); None without the pair."""
        if not set(LUNG_CONTROLS) <= set(self.table.columns.get_level_values(0)):
            return None
        if self.predicted is None or self.labels is None or self.changes is None:
            raise ValueError("verdicts need the per-image predictions and pixel changes: score with score_edits")
        return pair_verdicts(self.labels, self.predicted, self.changes, classes=self.table.index.drop("all"))

    def describe(self) -> str:
        """In sentences: per edit, its mean pixel change, accuracy and informedness against the unedited images and
        the classes still told apart; then the lung controls' verdicts, one class a line."""
        table = self.table
        as_is = table["as is"]
        lines = [f"As is: accuracy {as_is.loc['all', 'accuracy']:.0%} (always answering the largest class: "
                 f"{self.majority_baseline:.0%}); informedness {as_is.loc['all', 'informedness']:.2f} "
                 "(recall minus false alarms, averaged over classes; 0 = guessing, 1 = perfect)."]
        for edit in [e for e in table.columns.get_level_values(0).unique() if e != "as is"]:
            scores = table[edit]
            kept = scores["informedness"].drop("all")
            kept = kept[kept >= TOLD_APART]
            change = (f"changes the images by {scores.loc['all', 'pixel change']:.1f} grey levels per pixel on "
                      "average; " if "pixel change" in scores else "")
            lines.append(f"{edit}: {change}accuracy {scores.loc['all', 'accuracy']:.0%}, informedness "
                         f"{scores.loc['all', 'informedness']:.2f}. " +
                         ("Still told apart: " + ", ".join(f"{c} ({v:.2f})" for c, v in kept.items()) + "."
                          if len(kept) else "No class is told apart any more."))
        verdicts = self.verdicts
        if verdicts is not None:
            lines += [f"  {c}: {v}" for c, v in verdicts["verdict"].items()]
        return "\n".join(lines)


RESAMPLES = 1000  # bootstrap resamples of the images behind each interval
LEVEL = 0.95  # the intervals' coverage
SIZE_TOLERANCE = 0.1  # how much the outside edit may differ in mean pixel change (share of the lungs') and still match
EVIDENCE = ("in the lungs", "outside the lungs", "cannot tell", "not told apart")  # the values of verdicts' "evidence"


def _informedness(labels, predicted, classes) -> np.ndarray:
    """Informedness per class (last axis) for arrays of labels and predictions over the last axis (images)."""
    columns = []
    for c in classes:
        is_c, called = labels == c, predicted == c
        others = (~is_c).sum(-1)
        false_alarms = np.where(others > 0, (~is_c & called).sum(-1) / np.maximum(others, 1), 0.0)
        columns.append((is_c & called).sum(-1) / is_c.sum(-1) - false_alarms)
    return np.stack(columns, -1)


def pair_verdicts(labels, predicted: dict, changes: dict, classes=None, resamples: int = RESAMPLES,
                  seed: int = 0) -> pd.DataFrame:
    """Per class: informedness as is, with the lungs hidden and with the outside control, each with its bootstrap
    interval (`LEVEL`; images resampled within each class, `resamples` times, seeded); each edit's mean pixel
    change; named signs (booleans); `evidence`, one of `EVIDENCE`; and a `verdict` in words.

    Where the evidence is, is said only when the pair supports it: the class is told apart as is (interval above
    0), one edit costs it more than the other (the paired interval of the difference excludes 0), and the outside
    edit is not the smaller one when the lungs are blamed, nor the bigger one when the outside is (within
    `SIZE_TOLERANCE`): a bigger edit alone can cost more. Otherwise: "cannot tell".
    """
    lungs, outside = LUNG_CONTROLS
    labels = np.asarray(labels)
    classes = list(pd.unique(labels) if classes is None else classes)
    if missing := [c for c in classes if not (labels == c).any()]:
        raise ValueError(f"no image of class {missing[0]!r} to judge the pair on")
    versions = ["as is", lungs, outside]
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.choice(np.flatnonzero(labels == c), (resamples, int((labels == c).sum())))
                            for c in classes], axis=1)  # within each class: its size kept in every resample
    point = {v: _informedness(labels, np.asarray(predicted[v]), classes) for v in versions}
    boot = {v: _informedness(labels[index], np.asarray(predicted[v])[index], classes) for v in versions}
    tail = (1 - LEVEL) / 2 * 100
    low = {v: np.percentile(b, tail, axis=0) for v, b in boot.items()}
    high = {v: np.percentile(b, 100 - tail, axis=0) for v, b in boot.items()}
    lungs_cost_more = np.percentile(boot[outside] - boot[lungs], tail, axis=0) > 0
    outside_costs_more = np.percentile(boot[lungs] - boot[outside], tail, axis=0) > 0
    change = {e: np.array([np.mean(np.asarray(changes[e])[labels == c]) for c in classes]) for e in (lungs, outside)}
    ratio = change[outside] / np.maximum(change[lungs], 1e-9)
    frame = pd.DataFrame(index=pd.Index(classes))
    for v in versions:
        frame[v], frame[f"{v} low"], frame[f"{v} high"] = point[v], low[v], high[v]
    for e in (lungs, outside):
        frame[f"{e}: pixel change"] = change[e]
    frame["told apart"] = low["as is"] > 0
    frame["kept with the lungs hidden"] = low[lungs] > 0
    frame["kept with the outside hidden"] = low[outside] > 0
    frame["lungs hidden costs more"] = lungs_cost_more
    frame["outside hidden costs more"] = outside_costs_more
    frame["outside edit not smaller"] = ratio >= 1 - SIZE_TOLERANCE
    frame["outside edit not bigger"] = ratio <= 1 + SIZE_TOLERANCE
    frame["evidence"] = [_evidence(row) for _, row in frame.iterrows()]
    frame["verdict"] = [_verdict(row) for _, row in frame.iterrows()]
    return frame


def _evidence(row) -> str:
    if not row["told apart"]:
        return "not told apart"
    if row["lungs hidden costs more"] and row["outside edit not smaller"]:
        return "in the lungs"
    if row["outside hidden costs more"] and row["outside edit not bigger"]:
        return "outside the lungs"
    return "cannot tell"


def _verdict(row) -> str:
    lungs, outside = LUNG_CONTROLS
    shown = lambda v: f"{row[v]:.2f} [{row[f'{v} low']:.2f}, {row[f'{v} high']:.2f}]"  # noqa: E731
    numbers = f"(informedness as is {shown('as is')}, lungs hidden {shown(lungs)}, outside hidden {shown(outside)})"
    sizes = (f"the outside edit changes these images by {row[f'{outside}: pixel change']:.1f} grey levels per pixel, "
             f"the lungs' by {row[f'{lungs}: pixel change']:.1f}")
    evidence = row["evidence"]
    if evidence == "not told apart":
        return f"not told apart even as is (its 95% interval is not above 0): nothing to locate {numbers}"
    if evidence == "in the lungs":
        return f"the evidence is in the lungs: hiding them costs more than the outside edit {numbers}"
    if evidence == "outside the lungs":
        return f"the evidence is outside the lungs: hiding random areas of the body around them costs more {numbers}"
    unmatched = ((row["lungs hidden costs more"] and not row["outside edit not smaller"])
                 or (row["outside hidden costs more"] and not row["outside edit not bigger"]))
    why = (f"the edits differ in size ({sizes})" if unmatched
           else "the two edits cost it alike within their 95% intervals")
    return f"the pair cannot tell where the evidence is: {why} {numbers}"


def score_edits(run, rows: pd.DataFrame, edits: dict = LUNG_CONTROLS, watch_class: str | None = None) -> EditScores:
    """A run's predictions on `rows`' images as they are and after each edit (name → function(pixels, rows) →
    pixels; default: the pair of lung controls), per true class, with each edit's mean pixel change; with
    `watch_class`, also the share predicted as that class.

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
    columns, predictions, changes = {}, {}, {}
    for name, edit in {"as is": None, **edits}.items():
        edited = edit(images.pixels, rows) if edit else images.pixels
        predicted = np.array(classes)[predict_pixels(run.model, edited, run.normalisation).argmax(axis=1)]
        predictions[name] = predicted
        recall = pd.Series({c: np.mean(predicted[labels == c] == c) for c in present})
        false_alarms = pd.Series({c: np.mean(predicted[labels != c] == c) if (labels != c).any() else 0.0
                                  for c in present})
        informedness = recall - false_alarms
        columns[(name, "accuracy")] = pd.concat([recall, pd.Series({"all": np.mean(predicted == labels)})])
        columns[(name, "informedness")] = pd.concat([informedness, pd.Series({"all": informedness.mean()})])
        if edit:
            changes[name] = change = pixel_change(images.pixels, edited)
            columns[(name, "pixel change")] = pd.Series({**{c: change[labels == c].mean() for c in present},
                                                         "all": change.mean()})
        if watch_class:
            shares = {c: np.mean(predicted[labels == c] == watch_class) for c in present}
            shares["all"] = np.mean(predicted == watch_class)
            columns[(name, f"predicted {watch_class}")] = pd.Series(shares)
    majority = float(pd.Series(labels).value_counts(normalize=True).iloc[0])
    return EditScores(pd.DataFrame(columns), majority, labels, predictions, changes)
