"""Seconds per ResNet50 training step under each numeric policy the course can choose, as ratios against float32:
mixed_float16, and mixed_float16 compiled with XLA.

On a GPU with tensor cores (a T4, an A100) mixed precision is the faster, which is why the course uses it there. On a
CPU float16 arithmetic is emulated: this measures how much slower it is, the reason the course trains in float32 on a
CPU, including on CPU devices split with CXR_LOGICAL_DEVICES.

    python benchmarks/precision.py [--quick]
"""

from __future__ import annotations

import time

from common import median, parser, report


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, batch, steps = (64, 16, 2) if args.quick else (64, 32, 3)  # float16 on a CPU: minutes per step above

    import keras
    import numpy as np

    import helpers  # noqa: F401 - TensorFlow's start-up lines held back
    from helpers.engine.distribute import global_dtype_policy
    from helpers.models import build_model

    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, size, size, 3)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, 4, batch), 4)
    seconds, first = {}, {}
    for name, dtype, xla in (("float32", "float32", False), ("mixed_float16", "mixed_float16", False),
                             ("mixed_float16 + XLA", "mixed_float16", True)):
        keras.utils.set_random_seed(0)
        with global_dtype_policy(dtype):
            model = build_model("linear", 4, size, weights="none").model
            model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", jit_compile=xla)
        started = time.perf_counter()
        model.train_on_batch(images, labels)  # tracing (and XLA's compilation), not timed in the ratio
        first[name] = time.perf_counter() - started
        timed = []
        for _ in range(steps):
            started = time.perf_counter()
            model.train_on_batch(images, labels)
            timed.append(time.perf_counter() - started)
        seconds[name] = median(timed)
        print(f"  {name:<22} {seconds[name]:8.2f} s per step   (first step, with tracing: {first[name]:.1f} s)")
    print(f"ResNet50 training steps, batch {batch} at {size} px, {steps} timed steps each, on this machine")
    for name in ("mixed_float16", "mixed_float16 + XLA"):
        print(f"{name} / float32: {seconds[name] / seconds['float32']:.1f}× the time per step")
    report("precision", {"quick": args.quick, "image_size": size, "batch_size": batch,
                         "seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
                         "first_step_seconds": {k: round(v, 1) for k, v in first.items()},
                         "ratio_to_float32": {k: round(v / seconds["float32"], 2) for k, v in seconds.items()}})


if __name__ == "__main__":
    main()
