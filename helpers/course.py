"""What the notebooks and the main job share: which data this run uses, its scan, its saved splits,
and executing the notebook sequence.

`course_dataset()` answers "which images does this run look at?" the same way everywhere: the real
dataset if it is in data/, otherwise a generated phantom set sized by the active profile.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.data import (
    INDEX_COLUMNS,
    DatasetError,
    DatasetLayout,
    ScanResult,
    download_dataset,
    find_dataset,
    find_real_dataset,
    format_report,
    list_image_files,
    scan_dataset,
    task_classes,
)
from helpers.splits import load_split, make_split, save_split
from helpers.synthetic import MANIFEST_NAME, ensure_phantoms

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"


def course_dataset(profile: config.Profile | None = None, download: bool = False) -> DatasetLayout:
    """The real dataset under data/ if present, else the profile's phantom set (generated once).

    With `download`, a missing real dataset is first fetched through kagglehub (the public dataset
    needs no credentials); if that fails, the reason is printed and phantoms stand in.
    """
    profile = profile or config.active_profile()
    real = find_real_dataset()
    if real is not None:
        return real
    if download:
        try:
            return find_dataset(download_dataset())
        except DatasetError as exc:
            print(f"Using generated phantoms instead of the real dataset: {str(exc).splitlines()[0]}")
    return phantom_dataset(profile)


def phantom_dataset(profile: config.Profile | None = None) -> DatasetLayout:
    """The profile's phantom set (generated once), whether or not the real dataset is present."""
    profile = profile or config.active_profile()
    folder = config.PHANTOM_DIR / f"{profile.phantom_size}px-{profile.phantom_per_class}-per-class"
    root = ensure_phantoms(folder, per_class=profile.phantom_per_class, size=profile.phantom_size, seed=0)
    return find_dataset(root)


def shortcut_dataset(profile: config.Profile | None = None, shortcut_class: str = "COVID") -> DatasetLayout:
    """The profile's phantom set again, but with a corner marker on every `shortcut_class` image: a planted
    shortcut, to see whether a model (and its maps) take the marker instead of the finding."""
    profile = profile or config.active_profile()
    name = f"{profile.phantom_size}px-{profile.phantom_per_class}-per-class-shortcut-{shortcut_class}"
    root = ensure_phantoms(config.PHANTOM_DIR / name.replace(" ", "_"), per_class=profile.phantom_per_class,
                           size=profile.phantom_size, seed=0, shortcut_class=shortcut_class)
    return find_dataset(root)


def run_part(run_dir, scan: ScanResult, part: str = "test") -> pd.DataFrame:
    """One part of a run's own saved split, with the scan's mask paths (lungs; lesions on phantoms)."""
    from helpers.runs import read_settings

    settings = read_settings(run_dir)
    split = load_split(Path(run_dir) / "split.csv", settings["data_root"])
    rows = split[(split["split"] == part) & (split["repeat"] == split["repeat"].min())]
    if rows.empty:
        raise ValueError(f"{run_dir}'s split has no '{part}' images; it has {sorted(split['split'].unique())}")
    masks = scan.index[["relpath", "mask_path", "lesion_mask_path"]]
    return rows[["relpath", "path", "label"]].merge(masks, on="relpath", how="left").reset_index(drop=True)


def data_statement(layout: DatasetLayout) -> str:
    """One plain sentence on which images a notebook is looking at."""
    if layout.is_phantom:
        return (f"This run uses GENERATED PHANTOM radiographs ({layout.root}), not the real dataset: "
                "every count, figure and accuracy below describes the phantoms only.")
    return f"This run uses the real COVID-19 Radiography Database found at {layout.root}."


def dataset_tag(layout: DatasetLayout) -> str:
    """A short name for a dataset folder, so caches and splits of different datasets never mix."""
    if layout.is_phantom:
        manifest = json.loads((layout.root / MANIFEST_NAME).read_text())
        return "phantom-{size}px-{per_class}x-seed{seed}".format(**manifest) + (
            f"-shortcut-{manifest['shortcut_class']}".replace(" ", "_") if manifest["shortcut_class"] else ""
        )
    return "dataset-" + hashlib.blake2b(str(layout.root.resolve()).encode(), digest_size=4).hexdigest()


