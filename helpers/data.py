"""The scan of a dataset: every file decoded once, cached, reported, and indexed.

`scan_dataset` says which files are usable and what they are; it decodes every file once before any training, so
a bad file is reported here with its reason instead of killing an epoch later. `scan_cached` reuses a scan while
no file has changed. The index it builds is a table with one row per usable image; the functions at the end of
this module count, sample and group its rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from helpers import config, files
from helpers.datasets import DatasetError, DatasetLayout
from helpers.image_files import BadImageError, inspect_image, list_image_files
from helpers.sources import image_sources
from helpers.tasks import CLASSES

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

    @property
    def table(self) -> pd.DataFrame:
        """One row per class: its usable images, their share, and how many have a lung mask."""
        counts = pd.Series(self.class_counts(), dtype=int)
        masks = self.index["mask_path"].notna().groupby(self.index["label"]).sum()
        return pd.DataFrame({"images": counts, "share": counts / max(int(counts.sum()), 1),
                             "lung masks": masks.reindex(counts.index, fill_value=0).astype(int)})

    def describe(self) -> str:
        """The usable images per class, the duplicates, and the files left out, in two lines (`str()` is the full
        report)."""
        table, duplicates = self.table, self.duplicates()
        return (f"{int(table['images'].sum()):,} usable images in {len(table)} classes: "
                + ", ".join(f"{c} {n:,}" for c, n in table["images"].items()) + ".\n"
                f"{len(duplicates):,} images in groups of identical pixels; {len(self.skipped)} file(s) skipped "
                f"as unreadable, {self.ignored} ignored (OS or metadata files).")

    def __str__(self) -> str:
        """`print(scan)` shows its report (`format_report`), as `python -m helpers data check` does."""
        return format_report(self)

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


def class_folders(rows: pd.DataFrame, folder=None) -> Path:
    """`folder`/<class>/<n>.png links to exactly these images: the layout `keras.utils.image_dataset_from_directory`
    reads (the Kaggle layout also holds masks/, which it would otherwise read as images). Returns `folder`: by default
    one under the outputs named after these images, so that other rows never share it."""
    if folder is None:
        key = hashlib.blake2b("\n".join(map(str, rows["path"])).encode(), digest_size=6).hexdigest()
        folder = config.OUTPUT_DIR / "class-folders" / key
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


def format_report(scan: ScanResult, sources=None) -> str:
    """The human-readable report printed by `python -m helpers data check`, ending with the images per class and
    source (`sources`, a `helpers.sources.Sources`; read from the metadata sheets beside the class folders if None)."""
    sources = sources if sources is not None else image_sources(scan.index, scan.layout.root)
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
    lines.append(sources.describe())
    return "\n".join(lines)
