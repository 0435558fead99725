"""Phantom chest radiographs in the real dataset's folder layout, for running the course offline.

A phantom has a torso, two dark lung fields, ribs, spine and heart shadow, and one class-specific
finding whose position varies from image to image, but within zones of its class (COVID: the lower outer lungs;
Viral Pneumonia: streaks from both hila; Lung_Opacity: anywhere in one lung). So position is evidence: on the
demo phantoms, one fixed cell per class, learned from the training lesions, is on 77% of the test lesions at
4 × 4 (a random lung cell: 46%); see experiments/README.md. Judge maps against the class-keeping null of
`helpers.cam` (`Localisation.verdicts`), not against a random place in the lungs.
Unlike the real data, each phantom comes with a lesion mask, so class activation maps can be scored
against ground truth, and an optional planted shortcut (a corner marker on one class's images) lets
the course show a model that cheats. Same seed → byte-identical files.

Like the real dataset, the phantoms come from collections spread over the classes (`CLASS_COLLECTIONS`: COVID from
several, Normal mostly RSNA plus the paediatric Guangzhou set, Lung_Opacity from RSNA, Viral Pneumonia from Guangzhou),
named in the four metadata sheets of the real format (`COVID.metadata.xlsx`, …; read by `helpers.sources`). With
`collection_styles`, each collection also draws in its own acquisition style (`Collection`: exposure curve, grain,
collimation border, burnt-in tag), so that the pixels tell the collection, as they do in the real dataset. Without
it (the default), the pixels are those of earlier versions: the collections are only names in the sheets.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from PIL import Image

from helpers.tasks import CLASSES

DATASET_FOLDER = "COVID-19_Radiography_Dataset"
# A generated phantom set is a dataset folder holding this manifest (helpers.datasets tells phantoms by it).
MANIFEST_NAME = "phantom_manifest.json"
METADATA_NAME = "phantom_metadata.csv"
MARKER_VALUE = 247  # the marker's grey level (of 255)
# Bump when the drawing changes, so cached phantom sets are regenerated (2: marker stream; 3: metadata sheets)
GENERATOR_VERSION = 3
TAG_VALUE = 235  # a burnt-in tag's grey level


@dataclasses.dataclass(frozen=True)
class Collection:
    """A phantom collection: the URL its sheet gives, and its machines' acquisition style."""

    url: str
    gamma: float = 1.0  # exposure curve: out = 255 · (in / 255) ** gamma
    noise: float = 0.0  # grain: standard deviation, in grey levels
    border: float = 0.0  # collimation: this share of the size blacked out along every edge
    tag: str | None = None  # corner of a burnt-in text tag: "top-left", "bottom-left" or "bottom-right"


COLLECTIONS = {  # the COVID-only collections mark their images more than the big RSNA set; BIMCV looks most like RSNA
    "BIMCV": Collection("https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/", gamma=0.95, noise=3),
    "SIRM": Collection("https://sirm.org/category/senza-categoria/covid-19/", gamma=1.4, border=0.06,
                       tag="bottom-left"),
    "Hannover": Collection("https://github.com/ml-workgroup/covid-19-image-repository/tree/master/png",
                           gamma=1.6, noise=5, border=0.05),
    "GitHub ieee8023": Collection("https://github.com/ieee8023/covid-chestxray-dataset", gamma=1.25, noise=8,
                                  border=0.04, tag="bottom-right"),
    "RSNA": Collection("https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data", noise=2),
    "Guangzhou": Collection("https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia", gamma=0.8,
                            tag="top-left"),
}
# Each class's share of images per collection, shaped like the real dataset's (BIMCV the largest COVID source).
CLASS_COLLECTIONS = {
    "COVID": {"BIMCV": 0.5, "SIRM": 0.2, "Hannover": 0.15, "GitHub ieee8023": 0.15},
    "Lung_Opacity": {"RSNA": 1.0},
    "Normal": {"RSNA": 0.87, "Guangzhou": 0.13},
    "Viral Pneumonia": {"Guangzhou": 1.0},
}
SHEET_NAMES = {"Normal": "NORMAL-{n}"}  # the real Normal sheet spells its names the older way


def _ellipse_distance(yy, xx, cy, cx, ry, rx):
    """Normalised elliptical radius: < 1 inside the ellipse."""
    return np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)


