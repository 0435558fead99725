"""Class activation maps: where in the image the evidence for a class lies, and how to check it.

CAM (Zhou et al. 2016, as in Paper B) needs a linear head (`models.build_model(head="linear")`): the logits are
a weighted sum of the pooled last-block features, so the same weights applied to the unpooled features give a
map per class, for every class of a batch from one forward pass.
Grad-CAM (Selvaraju et al. 2017) works for any head, Paper A's included, and any convolutional layer whose every
cell reaches the output: it weights the feature channels by the mean gradient of the class logit. For a linear
head the two agree.

Both are scaled the same way wherever they are shown, compared or scored (`MAP_SCALING`): negative evidence set
to 0, then divided by the map's maximum, so 0 means "no evidence for this class here" and 1 "the most".
Paper B's own [0, 1] scaling (min-max) stays available as `maps(..., scaling="minmax")`.

One entry point computes them, `maps`, for a notebook, the explorer and `predict --cam` alike; `localise` scores the
maps of each image's true class against lesion and lung masks, each score beside three levels a map can reach without
finding the lesion: a map that finds only the lungs, the same map scored on other lesions of its class (the
class-keeping null), and one fixed map per class learned from the training lesions (`Localisation.chance`).
"""

from __future__ import annotations

import dataclasses
import weakref
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.stats import binomtest
from tqdm.auto import tqdm

from helpers import files, plots
from helpers.image_files import load_grayscale, read_images
from helpers.models import LOGITS, float32_copy, inputs_for
from helpers.runs import as_run

HEAD_INPUT = "gap"  # the last convolutional features are this layer's input in every course model
MAP_SCALING = "relu"
METHODS = ("auto", "cam", "grad-cam")
SCALINGS = ("relu", "minmax", None)
# Earlier ResNet50 layers whose every cell reaches the logits: 2× and 4× finer than the last block. The last block
# of a stage (conv4_block6_out, conv3_block4_out) is read by the next stage's stride-2 1×1 convolutions, which
# see one cell in four: `live_cells` measures it, and Grad-CAM refuses such a layer.
FINER_LAYERS = ("conv4_block5_out", "conv3_block3_out")

_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _feature_model(model, layer: str | None = None):
    """A float32 model returning (feature maps of `layer`, logits); default: the last block's features.

    Made once per model and layer: a new Keras model's first call costs about half a forward pass more
    (measured by benchmarks/cam.py), which every map would otherwise pay. A mixed-precision model is copied to
    float32 first: gradients through float16 layers lose most of their precision.
    """
    probes = _PROBES.setdefault(model, {})
    if layer not in probes:
        exact = probes.setdefault("float32", float32_copy(model))
        features = exact.get_layer(layer).output if layer else exact.get_layer(HEAD_INPUT).input
        probes[layer] = keras.Model(exact.input, [features, exact.get_layer(LOGITS).output])
    return probes[layer]


def live_cells(model, layer: str) -> tuple[int, int]:
    """(cells of `layer`'s feature map that can change the logits at all, all its cells), measured: a cell is
    live when the gradient of the logits reaches it for random images."""
    probes = _PROBES.setdefault(model, {})
    if ("live", layer) not in probes:
        probe = _feature_model(model, layer)
        images = tf.random.stateless_normal((2, *probe.input.shape[1:]), seed=(0, 1))
        with tf.GradientTape() as tape:
            features, logits = probe(images, training=False)
            tape.watch(features)
            total = tf.reduce_sum(logits)
        reach = tf.reduce_sum(tf.abs(tape.gradient(total, features)), axis=(0, 3)).numpy()
        probes[("live", layer)] = (int((reach > 0).sum()), int(reach.size))
    return probes[("live", layer)]


def _check_live(model, layer: str | None) -> None:
    """Refuse a layer whose map would be partly blind (cells that cannot affect the output), naming a live one."""
    if layer is None:
        return
    live, total = live_cells(model, layer)
    if live < total:
        shape = model.get_layer(layer).output.shape[1:3]
        alternatives = [name for name in FINER_LAYERS
                        if name in {lay.name for lay in model.layers} and live_cells(model, name)[0] ==
                        live_cells(model, name)[1]]
        raise ValueError(
            f"layer {layer}: only {live} of its {total} cells ({shape[0]}×{shape[1]}) can affect the output (the "
            "next stage's stride-2 1×1 convolutions read one cell in four), so a map there is mostly blind; "
            f"use a layer whose every cell is live, e.g. {', '.join(alternatives) or 'the last block (layer=None)'}")


