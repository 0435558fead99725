"""Figures for the notebooks, so a notebook cell shows the idea and not thirty lines of matplotlib.

Every function returns its matplotlib Figure; with `save_as="name"` it is also written to
outputs/figures/name.png, which is where the main job's figures are collected. With `caption=` a figure carries a
footer saying what it shows (phantoms or real radiographs, ImageNet or random weights), so that a figure on a slide
cannot be mistaken for another kind: `figures = Figures(layout, run)` makes every figure drawn through it carry
that footer (`figures.sample_grid(index)`), and `caption(layout, run)` is the footer itself.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from helpers import config, files
from helpers.image_files import load_grayscale
from helpers.tasks import CLASSES

CLASS_COLOURS = dict(zip(CLASSES, sns.color_palette("colorblind", len(CLASSES))))
_FIGURES: dict = {}  # name → figure function, for `Figures`


def caption(layout=None, *runs) -> str:
    """A figure's footer: which images it shows (a DatasetLayout) and which models (runs: their backbone's weights
    and what they were trained on), and the profile."""
    parts = []
    if layout is not None:
        parts.append("images: generated PHANTOM radiographs" if layout.is_phantom else
                     "images: real radiographs (COVID-19 Radiography Database)")
    models = {("ImageNet-pretrained" if run.pretrained else "RANDOM-INIT (not pretrained)") +
              " backbone trained on " + ("PHANTOMS" if run.on_phantoms else "real radiographs") for run in runs}
    parts += sorted(models)
    parts.append(f"profile {config.active_profile().name}")
    return " · ".join(parts)


class Figures:
    """This module's figures, each drawn with the footer of `caption(layout, *runs)`: make one per set of images and
    models shown, and every figure drawn through it says what it shows."""

    def __init__(self, layout=None, *runs):
        self.caption = caption(layout, *runs)

    def __repr__(self) -> str:
        return f"Figures({self.caption!r})"

    def __dir__(self):
        return [*super().__dir__(), *_FIGURES]

    def __getattr__(self, name: str):
        if name not in _FIGURES:
            raise AttributeError(f"plots has no figure {name!r}; it has {sorted(_FIGURES)}")
        draw = _FIGURES[name]

        @functools.wraps(draw)
        def captioned(*args, **kwargs):
            return draw(*args, **{"caption": self.caption, **kwargs})
        return captioned


def _figure(draw):
    """Registers a figure function for `Figures`."""
    _FIGURES[draw.__name__] = draw
    return draw


def _finish(fig, save_as, caption="", tight=True):
    if tight:
        fig.tight_layout()
    if caption:
        fig.text(0.5, -0.01, caption, ha="center", va="top", fontsize=7, color="dimgray")
    if save_as:
        with files.atomic_path(config.OUTPUT_DIR / "figures" / f"{save_as}.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return fig


def _classes_in(index: pd.DataFrame):
    return [c for c in CLASSES if c in set(index["label"])]


@_figure
def class_counts(balance: pd.DataFrame, save_as=None, caption: str = ""):
    """Bar chart of images per class with shares, and the majority-class baseline in the title."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    data = balance.reset_index()
    sns.barplot(data=data, x="class", y="images", hue="class", palette=CLASS_COLOURS, legend=False, ax=ax)
    for patch, share in zip(ax.patches, data["share"]):
        ax.annotate(f"{share:.1%}", (patch.get_x() + patch.get_width() / 2, patch.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set(xlabel="", ylabel="images",
           title=f"Always answering the largest class scores {balance.attrs['majority_baseline']:.1%}")
    ax.margins(y=0.15)
    return _finish(fig, save_as, caption)


@_figure
def sample_grid(index: pd.DataFrame, per_class: int = 4, seed: int = 0, save_as=None, caption: str = ""):
    """A few images of each class at full resolution, one row per class."""
    classes = _classes_in(index)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(2.2 * per_class, 2.3 * len(classes)),
                             squeeze=False)
    for row, cls in zip(axes, classes):
        rows = index[index["label"] == cls]
        chosen = rows.sample(min(per_class, len(rows)), random_state=seed)
        for ax, (_, item) in zip(row, chosen.iterrows()):
            ax.imshow(load_grayscale(item["path"]), cmap="gray", vmin=0, vmax=255)
            ax.set_title(item["relpath"].rsplit("/", 1)[-1], fontsize=7)
        row[0].set_ylabel(cls, fontsize=10)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return _finish(fig, save_as, caption)


def _stack(paths, size):
    return np.stack([load_grayscale(p, size).astype(np.float32) for p in paths])


@_figure
def mean_images(index: pd.DataFrame, size: int = 128, save_as=None, caption: str = ""):
    """Mean image per class (top) and its difference from the mean of all classes (bottom).

    Systematic differences outside the lungs (body size, text markers, borders) are what a model
    can learn instead of disease.
    """
    classes = _classes_in(index)
    means = {c: _stack(index.loc[index["label"] == c, "path"], size).mean(axis=0) for c in classes}
    overall = np.mean(list(means.values()), axis=0)
    fig, axes = plt.subplots(2, len(classes), figsize=(2.6 * len(classes), 5.4), squeeze=False,
                             layout="constrained")
    limit = max(float(np.abs(m - overall).max()) for m in means.values()) or 1.0
    for col, cls in enumerate(classes):
        n = int((index["label"] == cls).sum())
        axes[0, col].imshow(means[cls], cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(f"{cls}\nmean of {n}", fontsize=9)
        shown = axes[1, col].imshow(means[cls] - overall, cmap="coolwarm", vmin=-limit, vmax=limit)
        axes[1, col].set_title("minus mean of all", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[1].tolist(), shrink=0.8, label="grey levels")
    return _finish(fig, save_as, caption, tight=False)


@_figure
def intensity_histograms(index: pd.DataFrame, size: int = 128, save_as=None, caption: str = ""):
    """Distribution of pixel intensities per class (exposure and contrast differ between sources)."""
    frames = []
    for cls in _classes_in(index):
        pixels = _stack(index.loc[index["label"] == cls, "path"], size).ravel()
        frames.append(pd.DataFrame({"grey level": pixels[:: max(1, pixels.size // 200_000)], "class": cls}))
    data = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.histplot(data=data, x="grey level", hue="class", palette=CLASS_COLOURS, bins=64, stat="density",
                 common_norm=False, element="step", fill=False, ax=ax)
    ax.set(xlim=(0, 255), title="Pixel intensities per class")
    return _finish(fig, save_as, caption)


@_figure
def mask_overlays(index: pd.DataFrame, per_class: int = 2, seed: int = 0, save_as=None, caption: str = ""):
    """Images with their lung mask outlined; masks are resized to the image (the real ones are 256 px)."""
    with_masks = index[index["mask_path"].notna()]
    classes = _classes_in(with_masks)
    if not classes:
        print("No lung masks in this copy of the dataset (older releases and flat copies have none): "
              "nothing to overlay.")
        return None
    fig, axes = plt.subplots(len(classes), per_class, figsize=(2.4 * per_class, 2.5 * len(classes)),
                             squeeze=False)
    for row, cls in zip(axes, classes):
        rows = with_masks[with_masks["label"] == cls]
        for ax, (_, item) in zip(row, rows.sample(min(per_class, len(rows)), random_state=seed).iterrows()):
            image = load_grayscale(item["path"])
            mask = np.asarray(Image.fromarray(load_grayscale(item["mask_path"]))
                              .resize(image.shape[::-1], Image.NEAREST)) > 127
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.18)
            ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.8)
            ax.set_title(f"{cls}: lungs {mask.mean():.0%} of image", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return _finish(fig, save_as, caption)


@_figure
def split_counts(split: pd.DataFrame, save_as=None, caption: str = "", title: str = ""):
    """Images per class in each split (first repeat for repeated sub-samples)."""
    first = split[split["repeat"] == split["repeat"].min()]
    data = first.groupby(["split", "label"]).size().rename("images").reset_index()
    order = [s for s in ("train", "val", "test") if s in set(data["split"])]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=data, x="split", y="images", hue="label", order=order,
                hue_order=_classes_in(first), palette=CLASS_COLOURS, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    ax.set(xlabel="", title=title)
    ax.legend(fontsize=8, title=None)
    return _finish(fig, save_as, caption)


@_figure
def resolution_ladder(path, sizes=(299, 224, 128), save_as=None, caption: str = ""):
    """One radiograph at several input sizes: what detail each size keeps."""
    fig, axes = plt.subplots(1, len(sizes), figsize=(3 * len(sizes), 3.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        ax.imshow(load_grayscale(path, size), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{size} × {size} px", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, save_as, caption)


@_figure
def image_versions(versions: dict, save_as=None, caption: str = ""):
    """One row per image, one column per version of it (name → images), e.g. what each control hides."""
    names = list(versions)
    n = len(versions[names[0]])
    fig, axes = plt.subplots(n, len(names), figsize=(2.2 * len(names), 2.3 * n), squeeze=False)
    for i, row in enumerate(axes):
        for ax, name in zip(row, names):
            image = np.squeeze(versions[name][i])
            scale = {"vmin": 0, "vmax": 255} if image.dtype == np.uint8 else {}  # one grey scale for every version
            ax.imshow(image, cmap="gray", **scale)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    return _finish(fig, save_as, caption)


@_figure
def value_histograms(batches: dict, save_as=None, caption: str = ""):
    """Histogram of input values under each normalisation: {"name": array}."""
    fig, axes = plt.subplots(1, len(batches), figsize=(3.6 * len(batches), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], batches.items()):
        sns.histplot(np.asarray(values).ravel()[::7], bins=60, ax=ax, color="slategray")
        ax.set(title=name, xlabel="input value", ylabel="")
    return _finish(fig, save_as, caption)


@_figure
def model_input(values, title: str = "", save_as=None, caption: str = ""):
    """What a model is given (H, W, 3): its first channel as an image on its own value scale, beside the histogram
    of all its values (notebook 02's explorer)."""
    values = np.asarray(values)
    fig, (image_ax, hist_ax) = plt.subplots(1, 2, figsize=(7.4, 3), gridspec_kw={"width_ratios": [1, 1.3]})
    shown = image_ax.imshow(values[..., 0], cmap="gray")
    fig.colorbar(shown, ax=image_ax, fraction=0.046, pad=0.04)
    image_ax.set(xticks=[], yticks=[], title=title)
    sns.histplot(values.ravel()[::7], bins=60, ax=hist_ax, color="slategray")
    hist_ax.set(xlabel="input value", ylabel="")
    return _finish(fig, save_as, caption)


@_figure
def throughput(results: pd.DataFrame, save_as=None, caption: str = ""):
    """Images per second per input pipeline and epoch (a `timing.compare_input_pipelines` table)."""
    fig, ax = plt.subplots(figsize=(7, 2.6))
    sns.barplot(data=results, y="pipeline", x="images_per_second", hue="epoch", palette="Blues", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.0f", fontsize=8)
    ax.set(ylabel="", xlabel="images per second (higher is better)")
    ax.legend(title="epoch", fontsize=8)
    ax.margins(x=0.15)
    return _finish(fig, save_as, caption)


@_figure
def training_curves(history: pd.DataFrame, title: str = "", warmup_epochs: int = 0, save_as=None, caption: str = ""):
    """Accuracy and loss per epoch, training and the watched part, side by side (as Paper A's Figure 1).

    The watched part is the validation split, or the test part for Paper B's sub-sample runs (which have no other);
    the history's column names say which, and so does the legend.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = history["epoch"] + 1
    watched = "val" if "val_loss" in history else "test"
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, history[f"train_{metric}"], marker="o", label="training")
        ax.plot(epochs, history[f"{watched}_{metric}"], marker="o", label="validation" if watched == "val" else "test")
        if warmup_epochs:
            ax.axvline(warmup_epochs + 0.5, color="grey", linestyle=":", label="end of warm-up")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title} {metric}".strip())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1.02)
    return _finish(fig, save_as, caption)


@_figure
def confusion_matrices(matrix, classes, save_as=None, caption: str = ""):
    """Counts and row-normalised (each true class sums to 1), true classes as rows: the transpose of Paper A's
    Figure 2, whose rows are the predictions."""
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore"):
        normalised = matrix / matrix.sum(axis=1, keepdims=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axes[0],
                xticklabels=classes, yticklabels=classes)
    sns.heatmap(normalised, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=axes[1],
                xticklabels=classes, yticklabels=classes)
    for ax, title in zip(axes, ("counts", "share of each true class")):
        ax.set(xlabel="predicted class", ylabel="true class", title=title)
        ax.tick_params(axis="x", rotation=30)
    return _finish(fig, save_as, caption)


@_figure
def roc_pr_curves(y_true, probabilities, classes, save_as=None, caption: str = ""):
    """One-vs-rest ROC and precision-recall curves per class (classes absent from the data are skipped)."""
    y_true = np.asarray(y_true)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, cls in enumerate(classes):
        positive = y_true == k
        if not positive.any() or positive.all():
            continue
        score, colour = probabilities[:, k], CLASS_COLOURS.get(cls)
        fpr, tpr, _ = roc_curve(positive, score)
        axes[0].plot(fpr, tpr, color=colour, label=f"{cls} (AUC {roc_auc_score(positive, score):.2f})")
        precision, recall, _ = precision_recall_curve(positive, score)
        axes[1].plot(recall, precision, color=colour, drawstyle="steps-post",
                     label=f"{cls} (AP {average_precision_score(positive, score):.2f})")
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate (sensitivity)",
                title="ROC, one class vs the rest")
    axes[1].set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", ylim=(0, 1.02),
                title="precision–recall, one class vs the rest")
    for ax in axes:
        ax.legend(fontsize=7)
    return _finish(fig, save_as, caption)


@_figure
def operating_point(is_positive, scores, point, name: str = "COVID", save_as=None, caption: str = ""):
    """One class's ROC and precision–recall curves with the threshold's point on each (`evaluation.OperatingPoint`)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    colour = CLASS_COLOURS.get(name)
    if np.asarray(is_positive).any() and not np.asarray(is_positive).all():
        fpr, tpr, _ = roc_curve(is_positive, scores)
        axes[0].plot(fpr, tpr, color=colour)
        precision, recall, _ = precision_recall_curve(is_positive, scores)
        axes[1].plot(recall, precision, color=colour, drawstyle="steps-post")
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes[0].plot(point.false_positive_rate, point.sensitivity, "o", color="black",
                 label=f"threshold {point.threshold:.2f}")
    axes[1].plot(point.sensitivity, point.ppv, "o", color="black", label=f"threshold {point.threshold:.2f}")
    axes[0].set(xlabel="false positive rate (1 − specificity)", ylabel="sensitivity", xlim=(-0.02, 1.02),
                ylim=(-0.02, 1.02), title=f"ROC, {name} vs the rest")
    axes[1].set(xlabel="recall (sensitivity)", ylabel="precision (PPV, at the test set's mix)", xlim=(-0.02, 1.02),
                ylim=(0, 1.02), title=f"precision–recall, {name} vs the rest")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, save_as, caption)


@_figure
def reliability_diagram(tables: dict, save_as=None, caption: str = ""):
    """Accuracy against confidence per bin for each {name: helpers.evaluation.reliability table}."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, table in tables.items():
        shown = table.dropna()
        ax.plot(shown["confidence"], shown["accuracy"], marker="o", label=name)
    ax.set(xlabel="confidence (highest probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title="Reliability")
    ax.legend(fontsize=8)
    return _finish(fig, save_as, caption)


@_figure
def mistakes_gallery(mistakes: pd.DataFrame, save_as=None, caption: str = ""):
    """The most confident wrong predictions, with true and predicted class."""
    n = max(1, len(mistakes))
    columns = min(4, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, item) in zip(axes.ravel(), mistakes.iterrows()):
        ax.imshow(load_grayscale(item["path"]), cmap="gray")
        ax.set_title(f"true {item['label']}\npredicted {item['predicted']} ({item['confidence']:.0%})", fontsize=8)
    if mistakes.empty:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    return _finish(fig, save_as, caption)


@_figure
def accuracy_over_time(curves: dict, threshold: float = 0.95, save_as=None, caption: str = ""):
    """Balanced accuracy on held-out images against training time (one-off tracing and evaluation not counted), one
    line per run ({name: `Run.held_out_curve()`}) with its interval as error bars and a band, and the threshold line:
    Paper B's time-to-95% figures, each run drawn at the resolution of its own held-out images (named in the legend),
    so that a curve on 18 images and one on thousands are not read alike."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, curve in curves.items():
        x, y, attrs = curve["train_seconds"], curve["balanced_accuracy"], curve.attrs
        label = name + (f" ({attrs['images']:,} held-out images)" if "images" in attrs else "")
        label += ", one-off time included" if attrs.get("one_off") == "not measured" else ""
        if {"low", "high"} <= set(curve.columns):
            line = ax.errorbar(x, y, yerr=[y - curve["low"], curve["high"] - y], marker="o", capsize=3, label=label)
            ax.fill_between(x, curve["low"], curve["high"], color=line[0].get_color(), alpha=0.12, linewidth=0)
        else:
            ax.plot(x, y, marker="o", label=label)
    ax.axhline(threshold, color="crimson", linestyle="--", linewidth=1, label=f"{threshold:.0%}")
    level = next((curve.attrs["level"] for curve in curves.values() if "level" in curve.attrs), None)
    ax.set(xlabel="training seconds (one-off tracing and evaluation not counted)",
           ylabel="balanced accuracy, held-out images", ylim=(0, 1.02),
           title=f"bars and bands: {level:.0%} Wilson intervals on each run's held-out images" if level else "")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    return _finish(fig, save_as, caption)


def _overlay(ax, image, heatmap=None, outline=None, alpha=0.45, cmap="jet"):
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    if heatmap is not None:
        ax.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if outline is not None and np.any(outline):
        ax.contour(outline, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


@_figure
def cam_overlays(pixels, maps, classes, probabilities, titles=None, outlines=None, alpha=0.45, cmap="jet",
                 save_as=None, caption: str = ""):
    """Paper B's Figure 5: each radiograph, then the map of every class laid over it (upsampled to the
    image, values 0–1), titled with that class's probability. `outlines` (e.g. a phantom's lesion mask)
    are drawn in white on the original."""
    n, k = len(pixels), len(classes)
    fig, axes = plt.subplots(n, k + 1, figsize=(2.3 * (k + 1), 2.4 * n), squeeze=False)
    for i, row in enumerate(axes):
        _overlay(row[0], pixels[i], outline=None if outlines is None else outlines[i])
        row[0].set_title(titles[i] if titles is not None else "image", fontsize=8)
        for c, ax in enumerate(row[1:]):
            _overlay(ax, pixels[i], maps[i, ..., c], alpha=alpha, cmap=cmap)
            ax.set_title(f"{classes[c]}: {probabilities[i, c]:.2f}", fontsize=8,
                         fontweight="bold" if c == int(np.argmax(probabilities[i])) else "normal")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap), ax=axes.ravel().tolist(), shrink=0.8, pad=0.02,
                 label="map (0 = no evidence for the class, 1 = the most)")
    return _finish(fig, save_as, caption, tight=False)


@_figure
def map_comparison(pixels, maps: dict, titles=None, outlines=None, alpha=0.45, cmap="jet", save_as=None,
                   caption: str = ""):
    """The same images under several models' maps (one column per model), e.g. clean against shortcut."""
    n = len(pixels)
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(2.5 * (len(maps) + 1), 2.5 * n), squeeze=False)
    for i, row in enumerate(axes):
        _overlay(row[0], pixels[i], outline=None if outlines is None else outlines[i])
        row[0].set_title(titles[i] if titles is not None else "image", fontsize=8)
        for ax, (name, model_maps) in zip(row[1:], maps.items()):
            _overlay(ax, pixels[i], model_maps[i], alpha=alpha, cmap=cmap)
            ax.set_title(name, fontsize=8)
    return _finish(fig, save_as, caption)


Figures.__doc__ += ("\n\n    Its figures, this module's functions with `caption` filled in: "
                    + ", ".join(sorted(_FIGURES)) + ".")
