"""Training throughput of ResNet50 fed by the course pipeline from PNG files, against the same model fed
from tensors already in memory (the input pipeline's upper bound: no decoding, no copying).

The pipeline must never be the bottleneck: target at least 0.95 of the in-memory rate. Both feeds train
the same compiled model, alternately, after a warm-up epoch each (graph tracing; the pipeline's cache).
It trains under the course's device policy (`engine.devices.device_policy`), so it measures what training does on
this machine: on GPUs mixed precision, XLA on one, MirroredStrategy on several (each taking the batch), and uint8
grayscale batches normalised inside the model; on a CPU split with CXR_LOGICAL_DEVICES=N, MirroredStrategy over N
logical devices. CXR_UINT8_INPUTS=1 forces the GPU's uint8 feed on a CPU.

    python benchmarks/training.py [--quick]
    CXR_LOGICAL_DEVICES=2 python benchmarks/training.py [--quick]
"""

from __future__ import annotations

import time

from common import median, parser, phantom_index, report

TARGET = 0.95


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    per_class, size, batch, rounds = (16, 128, 16, 2) if args.quick else (32, 224, 32, 3)

    import keras
    import numpy as np
    import tensorflow as tf

    import helpers  # noqa: F401 - first: it splits the CPU into logical devices if CXR_LOGICAL_DEVICES asks
    from helpers.engine.devices import device_policy
    from helpers.engine.distribute import global_dtype_policy, strategy_for
    from helpers.image_files import read_images
    from helpers.models import build_model, inputs_for
    from helpers.pipeline import build_dataset
    from helpers.tasks import CLASSES

    policy = device_policy()  # as training runs
    strategy = strategy_for(policy)
    batch = policy.global_batch(batch)  # each replica takes the batch, as in training
    index = phantom_index(per_class, folder=args.data)
    labels = index["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    keras.utils.set_random_seed(0)
    pixel_inputs = "resnet50" if policy.uint8_inputs else None  # as training builds it (`training.pixel_inputs`)
    with global_dtype_policy(policy.dtype_policy), strategy.scope():
        model = build_model("linear", len(CLASSES), size, weights="none", pixel_inputs=pixel_inputs).model
        model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", jit_compile=policy.xla)
    pipeline = build_dataset(index["path"], labels, len(CLASSES), size, batch, training=True, flip=True,
                             replicas=policy.replicas, normalisation=None if pixel_inputs else "resnet50")
    used = len(index) - len(index) % policy.replicas  # what an epoch of the pipeline uses
    pixels = read_images(index["path"][:used], size).pixels
    inputs = inputs_for(model, pixels[..., np.newaxis], "resnet50")  # what the model takes, held in memory
    in_memory = tf.data.Dataset.from_tensor_slices((inputs, tf.one_hot(labels[:used], len(CLASSES)))).batch(batch)
    in_memory = in_memory.cache().prefetch(tf.data.AUTOTUNE)
    print(f"device policy: {policy.reason}")
    feeds = {"course pipeline (PNG files)": pipeline, "tensors in memory": in_memory}
    for feed in feeds.values():  # warm-up: tracing, and the pipeline's decode-once cache
        model.fit(feed, epochs=1, verbose=0, shuffle=False)
    rates = {name: [] for name in feeds}
    for _ in range(rounds):
        for name, feed in feeds.items():
            started = time.perf_counter()
            model.fit(feed, epochs=1, verbose=0, shuffle=False)
            rates[name].append(used / (time.perf_counter() - started))
    print(f"ResNet50 training, {used} images at {size} px, batch {batch} ({policy.replicas} replica(s)), {rounds} "
          "timed epochs per feed")
    for name, values in rates.items():
        print(f"  {name:<28} {median(values):8.1f} img/s   (epochs: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = median(rates["course pipeline (PNG files)"]) / median(rates["tensors in memory"])
    print(f"pipeline / in memory: {ratio:.3f} (target ≥ {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})")
    report("training", {
        "quick": args.quick, "images": used, "image_size": size, "batch_size": batch, "replicas": policy.replicas,
        "pipeline_img_s": round(median(rates["course pipeline (PNG files)"]), 2),
        "in_memory_img_s": round(median(rates["tensors in memory"]), 2),
        "ratio": round(ratio, 3), "target": TARGET, "target_met": bool(ratio >= TARGET), "policy": policy.reason,
        "uint8_inputs": policy.uint8_inputs,
    })


if __name__ == "__main__":
    main()
