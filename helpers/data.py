"""Find the COVID-19 Radiography Database on disk, check every file, and index it.

Everything that reads the dataset goes through `find_dataset` (where is it, which layout) and
`scan_dataset` (which files are usable, what they are). The scan decodes every file once before any
training, so a bad file is reported here with its reason instead of killing an epoch later.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm.auto import tqdm

from helpers import config, files

# Canonical class names: the current Kaggle release's folder names, in label order.
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
TASK_CLASSES = {
    4: CLASSES,
    3: ("COVID", "Normal", "Viral Pneumonia"),
    2: ("COVID", "Normal"),
}
# A generated phantom set is a dataset folder holding this manifest (helpers.synthetic writes it).
MANIFEST_NAME = "phantom_manifest.json"

# Folder names seen in the current and older releases, compared after lower-casing and dropping
# separators ("COVID-19" → "covid19", "Viral Pneumonia" → "viralpneumonia").
_CLASS_ALIASES = {
    "covid": "COVID",
    "covid19": "COVID",
    "lungopacity": "Lung_Opacity",
    "normal": "Normal",
    "viralpneumonia": "Viral Pneumonia",
}
_OS_LITTER = {".ds_store", "thumbs.db", "desktop.ini", "icon\r"}
_METADATA_SUFFIXES = {".csv", ".xlsx", ".xls", ".txt", ".json", ".md", ".yml", ".yaml", ".html", ".pdf"}
_SEARCH_DEPTH = 6

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be reported, not padded with grey


class DatasetError(Exception):
    """The dataset cannot be used as found; the message says what was expected and what was found."""


class BadImageError(Exception):
    """One file cannot be decoded; the message is the reason shown in the scan report."""


def canonical_class(folder_name: str) -> str | None:
    """Map a class folder name from any release to its canonical class, or None if it is not one."""
    key = "".join(ch for ch in folder_name.lower() if ch.isalnum())
    return _CLASS_ALIASES.get(key)


def task_classes(task: int) -> tuple[str, ...]:
    if task not in TASK_CLASSES:
        raise ValueError(f"task must be one of {sorted(TASK_CLASSES)} (number of classes); found {task!r}")
    return TASK_CLASSES[task]


# --------------------------------------------------------------------------- layout discovery


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """Where each class's images (and masks, if any) live under one dataset folder."""

    root: Path  # the folder that holds the class folders
    layout: str  # "kaggle" (<Class>/images, <Class>/masks) or "flat" (<Class>/*.png)
    image_dirs: dict  # canonical class → folder of images
    mask_dirs: dict  # canonical class → folder of lung masks (absent in flat layouts)
    lesion_mask_dirs: dict  # canonical class → folder of lesion masks (generated phantoms only)
    folder_names: dict  # canonical class → folder name as found on disk

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c for c in CLASSES if c in self.image_dirs)

    @property
    def is_phantom(self) -> bool:
        return _is_phantom_folder(self.root)


def _is_phantom_folder(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).exists()


def _class_folders(folder: Path) -> dict:
    """Canonical class → subfolder, for the subfolders of `folder` whose names are classes."""
    found: dict = {}
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for child in children:
        cls = canonical_class(child.name)
        if cls is None:
            continue
        if cls in found:
            raise DatasetError(
                f"two folders in {folder} map to class {cls!r}: {found[cls].name!r} and {child.name!r}; "
                "expected one folder per class"
            )
        found[cls] = child
    return found


def _candidate_folders(root: Path, exclude: tuple[Path, ...]):
    """Breadth-first folders under root (root first); does not descend into class folders."""
    queue = [(root, 0)]
    excluded = {p.resolve() for p in exclude}
    while queue:
        folder, depth = queue.pop(0)
        if folder.resolve() in excluded:
            continue
        classes = _class_folders(folder)
        yield folder, classes
        if classes or depth >= _SEARCH_DEPTH:
            continue
        try:
            subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        queue.extend((p, depth + 1) for p in subfolders)


