"""Run profiles: one place decides image size, epochs, data and weights for every notebook and the CLI.

The profile is chosen automatically (tests → fast, GPU → full, otherwise demo) and every choice can be
overridden by an environment variable, so a notebook never hard-codes sizes that only suit one machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache
from pathlib import Path

# The GitHub repository ("owner/name") behind the Colab badges and the notebooks' Colab setup cell.
# Publishing under another name: change this line, then run `python -m helpers links` to rewrite them.
REPOSITORY = "cxr-course/covid-cxr-resnet50"


def _workspace() -> Path:
    """The repository checkout when the package is installed from one (editable), else the working
    folder (e.g. /content on Colab, where the package is pip-installed from GitHub)."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").exists() else Path.cwd()


REPO_ROOT = _workspace()
DATA_DIR = Path(os.environ.get("CXR_DATA_DIR", REPO_ROOT / "data"))
OUTPUT_DIR = Path(os.environ.get("CXR_OUTPUT_DIR", REPO_ROOT / "outputs"))
PHANTOM_DIR = DATA_DIR / "phantoms"

PROFILE_NAMES = ("fast", "demo", "full")


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
_PROFILES = {
    "fast": Profile("fast", image_size=64, epochs=1, batch_size=16, phantom_per_class=12,
                    phantom_size=96, sample_per_class=12, subsample_per_class=12, weights="none"),
    "demo": Profile("demo", image_size=128, epochs=4, batch_size=32, phantom_per_class=150,
                    phantom_size=299, sample_per_class=200, subsample_per_class=60, weights="imagenet"),
    "full": Profile("full", image_size=224, epochs=100, batch_size=32, phantom_per_class=250,
                    phantom_size=299, sample_per_class=1000, subsample_per_class=0, weights="imagenet"),
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
    "CXR_WEIGHTS": "weights",
}


def gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU (imports TensorFlow, so it takes a few seconds)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


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
        raise ValueError(
            f"CXR_PROFILE must be one of {', '.join(PROFILE_NAMES)}; found {requested!r}"
        )
    if requested:
        name, reason = requested, f"CXR_PROFILE={requested}"
    elif _truthy(env.get("CXR_FAST")):
        name, reason = "fast", "CXR_FAST=1 (tests and CI)"
    else:
        gpu = (has_gpu() if callable(has_gpu) else has_gpu) if has_gpu is not None else gpu_available()
        name, reason = ("full", "a GPU is visible") if gpu else ("demo", "no GPU visible")

    profile = _PROFILES[name]
    changes, notes = {}, []
    for var, field in _OVERRIDES.items():
        if env.get(var):
            raw = env[var].strip()
            changes[field] = raw if field == "weights" else _positive_int(var, raw)
            notes.append(f"{var}={raw}")
    if notes:
        reason += "; overridden by " + ", ".join(notes)
    return dataclasses.replace(profile, reason=reason, **changes)


def _positive_int(var: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{var} must be a positive whole number; found {raw!r}")
    return value


@lru_cache(maxsize=1)
def active_profile() -> Profile:
    """The profile of this process (computed once; restart the kernel after changing variables)."""
    return choose_profile()


def in_colab() -> bool:
    import sys

    return "google.colab" in sys.modules


def device_report(profile: Profile | None = None) -> str:
    """What this run computes on and with which sizes: the report every notebook opens with."""
    import platform

    import keras
    import tensorflow as tf

    profile = profile or active_profile()
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    lines = [
        f"Python {platform.python_version()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
        + (" · on Google Colab" if in_colab() else ""),
        f"Devices: {', '.join(names)}" if gpus else "Devices: CPU only (no GPU visible)",
        f"Mixed precision: {keras.mixed_precision.global_policy().name}",
        profile.describe(),
    ]
    return "\n".join(lines)
