"""Which images a run looks at, and where they are: the class folders of a dataset in any release's layout
(`find_dataset`); the real COVID-19 Radiography Database (placed in data/, attached to a Kaggle notebook, or
downloaded through kagglehub) or, without it, a generated phantom set; and the one sentence that says which,
wherever a number is shown.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path

import kagglehub

from helpers import config
from helpers.image_files import list_image_files
from helpers.recipes import PAPER_B
from helpers.synthetic import MANIFEST_NAME, ensure_phantoms
from helpers.tasks import CLASSES, canonical_class

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
_SEARCH_DEPTH = 6

# --------------------------------------------------------------------------- where a dataset's class folders are


class DatasetError(Exception):
    """The dataset cannot be used as found; the message says what was expected and what was found."""


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


# --------------------------------------------------------------------------- which dataset a run uses

MANUAL_INSTRUCTIONS = f"""\
To use the real dataset, download it from Kaggle ({KAGGLE_HANDLE}) by one of:
  * python -m helpers data download        (kagglehub; a public dataset, credentials only if Kaggle asks:
                                            KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json)
  * by hand: download the archive from the dataset's Kaggle page, unzip it into data/ so that
    data/COVID-19_Radiography_Dataset/COVID/images/COVID-1.png exists.
  * in a Kaggle notebook: Add Input → search "{KAGGLE_HANDLE.split('/')[1]}" (found under /kaggle/input).
Without it, the course runs on generated phantom radiographs."""


def active_dataset(profile: config.Profile | None = None, download: bool | None = None, *, paper_b: bool = False,
                   quiet: bool = False) -> DatasetLayout:
    """The dataset this run uses: the real one if it can be found (or, with `download`, fetched), else the
    profile's phantom set (generated once). It prints which one (`data_statement`, with Paper B's sizes if
    `paper_b`) unless `quiet`: a notebook must never show a number without saying which images it comes from.

    `download` defaults to True on Colab and Kaggle: the public dataset comes through kagglehub; if that fails,
    the reason is printed and phantoms stand in.
    """
    profile = profile or config.active_profile()
    layout = _active_layout(profile, download)
    if not quiet:
        print(data_statement(layout, profile, paper_b=paper_b))
    return layout


def _active_layout(profile: config.Profile, download: bool | None) -> DatasetLayout:
    real = find_real_dataset()
    if real is not None:
        return real
    if download if download is not None else (config.in_colab() or config.in_kaggle()):
        try:
            return find_dataset(download_dataset())
        except DatasetError as exc:
            print(f"Using generated phantoms instead of the real dataset: {config.first_line(exc)}")
    return phantom_dataset(profile)


def find_real_dataset(data_dir=None, classes=CLASSES) -> DatasetLayout | None:
    """The real dataset placed under data/, or attached to a Kaggle notebook under /kaggle/input (generated
    phantoms excluded), or None if there is none.

    A half-placed dataset (some classes missing) is an error, not a silent switch to phantoms.
    """
    places = [Path(data_dir or config.DATA_DIR)] + ([] if data_dir else [config.KAGGLE_INPUT])
    for place in places:
        if not place.is_dir():
            continue
        try:
            return find_dataset(place, classes=classes, exclude=(config.PHANTOM_DIR,), skip_phantoms=True)
        except DatasetError as exc:
            if str(exc).startswith("unknown layout"):
                continue
            if place != config.KAGGLE_INPUT:  # placed by hand in data/: half a dataset is a mistake to fix
                raise
            # Another dataset attached to a Kaggle notebook (NORMAL/PNEUMONIA, say): say so, fall back as without one.
            print(f"The dataset attached under {place} is not the one this course needs ({config.first_line(exc)}). "
                  f"Add the input {KAGGLE_HANDLE} to use the real images; meanwhile the course goes on as with "
                  "nothing attached.", flush=True)
    return None


def download_dataset(dest=None) -> Path:
    """Download the dataset through kagglehub into `dest` (default data/kaggle) and return its folder.

    Raises DatasetError with instructions for placing the data by hand when there is no network or Kaggle
    refuses. Credentials are left to kagglehub and never printed.
    """
    dest = Path(dest or config.DATA_DIR / "kaggle")
    options = {}
    if "output_dir" in inspect.signature(kagglehub.dataset_download).parameters:
        options["output_dir"] = str(dest)  # newer kagglehub: straight into data/, found by the course
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE, **options))
    except Exception as exc:  # noqa: BLE001 - network, credentials, consent: kagglehub raises many kinds
        raise DatasetError(f"could not download {KAGGLE_HANDLE} through kagglehub ({type(exc).__name__}: "
                           f"{config.first_line(exc)}).\n{MANUAL_INSTRUCTIONS}") from None
    return find_dataset(path).root


def phantom_dataset(profile: config.Profile | None = None, shortcut_class: str | None = None,
                    shortcut_rate: float = 1.0, collection_styles: bool = False) -> DatasetLayout:
    """The profile's phantom set (generated once), whether or not the real dataset is present. With
    `shortcut_class`, a copy with a corner marker on that class's images (all of them, or the share
    `shortcut_rate`): a planted shortcut, to see whether a model (and its maps) take the marker. With
    `collection_styles`, a copy whose collections each draw in their own style (`helpers.synthetic.Collection`)."""
    profile = profile or config.active_profile()
    name = f"{profile.phantom_size}px-{profile.phantom_per_class}-per-class"
    if shortcut_class is not None:
        name += f"-shortcut-{shortcut_class}" + ("" if shortcut_rate == 1.0 else f"-{shortcut_rate:g}")
    name += "-styled" if collection_styles else ""
    root = ensure_phantoms(config.PHANTOM_DIR / name.replace(" ", "_"), per_class=profile.phantom_per_class,
                           size=profile.phantom_size, shortcut_class=shortcut_class, shortcut_rate=shortcut_rate,
                           collection_styles=collection_styles)
    return find_dataset(root)


def has_lung_masks(layout: DatasetLayout) -> bool:
    return bool(layout.mask_dirs)


def data_statement(layout: DatasetLayout, profile: config.Profile | None = None, scan=None,
                   paper_b: bool = False) -> str:
    """Plain sentences on which images a notebook is looking at, and what that leaves out: a profile's cap on the
    real data with the numbers it keeps and leaves, and how to lift it (`scan`'s usable images, a
    `data.ScanResult`, else the files); with `paper_b`, how the profile shrinks Paper B's protocol."""
    profile = profile or config.active_profile()
    if layout.is_phantom:
        lines = [f"This run uses GENERATED PHANTOM radiographs ({layout.root}), not the real dataset: "
                 "every count, figure and accuracy below describes the phantoms only."]
    else:
        lines = [f"This run uses the real COVID-19 Radiography Database found at {layout.root}."]
    if profile.real_per_class and not layout.is_phantom:
        counts = scan.class_counts() if scan is not None else image_file_counts(layout)
        lines.append(f"Profile '{profile.name}' ({profile.reason}): training and testing use {profile.real_per_class} "
                     f"images per class sampled from it, of {counts_text(counts)} (the {profile.name} profile's cap, "
                     "so that a notebook on a CPU finishes in minutes); exploration uses every image. To use all of "
                     "them set CXR_REAL_PER_CLASS=0 (or CXR_PROFILE=full) before starting the kernel, or run on a GPU.")
    if paper_b:
        lines.extend(paper_b_sizes(profile))
    if not layout.is_phantom and not has_lung_masks(layout):
        lines.append("This copy has no lung masks (no masks/ folders, as in older releases): the measures that "
                     "need them (lung overlays, energy inside the lungs, the pair of lung controls) are skipped.")
    return "\n".join(lines)


