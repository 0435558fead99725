"""What every trial shares: the demo profile's phantom set, its saved split, and one JSON line at the end."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python experiments/x.py` from a checkout
    sys.path.insert(0, str(REPO))
os.environ.setdefault("CXR_OUTPUT_DIR", str(REPO / "outputs" / "experiments"))


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="small sizes, to check the script runs (minutes)")
    return args


def report(name: str, result: dict) -> None:
    """The last line of every trial: one JSON object."""
    import platform

    import tensorflow as tf

    print(json.dumps({"trial": name, **result, "python": platform.python_version(), "tensorflow": tf.__version__,
                      "cpu_cores": os.cpu_count()}, default=float))