@dataclasses.dataclass(frozen=True)
class Maps:
    """What `maps` computed: the maps on the feature layer's own grid, and the model's probabilities.

    `maps` is (N, h, w, K), one map per class in `classes`' order, or (N, h, w) when a class was asked for each
    image (`class_names`). `upsampled(size)` lays them over the images.
    """

    maps: np.ndarray
    probabilities: np.ndarray  # (N, K)
    classes: tuple  # the K classes: a run's names, or a bare model's indices
    class_names: tuple | None  # the class of each image's map; None: every class
    method: str  # "cam" or "grad-cam"
    layer: str  # the layer whose features the maps weigh
    scaling: str | None

    @property
    def predicted(self) -> list:
        """Each image's most probable class."""
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    @property
    def table(self) -> pd.DataFrame:
        """One row per image: the model's probability of each class, the most probable one, and the class of its
        map ("map of", when one was asked for each image)."""
        table = pd.DataFrame(self.probabilities, columns=list(self.classes)).assign(predicted=self.predicted)
        return table if self.class_names is None else table.assign(**{"map of": list(self.class_names)})

    def describe(self) -> str:
        grid = "×".join(str(n) for n in self.maps.shape[1:3])
        which = ("one map per class" if self.class_names is None else "one map per image, of the class asked for")
        counts = pd.Series(self.predicted).value_counts()
        method = {"cam": "CAM", "grad-cam": "Grad-CAM"}.get(self.method, self.method)
        return (f"{method} of {len(self.maps)} images on the {grid} grid of layer {self.layer}: {which}, scaling "
                f"{self.scaling or 'none'}.\nMost probable class: "
                + ", ".join(f"{c} ({n} of {len(self.maps)} images)" for c, n in counts.items()) + ".")

    def upsampled(self, size: int) -> np.ndarray:
        """The maps at `size` × `size` (bilinear), to draw over the images or compare with masks."""
        if self.maps.ndim == 3:
            upsampled = _upsample(self.maps, size)
        else:
            upsampled = np.stack([_upsample(self.maps[..., k], size) for k in range(self.maps.shape[-1])], axis=-1)
        return upsampled if self.scaling is None else np.clip(upsampled, 0.0, 1.0)


def maps(source, images, method: str = "auto", class_names=None, layer: str | None = None,
         scaling: str | None = MAP_SCALING) -> Maps:
    """CAM or Grad-CAM of a batch: every class's map (class_names=None), or one class's per image (one name for
    all, or one per image, e.g. each image's true class: a single backward pass for Grad-CAM).

    `source`: a run (or its folder), with uint8 images (N, H, W) at its size, normalised here as in training; or
    a Keras model, with its own inputs (classes are then indices). `method`: "cam" (a linear head, last block:
    Paper B's), "grad-cam" (any head, any live `layer`), or "auto" (CAM where it applies). `scaling`: "relu"
    (the course's), "minmax" (Paper B's) or None (raw).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be 'relu', 'minmax' or None; found {scaling!r}")
    if isinstance(source, keras.Model):
        model, classes, inputs = source, tuple(range(source.output.shape[-1])), images
    else:
        run = as_run(source)
        model, classes = run.model, tuple(run.classes)
        inputs = inputs_for(model, np.asarray(images)[..., np.newaxis], run.normalisation)
    method = _choose_method(model, method, layer)
    names = None if class_names is None else _per_image(classes, class_names, len(inputs))
    index = None if names is None else np.array([classes.index(name) for name in names])
    if method == "cam":
        raw, probabilities = _cam(model, inputs)
        raw = raw if index is None else raw[np.arange(len(index)), ..., index]
    elif index is None:
        raw, probabilities = _grad_cam_all_classes(model, inputs, layer)
    else:
        raw, probabilities = _grad_cam(model, inputs, index, layer)
    head_input = model.get_layer(HEAD_INPUT).input
    layer = layer or next(each.name for each in model.layers if each.output is head_input)
    return Maps(_normalise(raw, scaling), probabilities, classes, names, method, layer, scaling)


def _per_image(classes: tuple, class_names, n: int) -> tuple:
    names = tuple([class_names] * n if np.ndim(class_names) == 0 else list(class_names))
    if len(names) != n:
        raise ValueError(f"class_names: expected one class, or one per image ({n}); found {len(names)}")
    unknown = sorted({str(name) for name in names if name not in classes})
    if unknown:
        raise ValueError(f"class_names: {unknown} are not among the model's classes {list(classes)}")
    return names


def _normalise(maps, method: str | None):
    """Scale each map (over its rows and columns) to [0, 1]: "relu" (negative evidence dropped, then / max; the
    course's scaling) or "minmax" (Paper B's); None leaves it raw."""
    if method is None:
        return maps
    maps = np.asarray(maps, dtype=np.float64)
    axes = (1, 2)
    if method == "relu":
        maps = np.maximum(maps, 0.0)
        low = np.zeros_like(maps.min(axis=axes, keepdims=True))
    else:  # "minmax", as `maps` checked
        low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def _linear_head_weights(model):
    """The logits layer's kernel (channels × classes), after checking that the head is linear."""
    path = [layer.name for layer in model.layers[model.layers.index(model.get_layer(HEAD_INPUT)):]]
    if any(name not in (HEAD_INPUT, "dropout", LOGITS, "probabilities") for name in path):
        raise ValueError("CAM needs a linear head (GAP → [Dropout] → Dense logits), as build_model(head='linear') "
                         "makes; for Paper A's head use method='grad-cam'")
    return model.get_layer(LOGITS).get_weights()[0]


def _cam(model, images):
    """Raw CAM of every class (B, h, w, K) and the probabilities (B, K), from one forward pass."""
    features, logits = _feature_model(model)(images, training=False)
    maps = np.einsum("bhwc,ck->bhwk", np.asarray(features, np.float64), _linear_head_weights(model))
    return maps, tf.nn.softmax(logits).numpy()


