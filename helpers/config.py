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
from typing import NamedTuple

import keras
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


def profile_named(env: dict | None = None) -> str | None:
    """What named the profile ("CXR_PROFILE=demo", "CXR_FAST=1"), or None when the hardware chose it: the command
    line keeps a profile's data caps (made so that a notebook on a CPU finishes) only when someone asked for it."""
    env = os.environ if env is None else env
    requested = env.get("CXR_PROFILE", "").strip().lower()
    if requested:
        return f"CXR_PROFILE={requested}"
    return "CXR_FAST=1" if _truthy(env.get("CXR_FAST")) else None


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


# --------------------------------------------------------------------------- the machine and its device policy


@lru_cache(maxsize=1)
def visible_gpus() -> tuple[str, ...]:
    """The names of the GPUs TensorFlow sees (none on a CPU runtime)."""
    return tuple(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU"))


def logical_cpus() -> int:
    """How many logical devices the CPU is split into (1 unless CXR_LOGICAL_DEVICES split it at start-up).
    Asks TensorFlow without starting it, so that a multi-worker strategy can still be created afterwards."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    return len(tf.config.get_logical_device_configuration(cpu) or [None])


def requested_logical_devices(env=None) -> int:
    """CXR_LOGICAL_DEVICES as a number (1 when unset)."""
    env = os.environ if env is None else env
    raw = env.get("CXR_LOGICAL_DEVICES", "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CXR_LOGICAL_DEVICES must be a whole number ≥ 1 (the CPU's logical devices); found {raw!r}")
    return int(raw)


class Cluster(NamedTuple):
    workers: int  # processes training together (1: this one alone)
    index: int  # this process's place among them; 0 is the chief


def cluster(env=None) -> Cluster:
    """The training cluster TF_CONFIG describes, as tf.distribute reads it; one worker without it. The chief is the
    task of type "chief", or worker 0 when the cluster names no chief. Evaluator and parameter-server tasks are
    refused: the course trains with MultiWorkerMirroredStrategy, whose tasks are all workers."""
    env = os.environ if env is None else env
    raw = env.get("TF_CONFIG", "").strip()
    if not raw:
        return Cluster(1, 0)
    try:
        spec = json.loads(raw)
        jobs, task = spec.get("cluster", {}), spec.get("task", {})
        chiefs, kind = len(jobs.get("chief", [])), task.get("type")
        workers = chiefs + len(jobs.get("worker", []))
        index = 0 if kind == "chief" else int(task.get("index", 0)) + chiefs
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"TF_CONFIG must be JSON like {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, "
                         f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}; found {raw[:120]!r} ({exc})") from None
    if kind not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG's task type must be \"worker\" or \"chief\" (MultiWorkerMirroredStrategy); "
                         f"found {kind!r}")
    return Cluster(max(workers, 1), index)


def is_chief(env=None) -> bool:
    """Whether this process writes the run folder: the only process, or the chief of a multi-worker cluster."""
    return cluster(env).index == 0


def tpu_runtime(env=None) -> str | None:
    """What says this is a TPU runtime (Colab, Kaggle, a Cloud TPU VM), or None."""
    env = os.environ if env is None else env
    for var in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        if env.get(var, "").strip():
            return f"{var}={env[var].strip()}"
    return "TensorFlow sees a TPU" if tf.config.list_physical_devices("TPU") else None


TPU_UNSUPPORTED = ("TPUs are not supported by this course (it trains with Keras' fit on GPUs or the CPU, and "
                   "TPUStrategy needs another input pipeline): it runs on the CPU here; choose a GPU runtime instead")


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    """How a training run uses this machine: the devices it runs one replica on each, the processes (workers) taking
    part, the tf.distribute strategy, and the numeric settings. `reason` says why, in words."""

    kind: str  # "GPU" or "CPU": the kind of device each replica runs on
    devices: tuple[str, ...]  # this machine's: GPU names, or "CPU:0", "CPU:1", … (logical CPU devices)
    workers: int
    strategy: str  # "default" (one device), "mirrored" (several on this machine) or "multi_worker"
    mixed_precision: bool
    xla: bool
    reason: str
    # Batches leave the input pipeline as uint8 grayscale and the model normalises them itself: 12× fewer bytes to
    # the device, which on a fast GPU is the pipeline's bound (benchmarks/input_pipeline.py). Last, with a default,
    # so that policies written before it still read.
    uint8_inputs: bool = False
    # Keras runs each step eagerly instead of tracing it first (CXR_EAGER=1): runs of a few steps, such as the tests'
    # notebooks, finish sooner (ResNet50 at 64 px traces for about 40 s on 2 CPU cores); anything longer, slower.
    eager: bool = False

    @property
    def replicas(self) -> int:
        """Copies of the model that each take a share of every batch."""
        return len(self.devices) * self.workers

    @property
    def dtype_policy(self) -> str:
        return "mixed_float16" if self.mixed_precision else "float32"

    def global_batch(self, per_replica: int) -> int:
        """The batch one training step takes: each replica gets the recipe's batch (tf.distribute's convention; it
        also keeps BatchNorm's batch statistics, which every replica computes on its own share, those of the recipe)."""
        return per_replica * self.replicas

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "devices": list(self.devices), "replicas": self.replicas,
                "dtype_policy": self.dtype_policy}