def find_dataset(root, classes=CLASSES, exclude=(), skip_phantoms: bool = False) -> DatasetLayout:
    """Locate the class folders under `root` in the current Kaggle layout or an older flat one.

    `exclude` lists folders not to search; `skip_phantoms` passes over generated phantom sets.

    Raises DatasetError naming what was expected and what was found when no layout matches or a
    class in `classes` is missing.
    """
    root = Path(root).expanduser()
    expected = ", ".join(classes)
    if not root.is_dir():
        raise DatasetError(f"expected a folder holding the dataset; {root} does not exist or is not a folder")

    best = None
    for folder, found in _candidate_folders(root, tuple(Path(p) for p in exclude)):
        if skip_phantoms and _is_phantom_folder(folder):
            continue
        if found and (best is None or len(found) > len(best[1])):
            best = (folder, found)
    if best is None:
        listing = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
        raise DatasetError(
            f"unknown layout under {root}: expected class folders named {expected} (or the older "
            "names COVID-19, NORMAL, Viral Pneumonia), each holding PNG images directly or in an "
            f"images/ subfolder; found {listing or 'an empty folder'}"
        )

    folder, found = best
    missing = [c for c in classes if c not in found]
    if missing:
        raise DatasetError(
            f"missing class(es) {', '.join(missing)} in {folder}: expected folders for {expected}; "
            f"found {', '.join(f'{c} ({p.name}/)' for c, p in found.items())}"
        )

    image_dirs, mask_dirs, lesion_dirs = {}, {}, {}
    for cls in classes:
        class_dir = found[cls]
        if (class_dir / "images").is_dir():
            image_dirs[cls] = class_dir / "images"
            if (class_dir / "masks").is_dir():
                mask_dirs[cls] = class_dir / "masks"
            if (class_dir / "lesion_masks").is_dir():
                lesion_dirs[cls] = class_dir / "lesion_masks"
        else:
            image_dirs[cls] = class_dir
    layout = "kaggle" if all((found[c] / "images").is_dir() for c in classes) else "flat"
    return DatasetLayout(
        root=folder,
        layout=layout,
        image_dirs=image_dirs,
        mask_dirs=mask_dirs,
        lesion_mask_dirs=lesion_dirs,
        folder_names={c: found[c].name for c in classes},
    )


# --------------------------------------------------------------------------- decoding one file


def is_ignored_file(path: Path) -> bool:
    """OS litter and metadata files: neither images nor errors, so they are not counted at all."""
    name = path.name.lower()
    return (
        name in _OS_LITTER
        or name.startswith("._")
        or name.startswith(".")
        or path.suffix.lower() in _METADATA_SUFFIXES
    )


def to_grayscale_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to 8-bit grayscale, scaling 16-bit and 32-bit data instead of clipping."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit PNGs open as I;16 (or I in older Pillow); map the full 0..65535 range onto 0..255.
        values = np.asarray(img, dtype=np.float64)
        return np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("LA", "PA", "RGBA", "P"):
        # Alpha carries no radiographic information; a palette must be expanded before conversion.
        img = img.convert("RGBA").convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _decode(path: Path):
    """(8-bit grayscale array, original mode, file format) of one file, or BadImageError with a reason."""
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty file (0 bytes)")
        with Image.open(path) as img:
            img.load()
            array = to_grayscale_array(img)
            mode, fmt = img.mode, img.format
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError("file not found" + (" (a link that leads nowhere)" if path.is_symlink() else "")) from None
    except IsADirectoryError:
        raise BadImageError("a folder, not an image file") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image: no image format recognised in its bytes") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large to decode safely: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadImageError("a link that loops back on itself") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise BadImageError("permission denied") from None
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt or unsupported"
        raise BadImageError(f"{kind} image data: {exc}") from None
    except (SyntaxError, ValueError) as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt or unsupported"
        raise BadImageError(f"{kind} image data: {exc}") from None
    if array.ndim != 2 or min(array.shape) == 0:
        raise BadImageError(f"decoded to an unusable array of shape {array.shape}")
    return array, mode, fmt


def load_grayscale(path, size: int | None = None) -> np.ndarray:
    """Decode an image file to an 8-bit grayscale array, optionally resized to size × size.

    Raises BadImageError with a human-readable reason for empty, truncated or non-image files.
    """
    array, _, _ = _decode(Path(path))
    if size is not None and array.shape != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))
    return array


