"""Seeded, stratified, duplicate-aware splits, written to CSV so every notebook reuses the same test set.

Identical images (same content hash) always land in the same split: the dataset has no patient IDs,
so content identity is the strongest guard against the same picture being trained on and tested on.

Which side a group lands on depends on its files' names, labels and the duplicate structure, never on its pixels:
two sets with the same files (the clean and the shortcut phantoms, whose marked images hash differently) split
identically, so a model trained on one can be tested on the other's test images without seeing them in training.

The split is made here with scikit-learn's `train_test_split` over groups of identical images. Its
`GroupShuffleSplit` and `StratifiedGroupKFold` were weighed: the first does not stratify, the second only
approximates the proportions (fold by fold) and cannot give an 80:10:10 split in one call; neither is simpler,
and switching would change every saved split.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from helpers import config, files
from helpers.data import ScanResult
from helpers.tasks import task_classes

SPLIT_COLUMNS = ["relpath", "label", "split", "repeat", "content_hash"]
MODES = ("paper_a", "paper_b")
# Bump when the way splits are made or saved changes, so saved ones are made again (3: groups by name;
# 4: a sidecar with a checksum, without which a saved split is not trusted).
SPLIT_FORMAT = 4
LEFTOVER_SECONDS = 60  # a split is written in well under a second: an older temporary file is a killed write's


def _groups(index: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct image content, with the label and name (`key`) of its first file by relpath, in key
    order: ordered by name, not by hash, so that the split does not depend on pixel content (see the module)."""
    ordered = index.sort_values("relpath", kind="stable")
    groups = ordered.groupby("content_hash", sort=False).agg(label=("label", "first"), key=("relpath", "first"))
    return groups.reset_index().sort_values("key", kind="stable").reset_index(drop=True)


def _split_groups(groups: pd.DataFrame, fraction: float, seed: int):
    """Stratified split of groups; falls back to unstratified when a class is too small to stratify."""
    if fraction <= 0:
        return groups, groups.iloc[0:0]
    n_holdout = max(1, int(round(fraction * len(groups))))
    counts = groups["label"].value_counts()
    can_stratify = counts.min() >= 2 and n_holdout >= counts.size and len(groups) - n_holdout >= counts.size
    keep, holdout = train_test_split(
        groups, test_size=n_holdout, random_state=seed,
        stratify=groups["label"] if can_stratify else None,
    )
    return keep, holdout


def _assign(index: pd.DataFrame, parts: dict, repeat: int) -> pd.DataFrame:
    split_of = {h: name for name, part in parts.items() for h in part["content_hash"]}
    out = index[index["content_hash"].isin(split_of)].copy()
    out["split"] = out["content_hash"].map(split_of)
    out["repeat"] = repeat
    order = {"train": 0, "val": 1, "test": 2}
    out["_order"] = out["split"].map(order)
    out = out.sort_values(["_order", "label", "relpath"]).drop(columns="_order")
    return out[SPLIT_COLUMNS].reset_index(drop=True)


def paper_a_split(index: pd.DataFrame, task: int = 4, test_size: float = 0.2, val_size: float = 0.1,
                  seed: int = 0) -> pd.DataFrame:
    """Paper A's 80:20 split, with a validation part carved out of the 80 for early stopping.

    Paper A stopped early on the same 20% it reported accuracy on; here `val_size` (a fraction of
    the whole) is taken from the training side so the test set never influences training.
    """
    classes = task_classes(task)
    groups = _groups(index[index["label"].isin(classes)])
    rest, test = _split_groups(groups, test_size, seed)
    train, val = _split_groups(rest, val_size / (1 - test_size) if val_size else 0, seed)
    subset = index[index["label"].isin(classes)]
    return _assign(subset, {"train": train, "val": val, "test": test}, repeat=0)