def device_policy(gpus=None, cpus=None, workers=None, env=None) -> DevicePolicy:
    """The device policy for this machine, or for the one described (`gpus`: GPU names; `cpus`: logical CPU devices;
    `workers`: processes in the cluster; `env`: the environment).

    One GPU: mixed_float16 and XLA. Several GPUs: MirroredStrategy with mixed_float16, without XLA (Keras compiles a
    step over all devices as one function, and XLA cannot compile one whose variables live on several devices;
    Keras itself turns XLA off under tf.distribute). The CPU: float32 (float16 convolutions are emulated there, tens
    of times slower), and MirroredStrategy over its logical devices if CXR_LOGICAL_DEVICES split it. Several workers
    (TF_CONFIG): MultiWorkerMirroredStrategy. CXR_MIXED_PRECISION=0|1 and CXR_XLA=0|1 override the numerics.
    On a GPU the model takes uint8 grayscale batches and normalises them itself; CXR_UINT8_INPUTS=0|1 overrides it.
    CXR_EAGER=1 runs the steps untraced (the tests' notebooks: a few steps each).
    """
    env = os.environ if env is None else env
    gpus = tuple(visible_gpus() if gpus is None else gpus)
    requested = requested_logical_devices(env)
    workers = cluster(env).workers if workers is None else workers
    notes = []
    if gpus:
        kind, devices = "GPU", gpus
        what = f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({_counted(gpus)})"
        if requested > 1:
            notes.append("CXR_LOGICAL_DEVICES ignored: GPUs are visible")
    else:
        if cpus is None:
            cpus = logical_cpus()
        if workers > 1:  # MultiWorkerMirroredStrategy takes one CPU device per worker
            cpus = 1
            if requested > 1:
                notes.append("CXR_LOGICAL_DEVICES ignored: with several workers each trains on one CPU device")
        elif requested > 1 and requested != cpus:
            notes.append(f"CXR_LOGICAL_DEVICES={requested} came after TensorFlow started, which has {cpus}: set it "
                         "before importing helpers (restart the kernel)")
        kind, devices = "CPU", tuple(f"CPU:{i}" for i in range(cpus))
        what = (f"{cpus} logical CPU devices (CXR_LOGICAL_DEVICES={requested})" if cpus > 1
                else "the CPU (no GPU visible)")
        if tpu_runtime(env):
            notes.append(TPU_UNSUPPORTED)
    several = len(devices) * workers > 1
    strategy = "multi_worker" if workers > 1 else "mirrored" if several else "default"
    mixed = _switch(env, "CXR_MIXED_PRECISION", bool(gpus), notes)
    eager = _switch(env, "CXR_EAGER", False, notes)
    xla = _switch(env, "CXR_XLA", bool(gpus) and not several and not eager, notes)
    if xla and eager:
        raise ValueError("CXR_XLA=1 and CXR_EAGER=1 cannot go together: XLA compiles the traced step that eager "
                         "execution skips; unset one of them")
    if xla and several:
        raise ValueError("CXR_XLA=1 cannot apply to several devices: Keras compiles one step over all of them, and XLA "
                         "cannot compile a function whose variables live on several devices; unset CXR_XLA")
    uint8 = _switch(env, "CXR_UINT8_INPUTS", bool(gpus), notes)
    parts = [what + (f" × {workers} workers (TF_CONFIG)" if workers > 1 else ""),
             {"default": "one device", "mirrored": f"MirroredStrategy, {len(devices) * workers} replicas",
              "multi_worker": f"MultiWorkerMirroredStrategy, {len(devices) * workers} replicas"}[strategy],
             "mixed_float16" if mixed else "float32",
             "XLA" if xla else "no XLA" + (" (not with several devices)" if several else ""),
             *(["uint8 inputs, normalised in the model"] if uint8 else []),
             *(["steps run eagerly, untraced"] if eager else [])]
    return DevicePolicy(kind, devices, workers, strategy, mixed, xla, "; ".join(parts + notes), uint8, eager)


def _counted(names) -> str:
    """("Tesla T4", "Tesla T4") → "Tesla T4 ×2"."""
    unique = list(dict.fromkeys(names))
    return ", ".join(f"{name} ×{names.count(name)}" if names.count(name) > 1 else name for name in unique)


def _switch(env, var: str, default: bool, notes: list) -> bool:
    raw = env.get(var, "").strip().lower()
    if not raw:
        return default
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"{var} must be 0 or 1; found {env[var]!r}")
    notes.append(f"{var}={env[var].strip()}")
    return _truthy(raw)


def device_report(profile: Profile | None = None) -> str:
    """What this run computes on and with which sizes: the report every notebook opens with."""
    profile = profile or active_profile()
    gpus = visible_gpus()
    try:
        policy = device_policy().reason
    except ValueError as exc:  # a mistyped variable: say so here, not only when training starts
        policy = f"cannot be chosen: {exc}"
    lines = [
        f"Python {platform.python_version()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
        f" · on {platform_name()}",
        f"Devices: {_counted(gpus)}" if gpus else "Devices: CPU only (no GPU visible)",
        f"Training device policy: {policy}",
        profile.describe(),
        f"Outputs (runs, caches, figures): {OUTPUT_DIR}",
    ]
    if not gpus:
        lines.append(_cpu_advice())
    late = outputs_not_as_asked()
    return "\n".join([f"WARNING: {late}"] * bool(late) + lines)


def _cpu_advice() -> str:
    if tpu_runtime():
        return "A TPU runtime: " + TPU_UNSUPPORTED + "."
    if in_colab():
        return ("No GPU: on Colab choose Runtime → Change runtime type → T4 GPU, then run the notebook again "
                "(training is 20-50× faster, and the full profile uses the whole dataset).")
    if in_kaggle():
        return ("No GPU: in the notebook's Settings, set Accelerator to a GPU, then run again. With GPU T4 x2 the "
                "course trains on both (MirroredStrategy, mixed_float16, each GPU taking the recipe's batch).")
    return "No GPU: the demo profile keeps every run to minutes on a CPU; see the README for GPU installs."