def _soft_inside(distance, edge=0.08):
    """A smooth 0..1 step that is 1 inside (distance < 1) and fades out over `edge`."""
    return 0.5 * (1.0 - np.tanh((distance - 1.0) / (2.0 * edge)))


def _smooth_noise(rng, size, cells, amplitude):
    """Low-frequency texture: a coarse random grid upsampled to the image size."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
    return amplitude * np.asarray(image)


def _blob(yy, xx, cy, cx, sigma, sharpness=1.0):
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
    return np.exp(-(r2**sharpness))


def _finding(cls, rng, yy, xx, lungs):
    """Class-specific finding intensity (0..~1), at a random position within its class's zone of the lungs."""
    finding = np.zeros_like(yy)
    if cls == "COVID":  # bilateral, peripheral, lower-zone, hazy (ground-glass-like) opacities
        for (cy, cx, ry, rx), side in zip(lungs, (-1, 1)):
            for _ in range(rng.integers(1, 3)):
                by = cy + ry * rng.uniform(-0.1, 0.6)
                bx = cx + side * rx * rng.uniform(0.45, 0.8)
                finding += 0.7 * _blob(yy, xx, by, bx, rng.uniform(0.035, 0.055))
    elif cls == "Lung_Opacity":  # one dense, well-defined patch in one lung
        cy, cx, ry, rx = lungs[rng.integers(0, 2)]
        by = cy + ry * rng.uniform(-0.55, 0.55)
        bx = cx + rx * rng.uniform(-0.5, 0.5)
        finding += 0.9 * _blob(yy, xx, by, bx, rng.uniform(0.03, 0.045), sharpness=2.0)
    elif cls == "Viral Pneumonia":  # diffuse bilateral streaks radiating from the hila
        for (cy, cx, ry, rx), side in zip(lungs, (-1, 1)):
            hy, hx = cy + ry * rng.uniform(-0.15, 0.15), cx - side * rx * 0.55
            for _ in range(rng.integers(5, 8)):
                angle = rng.uniform(-1.1, 1.1) + (0.0 if side > 0 else np.pi)
                length = rng.uniform(0.5, 0.9) * rx * 1.8
                dy, dx = np.sin(angle), np.cos(angle)
                along = (yy - hy) * dy + (xx - hx) * dx
                across = -(yy - hy) * dx + (xx - hx) * dy
                on_segment = (along > 0) & (along < length)
                finding += 0.45 * on_segment * np.exp(-(across / 0.006) ** 2)
    return finding