def paper_b_split(index: pd.DataFrame, task: int = 3, n_per_class: int | None = None, repeats: int = 3,
                  test_size: float = 0.1, val_size: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Paper B's random sub-sample cross-validation: `repeats` balanced draws, each split 90/10.

    Each repeat draws `n_per_class` distinct images per class (default: 900 in all, balanced),
    independently of the other repeats, so repeats may overlap as in random sub-sampling.
    """
    classes = task_classes(task)
    requested = n_per_class
    n_per_class = n_per_class or 900 // len(classes)
    # Exact duplicates add nothing to a balanced sub-sample: keep one file per distinct image.
    subset = index[index["label"].isin(classes)].sort_values("relpath").drop_duplicates("content_hash")
    groups = _groups(subset)
    available = groups["label"].value_counts()
    short = {c: int(available.get(c, 0)) for c in classes if available.get(c, 0) < n_per_class}
    if short and requested is None:
        # The default (Paper B's 900 images) does not fit a small set, e.g. phantoms: use what there is.
        n_per_class = min(short.values())
        warnings.warn(f"paper_b split: only {short} distinct images; using {n_per_class} per class "
                      f"instead of {900 // len(classes)}", stacklevel=2)
    elif short:
        raise ValueError(
            f"paper_b split needs {n_per_class} distinct images per class; found only {short}. "
            "Lower n_per_class or use more data."
        )
    parts = []
    for repeat in range(repeats):
        rng = np.random.default_rng([seed, repeat])
        drawn = pd.concat([
            g.iloc[rng.choice(len(g), size=n_per_class, replace=False)]
            for _, g in groups.groupby("label", sort=True)
        ])
        rest, test = _split_groups(drawn, test_size, seed + repeat)
        train, val = _split_groups(rest, val_size / (1 - test_size) if val_size else 0, seed + repeat)
        parts.append(_assign(subset, {"train": train, "val": val, "test": test}, repeat=repeat))
    return pd.concat(parts, ignore_index=True)


def make_split(index: pd.DataFrame, mode: str = "paper_a", task: int = 4, seed: int = 0, **options):
    """Dispatch to `paper_a_split` or `paper_b_split` by name (what the CLI and notebooks call)."""
    if mode == "paper_a":
        return paper_a_split(index, task=task, seed=seed, **options)
    if mode == "paper_b":
        return paper_b_split(index, task=task, seed=seed, **options)
    raise ValueError(f"split mode must be one of {MODES}; found {mode!r}")


def save_split(split: pd.DataFrame, path, made_for: dict | None = None) -> Path:
    """Write the split's CSV; with `made_for` (what it was made from) also a sidecar, `<name>.json`, holding that,
    the number of rows and a SHA-256 of the CSV, so that a damaged copy is never trusted (`check_saved_split`).

    The CSV is written as bytes with Unix line ends: the checksum is of exactly what is on disk, on every system.
    """
    path = Path(path)
    text = split[SPLIT_COLUMNS].to_csv(index=False, lineterminator="\n").encode("utf-8")
    with files.atomic_path(path) as tmp:
        tmp.write_bytes(text)
    if made_for is not None:  # after the CSV: a kill in between leaves a CSV without sidecar, which is remade
        files.write_json(sidecar_path(path), {"format": SPLIT_FORMAT, "made_for": made_for, "rows": len(split),
                                              "sha256": hashlib.sha256(text).hexdigest()})
    return path


def sidecar_path(path) -> Path:
    """Where `save_split` records what a split was made from and its checksum: beside it, `<name>.json`."""
    return Path(path).with_name(Path(path).name + ".json")


def _read_split(path) -> pd.DataFrame:
    split = pd.read_csv(path, dtype={"relpath": str, "label": str, "split": str, "content_hash": str})
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise ValueError(f"{path} is not a split file: expected columns {SPLIT_COLUMNS}; missing {missing}")
    return split


def _resolved(split: pd.DataFrame, dataset_root) -> pd.DataFrame:
    split["path"] = [str(Path(dataset_root) / p) for p in split["relpath"]]
    return split


def load_split(path, dataset_root) -> pd.DataFrame:
    """Read a saved split and resolve its paths against the dataset folder it was made from."""
    return _resolved(_read_split(path), dataset_root)


def check_saved_split(path, made_for: dict) -> tuple[pd.DataFrame | None, str | None]:
    """(split, None) if the file at `path` is whole and was made for `made_for`, else (None, what is wrong).

    A truncated, edited or half-synced CSV would otherwise be used as it is, training and testing on fewer or
    other images without a word; the sidecar written by `save_split` says what the file must be.
    """
    try:
        record = files.read_json(sidecar_path(path))
    except ValueError as exc:
        return None, f"its record {sidecar_path(path).name} is unreadable: {config.first_line(exc)}"
    if not isinstance(record, dict) or record.get("format") != SPLIT_FORMAT:
        return None, f"no record {sidecar_path(path).name} of what it holds"
    if record.get("made_for") != made_for:
        return None, f"it was made for {record.get('made_for')}, not {made_for}"
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    try:
        split = _read_split(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # EmptyDataError is a ValueError
        return None, f"it cannot be read: {config.first_line(exc)}"
    if len(split) != record.get("rows"):
        return None, f"{len(split)} rows instead of {record.get('rows')}"
    if digest != record.get("sha256"):
        return None, "its rows do not match their checksum"
    return split, None


def fingerprint(split: pd.DataFrame) -> str:
    """A short hash of which image sits in which part of which repeat: two splits with the same fingerprint
    train and test on the same images."""
    rows = zip(split["repeat"].astype(int), split["relpath"].astype(str), split["label"].astype(str),
               split["split"].astype(str))
    digest = hashlib.blake2b(digest_size=8)
    for row in sorted(rows):
        digest.update(("|".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def split_summary(split: pd.DataFrame) -> pd.DataFrame:
    """Images per class in each split (and repeat), the table the notebooks show."""
    table = split.pivot_table(index=["repeat", "split"], columns="label", values="relpath",
                              aggfunc="count", fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def sample_distinct(index: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to `per_class` distinct images of each class, drawn reproducibly, with every copy of a drawn image
    (so that the split can still keep identical images together)."""
    groups = _groups(index)
    chosen = groups.sample(frac=1.0, random_state=seed).groupby("label", sort=True).head(per_class)
    return index[index["content_hash"].isin(chosen["content_hash"])]


SIZES = {"paper_a": ("per_class",), "paper_b": ("n_per_class", "repeats")}  # what a caller may set in a plan


def split_plan(scan: ScanResult, mode: str = "paper_a", task: int = 4,
               profile: config.Profile | None = None, **sizes) -> dict:
    """The sizes a course split takes in this profile: real images per class for Paper A's split (a CPU cannot
    train on all of them), images per class in each of Paper B's sub-samples (the paper's 900 in all), each
    replaced by the caller's `sizes` (`SIZES` says which a mode takes)."""
    unknown = sorted(set(sizes) - set(SIZES.get(mode, ())))
    if unknown:
        raise ValueError(f"a {mode} split takes the sizes {SIZES.get(mode, ())}; found {unknown}")
    return {**_profile_plan(scan, mode, task, profile or config.active_profile()), **sizes}


def _profile_plan(scan: ScanResult, mode: str, task: int, profile: config.Profile) -> dict:
    if mode == "paper_b":
        distinct = scan.index[scan.index["label"].isin(task_classes(task))].drop_duplicates("content_hash")
        wanted = profile.subsample_per_class or 900 // len(task_classes(task))
        # a small dataset (e.g. phantoms) gives what it has
        return {"n_per_class": min(wanted, int(distinct["label"].value_counts().min())),
                "repeats": profile.subsample_repeats}
    if mode == "paper_a" and profile.real_per_class and not scan.layout.is_phantom:
        return {"per_class": profile.real_per_class}
    return {}


def split_key(index: pd.DataFrame, mode: str, task: int, seed: int, plan: dict) -> str:
    """A fingerprint of what a split is made from: the task's images (names, labels, pixel hashes), the mode,
    seed and sizes. Any change to the usable images, e.g. a file that was unreadable once, gives a new key."""
    rows = index.loc[index["label"].isin(task_classes(task)), ["relpath", "label", "content_hash"]]
    digest = hashlib.blake2b(f"{SPLIT_FORMAT}|{mode}|{task}|{seed}|{sorted(plan.items())}\n".encode(),
                             digest_size=6)
    for row in sorted(rows.itertuples(index=False)):
        digest.update("|".join(row).encode() + b"\n")
    return digest.hexdigest()


# The splits the notebooks train their runs on, (mode, task) → what uses it: an imported run on another split is
# used by none of them (`sharing` says so). Each is `saved_split(scan, mode, task)` in the active profile.
NOTEBOOK_SPLITS = {("paper_a", 4): "Paper A's 4-class split (notebooks 03, 04, 05)",
                   ("paper_a", 3): "Paper A's 3-class split (06)", ("paper_b", 3): "Paper B's 3-class sub-samples (06)",
                   ("paper_b", 2): "Paper B's 2-class sub-samples (06)"}


def saved_split_path(scan: ScanResult, mode: str = "paper_a", task: int = 4, seed: int = 0,
                     profile: config.Profile | None = None, **sizes) -> Path:
    """Where `saved_split` keeps this split: outputs/splits/<mode>_task<k>_seed<s>[_sizes]-<key>.csv."""
    plan = split_plan(scan, mode, task, profile, **sizes)
    sizes = "".join(f"_{v}-{k.replace('_', '-')}" for k, v in sorted(plan.items()))
    key = split_key(scan.index, mode, task, seed, plan)
    return config.OUTPUT_DIR / "splits" / f"{mode}_task{task}_seed{seed}{sizes}-{key}.csv"


def saved_split(scan: ScanResult, mode: str = "paper_a", task: int = 4, seed: int = 0,
                profile: config.Profile | None = None, **sizes) -> pd.DataFrame:
    """The course's split of this scan for `mode`, `task` and `seed`: made on first use, saved under a key of
    what it was made from (outputs/splits/), and loaded from there afterwards. The profile's sizes apply unless
    `sizes` says otherwise (`split_plan`); the split's `attrs["saved_at"]` says which file holds it.

    Reusing the file is what guarantees that evaluation sees exactly the test set training never saw; the key
    guarantees that a changed dataset never reuses a split made from another one. A damaged file (cut short,
    edited, unreadable, or saved without its checksum) is made again, saying so in one line.
    """
    plan = split_plan(scan, mode, task, profile, **sizes)
    path = saved_split_path(scan, mode, task, seed, profile, **sizes)
    files.remove_leftovers(path.parent, older_than=LEFTOVER_SECONDS)
    made_for = {"mode": mode, "task": int(task), "seed": int(seed), "plan": dict(sorted(plan.items())),
                "key": split_key(scan.index, mode, task, seed, plan)}
    if path.exists():
        split, damage = check_saved_split(path, made_for)
        if damage is None:
            return _saved_at(_resolved(split, scan.layout.root), path)
        print(f"Saved split {path} was damaged ({damage}): made it again from the scan.", flush=True)
    index = scan.index
    if "per_class" in plan:
        index = sample_distinct(index[index["label"].isin(task_classes(task))], plan["per_class"], seed)
    split = make_split(index, mode=mode, task=task, seed=seed,
                       **{k: v for k, v in plan.items() if k in ("n_per_class", "repeats")})
    save_split(split, path, made_for)
    return _saved_at(load_split(path, scan.layout.root), path)


def _saved_at(split: pd.DataFrame, path: Path) -> pd.DataFrame:
    split.attrs["saved_at"] = str(path)
    return split
