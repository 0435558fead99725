"""The course's larger figures (CAM overlays, accuracy over training time, a run's evaluation figures, the explorers'),
so a notebook cell shows the idea and not thirty lines of matplotlib; small charts are drawn in the notebooks.

Plain functions: each returns its matplotlib Figure; with `save_as="name"` it is also written to
outputs/figures/name.png, which is where the main job's figures are collected. With `caption=` a figure carries a
footer saying what it shows (phantoms or real radiographs, ImageNet or random weights), so that a figure on a slide
cannot be mistaken for another kind: `caption(layout, *runs)` is that footer (`helpers.start()` returns the one for
the notebook's images as `course.caption`), e.g. `plots.cam_overlays(..., caption=plots.caption(layout, run))`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from helpers import config, files
from helpers.image_files import load_grayscale
from helpers.tasks import CLASSES

CLASS_COLOURS = dict(zip(CLASSES, sns.color_palette("colorblind", len(CLASSES))))


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


def _finish(fig, save_as, caption="", tight=True):
    if tight:
        fig.tight_layout()
    if caption:
        fig.text(0.5, -0.01, caption, ha="center", va="top", fontsize=7, color="dimgray")
    if save_as:
        with files.atomic_path(config.OUTPUT_DIR / "figures" / f"{save_as}.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return fig


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