def render_phantom(cls: str, rng: np.random.Generator, size: int, marker: bool = False):
    """One phantom: (image uint8, lung mask bool, lesion mask bool), all size × size."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {CLASSES}; found {cls!r}")
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    jitter = lambda scale: rng.uniform(-scale, scale)  # noqa: E731

    torso = _soft_inside(_ellipse_distance(yy, xx, 0.6 + jitter(0.02), 0.5 + jitter(0.02),
                                           0.52, 0.44 + jitter(0.02)), edge=0.04)
    image = 0.06 + 0.5 * torso

    # Posterior ribs: arcs that droop towards the sides, faint, across the whole torso.
    for k in range(9):
        y0 = 0.2 + 0.07 * k + jitter(0.005)
        curve = y0 + 0.09 * ((xx - 0.5) / 0.4) ** 2
        image += 0.07 * torso * np.exp(-(((yy - curve) / 0.011) ** 2)) * (np.abs(xx - 0.5) > 0.04)

    lungs = (
        (0.46 + jitter(0.02), 0.31 + jitter(0.015), 0.27 + jitter(0.02), 0.13 + jitter(0.01)),
        (0.46 + jitter(0.02), 0.69 + jitter(0.015), 0.25 + jitter(0.02), 0.12 + jitter(0.01)),
    )
    lung_distance = np.minimum(*(_ellipse_distance(yy, xx, *lung) for lung in lungs))
    lung_field = _soft_inside(lung_distance, edge=0.05)
    image -= 0.33 * lung_field

    heart = _soft_inside(_ellipse_distance(yy, xx, 0.63 + jitter(0.02), 0.56 + jitter(0.02),
                                           0.13, 0.14 + jitter(0.015)), edge=0.06)
    image += 0.25 * heart
    image += 0.22 * torso * np.exp(-(((xx - 0.5) / 0.028) ** 2))  # spine
    image += _smooth_noise(rng, size, cells=9, amplitude=0.025)

    finding = _finding(cls, rng, yy, xx, lungs) * lung_field
    image += 0.35 * finding
    lesion_mask = (finding > 0.2) & (lung_distance < 1.0)

    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-0.04, 0.04)
    image = image * gain + offset + rng.normal(0.0, 0.012, image.shape)
    pixels = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    if marker:
        pixels[marker_mask(size)] = MARKER_VALUE
    return pixels, lung_distance < 1.0, lesion_mask


def tag_mask(size: int, corner: str) -> np.ndarray:
    """Where a collection's burnt-in tag sits: three letter-like bars in a corner, outside the lungs."""
    mask = np.zeros((size, size), bool)
    height, width, inset = max(3, size // 18), max(6, size // 7), max(1, size // 16)
    top = inset if corner.startswith("top") else size - inset - height
    left = inset if corner.endswith("left") else size - inset - width
    bar = max(1, width // 6)
    for k in range(3):
        mask[top:top + height, left + 2 * k * bar:left + (2 * k + 1) * bar] = True
    return mask


def apply_style(pixels: np.ndarray, style: Collection, rng: np.random.Generator) -> np.ndarray:
    """A uint8 image as drawn by a collection's machines: exposure curve, grain, collimation border, tag."""
    image = 255.0 * (pixels.astype(np.float64) / 255.0) ** style.gamma
    if style.noise:
        image += rng.normal(0.0, style.noise, image.shape)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if style.border:
        b = max(1, round(style.border * out.shape[0]))
        out[:b], out[-b:], out[:, :b], out[:, -b:] = 0, 0, 0, 0
    if style.tag:
        out[tag_mask(out.shape[0], style.tag)] = TAG_VALUE
    return out


def assign_collections(cls: str, per_class: int, seed: int = 0) -> list:
    """The collection of each of a class's images 1..per_class: shares as in `CLASS_COLLECTIONS`, order shuffled."""
    shares = CLASS_COLLECTIONS[cls]
    counts = np.floor(np.array(list(shares.values())) * per_class).astype(int)
    remainders = np.array(list(shares.values())) * per_class - counts
    counts[np.argsort(-remainders, kind="stable")[:per_class - counts.sum()]] += 1  # largest remainders
    names = np.repeat(list(shares), counts)
    return list(np.random.default_rng([seed, CLASSES.index(cls), 2]).permutation(names))


def write_sheet(path: Path, rows) -> None:
    """A metadata sheet in the real dataset's format (columns FILE NAME, FORMAT, SIZE, URL), byte-identical for
    identical rows: the workbook's and the archive's timestamps are fixed."""
    book = Workbook()
    book.active.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
    for row in rows:
        book.active.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    fixed = "2021-03-01T00:00:00Z"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as sheet:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*", rb"\g<1>" + fixed.encode(), data)
            sheet.writestr(zipfile.ZipInfo(info.filename, date_time=(2021, 3, 1, 0, 0, 0)), data,
                           compress_type=zipfile.ZIP_DEFLATED)


def marker_mask(size: int, margin: int = 0) -> np.ndarray:
    """Where the planted shortcut sits: a bright laterality-style tag in the top-right corner, outside the lungs.

    With `margin`, the box grows by that many pixels on each side (within the image): the marker's
    neighbourhood, for maps too coarse to fall on a box this small.
    """
    m0, m1 = int(0.05 * size), max(int(0.05 * size) + 2, int(0.12 * size))
    mask = np.zeros((size, size), bool)
    mask[max(0, m0 - margin):m1 + margin, max(0, size - m1 - margin):size - m0 + margin] = True
    return mask


def add_marker(images) -> np.ndarray:
    """A copy of uint8 images (..., H, W) with the shortcut marker drawn in: the test of whether a model
    has learned the marker instead of the finding (a Normal image with a marker should stay Normal)."""
    images = np.array(images, dtype=np.uint8, copy=True)
    images[..., marker_mask(images.shape[-1])] = MARKER_VALUE
    return images


def _save_png(array, path: Path):
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def generate_phantoms(
    out,
    per_class: int = 250,
    size: int = 299,
    seed: int = 0,
    shortcut_class: str | None = None,
    shortcut_rate: float = 1.0,
    classes=CLASSES,
    collection_styles: bool = False,
) -> Path:
    """Write a phantom dataset under `out` in the real layout and return its dataset folder.

    `out/COVID-19_Radiography_Dataset/<Class>/{images,masks,lesion_masks}/<Class>-<n>.png`, plus a
    manifest of the parameters, a per-image metadata CSV and the four metadata sheets (`<Class>.metadata.xlsx`)
    at the dataset folder's top. With `shortcut_class`, that fraction (`shortcut_rate`) of its images carries a
    corner marker. With `collection_styles`, each image is drawn in its collection's style (`apply_style`).
    """
    if per_class < 1 or size < 32:
        raise ValueError(f"need per_class >= 1 and size >= 32; found per_class={per_class}, size={size}")
    if shortcut_class is not None and shortcut_class not in classes:
        raise ValueError(f"shortcut_class must be one of {classes}; found {shortcut_class!r}")
    root = Path(out) / DATASET_FOLDER
    if root.exists() and not (root / MANIFEST_NAME).exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and was not made by this generator (it has no {MANIFEST_NAME}); it "
                              "may be the real dataset: choose another folder for phantoms")
    building = root.with_name(f".{DATASET_FOLDER}.partial")  # renamed into place when complete: an interrupted
    shutil.rmtree(building, ignore_errors=True)  # generation never leaves a set that looks finished
    records = []
    for class_index, cls in enumerate(CLASSES):
        if cls not in classes:
            continue
        folders = {kind: building / cls / kind for kind in ("images", "masks", "lesion_masks")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        sources, sheet_rows = assign_collections(cls, per_class, seed), []
        for n in range(1, per_class + 1):
            rng = np.random.default_rng([seed, class_index, n])
            # The marker is decided on its own stream: a marked image is its clean twin plus the marker, nothing else
            marker_draw = np.random.default_rng([seed, class_index, n, 1]).uniform()
            marker = cls == shortcut_class and marker_draw < shortcut_rate
            image, lungs, lesion = render_phantom(cls, rng, size)
            if collection_styles:  # on its own stream too: a styled image is its plain twin, restyled
                image = apply_style(image, COLLECTIONS[sources[n - 1]],
                                    np.random.default_rng([seed, class_index, n, 3]))
            if marker:
                image = add_marker(image)
            name = f"{cls}-{n}.png"
            _save_png(image, folders["images"] / name)
            _save_png(lungs.astype(np.uint8) * 255, folders["masks"] / name)
            _save_png(lesion.astype(np.uint8) * 255, folders["lesion_masks"] / name)
            records.append({"relpath": f"{cls}/images/{name}", "label": cls, "source": sources[n - 1],
                            "lesion_fraction": round(float(lesion.mean()), 6), "marker": bool(marker)})
            sheet_rows.append((SHEET_NAMES.get(cls, f"{cls}-{{n}}").format(n=n), "PNG", f"{size}*{size}",
                               COLLECTIONS[sources[n - 1]].url))
        write_sheet(building / f"{cls}.metadata.xlsx", sheet_rows)
    pd.DataFrame(records).to_csv(building / METADATA_NAME, index=False)
    manifest = _manifest(per_class, size, seed, shortcut_class, shortcut_rate, classes, collection_styles)
    (building / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)  # an older phantom set (checked above)
    building.rename(root)
    return root


def _manifest(per_class, size, seed, shortcut_class, shortcut_rate, classes, collection_styles=False) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "shortcut_class": shortcut_class,
        "shortcut_rate": shortcut_rate,
        "classes": list(classes),
        "collection_styles": bool(collection_styles),
    }


def ensure_phantoms(out, per_class: int, size: int, seed: int = 0, **options) -> Path:
    """Reuse a phantom set with exactly these parameters under `out`, or generate it."""
    root = Path(out) / DATASET_FOLDER
    wanted = _manifest(per_class, size, seed, options.get("shortcut_class"),
                       options.get("shortcut_rate", 1.0), options.get("classes", CLASSES),
                       options.get("collection_styles", False))
    manifest = root / MANIFEST_NAME
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        return root
    return generate_phantoms(out, per_class=per_class, size=size, seed=seed, **options)