def _grad_cam(model, images, class_index, layer):
    """Raw Grad-CAM maps (B, h, w) of one class per image, and the probabilities (B, K).

    The gradient of each image's own class logit is taken in one pass: images do not interact
    (BatchNorm runs in inference mode), so the gradient of the sum is the per-image gradient.
    """
    _check_live(model, layer)
    probe = _feature_model(model, layer)
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, logits = probe(images, training=False)
        tape.watch(features)
        index = tf.cast(tf.reshape(tf.convert_to_tensor(class_index), [-1]), tf.int32)
        target = tf.reduce_sum(tf.gather(logits, index, axis=1, batch_dims=1))
    maps = _weighted_by_gradients(features, tape.gradient(target, features))
    return maps, tf.nn.softmax(logits).numpy()


def _weighted_by_gradients(features, gradients):
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # channel importance per image
    return tf.reduce_sum(weights * features, axis=-1).numpy()


def _grad_cam_all_classes(model, images, layer: str | None = None):
    """Raw Grad-CAM of every class: (B, h, w, K) and the probabilities (B, K), from one forward pass
    and one backward pass per class."""
    _check_live(model, layer)
    probe = _feature_model(model, layer)
    with tf.GradientTape(persistent=True) as tape:
        features, logits = probe(tf.convert_to_tensor(images), training=False)
        tape.watch(features)
        targets = [tf.reduce_sum(logits[:, k]) for k in range(logits.shape[-1])]
    maps = np.stack([_weighted_by_gradients(features, tape.gradient(t, features)) for t in targets], axis=-1)
    del tape
    return maps, tf.nn.softmax(logits).numpy()


def _choose_method(model, method: str = "auto", layer: str | None = None) -> str:
    """"auto": CAM (Paper B's method) where the head is linear and no other layer is asked for, else Grad-CAM."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; found {method!r}")
    if method == "cam" and layer:
        raise ValueError("CAM is defined on the last convolutional block only; use method='grad-cam' for layer="
                         f"{layer!r}")
    if method != "auto":
        return method
    try:
        _linear_head_weights(model)
    except ValueError:
        return "grad-cam"
    return "grad-cam" if layer else "cam"


def _upsample(maps, size: int):
    """Maps (B, h, w) → (B, size, size), bilinear, to lay over the image or compare with masks."""
    return tf.image.resize(np.asarray(maps, np.float32)[..., np.newaxis], (size, size), "bilinear").numpy()[..., 0]


# --------------------------------------------------------------------------- measuring maps


def cells_touched(masks, grid: tuple[int, int]) -> np.ndarray:
    """Masks (N, H, W) → (N, h, w): which cells of a map's h × w grid hold any pixel of the mask."""
    masks = np.asarray(masks) > 0
    rows, columns = (np.round(np.linspace(0, n_pixels, n_cells + 1)).astype(int)[:-1]
                     for n_pixels, n_cells in zip(masks.shape[1:], grid))
    return np.logical_or.reduceat(np.logical_or.reduceat(masks, rows, axis=1), columns, axis=2)


def pointing_game(maps, lesions, lungs=None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, on the map's own grid (maps (N, h, w), masks (N, H, W)): is the map's hottest cell on the lesion
    (0 for a map with no positive evidence), and how often a random cell of the lungs (of the image, without
    lung masks) would be: the chance level.

    Scored on the grid, not on the upsampled map: a 4 × 4 map has 16 places its peak can be, and upsampling only
    moves them (an edge cell's peak lands on the image's border), so a pixel-level hit rate mostly measures the grid.
    """
    maps = np.asarray(maps)
    grid = maps.shape[1:3]
    lesion_cells = cells_touched(lesions, grid).reshape(len(maps), -1)
    area = np.ones_like(lesion_cells) if lungs is None else cells_touched(lungs, grid).reshape(len(maps), -1)
    flat = maps.reshape(len(maps), -1)
    hit = lesion_cells[np.arange(len(maps)), flat.argmax(axis=1)] & (flat.max(axis=1) > 0)
    chance = (lesion_cells & area).sum(axis=1) / np.maximum(area.sum(axis=1), 1)
    return hit.astype(float), chance


def energy_inside(maps, masks) -> np.ndarray:
    """Per image: the share of the map's total (non-negative) energy that falls inside the mask."""
    maps, masks = np.maximum(np.asarray(maps, np.float64), 0), np.asarray(masks) > 0
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def _other_lesions_of_its_class(labels, lesions, lesion_labels, own) -> np.ndarray:
    """(N, M) weights: lesion j counts for map i when it has a pixel, is of map i's class and is not its own image."""
    labels, lesion_labels = np.asarray(labels, dtype=object), np.asarray(lesion_labels, dtype=object)
    own = np.full(len(labels), -1) if own is None else np.asarray(own)
    if len(labels) != len(own) or len(lesions) != len(lesion_labels):
        raise ValueError(f"need one label (and own index) per map and one label per lesion mask; found {len(labels)} "
                         f"maps, {len(own)} own indices, {len(lesions)} masks and {len(lesion_labels)} mask labels")
    others = (labels[:, None] == lesion_labels[None, :]) & np.asarray(lesions).reshape(len(lesions), -1).any(axis=1)
    others[np.arange(len(labels))[own >= 0], own[own >= 0]] = False
    return others


def _weighted_mean(scores, weights) -> np.ndarray:
    """Per row, the mean of `scores` over the columns `weights` selects; NaN where it selects none."""
    n = weights.sum(axis=1)
    return np.where(n > 0, (scores * weights).sum(axis=1) / np.maximum(n, 1), np.nan)


def pointing_null(maps, labels, lesions, lesion_labels, own=None) -> np.ndarray:
    """Per map (N, h, w): its pointing-game hit averaged over the lesion masks (M, H, W) of the *other* images of its
    class, exactly (every such pair, no random draws); `own[i]` is the index of map i's own mask (-1: none).

    The class-keeping permutation null: a map that only knows where its class's lesions usually are scores as well
    against another image's lesion as against its own, so only a map that beats this level follows the lesion.
    """
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1)
    cells = cells_touched(lesions, maps.shape[1:3]).reshape(len(lesions), -1)
    hits = cells[:, flat.argmax(axis=1)].T & (flat.max(axis=1) > 0)[:, None]  # (N, M): map i's peak on lesion j
    return _weighted_mean(hits, _other_lesions_of_its_class(labels, lesions, lesion_labels, own))


