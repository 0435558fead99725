"""What every benchmark shares: phantom data, the machine it ran on, and the one JSON line at the end.

Benchmarks print ratios against the obvious alternative, never a bare time: a ratio measured on one
machine says something about another, a time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a checkout, installed or not
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes on 2 CPU cores")
    args.add_argument("--data", type=Path, default=None,
                      help="folder to keep generated phantoms in (default: a temporary folder)")
    return args


def phantom_index(per_class: int, size: int = 299, folder: Path | None = None):
    """Scan index of a phantom set in the real dataset's layout (299 px PNGs, as the real images)."""
    from helpers.data import scan_dataset
    from helpers.datasets import find_dataset
    from helpers.synthetic import ensure_phantoms

    folder = Path(folder or tempfile.mkdtemp(prefix="cxr-bench-"))
    root = ensure_phantoms(folder / f"{size}px-{per_class}", per_class=per_class, size=size, seed=0)
    return scan_dataset(find_dataset(root)).index


def machine() -> dict:
    """Where the figures came from."""
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "cpu_cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "gpus": gpus}


def median(values) -> float:
    return float(statistics.median(values))


def interleaved_seconds(functions: dict, repeats: int) -> dict:
    """Median seconds per call of each function, timed in turns (a, b, a, b, …) after one untimed call each,
    so that a slow spell of the machine falls on all of them alike and their ratio stays fair."""
    import time

    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: median(values) for name, values in times.items()}


def report(name: str, result: dict) -> None:
    """The last line of every benchmark: one JSON object, for scripts that collect results."""
    print(json.dumps({"benchmark": name, **result, "machine": machine()}, default=float))
