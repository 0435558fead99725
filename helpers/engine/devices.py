"""The machine's device policy: which devices a run trains on and how (one device, MirroredStrategy over several
GPUs or logical CPUs, MultiWorkerMirroredStrategy through TF_CONFIG), with which numerics (mixed_float16, XLA, uint8
inputs), and the report every notebook opens with. Machinery: `helpers.start()` prints the report, training follows
the policy; the lessons need neither.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from typing import NamedTuple

import keras
import tensorflow as tf

from helpers import config


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
    gpus = tuple(config.visible_gpus() if gpus is None else gpus)
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
    return config.truthy(raw)


def device_report(profile: config.Profile | None = None) -> str:
    """What this run computes on and with which sizes: the report every notebook opens with."""
    profile = profile or config.active_profile()
    gpus = config.visible_gpus()
    try:
        policy = device_policy().reason
    except ValueError as exc:  # a mistyped variable: say so here, not only when training starts
        policy = f"cannot be chosen: {exc}"
    lines = [
        f"Python {platform.python_version()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
        f" · on {config.platform_name()}",
        f"Devices: {_counted(gpus)}" if gpus else "Devices: CPU only (no GPU visible)",
        f"Training device policy: {policy}",
        profile.describe(),
        f"Outputs (runs, caches, figures): {config.OUTPUT_DIR}",
    ]
    if not gpus:
        lines.append(_cpu_advice())
    late = config.outputs_not_as_asked()
    return "\n".join([f"WARNING: {late}"] * bool(late) + lines)


def _cpu_advice() -> str:
    if tpu_runtime():
        return "A TPU runtime: " + TPU_UNSUPPORTED + "."
    if config.in_colab():
        return ("No GPU: on Colab choose Runtime → Change runtime type → T4 GPU, then run the notebook again "
                "(training is 20-50× faster, and the full profile uses the whole dataset).")
    if config.in_kaggle():
        return ("No GPU: in the notebook's Settings, set Accelerator to a GPU, then run again. With GPU T4 x2 the "
                "course trains on both (MirroredStrategy, mixed_float16, each GPU taking the recipe's batch).")
    return "No GPU: the demo profile keeps every run to minutes on a CPU; see the README for GPU installs."