def energy_null(maps, labels, lesions, lesion_labels, own=None) -> np.ndarray:
    """Per map (N, H, W), at the masks' size: its share of energy inside the lesion masks of the other images of its
    class, averaged exactly (as `pointing_null`, for `energy_inside`)."""
    maps = np.maximum(np.asarray(maps, np.float64), 0).reshape(len(maps), -1)
    inside = maps @ (np.asarray(lesions).reshape(len(lesions), -1) > 0).T  # (N, M)
    total = maps.sum(axis=1, keepdims=True)
    shares = np.where(total > 0, inside / np.where(total > 0, total, 1), 0.0)  # an empty map has no energy anywhere
    return _weighted_mean(shares, _other_lesions_of_its_class(labels, lesions, lesion_labels, own))


def fixed_class_maps(lesions, labels, grid: tuple[int, int]) -> dict:
    """Per class, the share of its (training) lesion masks that touch each cell of an h × w grid: a map that never
    sees the image. Its hottest cell is the best single guess of where that class's lesions lie, the baseline that
    position alone reaches."""
    touched, labels = cells_touched(lesions, grid), np.asarray(labels, dtype=object)
    has_lesion = touched.reshape(len(touched), -1).any(axis=1)
    return {label: touched[(labels == label) & has_lesion].mean(axis=0)
            for label in pd.unique(labels[has_lesion])}


# --------------------------------------------------------------------------- a trained run


def read_masks(paths, size: int) -> np.ndarray | None:
    """Masks at `size` as booleans (N, size, size); all False where an image has none; None if none has one."""
    if paths is None or pd.Series(list(paths), dtype=object).isna().all():
        return None
    empty = np.zeros((size, size), bool)
    return np.stack([empty if pd.isna(p) else load_grayscale(p, size) > 127 for p in paths])


@dataclasses.dataclass(frozen=True)
class Localisation:
    """What `localise` measured: per image (`table`), and per class and overall (`summary`, its "all" row
    `overall`), each measure beside the levels a map reaches without finding the lesion (`chance(measure, level)`),
    and per class whether the maps find the lesion (`verdicts`)."""

    table: pd.DataFrame
    summary: pd.DataFrame

    @property
    def overall(self) -> pd.Series:
        return self.summary.loc["all"]

    def chance(self, measure: str, row: str = "all", level: str = "lungs") -> float:
        """The level a summary measure reaches without finding the lesion, at one of three bars:

        - "lungs": a map that finds only the lungs (or, for "energy in <region>", looks anywhere): its hottest cell a
          random lung cell, its energy spread evenly over the lungs; for a region, the region's share of the image.
        - "class": the class-keeping null (pointing game, and the lesion's part of lungs' energy, or without lung
          masks the energy in the lesion): the same maps scored against the lesions
          of the *other* test images of the same class. A map that only knows where its class's lesions usually
          are reaches it; only one that follows each image's own lesion beats it.
        - "fixed": one fixed map per class learned from the training lesions (`localise(training=...)`), which never
          sees the image: what position alone reaches on these test lesions.
        """
        chances = _chance_columns(self.summary.columns, level)
        if measure not in chances:
            said = "chance" if level == "lungs" else repr(level)
            raise ValueError(f"no {said} level for {measure!r}; the measures with one are {sorted(chances)}")
        return self.summary.loc[row, chances[measure]]

    @property
    def verdicts(self) -> pd.DataFrame:
        """Per class and overall, for the pointing game and the energy in the lesion: the map beside each level, the
        95% intervals of its differences from them, and a verdict (see `lesion_verdicts`)."""
        return lesion_verdicts(self.table)

    def describe(self, name: str = "The maps") -> str:
        """The overall row in plain sentences, and a verdict on lesion finding (see `_describe`)."""
        has_null = "pointing_null" in self.table and self.table["pointing_null"].notna().any()
        return _describe(self.summary, name, self.verdicts if has_null else None)


