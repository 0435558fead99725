"""Where one training run's seconds go: data, model, fit (tracing, training, evaluation), finishing, as shares.

Trains Paper B's repeats of one task in the active profile (demo on a CPU) into a temporary outputs folder, timing
the steps of `engine.training.train`; the second repeat shows what a run that reuses the first one's model costs.

    python benchmarks/run_steps.py [--task 3] [--repeats 2]
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the checkout on the path

STEPS = [("training", "datasets_from_split"), ("training", "_build_or_resume"), ("training", "_fit_phases"),
         ("training", "_finish"), ("models", "reestimate_batchnorm"), ("training", "evaluate"),
         ("run_folder", "save_model")]


def main() -> None:
    args = common.parser(__doc__.splitlines()[0])
    args.add_argument("--task", type=int, default=3)
    args.add_argument("--repeats", type=int, default=2)
    options = args.parse_args()
    os.environ.setdefault("CXR_OUTPUT_DIR", tempfile.mkdtemp(prefix="cxr-run-steps-"))

    from helpers import data, datasets, models, recipes, runs, splits, training

    spent = collections.defaultdict(float)
    for module, name in STEPS:
        module = {"training": training, "models": models}[module]
        real = getattr(module, name)

        def timed(*a, _real=real, _name=name, **k):
            started = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                spent[_name] += time.perf_counter() - started

        setattr(module, name, timed)
    layout = datasets.active_dataset(quiet=True)
    split = splits.saved_split(data.scan_cached(layout), mode="paper_b", task=options.task)
    for repeat in range(options.repeats):
        spent.clear()
        started = time.perf_counter()
        run = runs.train_or_load(layout, recipes.PAPER_B, split, repeat=repeat, log=lambda *_: None)
        total = time.perf_counter() - started
        history = run.history()
        fit = {"one-off (tracing)": history["one_off_seconds"].sum(),
               "training steps": history["train_seconds"].iloc[-1] - history["one_off_seconds"].sum(),
               "evaluation and checkpoints": history["elapsed_seconds"].iloc[-1] - history["train_seconds"].iloc[-1]}
        other = {"fit, outside its epochs": spent["_fit_phases"] - history["elapsed_seconds"].iloc[-1],
                 "data": spent["datasets_from_split"], "model (build or reuse)": spent["_build_or_resume"],
                 "BatchNorm re-estimation": spent["reestimate_batchnorm"], "scoring": spent["evaluate"],
                 "saving model.keras": spent["save_model"]}
        other["rest"] = total - sum(fit.values()) - sum(other.values())
        print(f"repeat {repeat} ({Path(run.folder).name}): {total:.1f} s")
        for name, seconds in {**fit, **other}.items():
            print(f"  {name:<28}{seconds:7.1f} s {seconds / total:6.1%}")


if __name__ == "__main__":
    main()
