"""Peak memory of the cached training pipeline at 224 px, for growing numbers of images.

Each size runs in a fresh process (peak memory only ever grows within one), which builds the training
pipeline (decode, resize, uint8 grayscale cache, shuffle, flip, normalise) and runs one full epoch over it.
The growth per image should follow the uint8 cache: 224 × 224 = 50,176 bytes, ~50 KB. From the measured
slope comes a projection for the full dataset (21,165 images), against holding it as float32 RGB arrays
(224 × 224 × 3 × 4 bytes per image: 12.7 GB).

To keep the run short, 1,000 phantom files are generated and the larger sets repeat them: every list
entry is decoded and cached on its own, so memory grows exactly as with distinct files.

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import parser, phantom_index, report

SIZE = 224
FULL_DATASET = 21_165
CACHE_BYTES = SIZE * SIZE  # uint8 grayscale
FLOAT32_RGB_BYTES = SIZE * SIZE * 3 * 4


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(n: int, root: Path) -> None:
    """Build the pipeline for `n` entries, run one epoch, print the peaks before and after as JSON."""
    import tensorflow as tf  # noqa: F401  (imported before the first reading, so it is not counted)

    from helpers.pipeline import build_dataset

    files = sorted(str(p) for p in root.glob("*/images/*.png"))
    paths = [files[i % len(files)] for i in range(n)]
    labels = np.arange(n) % 4
    before = peak_mb()
    dataset = build_dataset(paths, labels, 4, SIZE, 32, training=True, flip=True)
    seen = sum(int(images.shape[0]) for images, _ in dataset)
    print(json.dumps({"n": n, "seen": seen, "before_mb": before, "peak_mb": peak_mb()}))


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement, in a fresh process
    args.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = args.parse_args()
    if args.child:
        child(args.child, args.root)
        return
    sizes = (1000, 2000, 4000) if args.quick else (1000, 4000, 16000)
    index = phantom_index(125 if args.quick else 250, folder=args.data)
    root = Path(index["path"].iloc[0]).parents[2]
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--root", str(root)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{n:>6} images: peak {row['peak_mb']:7.0f} MB, {row['peak_mb'] - row['before_mb']:6.0f} MB above "
              f"the process before building ({row['seen']} images seen in the epoch)")
    n = np.array([r["n"] for r in rows], float)
    peak = np.array([r["peak_mb"] for r in rows])
    slope_mb, intercept_mb = np.polyfit(n, peak, 1)
    per_image_kb = slope_mb * 1024
    projected_gb = (intercept_mb + slope_mb * FULL_DATASET) / 1024
    float_gb = FULL_DATASET * FLOAT32_RGB_BYTES / 1024**3
    print(f"growth: {per_image_kb:.1f} KiB per image (the uint8 cache alone: {CACHE_BYTES / 1024:.1f} KiB)")
    print(f"projected peak for all {FULL_DATASET:,} images: {projected_gb:.2f} GiB, against {float_gb:.1f} GiB "
          f"for the images alone as float32 RGB ({float_gb / projected_gb:.1f}× more)")
    report("memory", {
        "quick": args.quick, "image_size": SIZE, "runs": rows, "per_image_kib": round(per_image_kb, 2),
        "cache_kib_per_image": round(CACHE_BYTES / 1024, 2), "baseline_mb": round(float(intercept_mb), 1),
        "projected_full_dataset_gib": round(projected_gb, 3), "float32_rgb_full_dataset_gib": round(float_gb, 2),
    })


if __name__ == "__main__":
    main()