def localise(run, rows: pd.DataFrame, method: str = "auto", layer: str | None = None,
             regions: dict | None = None, batch_size: int = 32, training: pd.DataFrame | None = None) -> Localisation:
    """Per image: the prediction, and where the map of its *true* class puts its energy; then per class.

    `rows` needs path and label, and uses mask_path (lungs) and lesion_mask_path (phantoms) where
    present. Measures: the pointing game and energy share inside the lesion (NaN without a lesion),
    the energy share inside the lungs and inside any extra `regions` (name → boolean mask), and each
    area's share: the lesion's of the lungs (what a map that finds only the lungs scores, to compare with the pointing
    game and the energy in the lesion) and every region's of the image (the chance of "does it look there").
    With lesions, each map is also scored against the lesions of the other images of its class in `rows`
    (`pointing_null`, `energy_null`), and with `training` (rows with lesion_mask_path, e.g. `run.part("train", scan)`)
    against one fixed map per class learned from their lesions (`fixed_class_maps`): position alone, on the phantoms,
    reaches far above the lungs' level. A map with no positive evidence for the true class (`empty_map`) points at
    nothing: it scores 0, never NaN, so every image stays in the averages.
    """
    run = as_run(run)
    unknown = sorted(set(rows["label"]) - set(run.classes))
    if unknown:
        raise ValueError(f"rows have labels {unknown} that {run.folder} was not trained on; expected {run.classes}")
    if training is not None and "lesion_mask_path" not in training:
        raise ValueError("training: the fixed maps are learned from lesion masks; these rows have no lesion_mask_path")
    lesions = {}  # every test lesion once: the null scores each map against the other lesions of its class
    if "lesion_mask_path" in rows and rows["lesion_mask_path"].notna().any():
        lesions = {"masks": read_masks(rows["lesion_mask_path"], run.image_size), "labels": rows["label"].to_numpy(),
                   "training": None if training is None else
                   (read_masks(training["lesion_mask_path"], run.image_size), training["label"].to_numpy())}
    starts = range(0, len(rows), batch_size)
    records = [_localise_chunk(run, rows.iloc[start:start + batch_size], method, layer, regions,
                               dict(lesions, own=np.arange(start, min(start + batch_size, len(rows)))))
               for start in (tqdm(starts, desc="scoring maps", unit="batch") if len(starts) > 3 else starts)]
    table = rows[[c for c in ("relpath", "path", "label") if c in rows]].join(pd.concat(records))
    table["correct"] = table["predicted"] == table["label"]
    return Localisation(table, _summary(table))


def _localise_chunk(run, chunk: pd.DataFrame, method, layer, regions, lesions: dict) -> pd.DataFrame:
    size = run.image_size
    images = read_images(chunk["path"], size)
    bad = [(p, e) for p, e in zip(chunk["path"], images.errors) if e]
    if bad:
        raise ValueError(f"{len(bad)} image(s) could not be read, e.g. {bad[0][0]}: {bad[0][1]}")
    true_class = maps(run, images.pixels, method, list(chunk["label"]), layer)  # one backward pass for Grad-CAM
    grid_maps, chosen, probabilities = true_class.maps, true_class.upsampled(size), true_class.probabilities
    empty = ~(chosen > 0).any(axis=(1, 2))
    measured = {"predicted": true_class.predicted,
                "confidence": probabilities.max(axis=1), "empty_map": empty}
    masks = {name: (read_masks(chunk[column], size), chunk[column].notna().to_numpy())
             for name, column in (("lungs", "mask_path"), ("lesion", "lesion_mask_path")) if column in chunk}
    masks.update({name: (np.broadcast_to(mask, chosen.shape), np.ones(len(chunk), bool))
                  for name, mask in (regions or {}).items()})
    for name, (mask, present) in masks.items():
        if mask is None:  # a missing mask is never guessed: its measures are NaN
            continue
        scored = present & mask.any(axis=(1, 2))
        energy = np.nan_to_num(energy_inside(chosen, mask), nan=0.0)  # an empty map has no energy anywhere
        measured[f"{name}_energy"] = np.where(scored, energy, np.nan)
        measured[f"{name}_area"] = np.where(present, mask.mean(axis=(1, 2)), np.nan)
        if name == "lesion":
            lungs = masks.get("lungs", (None, None))[0]
            hit, chance = pointing_game(grid_maps, mask, lungs)
            measured["pointing_game"] = np.where(scored, hit, np.nan)
            measured["pointing_chance"] = np.where(scored, chance, np.nan)
            labels = chunk["label"].to_numpy()
            measured.update(_position_levels(grid_maps, chosen, labels, mask, scored, lesions, lungs))
            if lungs is not None:  # a map spread evenly over the lungs puts this share of its energy on the lesion
                lung_area = lungs.sum(axis=(1, 2))
                share = (mask & lungs).sum(axis=(1, 2)) / np.maximum(lung_area, 1)
                measured["lesion_share_of_lungs"] = np.where(scored & (lung_area > 0), share, np.nan)
                in_lungs = (chosen * lungs).sum(axis=(1, 2))  # of the energy inside the lungs, the lesion's part
                in_lesion = (chosen * (mask & lungs)).sum(axis=(1, 2))
                measured["lesion_energy_of_lungs"] = np.where(
                    scored & (lung_area > 0), in_lesion / np.where(in_lungs > 0, in_lungs, 1), np.nan)
    return pd.DataFrame(measured, index=chunk.index)