def unlike_a_radiograph(array: np.ndarray) -> str | None:
    """Why an 8-bit grayscale image looks nothing like a chest radiograph, or None when nothing stands out.

    A model answers for any input: a 1×1 pixel, a flat gradient or a lung mask still gets a class. The checks are
    deliberately loose (every one of the course's real sample radiographs passes them by a wide margin).
    """
    height, width = array.shape
    if min(height, width) < 64:
        return f"is only {width}×{height} px"
    values = array.astype(np.float32)
    if values.std() < 10:
        return f"is almost uniform (grey levels spread by {values.std():.1f})"
    levels = len(np.unique(array))
    if levels < 16:
        return f"has only {levels} grey levels (a mask or a drawing?)"
    detail = np.abs(values[2:, 1:-1] + values[:-2, 1:-1] + values[1:-1, 2:] + values[1:-1, :-2]
                    - 4 * values[1:-1, 1:-1]).mean()
    if detail < 1.0:
        return "has no fine structure at all (a smooth gradient?)"
    if detail > 60:
        return "is mostly pixel noise"
    return None


def radiograph_doubt(path) -> str | None:
    """Why an image file looks nothing like a chest radiograph (`unlike_a_radiograph`), or None: also None for a
    file that cannot be read, whose error is reported where it is read."""
    try:
        return unlike_a_radiograph(load_grayscale(path))
    except BadImageError:
        return None


def inspect_image(path) -> dict:
    """Decode one file fully and describe it; the content hash is of the decoded grayscale pixels,
    so the same picture saved as RGB and as grayscale counts as a duplicate."""
    array, mode, fmt = _decode(Path(path))
    digest = hashlib.blake2b(array.tobytes(), digest_size=16)
    digest.update(str(array.shape).encode())
    return {
        "width": int(array.shape[1]),
        "height": int(array.shape[0]),
        "mode": mode,
        "format": fmt,
        "content_hash": digest.hexdigest(),
    }


# --------------------------------------------------------------------------- scanning the dataset

INDEX_COLUMNS = [
    "path", "relpath", "label", "mask_path", "lesion_mask_path",
    "width", "height", "mode", "format", "content_hash",
]


@dataclasses.dataclass
class ScanResult:
    """The usable images (`index`), the files skipped with their reasons, and how many were ignored."""

    layout: DatasetLayout
    index: pd.DataFrame
    skipped: list  # [{"path", "reason"}]
    ignored: int  # OS litter and metadata files, not counted as images

    def class_counts(self) -> dict:
        counts = self.index["label"].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.layout.classes}

    def duplicates(self) -> pd.DataFrame:
        return find_duplicates(self.index)

    def to_dict(self) -> dict:
        """The JSON report of `python -m helpers data check --json`."""
        dups = self.duplicates()
        index = self.index
        sizes = (index["width"].astype(str) + "x" + index["height"].astype(str)).value_counts()
        return {
            "root": str(self.layout.root),
            "layout": self.layout.layout,
            "phantom": self.layout.is_phantom,
            "classes": self.class_counts(),
            "total": int(len(index)),
            "modes": {k: int(v) for k, v in index["mode"].value_counts().items()},
            "formats": {str(k): int(v) for k, v in index["format"].value_counts().items()},
            "sizes": {k: int(v) for k, v in sizes.items()},
            "masks": {c: int(index.loc[index["label"] == c, "mask_path"].notna().sum())
                      for c in self.layout.classes},
            "duplicates": {
                "groups": int(dups["content_hash"].nunique()) if len(dups) else 0,
                "images": int(len(dups)),
                "groups_across_classes": int(
                    dups.groupby("content_hash")["label"].nunique().gt(1).sum()) if len(dups) else 0,
                "paths": [list(g["relpath"]) for _, g in dups.groupby("content_hash", sort=True)],
            },
            "skipped": list(self.skipped),
            "ignored": self.ignored,
        }


def list_image_files(folder: Path) -> tuple[list[Path], int]:
    """Candidate image files in a class folder (sorted) and how many OS/metadata files were ignored."""
    found, ignored = [], 0
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            continue
        if is_ignored_file(entry):
            ignored += 1
        else:
            found.append(entry)
    return found, ignored


def _companion(folder: Path | None, image: Path) -> str | None:
    if folder is None:
        return None
    candidate = folder / image.name
    return str(candidate) if candidate.exists() else None