def _listing_signature(layout: DatasetLayout) -> str:
    """Changes whenever a file is added, removed, renamed or rewritten under the class folders."""
    digest = hashlib.blake2b(digest_size=16)
    for cls in layout.classes:
        files, _ = list_image_files(layout.image_dirs[cls])
        for path in files:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def scan_cached(layout: DatasetLayout, cache_dir=None, progress: bool = False) -> ScanResult:
    """`scan_dataset`, reused from a cache file while no file under the dataset has changed.

    The full dataset takes a while to decode; every notebook needs the same index.
    """
    cache_dir = Path(cache_dir or config.OUTPUT_DIR / "cache")
    cache = cache_dir / f"scan-{dataset_tag(layout)}.json"
    signature = _listing_signature(layout)
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("signature") == signature:
            index = pd.DataFrame(stored["index"], columns=INDEX_COLUMNS)
            return ScanResult(layout, index, stored["skipped"], stored["ignored"])
    scan = scan_dataset(layout, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    payload = {"signature": signature, "index": scan.index.to_dict(orient="records"),
               "skipped": scan.skipped, "ignored": scan.ignored}
    cache.write_text(json.dumps(payload))
    return scan


def _subsample_size(mode: str) -> int | None:
    """Paper B's images per class in the active profile (None: the paper's 900 in all)."""
    return config.active_profile().subsample_per_class if mode == "paper_b" else None


def split_file(layout: DatasetLayout, mode: str, task: int, seed: int = 0) -> Path:
    size = _subsample_size(mode)
    name = f"{mode}_task{task}_seed{seed}" + (f"_{size}-per-class" if size else "") + ".csv"
    return config.OUTPUT_DIR / "splits" / dataset_tag(layout) / name


def course_split(scan: ScanResult, mode: str = "paper_a", task: int = 4, seed: int = 0,
                 **options) -> pd.DataFrame:
    """The saved split for this dataset, mode, task and seed; made and written on first use.

    Reusing the file is what guarantees that evaluation sees exactly the test set training never saw.
    Paper B's sub-samples take the profile's size (`subsample_per_class`; the paper's 900 images in the
    full profile). A split with other `options` (e.g. n_per_class) is made fresh and not saved.
    """
    path = split_file(scan.layout, mode, task, seed)
    if path.exists() and not options:
        split = load_split(path, scan.layout.root)
        if set(split["relpath"]) <= set(scan.index["relpath"]):
            return split
    size = _subsample_size(mode)
    if size:  # the profile's size is an upper bound: a small dataset gives what it has
        distinct = scan.index[scan.index["label"].isin(task_classes(task))].drop_duplicates("content_hash")
        size = min(size, int(distinct["label"].value_counts().min()))
    split = make_split(scan.index, mode=mode, task=task, seed=seed,
                       **(options or ({"n_per_class": size} if size else {})))
    if not options:
        save_split(split, path)
    split["path"] = [str(scan.layout.root / p) for p in split["relpath"]]
    return split


def run_folder(layout: DatasetLayout, recipe: str, task: int = 4, split_mode: str = "paper_a", repeat: int = 0,
               profile: config.Profile | None = None) -> Path:
    """Where the course keeps a run: one per dataset, profile, recipe, task and (Paper B) sub-sample."""
    profile = profile or config.active_profile()
    name = f"{recipe}_task{task}" + (f"_subsample{repeat}" if split_mode == "paper_b" else "")
    return config.OUTPUT_DIR / "runs" / dataset_tag(layout) / profile.name / name


def ensure_run(layout: DatasetLayout, recipe: str, task: int = 4, split_mode: str = "paper_a", repeat: int = 0,
               log=print) -> Path:
    """The course's trained run of `recipe`: trained now if missing, resumed if interrupted, else reused.

    This is how every notebook after 03 gets a trained model without depending on having run 03.
    """
    from helpers.training import train_run

    folder = run_folder(layout, recipe, task, split_mode, repeat)
    train_run(folder, layout.root, recipe=recipe, task=task, split_mode=split_mode, repeat=repeat, log=log)
    return folder


def paper_b_cross_validation(layout: DatasetLayout, task: int, repeats: int = 3, log=print):
    """Paper B's random sub-sample cross-validation: one paper_b run per balanced sub-sample, each tested
    on its own 10%. Returns (run folders, one row per repeat with test accuracy and time to 95%)."""
    from helpers.runs import read_settings
    from helpers.training import read_history, time_to_accuracy

    folders, rows = [], []
    for repeat in range(repeats):
        folder = ensure_run(layout, "paper_b", task, split_mode="paper_b", repeat=repeat, log=log)
        settings, history = read_settings(folder), read_history(folder)
        folders.append(folder)
        rows.append({"repeat": repeat, "test accuracy": settings["validation"]["accuracy"],
                     "epochs": settings["epochs_run"], "seconds": float(history["elapsed_seconds"].iloc[-1]),
                     "seconds to 95%": time_to_accuracy(history, 0.95)})
    return folders, pd.DataFrame(rows).set_index("repeat")


def notebooks(folder=None) -> list[Path]:
    """The numbered notebooks of the course, in order."""
    return sorted(Path(folder or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(source: Path, target: Path, timeout: int = 3600) -> float:
    """Run one notebook top to bottom with the current Python's kernel; returns seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(source, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}})
    try:
        client.execute()
    finally:
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target)
    return time.perf_counter() - started


# Splits the main job prepares, so every notebook and CLI command finds them already made.
COURSE_SPLITS = (("paper_a", 4), ("paper_b", 3), ("paper_b", 2))


def run_course(log=print) -> dict:
    """The main job: pick the data, check it, save the splits, then execute every notebook in order.

    Executed notebooks land in outputs/notebooks/; a failing notebook stops the run (and is saved
    with its error for inspection).
    """
    out = config.OUTPUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    profile = config.active_profile()
    log(profile.describe())
    layout = course_dataset(profile)
    log(data_statement(layout))
    scan = scan_cached(layout, progress=True)
    report = format_report(scan)
    log(report)
    (out / "data_check.txt").write_text(report + "\n")
    (out / "data_check.json").write_text(json.dumps(scan.to_dict(), indent=2) + "\n")

    summary = {"profile": profile.name, "profile_reason": profile.reason, "data_root": str(layout.root),
               "phantom": layout.is_phantom, "splits": {}, "notebooks": {}}
    for mode, task in COURSE_SPLITS:
        split = course_split(scan, mode=mode, task=task)
        path = split_file(layout, mode, task)
        counts = {f"repeat {r}": part.groupby("split").size().to_dict()
                  for r, part in split.groupby("repeat")}
        summary["splits"][path.name] = counts
        shown = counts["repeat 0"] if len(counts) == 1 else f"{len(counts)} repeats of {counts['repeat 0']}"
        log(f"Split {mode}, {task} classes: {shown} → {path}")

    for source in notebooks():
        target = out / "notebooks" / source.name
        log(f"Executing {source.name} …")
        seconds = execute_notebook(source, target)
        summary["notebooks"][source.name] = round(seconds, 1)
        log(f"  done in {seconds:.0f} s → {target}")
    if not notebooks():
        log("No notebooks yet: the main job prepared and checked the data only.")
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- Colab links

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_COLAB_URL = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/")
_GIT_URL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+")


def colab_url(notebook_name: str) -> str:
    return f"https://colab.research.google.com/github/{config.REPOSITORY}/blob/main/notebooks/{notebook_name}"


def colab_badge(notebook_name: str) -> str:
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook_name)})"


def install_url() -> str:
    """What the notebooks' Colab setup cell pip-installs."""
    return f"git+https://github.com/{config.REPOSITORY}"


def sync_links(write: bool = True) -> list[Path]:
    """Point every Colab badge and setup cell (notebooks and README) at `config.REPOSITORY`.

    Returns the files that were (or, with write=False, would be) changed.
    """
    colab = f"https://colab.research.google.com/github/{config.REPOSITORY}/blob/main/"
    changed = []
    for path in [*notebooks(), config.REPO_ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        updated = _GIT_URL.sub(install_url(), _COLAB_URL.sub(colab, text))
        if updated != text:
            changed.append(path)
            if write:
                path.write_text(updated, encoding="utf-8")
    return changed