def _position_levels(grid_maps, chosen, labels, lesion, scored, lesions: dict, lungs) -> dict:
    """What position alone scores on these images: each map against the other lesions of its class (the null), and
    its class's fixed map from the training lesions against this image's lesion. The energy is the lesion's part of
    the map's energy inside this image's lungs (of all its energy, without lung masks), as `lesion_energy_of_lungs`."""
    if not lesions:
        return {}
    within = chosen if lungs is None else chosen * lungs
    levels = {"pointing_null": pointing_null(grid_maps, labels, lesions["masks"], lesions["labels"], lesions["own"]),
              "energy_null": energy_null(within, labels, lesions["masks"], lesions["labels"], lesions["own"])}
    if lesions["training"] is not None:
        fixed = fixed_class_maps(*lesions["training"], grid_maps.shape[1:3])
        cells = cells_touched(lesion, grid_maps.shape[1:3]).reshape(len(lesion), -1)
        # a class with no training lesion has no fixed map: its images score NaN, never a guess
        blank = np.full(grid_maps.shape[1:3], np.nan)
        per_image = np.stack([fixed.get(label, blank) for label in labels])
        known = ~np.isnan(per_image).any(axis=(1, 2))
        peak = np.nan_to_num(per_image, nan=0.0).reshape(len(labels), -1).argmax(axis=1)
        levels["pointing_fixed"] = np.where(known, cells[np.arange(len(labels)), peak], np.nan)
        drawn = _upsample(np.nan_to_num(per_image, nan=0.0), lesion.shape[1])
        drawn = drawn if lungs is None else drawn * lungs
        levels["energy_fixed"] = np.where(known, np.nan_to_num(energy_inside(drawn, lesion)), np.nan)
    return {name: np.where(scored, value, np.nan) for name, value in levels.items()}


_POINTING_CHANCE = "chance: a random lung cell"
_LESION_CHANCE = "chance: lesion's share of lungs"
_LESION_OF_LUNGS = "lesion's part of lungs' energy"
_POINTING_NULL = "null: other lesions of its class"
_POINTING_FIXED = "fixed cell of its class (training)"
_ENERGY_NULL = "energy null: other lesions of its class"  # of the lesion's part of lungs' energy (without lungs: of
_ENERGY_FIXED = "energy of its class's fixed map (training)"  # the energy in the lesion), as the measure beside it
LEVELS = ("lungs", "class", "fixed")


def _chance_columns(columns, level: str = "lungs") -> dict:
    """Each summary measure → the summary column of its level (`Localisation.chance`)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}; found {level!r}")
    if level == "lungs":
        pairs = {"pointing game": _POINTING_CHANCE, _LESION_OF_LUNGS: _LESION_CHANCE}
        pairs.update({c: _region_chance(c[len("energy in "):]) for c in columns if c.startswith("energy in ")})
    else:
        energy = _LESION_OF_LUNGS if _LESION_OF_LUNGS in columns else "energy in lesion"
        pairs = ({"pointing game": _POINTING_NULL, energy: _ENERGY_NULL} if level == "class" else
                 {"pointing game": _POINTING_FIXED, energy: _ENERGY_FIXED})
    return {measure: chance for measure, chance in pairs.items() if measure in columns and chance in columns}


def _region_chance(region: str) -> str:
    """The summary's column of a region's chance level: its share of the image."""
    possessive = "'" if region.endswith("s") else "'s"
    return f"chance: {region}{possessive} share of image"


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per class and overall: accuracy, each localisation measure beside the chance level of its own question,
    and how many maps had no positive evidence at all.

    "Does the map find the lesion?" Its hottest cell (pointing game) against a random cell of the lungs, where
    lesions lie, on the map's own grid; the lesion's part of the map's energy inside the lungs against the lesion's
    share of the lungs (a map spread evenly over the lungs scores that much). Both beside what position alone
    scores: the class-keeping null and the fixed map of the class, where `localise` measured them (`verdicts` judges
    the map against them). "Does it look at the lungs (or a region)?" against their share of the image. Each average
    is over the images that have the mask: a measure and its chance level always over the same images.
    """
    columns = {"correct": "accuracy"}
    for name in [c[:-len("_energy")] for c in table.columns if c.endswith("_energy")]:
        if name == "lesion":
            chance = "lesion_share_of_lungs" if "lesion_share_of_lungs" in table else "lesion_area"
            columns.update({"pointing_game": "pointing game", "pointing_chance": _POINTING_CHANCE})
            columns.update({c: n for c, n in (("pointing_null", _POINTING_NULL), ("pointing_fixed", _POINTING_FIXED))
                            if c in table})
            columns["lesion_energy"] = "energy in lesion"
            if "lesion_energy_of_lungs" in table:
                columns["lesion_energy_of_lungs"] = _LESION_OF_LUNGS
            columns.update({c: n for c, n in (("energy_null", _ENERGY_NULL), ("energy_fixed", _ENERGY_FIXED))
                            if c in table})
            columns[chance] = _LESION_CHANCE if chance != "lesion_area" else "chance: lesion's share of image"
        else:
            columns.update({f"{name}_energy": f"energy in {name}", f"{name}_area": _region_chance(name)})
    numbers = table[["label", *columns]].assign(correct=table["correct"].astype(float))
    for name in [c[:-len("_energy")] for c in table.columns if c.endswith("_energy")]:
        scored = numbers[f"{name}_energy"].notna()
        for column in [c for c in numbers if c.startswith(f"{name}_") or (name == "lesion" and c in (
                "pointing_game", "pointing_chance", "pointing_null", "pointing_fixed", "lesion_share_of_lungs",
                "lesion_energy_of_lungs", "energy_null", "energy_fixed"))]:
            numbers[column] = numbers[column].where(scored)  # a measure and its chance over the same images
    summary = pd.concat([numbers.groupby("label").mean(), numbers.drop(columns="label").mean().to_frame("all").T])
    summary.insert(0, "images", [*numbers.groupby("label").size(), len(numbers)])
    if "pointing_game" in table:  # the pointing game's sample size, for its interval
        with_lesion = table["pointing_game"].notna()
        summary.insert(1, "images with a lesion", [*with_lesion.groupby(table["label"]).sum(), int(with_lesion.sum())])
    empty = table["empty_map"].astype(int) if "empty_map" in table else pd.Series(0, index=table.index)
    summary.insert(2, "maps with no evidence", [*empty.groupby(table["label"]).sum(), int(empty.sum())])
    return summary.rename(columns=columns)