def _inspect_or_reason(path: Path):
    try:
        return inspect_image(path), None
    except BadImageError as exc:
        return None, str(exc)


PROGRESS_FROM = 500  # images: a scan this large shows a progress bar unless told otherwise (a few seconds or more)


def scan_dataset(layout: DatasetLayout, workers: int | None = None, progress: bool | None = None) -> ScanResult:
    """Decode every candidate file once and build the index; bad files are skipped with a reason.

    `progress=None` shows a bar for scans of `PROGRESS_FROM` images or more: the real dataset's first scan takes
    minutes on a fresh VM.
    """
    jobs = []  # (class, path)
    ignored = 0
    for cls in layout.classes:
        found, n_ignored = list_image_files(layout.image_dirs[cls])
        ignored += n_ignored
        jobs.extend((cls, f) for f in found)

    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes with the GIL released
        results = list(_maybe_progress(pool.map(_inspect_or_reason, [p for _, p in jobs]), len(jobs),
                                       len(jobs) >= PROGRESS_FROM if progress is None else progress))

    rows, skipped = [], []
    for (cls, path), (info, reason) in zip(jobs, results):
        relpath = path.relative_to(layout.root).as_posix()
        if reason is not None:
            skipped.append({"path": relpath, "reason": reason})
            continue
        rows.append({
            "path": str(path),
            "relpath": relpath,
            "label": cls,
            "mask_path": _companion(layout.mask_dirs.get(cls), path),
            "lesion_mask_path": _companion(layout.lesion_mask_dirs.get(cls), path),
            **info,
        })
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    empty = [c for c in layout.classes if not (index["label"] == c).any()]
    if empty:
        raise DatasetError(
            f"class(es) {', '.join(empty)} have no usable images under {layout.root}: expected at "
            f"least one decodable image per class; skipped {len(skipped)} file(s), e.g. "
            f"{skipped[:3]}"
        )
    return ScanResult(layout=layout, index=index, skipped=skipped, ignored=ignored)


def listing_signature(layout: DatasetLayout) -> str:
    """Changes whenever a file is added, removed, renamed or rewritten under the class folders (a broken
    link or an unreadable entry counts as what it is, not as an error: the scan reports it)."""
    digest = hashlib.blake2b(digest_size=16)
    for cls in layout.classes:
        files_, _ = list_image_files(layout.image_dirs[cls])
        for path in files_:
            try:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError as exc:
                digest.update(f"{path}|{type(exc).__name__}\n".encode())
    return digest.hexdigest()


def contents_signature(layout: DatasetLayout) -> str:
    """Changes whenever a file's bytes (or its name) change, whatever its modification time: read, not decoded."""
    digest = hashlib.blake2b(digest_size=16)
    for cls in layout.classes:
        files_, _ = list_image_files(layout.image_dirs[cls])
        for path in files_:
            try:
                digest.update(f"{path}|{hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()}\n".encode())
            except OSError as exc:
                digest.update(f"{path}|{type(exc).__name__}\n".encode())
    return digest.hexdigest()


def scan_cached(layout: DatasetLayout, cache_dir=None, progress: bool | None = None) -> ScanResult:
    """`scan_dataset`, reused from a cache file while no file under the dataset has changed.

    The full dataset takes a while to decode, and every notebook needs the same index. The cache is keyed by the
    dataset's folder and checked against a listing of its files (names, sizes, modification times). When only the
    times changed (kagglehub extracting the same files again on a new Colab machine, the cache kept on Drive), the
    files' bytes are read, without decoding, and the scan is reused if every byte is as it was when it was made.
    """
    root_key = hashlib.blake2b(str(layout.root.resolve()).encode(), digest_size=6).hexdigest()
    cache = Path(cache_dir or config.OUTPUT_DIR / "cache") / f"scan-{layout.root.name}-{root_key}.json"
    signature = listing_signature(layout)
    stored = _read_cache(cache)
    if stored and stored.get("signature") == signature:
        return ScanResult(layout, pd.DataFrame(stored["index"], columns=INDEX_COLUMNS), stored["skipped"],
                          stored["ignored"])
    contents = contents_signature(layout)
    if stored and stored.get("contents") == contents:  # new times, same bytes: the same scan
        files.write_json(cache, {**stored, "signature": signature})
        return ScanResult(layout, pd.DataFrame(stored["index"], columns=INDEX_COLUMNS), stored["skipped"],
                          stored["ignored"])
    scan = scan_dataset(layout, progress=progress)
    files.write_json(cache, {"signature": signature, "contents": contents,
                             "index": scan.index.to_dict(orient="records"), "skipped": scan.skipped,
                             "ignored": scan.ignored})
    return scan


