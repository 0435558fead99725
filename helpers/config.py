"""Run profiles and the machine: one place decides image size, epochs, data and weights for every
notebook and the CLI, and says where this runs (laptop, Colab, Kaggle) and on what (CPU, GPU).

The profile is chosen automatically (tests → fast, GPU → full, otherwise demo) and every choice can be
overridden by an environment variable, so a notebook never hard-codes sizes that only suit one machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

import tensorflow as tf

# The GitHub repository ("owner/name") and branch behind the Colab badges and the notebooks' setup cell.
# Publishing a fork: `python tools/sync_links.py --repository OWNER/NAME [--branch B]` rewrites both, and every link.
REPOSITORY = "cxr-course/covid-cxr-resnet50"
BRANCH = "main"

# Where Kaggle notebooks find attached datasets and may write (overridable for tests).
KAGGLE_INPUT = Path(os.environ.get("CXR_KAGGLE_INPUT", "/kaggle/input"))
KAGGLE_WORKING = Path(os.environ.get("CXR_KAGGLE_WORKING", "/kaggle/working"))


def in_colab() -> bool:
    """A Colab runtime: its notebook's kernel (google.colab imported), or a command a cell runs (`!python -m helpers
    …`), which inherits the runtime's COLAB_RELEASE_TAG."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def in_colab_kernel() -> bool:
    """Colab's notebook kernel itself, which alone can mount Drive or read the notebook's secrets."""
    return "google.colab" in sys.modules


def in_kaggle() -> bool:
    """A Kaggle notebook: Kaggle sets KAGGLE_KERNEL_RUN_TYPE in its kernels."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


def platform_name() -> str:
    return "Google Colab" if in_colab() else "a Kaggle notebook" if in_kaggle() else "this machine"


def _workspace() -> Path:
    """The repository checkout when the package is installed from one (editable); on Kaggle its writable
    /kaggle/working; else the working folder (e.g. /content on Colab, where the package is pip-installed)."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout
    return KAGGLE_WORKING if in_kaggle() else Path.cwd()


# On Colab, with the setup cell's KEEP_OUTPUTS_ON_DRIVE (CXR_KEEP_OUTPUTS_ON_DRIVE=1): every notebook's outputs here.
DRIVE_OUTPUTS = Path("/content/drive/MyDrive/cxr-course/outputs")


def keep_outputs_on_drive() -> bool:
    """On Colab: the setup cell's KEEP_OUTPUTS_ON_DRIVE (it sets CXR_KEEP_OUTPUTS_ON_DRIVE=1), or, chosen once for
    every notebook of the course, a Colab secret CXR_KEEP_OUTPUTS_ON_DRIVE = 1 (the key icon in Colab's left bar)."""
    if not in_colab():
        return False
    if os.environ.get("CXR_KEEP_OUTPUTS_ON_DRIVE"):
        return os.environ["CXR_KEEP_OUTPUTS_ON_DRIVE"] == "1"
    if not in_colab_kernel():  # a command run from a cell: what the notebook's `import helpers` chose
        return os.environ.get(_KERNEL_CHOSE_DRIVE) == "1"
    try:
        from google.colab import userdata

        return str(userdata.get("CXR_KEEP_OUTPUTS_ON_DRIVE")).strip().lower() in ("1", "true", "yes")
    except Exception:  # noqa: BLE001 - no such secret, or this notebook not given access to it: not asked
        return False


def _output_dir() -> Path:
    """CXR_OUTPUT_DIR if set; on Colab asked to keep outputs on Drive, the course's folder there (Drive mounted now:
    the setup cell only says whether); else outputs/ beside the data."""
    if os.environ.get("CXR_OUTPUT_DIR"):
        return Path(os.environ["CXR_OUTPUT_DIR"]).expanduser()
    if keep_outputs_on_drive():
        if in_colab_kernel():
            from google.colab import drive

            drive.mount(str(DRIVE_OUTPUTS.parents[2]))
            os.environ[_KERNEL_CHOSE_DRIVE] = "1"  # for the commands its cells run (a Colab secret they cannot read)
        return DRIVE_OUTPUTS
    return REPO_ROOT / "outputs"


_KERNEL_CHOSE_DRIVE = "CXR_KERNEL_KEEPS_OUTPUTS_ON_DRIVE"


def outputs_unavailable() -> str | None:
    """Why this process cannot write where the notebooks look, or None: a command run from a Colab cell, with outputs
    kept on Drive, before the notebook mounted it (only the notebook can)."""
    if OUTPUT_DIR == DRIVE_OUTPUTS and not in_colab_kernel() and not DRIVE_OUTPUTS.parents[1].is_dir():
        return (f"the outputs are kept on Google Drive ({DRIVE_OUTPUTS}), which is not mounted yet: run the "
                "notebook's first cells (`import helpers` mounts it), then this command again")
    return None


def outputs_not_as_asked() -> str | None:
    """The sentence to show when KEEP_OUTPUTS_ON_DRIVE changed after `import helpers` chose the outputs folder."""
    if not in_colab() or os.environ.get("CXR_OUTPUT_DIR"):
        return None
    on_drive = keep_outputs_on_drive()
    if on_drive == (OUTPUT_DIR == DRIVE_OUTPUTS):
        return None
    return (f"KEEP_OUTPUTS_ON_DRIVE is now {on_drive}, but helpers was imported before and keeps outputs in "
            f"{OUTPUT_DIR}: restart the session (Runtime → Restart session) and run the setup cell first.")


REPO_ROOT = _workspace()
# CXR_DATA_DIR: where the real dataset is looked for and phantoms are generated.
# CXR_OUTPUT_DIR: runs, caches, splits and figures (on Colab the setup cell's KEEP_OUTPUTS_ON_DRIVE puts them in Drive).
DATA_DIR = Path(os.environ.get("CXR_DATA_DIR") or REPO_ROOT / "data").expanduser()
OUTPUT_DIR = _output_dir()
PHANTOM_DIR = DATA_DIR / "phantoms"

PROFILE_NAMES = ("fast", "demo", "full")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line ("no details" when it has no message): how errors are reported here."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else "no details"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes for one kind of run; `reason` says why this profile is active."""

    name: str
    image_size: int
    epochs: int  # an upper bound for recipes that stop early
    fixed_epochs: int  # epochs of a recipe without early stopping (Paper B), which pays for every one (0: epochs)
    batch_size: int
    phantom_per_class: int  # images per class when generated phantoms stand in for the real data
    phantom_size: int  # pixel size of generated phantoms (the real dataset is 299)
    sample_per_class: int  # images per class behind exploratory statistics (mean images, histograms)
    subsample_per_class: int  # Paper B's balanced sub-samples, images per class (0: the paper's 900 in all)
    subsample_repeats: int  # how many of them (the paper's 3; fewer only to keep the test suite short)
    real_per_class: int  # real images per class that training and testing use (0: all of them)
    weights: str  # "imagenet" or "none"
    reason: str = ""

    def describe(self) -> str:
        fields = ", ".join(
            f"{k}={v}" for k, v in dataclasses.asdict(self).items() if k not in ("name", "reason")
        )
        return f"profile '{self.name}' ({self.reason}): {fields}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


# The intended sizes of each profile (design §4). Environment variables below may override any field.
# demo runs on a CPU: ResNet50 on all ~15,000 real training images at 128 px would take hours on 2 cores,
# so it trains on a sample of the real data (real_per_class), and says so wherever it shows a number.
_PROFILES = {
    "fast": Profile("fast", image_size=64, epochs=1, fixed_epochs=0, batch_size=16, phantom_per_class=12,
                    phantom_size=96, sample_per_class=12, subsample_per_class=12, subsample_repeats=2,
                    real_per_class=12, weights="none"),
    # Paper B in demo: 30 images per class per sub-sample and 3 epochs, so that notebook 06's seven runs fit in its
    # 6 minutes on 2 CPU cores (benchmarks/README.md, "Where notebook 06's minutes go"); data_statement says so.
    # Early-stopping recipes (Paper A, improved) in demo: at most 3 epochs. A random-init run re-estimates BatchNorm
    # after every epoch (issue 35), which took 03 to 739 s on this machine (415 s at the reference speed, over its
    # 6 minutes) with 4 epochs each; 3 keep it within them (issue 37's closing note has the measured figures).
    "demo": Profile("demo", image_size=128, epochs=3, fixed_epochs=3, batch_size=32, phantom_per_class=150,
                    phantom_size=299, sample_per_class=200, subsample_per_class=30, subsample_repeats=3,
                    real_per_class=150, weights="imagenet"),
    "full": Profile("full", image_size=224, epochs=100, fixed_epochs=0, batch_size=32, phantom_per_class=250,
                    phantom_size=299, sample_per_class=1000, subsample_per_class=0, subsample_repeats=3,
                    real_per_class=0, weights="imagenet"),
}

# Environment variable → Profile field it overrides.
_OVERRIDES = {
    "CXR_IMAGE_SIZE": "image_size",
    "CXR_EPOCHS": "epochs",
    "CXR_FIXED_EPOCHS": "fixed_epochs",
    "CXR_BATCH_SIZE": "batch_size",
    "CXR_PHANTOM_PER_CLASS": "phantom_per_class",
    "CXR_PHANTOM_SIZE": "phantom_size",
    "CXR_SAMPLE_PER_CLASS": "sample_per_class",
    "CXR_SUBSAMPLE_PER_CLASS": "subsample_per_class",
    "CXR_SUBSAMPLE_REPEATS": "subsample_repeats",
    "CXR_REAL_PER_CLASS": "real_per_class",
    "CXR_WEIGHTS": "weights",
}
_MAY_BE_ZERO = {"subsample_per_class": "the paper's 900 in all", "real_per_class": "all", "fixed_epochs": "as epochs"}
WEIGHT_CHOICES = ("imagenet", "none")


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def choose_profile(env: dict | None = None, has_gpu=None) -> Profile:
    """Pick the profile from the environment and the hardware, and record why.

    `env` defaults to `os.environ`; `has_gpu` (a bool, or a callable returning one) defaults to asking
    TensorFlow, and is only consulted when no environment variable decides.
    """
    env = os.environ if env is None else env
    requested = env.get("CXR_PROFILE", "").strip().lower()
    if requested and requested not in PROFILE_NAMES:
        raise ValueError(f"CXR_PROFILE must be one of {', '.join(PROFILE_NAMES)}; found {requested!r}")
    if requested:
        name, reason = requested, f"CXR_PROFILE={requested}"
    elif truthy(env.get("CXR_FAST")):
        name, reason = "fast", "CXR_FAST=1 (tests and CI)"
    else:
        gpu = (has_gpu() if callable(has_gpu) else has_gpu) if has_gpu is not None else bool(visible_gpus())
        name, reason = ("full", "a GPU is visible") if gpu else ("demo", "no GPU visible")

    changes, notes = {}, []
    for var, field in _OVERRIDES.items():
        if env.get(var, "").strip():
            raw = env[var].strip()
            changes[field] = _weights_value(var, raw) if field == "weights" else _count(var, raw, field)
            notes.append(f"{var}={raw}")
    if notes:
        reason += "; overridden by " + ", ".join(notes)
    return dataclasses.replace(_PROFILES[name], reason=reason, **changes)


def profile_named(env: dict | None = None) -> str | None:
    """What named the profile ("CXR_PROFILE=demo", "CXR_FAST=1"), or None when the hardware chose it: the command
    line keeps a profile's data caps (made so that a notebook on a CPU finishes) only when someone asked for it."""
    env = os.environ if env is None else env
    requested = env.get("CXR_PROFILE", "").strip().lower()
    if requested:
        return f"CXR_PROFILE={requested}"
    return "CXR_FAST=1" if truthy(env.get("CXR_FAST")) else None


def use_profile(name: str) -> Profile:
    """Make `name` this process's profile, as CXR_PROFILE=name would (`--profile` on the command line): training and
    every helper read the active profile, so it is set once for all of them."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"the profile must be one of {', '.join(PROFILE_NAMES)}; found {name!r}")
    os.environ["CXR_PROFILE"] = name
    active_profile.cache_clear()
    return active_profile()


def _count(var: str, raw: str, field: str) -> int:
    lowest = 0 if field in _MAY_BE_ZERO else 1
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < lowest:
        kind = f"a whole number ≥ 0 (0: {_MAY_BE_ZERO[field]})" if lowest == 0 else "a positive whole number"
        raise ValueError(f"{var} must be {kind}; found {raw!r}")
    return value


def _weights_value(var: str, raw: str) -> str:
    if raw not in WEIGHT_CHOICES and not Path(raw).expanduser().is_file():
        raise ValueError(f"{var} must be one of {', '.join(WEIGHT_CHOICES)} or an existing weights file; "
                         f"found {raw!r}")
    return raw


@lru_cache(maxsize=1)
def active_profile() -> Profile:
    """The profile of this process (computed once; restart the kernel after changing variables)."""
    return choose_profile()


# ---------------------------------------------------------------- the machine (its device policy: engine/devices.py)


@lru_cache(maxsize=1)
def visible_gpus() -> tuple[str, ...]:
    """The names of the GPUs TensorFlow sees (none on a CPU runtime)."""
    return tuple(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU"))
