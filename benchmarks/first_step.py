"""The first fit of a run: Adam's slots and the metrics' counters made before the first traced step, against Keras'
default (made inside it, so that TensorFlow traces the step twice).

Each variant is a fresh process (nothing traced before it), timed in turns: ResNet50 at 64 px (the fast profile's
size), batch 16, 3 steps and a validation pass, compiled as `training` compiles a phase.

    python benchmarks/first_step.py [--quick]   # --quick: 1 turn of each instead of 3
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import common


def first_fit(build_first: bool) -> float:
    # isort: off
    from helpers import callbacks, training  # first: it imports TensorFlow with its start-up lines held back
    # isort: on
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg")
    model = keras.Model(backbone.input, keras.layers.Dense(4, activation="softmax")(backbone.output))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=callbacks.epoch_metrics(4))
    images = np.random.default_rng(0).random((48, 64, 64, 3), dtype="float32")
    labels = keras.utils.to_categorical(np.arange(48) % 4, 4)
    started = time.perf_counter()
    if build_first:
        training._build_state_before_tracing(model, 4)
    model.fit(images, labels, batch_size=16, epochs=1, validation_data=(images, labels), verbose=0)
    return time.perf_counter() - started


def main() -> None:
    args = common.parser(__doc__.splitlines()[0])
    args.add_argument("--variant", choices=["built", "deferred"], help="one turn, in this process")
    options = args.parse_args()
    if options.variant:
        print(json.dumps({"seconds": first_fit(options.variant == "built")}))
        return
    seconds = {"built": [], "deferred": []}
    for _ in range(1 if options.quick else 3):
        for variant in seconds:
            done = subprocess.run([sys.executable, __file__, "--variant", variant], capture_output=True, text=True,
                                  check=True)
            seconds[variant].append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
            print(f"{variant:>8}: {seconds[variant][-1]:.1f} s", flush=True)
    built, deferred = (common.median(seconds[v]) for v in ("built", "deferred"))
    print(f"first fit, state built first / deferred: {built / deferred:.2f} ({built:.1f} vs {deferred:.1f} s)")
    common.report("first_step", {"built_s": seconds["built"], "deferred_s": seconds["deferred"],
                                 "ratio": built / deferred})


if __name__ == "__main__":
    main()