FINDS, KNOWS, NEITHER, CANNOT_SAY = ("finds the lesion", "knows where this class's lesions usually are", "neither",
                                     "cannot say")
MIN_IMAGES = 10  # fewer images with a lesion in a class: no verdict


def lesion_verdicts(table: pd.DataFrame, margin: float = 0.10, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per class (and "all") and measure (the pointing game; the lesion's part of the map's energy inside the lungs,
    or without lung masks its energy in the lesion): the map's mean score beside what a lungs-only map (without lung
    masks: a map spread over the image), the class-keeping null and the fixed class map score on the same images,
    the 95% intervals (paired bootstrap over images) of the map's differences from the null and from the lungs-only
    level, and a verdict read from those intervals:

    - "finds the lesion": the map beats the class-keeping null and the lungs-only level (both intervals above 0):
      it follows each image's own lesion, and puts more there than a map spread over the lungs would;
    - "knows where this class's lesions usually are": it beats the lungs-only level, and the null's interval rules out
      that it beats the null by `margin` or more;
    - "neither": both intervals rule out a lead of `margin` or more, without beating the lungs-only level;
    - "cannot say": the intervals are too wide for any of these (a map near a level), or fewer than `MIN_IMAGES`
      images, where a bootstrap's intervals are too narrow to trust (5 misses in 5 give an interval of zero width).

    The nulls of different images share lesion masks, which the bootstrap ignores: its intervals may be too narrow.
    """
    if "pointing_null" not in table:
        raise ValueError("no class-keeping null in this table: localise() measures it where rows have lesion masks")
    energy = ((_LESION_OF_LUNGS, "lesion_energy_of_lungs", "lesion_share_of_lungs") if "lesion_energy_of_lungs" in table
              else ("energy in lesion", "lesion_energy", "lesion_area"))
    measures = {"pointing game": ("pointing_game", "pointing_chance", "pointing_null", "pointing_fixed"),
                energy[0]: (*energy[1:], "energy_null", "energy_fixed")}  # the map's, a lungs-only map's, null, fixed
    rng, rows = np.random.default_rng(seed), []
    for measure, (score, lungs, null, fixed) in measures.items():
        for group in [*sorted(table["label"].unique()), "all"]:
            part = table if group == "all" else table[table["label"] == group]
            part = part.dropna(subset=[score, lungs, null])
            if part.empty:
                continue
            row = {"class": group, "measure": measure, "images": len(part), "map": part[score].mean(),
                   "lungs only": part[lungs].mean(), "class-keeping null": part[null].mean(),
                   "fixed map (training)": part[fixed].mean() if fixed in part else np.nan}
            picks = rng.integers(0, len(part), (resamples, len(part)))
            for name, level in (("null", null), ("lungs only", lungs)):
                differences = (part[score] - part[level]).to_numpy()[picks].mean(axis=1)
                row[f"map − {name}: low"], row[f"map − {name}: high"] = np.percentile(differences, [2.5, 97.5])
            row["verdict"] = _verdict(row, margin) if len(part) >= MIN_IMAGES else CANNOT_SAY
            rows.append(row)
    return pd.DataFrame(rows).set_index(["class", "measure"])


def _verdict(row: dict, margin: float) -> str:
    if row["map − null: low"] > 0 and row["map − lungs only: low"] > 0:
        return FINDS
    if row["map − null: high"] < margin and row["map − lungs only: low"] > 0:
        return KNOWS
    if row["map − null: high"] < margin and row["map − lungs only: high"] < margin:
        return NEITHER
    return CANNOT_SAY


def write_overlays(run, paths, out_dir, method: str = "auto", layer: str | None = None,
                   alpha: float = 0.45) -> pd.DataFrame:
    """One PNG per image in `out_dir`: the radiograph and every class's map over it (`predict --cam`).

    Returns one row per image with the overlay's path, or the reason the image could not be read.
    """
    run, out_dir = as_run(run), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = read_images(paths, run.image_size)
    pixels, drawn, probabilities = images.pixels, [], []
    for start in range(0, len(pixels), 32):  # batched, and never every map of a long list at once
        chunk = maps(run, pixels[start:start + 32], method, layer=layer)
        drawn.append(chunk.upsampled(run.image_size).astype(np.float32))
        probabilities.append(chunk.probabilities)
    drawn, probabilities = (np.concatenate(drawn), np.concatenate(probabilities)) if drawn else ([], [])
    rows, used, readable = [], set(), iter(range(len(pixels)))
    for path, error in zip(paths, images.errors):
        row = {"image": str(path), "overlay": None, "predicted": None, "error": error}
        if error is None:
            i = next(readable)
            target = _free_name(out_dir, Path(path).stem, used)
            fig = plots.cam_overlays(pixels[i:i + 1], drawn[i:i + 1], run.classes, probabilities[i:i + 1],
                                     titles=[Path(path).name], alpha=alpha,
                                     caption=plots.caption(None, run))  # the images are the user's
            with files.atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
            plt.close(fig)
            row.update(overlay=str(target), predicted=run.classes[int(probabilities[i].argmax())])
        rows.append(row)
    return pd.DataFrame(rows)


def _free_name(out_dir: Path, stem: str, used: set) -> Path:
    """`<stem>_cam.png`, or `<stem>_2_cam.png`, … for two images of the same name from different folders."""
    target, n = out_dir / f"{stem}_cam.png", 1
    while target.name in used:
        n += 1
        target = out_dir / f"{stem}_{n}_cam.png"
    used.add(target.name)
    return target


def _describe(summary: pd.DataFrame, name: str, verdicts: pd.DataFrame | None = None) -> str:
    """The summary's "all" row in plain sentences, each measure beside the chance level of its question: the pointing
    game's 95% interval (Wilson) against a random lung cell; with `verdicts`, against the class-keeping null and per
    class, which alone can say that the maps find the lesion (above a random lung cell, position alone suffices)."""
    row = summary.loc["all"]
    lines = [f"{name}: accuracy {row['accuracy']:.0%} on {int(row['images'])} images."]
    if row.get("maps with no evidence", 0) > 0:
        lines.append(f"{int(row['maps with no evidence'])} of {int(row['images'])} maps have no positive evidence "
                     "for the true class anywhere: they point at nothing and score 0 below.")
    verdict = None
    if "pointing game" in row and not np.isnan(row["pointing game"]):
        hit, chance, n = row["pointing game"], row[_POINTING_CHANCE], int(row["images with a lesion"])
        interval = binomtest(int(round(hit * n)), n).proportion_ci(method="wilson")
        lines.append(f"Does the map find the lesion? Its hottest cell lay on the lesion in {hit:.0%} of the {n} images "
                     f"that have one (95% interval {interval.low:.0%}–{interval.high:.0%}); a random cell of the lungs "
                     f"would be on it {chance:.0%} of the time.")
        verdict = ("below" if interval.high < chance else "chance" if interval.low <= chance else
                   "most" if hit >= 0.5 else "some")
    if _LESION_OF_LUNGS in row and not np.isnan(row[_LESION_OF_LUNGS]):
        part, share = row[_LESION_OF_LUNGS], row[_LESION_CHANCE]
        lines.append(f"Of the map's energy inside the lungs, {part:.1%} lies in the lesion, which covers {share:.1%} "
                     f"of them ({part / share:.1f}× what a map spread evenly over the lungs would put there).")
    for region in [c[len("energy in "):] for c in summary.columns if c.startswith("energy in ")]:
        if region == "lesion":
            continue
        energy, area = row[f"energy in {region}"], row[_region_chance(region)]
        lines.append(f"Does it look at the {region}? {energy:.0%} of the energy lies inside, which take up "
                     f"{area:.1%} of the image ({energy / area:.1f}× chance)." if area > 0 else "")
    lines.append({
        None: "",
        "most": "Against a random lung cell: the hottest cell is on the lesion in most images, above a random lung "
                "cell (a map that knows only where each class's lesions usually are can do that too).",
        "some": "Against a random lung cell: above it, yet the hottest cell misses the lesion in most images: read "
                "these maps as a rough region at best.",
        "chance": "Against a random lung cell: the hottest cell does NOT find the lesion more often than a random lung "
                  "cell would (the interval includes chance): accuracy alone does not make these maps an explanation.",
        "below": "Against a random lung cell: the hottest cell finds the lesion LESS often than a random lung cell "
                 "would: these maps point away from the findings.",
    }[verdict])
    if verdicts is not None and ("all", "pointing game") in verdicts.index:
        pooled = verdicts.loc[("all", "pointing game")]
        fixed = ("" if np.isnan(pooled["fixed map (training)"]) else
                 f"; one fixed cell per class, learned from the training lesions, {pooled['fixed map (training)']:.0%}")
        lines.append(f"Against position alone: scored on the lesions of other images of the same class, the same "
                     f"maps hit {pooled['class-keeping null']:.0%}{fixed}. The hottest cell's lead over that null: "
                     f"{pooled['map'] - pooled['class-keeping null']:+.0%} (95% interval "
                     f"{pooled['map − null: low']:+.0%} to {pooled['map − null: high']:+.0%}).")
        energy = next((m for m in (_LESION_OF_LUNGS, "energy in lesion") if ("all", m) in verdicts.index), None)
        if energy:
            pooled = verdicts.loc[("all", energy)]
            null = pooled["class-keeping null"]
            lines.append(f"The {energy}: {pooled['map']:.1%}; on the other lesions of its class, "
                         f"{null:.1%} (lead {pooled['map'] - null:+.1%}, "
                         f"95% interval {pooled['map − null: low']:+.1%} to {pooled['map − null: high']:+.1%}).")
        per_class = verdicts.xs("pointing game", level="measure")["verdict"]
        lines.append("Verdict (pointing game), per class: " + "; ".join(
            f"{label}: {said}" for label, said in per_class.items()) + ".")
    return "\n".join(line for line in lines if line)