def paper_b_sizes(profile: config.Profile) -> list[str]:
    """What the profile changes in Paper B's protocol (900 balanced images per draw, 3 draws, 20 epochs), and why."""
    epochs = profile.fixed_epochs or profile.epochs
    changes = []
    if profile.subsample_per_class:
        changes.append(f"draws {profile.subsample_per_class} images per class instead of the paper's 900 images "
                       "in all (CXR_SUBSAMPLE_PER_CLASS)")
    if profile.subsample_repeats != 3:
        changes.append(f"draws {profile.subsample_repeats} times instead of 3 (CXR_SUBSAMPLE_REPEATS)")
    if epochs < PAPER_B.epochs:
        changes.append(f"trains {epochs} epoch{'s' * (epochs != 1)} instead of {PAPER_B.epochs} (CXR_FIXED_EPOCHS)")
    if not changes:
        return []
    return [f"Profile '{profile.name}' shrinks Paper B's protocol: it " + ", ".join(changes) + ", so that this "
            "notebook finishes in minutes on a CPU. Set the variables in brackets (or CXR_PROFILE=full) before "
            "starting the kernel to change them; the full profile, chosen on a GPU, runs the paper's sizes."]


def image_file_counts(layout: DatasetLayout) -> dict:
    """Image files per class, without decoding them: the numbers a statement can give before the scan."""
    return {c: len(list_image_files(folder)[0]) for c, folder in layout.image_dirs.items()}


def counts_text(counts: dict) -> str:
    """{"COVID": 3616, "Normal": 10192} → "13,808 (COVID 3,616, Normal 10,192)"."""
    return f"{sum(counts.values()):,} (" + ", ".join(f"{c} {n:,}" for c, n in counts.items()) + ")"


def dataset_tag(layout: DatasetLayout) -> str:
    """A short name for a dataset folder, so runs of different datasets never mix."""
    if layout.is_phantom:
        manifest = json.loads((layout.root / MANIFEST_NAME).read_text())
        tag = "phantom-{size}px-{per_class}x-seed{seed}".format(**manifest)
        if manifest["shortcut_class"]:
            rate = manifest.get("shortcut_rate", 1.0)
            tag += f"-shortcut-{manifest['shortcut_class']}" + ("" if rate == 1.0 else f"-{rate:g}")
        tag += "-styled" if manifest.get("collection_styles") else ""
        return tag.replace(" ", "_")
    return "dataset-" + hashlib.blake2b(str(layout.root.resolve()).encode(), digest_size=4).hexdigest()
