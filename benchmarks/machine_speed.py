"""How fast is this machine right now? A gauge to read beside any wall-clock figure (a CI run, `make run`).

This machine's speed is not constant: the same ResNet50 trace took 44 s one hour and 104 s the next, with nothing
else running and no steal time reported. A bare time says little without it, so read this gauge before and after a
timed run and report the three together. It times what dominates the tests and the CPU demo: tracing and running
ResNet50's training step at 64 px (the fast profile's size), and a pure-Python loop.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np

import helpers  # noqa: F401 - first: it imports TensorFlow with its start-up lines held back


def python_loop() -> float:
    start = time.perf_counter()
    sum(i * i for i in range(10**7))
    return time.perf_counter() - start


def resnet50_steps() -> tuple[float, float]:
    """(first fit: tracing and 3 steps, second fit: 3 steps) in seconds."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg")
    model = keras.Model(backbone.input, keras.layers.Dense(4, activation="softmax")(backbone.output))
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    images = np.random.default_rng(0).random((48, 64, 64, 3), dtype=np.float32)
    labels = keras.utils.to_categorical(np.arange(48) % 4, 4)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    loop = python_loop()
    first, second = resnet50_steps()
    print(f"pure-Python loop: {loop:.2f} s")
    print(f"ResNet50 at 64 px, first fit (tracing + 3 steps): {first:.1f} s; second fit (3 steps): {second:.1f} s")
    print(json.dumps({"python_loop_s": round(loop, 3), "resnet50_first_fit_s": round(first, 2),
                      "resnet50_second_fit_s": round(second, 2)}))


if __name__ == "__main__":
    main()