def _read_cache(path: Path):
    try:
        return files.read_json(path)
    except (OSError, ValueError):  # unreadable or half-written by an older version: scan again
        return None


def _maybe_progress(iterable, total: int, enabled: bool):
    return tqdm(iterable, total=total, desc="scanning images", unit="img") if enabled else iterable


def class_balance(index: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Images per class, their share, and the accuracy of always predicting the majority class."""
    counts = index["label"].value_counts().reindex(list(classes), fill_value=0)
    table = pd.DataFrame({"images": counts, "share": counts / counts.sum()})
    table.index.name = "class"
    table.attrs["majority_baseline"] = float(table["share"].max())
    table.attrs["imbalance_ratio"] = float(counts.max() / max(counts.min(), 1))
    return table


def sample_per_class(index: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to n rows of each class, drawn reproducibly (for statistics that need not see every image)."""
    shuffled = index.sample(frac=1.0, random_state=seed)
    chosen = shuffled.groupby("label", sort=True).head(n)
    return chosen.sort_values(["label", "relpath"]).reset_index(drop=True)


def class_folders(rows: pd.DataFrame, folder) -> Path:
    """`folder`/<class>/<n>.png links to exactly these images: the layout `keras.utils.image_dataset_from_directory`
    reads (the Kaggle layout also holds masks/, which it would otherwise read as images). Returns `folder`."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)  # links of an earlier call, to other images
    for i, row in enumerate(rows.itertuples()):
        target = folder / row.label / f"{i:06d}{Path(row.path).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(row.path), target)
    return folder


def find_duplicates(index: pd.DataFrame) -> pd.DataFrame:
    """Rows whose decoded pixels are identical to another row's, sorted by group."""
    counts = index["content_hash"].map(index["content_hash"].value_counts())
    return index[counts > 1].sort_values(["content_hash", "relpath"]).reset_index(drop=True)


def format_report(scan: ScanResult) -> str:
    """The human-readable report printed by `python -m helpers data check`."""
    report = scan.to_dict()
    kind = "generated phantom radiographs" if report["phantom"] else "the dataset"
    lines = [f"Checked {kind} at {report['root']} ({report['layout']} layout)", "",
             "Usable images per class:"]
    total = report["total"]
    for cls, n in report["classes"].items():
        share = n / total if total else 0.0
        masks = report["masks"][cls]
        lines.append(f"  {cls:<16} {n:>7,}  ({share:6.1%})   lung masks: {masks:,}")
    lines.append(f"  {'total':<16} {total:>7,}")
    lines.append("Image modes:   " + ", ".join(f"{m} {n:,}" for m, n in report["modes"].items()))
    lines.append("File formats:  " + ", ".join(f"{m} {n:,}" for m, n in report["formats"].items()))
    lines.append("Image sizes:   " + ", ".join(f"{s} {n:,}" for s, n in report["sizes"].items()))
    dup = report["duplicates"]
    lines.append(
        f"Duplicates:    {dup['images']:,} images in {dup['groups']:,} groups of identical pixels"
        f" ({dup['groups_across_classes']} groups span more than one class)"
    )
    for group in dup["paths"][:10]:
        lines.append("  = " + "  ==  ".join(group))
    if len(dup["paths"]) > 10:
        lines.append(f"  … and {len(dup['paths']) - 10} more groups (see --json)")
    lines.append(f"Ignored:       {report['ignored']} OS or metadata files (.DS_Store, ._*, *.csv, …)")
    lines.append(f"Skipped:       {len(report['skipped'])} file(s) that could not be decoded")
    for item in report["skipped"]:
        lines.append(f"  - {item['path']}: {item['reason']}")
    return "\n".join(lines)
