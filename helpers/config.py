"""Run profiles and the machine: one place decides image size, epochs, data and weights for every
notebook and the CLI, and says where this runs (laptop, Colab, Kaggle) and on what (CPU, GPU).

The profile is chosen automatically (tests → fast, GPU → full, otherwise demo) and every choice can be
overridden by an environment variable, so a notebook never hard-codes sizes that only suit one machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

import keras
import tensorflow as tf

# The GitHub repository ("owner/name") behind the Colab badges and the notebooks' setup cell.
# Publishing under another name: change this line, then run `python tools/sync_links.py`.
REPOSITORY = "cxr-course/covid-cxr-resnet50"

# Where Kaggle notebooks find attached datasets and may write (overridable for tests).
KAGGLE_INPUT = Path(os.environ.get("CXR_KAGGLE_INPUT", "/kaggle/input"))
KAGGLE_WORKING = Path(os.environ.get("CXR_KAGGLE_WORKING", "/kaggle/working"))


def in_colab() -> bool:
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


REPO_ROOT = _workspace()
# CXR_DATA_DIR: where the real dataset is looked for and phantoms are generated.
# CXR_OUTPUT_DIR: runs, caches, splits and figures; on Colab point it at Google Drive to keep them across VMs.
DATA_DIR = Path(os.environ.get("CXR_DATA_DIR") or REPO_ROOT / "data").expanduser()
OUTPUT_DIR = Path(os.environ.get("CXR_OUTPUT_DIR") or REPO_ROOT / "outputs").expanduser()
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
    epochs: int
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
    "fast": Profile("fast", image_size=64, epochs=1, batch_size=16, phantom_per_class=12, phantom_size=96,
                    sample_per_class=12, subsample_per_class=12, subsample_repeats=2, real_per_class=12,
                    weights="none"),
    "demo": Profile("demo", image_size=128, epochs=4, batch_size=32, phantom_per_class=150, phantom_size=299,
                    sample_per_class=200, subsample_per_class=60, subsample_repeats=3, real_per_class=150,
                    weights="imagenet"),
    "full": Profile("full", image_size=224, epochs=100, batch_size=32, phantom_per_class=250, phantom_size=299,
                    sample_per_class=1000, subsample_per_class=0, subsample_repeats=3, real_per_class=0,
                    weights="imagenet"),
}

# Environment variable → Profile field it overrides.
_OVERRIDES = {
    "CXR_IMAGE_SIZE": "image_size",
    "CXR_EPOCHS": "epochs",
    "CXR_BATCH_SIZE": "batch_size",
    "CXR_PHANTOM_PER_CLASS": "phantom_per_class",
    "CXR_PHANTOM_SIZE": "phantom_size",
    "CXR_SAMPLE_PER_CLASS": "sample_per_class",
    "CXR_SUBSAMPLE_PER_CLASS": "subsample_per_class",
    "CXR_SUBSAMPLE_REPEATS": "subsample_repeats",
    "CXR_REAL_PER_CLASS": "real_per_class",
    "CXR_WEIGHTS": "weights",
}
_MAY_BE_ZERO = {"subsample_per_class", "real_per_class"}  # 0 means "all" / "the paper's size"
WEIGHT_CHOICES = ("imagenet", "none")


@lru_cache(maxsize=1)
def visible_gpus() -> tuple[str, ...]:
    """The names of the GPUs TensorFlow sees (none on a CPU runtime)."""
    return tuple(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU"))


def _truthy(value: str | None) -> bool:
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
    elif _truthy(env.get("CXR_FAST")):
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


def _count(var: str, raw: str, field: str) -> int:
    lowest = 0 if field in _MAY_BE_ZERO else 1
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < lowest:
        kind = "a whole number ≥ 0 (0: all)" if lowest == 0 else "a positive whole number"
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


def device_report(profile: Profile | None = None) -> str:
    """What this run computes on and with which sizes: the report every notebook opens with."""
    profile = profile or active_profile()
    gpus = visible_gpus()
    lines = [
        f"Python {platform.python_version()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
        f" · on {platform_name()}",
        f"Devices: {', '.join(gpus)}" if gpus else "Devices: CPU only (no GPU visible)",
        f"Mixed precision: {keras.mixed_precision.global_policy().name}",
        profile.describe(),
        f"Outputs (runs, caches, figures): {OUTPUT_DIR}",
    ]
    if not gpus:
        lines.append(_cpu_advice())
    return "\n".join(lines)


def _cpu_advice() -> str:
    if in_colab():
        return ("No GPU: on Colab choose Runtime → Change runtime type → T4 GPU, then run the notebook again "
                "(training is 20-50× faster, and the full profile uses the whole dataset).")
    if in_kaggle():
        return "No GPU: in the notebook's Settings, set Accelerator to a GPU (e.g. GPU T4 x2), then run again."
    return "No GPU: the demo profile keeps every run to minutes on a CPU; see the README for GPU installs."
