"""Checkpoint writes per epoch for resuming a run (issue 21): the old scheme against the one training uses now.

Old: each epoch a full model (weights and Adam's two slots per weight: three times the weights), and, when the
epoch was the best so far, `Model.save_weights` of it, which in Keras 3 holds the optimizer's slots too; the two
newest full models kept, and the best weights of the newest state and of the one before.
New (`helpers.engine.storage.save_checkpoint`): each epoch the weights alone (`get_weights` in an .npz) and
one full model; kept: the newest full model, the weights of its epoch, of the one before (the fall-back) and of the
best epoch.

Builds ResNet50 (Paper A's head) at the demo size, fits one tiny step so the optimizer has its slots, and times
each scheme's writes of one epoch to a local temporary folder (a Drive is slower: the ratio is what carries over).

    python benchmarks/checkpoints.py [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import median, parser, report

MB = 1e6


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, rounds = (128, 2) if args.quick else (224, 3)

    import keras
    import numpy as np

    from helpers.engine.storage import save_weights
    from helpers.models import build_model
    from helpers.tasks import CLASSES

    keras.utils.set_random_seed(0)
    model = build_model("paper_a", len(CLASSES), size, weights="none").model
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    x = np.zeros((2, size, size, 3), "float32")
    model.fit(x, np.eye(len(CLASSES))[[0, 1]], epochs=1, verbose=0)  # Adam's slots now exist

    def old_epoch(folder: Path, best: bool) -> dict:
        model.save(folder / "epoch-002.keras")
        if best:
            model.save_weights(folder / "best-epoch-002.weights.h5")
        return {p.name: p.stat().st_size for p in folder.iterdir()}

    def new_epoch(folder: Path, best: bool) -> dict:  # best or not: the same two files
        save_weights(model, folder / "epoch-002.weights.npz")
        model.save(folder / "epoch-002.keras")
        return {p.name: p.stat().st_size for p in folder.iterdir()}

    seconds, written = {}, {}
    for scheme, write in (("old", old_epoch), ("new", new_epoch)):
        for best in (True, False):
            times = []
            for _ in range(rounds):
                folder = Path(tempfile.mkdtemp(prefix="cxr-ckpt-"))
                started = time.perf_counter()
                sizes = write(folder, best)
                times.append(time.perf_counter() - started)
                shutil.rmtree(folder)
            seconds[scheme, best], written[scheme, best] = median(times), sum(sizes.values())
    full, weights_only = written["old", False], written["new", True] - written["old", False]
    held = {"old": 2 * full + 2 * (written["old", True] - full),  # two full models, two best files with slots
            "new": full + 3 * weights_only}  # newest full; weights of it, of the one before and of the best
    print(f"ResNet50 (Paper A head) at {size} px: full model with Adam's slots {full / MB:.0f} MB, "
          f"weights alone {weights_only / MB:.0f} MB ({rounds} rounds, median)")
    print(f"{'per epoch':<34}{'old':>12}{'new':>12}{'new / old':>12}")
    for best in (True, False):
        label = "a best epoch" if best else "another epoch"
        old, new = written["old", best], written["new", best]
        print(f"  {'MB written, ' + label:<32}{old / MB:12.0f}{new / MB:12.0f}{new / old:12.2f}")
        old, new = seconds["old", best], seconds["new", best]
        print(f"  {'seconds writing, ' + label:<32}{old:12.2f}{new:12.2f}{new / old:12.2f}")
    print(f"  {'MB held in checkpoints/ (most)':<32}{held['old'] / MB:12.0f}{held['new'] / MB:12.0f}"
          f"{held['new'] / held['old']:12.2f}")
    report("checkpoints", {
        "quick": args.quick, "image_size": size, "full_mb": round(full / MB, 1),
        "weights_only_mb": round(weights_only / MB, 1),
        **{f"{s}_{'best' if b else 'other'}_written_mb": round(written[s, b] / MB, 1) for s, b in written},
        **{f"{s}_{'best' if b else 'other'}_seconds": round(seconds[s, b], 2) for s, b in seconds},
        **{f"{s}_held_mb": round(v / MB, 1) for s, v in held.items()},
    })


if __name__ == "__main__":
    main()
