"""The tf.data input pipeline: decode each PNG once, cache it small, do the cheap work every epoch.

Order matters for speed and memory: decode → resize → cache as uint8 grayscale (50 KB per image at
224 px instead of 600 KB as float32 RGB) → shuffle → batch → flip, grey→RGB and normalise on whole
batches → prefetch. The dataset is never held as float arrays.

A file that cannot be decoded (changed, deleted or corrupted after the scan) never stops an epoch: it is left
out and named, in one line, when the dataset is built (see `build_dataset`). No exception ever crosses from
Python into a tf.data worker (that can leave the process hanging).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.data import PROGRESS_FROM
from helpers.image_files import BadImageError, load_grayscale

NORMALISATIONS = ("resnet50", "rescale", "imagenet_torch")
AUTOTUNE = tf.data.AUTOTUNE
# With the autotuner off, AUTOTUNE means min(16, CPU cores) threads, fixed. On 2 cores (this machine, Colab)
# the autotuner's re-tuning cost every second or third cached epoch: 3,200 instead of 5,900 img/s at 224 px
# (benchmarks/input_pipeline.py); fixed, every epoch runs at the higher rate and the first is unchanged.
FIXED_PARALLELISM = tf.data.Options()
FIXED_PARALLELISM.autotune.enabled = False
# Several workers (MultiWorkerMirroredStrategy) each take their share of every batch: the pipeline reads no files
# tf.data could split between them (PIL decodes in a numpy_function), so say so rather than let it try and warn.
FIXED_PARALLELISM.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB→BGR, then these means subtracted.
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)
# PyTorch/timm-style ImageNet statistics (RGB, on 0..1), used by KerasHub's ResNet18 weights.
IMAGENET_RGB_MEAN, IMAGENET_RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


_UNREADABLE: dict[str, str] = {}  # path → reason, for every file the pipeline could not decode in this process
SHOWN_PATHS = 3  # a left-out line names this many files, then counts the rest: one line, however many went bad


def unreadable_files(paths=None) -> dict:
    """Files the pipeline met but could not decode (path → reason), optionally only those among `paths`."""
    if paths is None:
        return dict(_UNREADABLE)
    wanted = {str(p) for p in paths}
    return {p: reason for p, reason in _UNREADABLE.items() if p in wanted}


def left_out_line(unreadable: dict, what: str = "image(s)", why: str = "could not be read") -> str:
    """One line with the count and the first few files (path (reason)) left out: said by whatever leaves them out,
    short enough to be read when a whole folder went bad (the full list goes to the run's record)."""
    shown = "; ".join(f"{p} ({r})" for p, r in list(unreadable.items())[:SHOWN_PATHS])
    more = len(unreadable) - SHOWN_PATHS
    return f"Left out {len(unreadable)} {what} that {why}: {shown}" + (f" and {more} more" if more > 0 else "")


def _decode(path, size):
    """PIL decoding, the same code the scan validated; (image, True), or (blank, False) for a bad file."""
    path, size = path.decode("utf-8"), int(size)
    try:
        image = load_grayscale(path, size)[..., np.newaxis]
        _UNREADABLE.pop(path, None)  # readable again (repaired since): no longer left out by a later dataset
        return image, True
    except BadImageError as exc:
        _UNREADABLE[path] = str(exc)
    except Exception as exc:  # noqa: BLE001 - nothing may escape into TensorFlow's threads
        _UNREADABLE[path] = f"{type(exc).__name__}: {exc}"
    return np.zeros((size, size, 1), np.uint8), False


def to_model_input(images, normalisation: str = "resnet50"):
    """uint8 grayscale batch (B, H, W, 1) → float32 RGB batch the model expects.

    "resnet50": exactly keras.applications.resnet50.preprocess_input, what the ImageNet weights were
    trained with (BGR order, ImageNet channel means subtracted, no scaling); for a grey image the
    channel swap changes nothing, so it is one broadcast subtraction that also makes the 3 channels
    (5× faster per batch than calling preprocess_input; the tests check they agree).
    "rescale": pixels / 255 in 3 identical channels, as Paper A.
    "imagenet_torch": pixels / 255, minus the ImageNet RGB mean, over its standard deviation (ResNet18).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}; found {normalisation!r}")
    grey = tf.cast(images, tf.float32)
    if normalisation == "rescale":
        return tf.image.grayscale_to_rgb(grey / 255.0)
    if normalisation == "imagenet_torch":
        return (grey / 255.0 - tf.constant(IMAGENET_RGB_MEAN)) / tf.constant(IMAGENET_RGB_STD)
    return grey - tf.constant(IMAGENET_BGR_MEANS, tf.float32)


def describe_inputs(batches: dict) -> pd.DataFrame:
    """Per-channel statistics of model inputs, e.g. {"rescale": batch, "resnet50": batch}."""
    rows = []
    for name, batch in batches.items():
        values = np.asarray(batch, dtype=np.float64)
        for channel in range(values.shape[-1]):
            v = values[..., channel]
            rows.append({"normalisation": name, "channel": channel, "min": v.min(), "max": v.max(),
                         "mean": v.mean(), "std": v.std()})
    return pd.DataFrame(rows).set_index(["normalisation", "channel"]).round(3)


def random_horizontal_flip(images, random_bits):
    """Flip each image of the batch left↔right where its random bit is odd."""
    flip = tf.reshape(tf.equal(random_bits % 2, 1), [-1, 1, 1, 1])
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def build_dataset(
    paths,
    labels,
    n_classes: int,
    image_size: int,
    batch_size: int = 32,
    *,
    training: bool = False,
    flip: bool = False,
    normalisation: str = "resnet50",
    seed: int = 0,
    cache: bool | str = True,
    progress: bool = False,
    replicas: int = 1,
    part: str = "",
) -> tf.data.Dataset:
    """Batches of (float32 images (B, S, S, 3), one-hot labels (B, n_classes)); with `normalisation` None, uint8
    grayscale images (B, S, S, 1) as cached (benchmarks/input_pipeline.py measures what that would save a GPU).

    `training` shuffles every epoch and enables `flip` (horizontal flips, as Paper B); evaluation
    datasets keep file order. `cache` is True (memory), a file path prefix (disk), or False.

    A cached dataset is filled here, before it is returned (the decoding its first epoch would do, done now,
    with a progress bar if `progress`): files that cannot be decoded are left out and named at once, and the
    dataset knows its length, so Keras' progress bars have an end. Without a cache, an unreadable file stays in
    as a blank image, named in `unreadable_files()`, for the caller to drop (as `Run.predict_part` does). `part`
    ("train", "val", "test") says in that line which images they were.

    Training on several `replicas` (tf.distribute), every batch must split evenly over them: `batch_size` is then
    the global batch (a multiple of `replicas`), and each epoch leaves out the last `usable % replicas` images of its
    shuffled order (fewer than `replicas`, different ones every epoch) so that its last batch splits evenly too.
    """
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, or None for uint8 grayscale batches; "
                         f"found {normalisation!r}")
    paths = [str(p) for p in paths]
    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) != len(labels) or not paths:
        raise ValueError(f"need as many labels as paths, at least one; found {len(paths)} paths, "
                         f"{len(labels)} labels")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be class ids in [0, {n_classes}); "
                         f"found {labels.min()}..{labels.max()}")

    def decode(path, label):
        image, ok = tf.numpy_function(_decode, [path, image_size], (tf.uint8, tf.bool), stateful=False)
        image.set_shape([image_size, image_size, 1])
        return image, label, ok

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
        usable = _fill_cache(ds, paths, progress, part)
        ds = ds.filter(_is_usable).map(_drop_flag).apply(tf.data.experimental.assert_cardinality(usable))
    else:
        ds = ds.map(_drop_flag)
    if training:
        # A new order every epoch, from `seed`. A resumed run starts this sequence again (epoch k after a resume
        # sees epoch 0's order): it equals an uninterrupted run in the weights it keeps, not in every draw.
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        if replicas > 1:
            ds = ds.take(_evenly_split(usable if cache else len(paths), batch_size, replicas))

    def finish(images, label):  # None: the batch as cached, for a model that normalises inside (12× fewer bytes)
        inputs = images if normalisation is None else to_model_input(images, normalisation)
        return inputs, tf.one_hot(label, n_classes)

    def flip_and_finish(pair, bits):
        return finish(random_horizontal_flip(pair[0], bits), pair[1])

    if training and flip:
        bits = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, bits).batch(batch_size).map(flip_and_finish, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.batch(batch_size).map(finish, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(FIXED_PARALLELISM)


def _evenly_split(images: int, batch_size: int, replicas: int) -> int:
    """How many of `images` an epoch on `replicas` devices uses: the largest multiple of `replicas`."""
    if batch_size % replicas:
        raise ValueError(f"a batch for {replicas} replicas must be a multiple of {replicas}; found {batch_size}")
    if images < replicas:
        raise ValueError(f"training on {replicas} devices needs at least {replicas} usable training images; "
                         f"found {images}")
    return images - images % replicas


def _is_usable(image, label, ok):
    return ok


def _drop_flag(image, label, ok):
    return image, label


def _fill_cache(ds, paths, progress: bool, part: str = "") -> int:
    """Read a cached dataset once (decoding every file into the cache); report unreadable files; count the rest."""
    batches = ds.batch(256).prefetch(2)
    if progress and len(paths) >= PROGRESS_FROM:  # a bar for seconds of work, not for a blink
        batches = tqdm(batches, total=-(-len(paths) // 256), desc="decoding images", unit="batch", leave=False)
    usable = sum(int(tf.reduce_sum(tf.cast(ok, tf.int32))) for _, _, ok in batches)
    if usable < len(paths):
        print(left_out_line(unreadable_files(paths), f"{part} image(s)".strip()), file=sys.stderr)
    return usable


def datasets_from_split(split, classes, image_size: int, batch_size: int = 32, *, repeat: int = 0,
                        flip: bool = False, normalisation: str = "resnet50", seed: int = 0,
                        progress: bool = False, replicas: int = 1) -> dict:
    """{"train", "val", "test"} → dataset for one repeat of a split made by `helpers.splits`.

    Labels are indices into `classes` (the task's class order); only the train part is shuffled and flipped, and only
    its batches split evenly over `replicas` (evaluation runs on one device: `helpers.engine.distribute`).
    """
    class_id = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(split["label"]) - set(class_id))
    if unknown:
        raise ValueError(f"split has labels {unknown} that are not in the task's classes {list(classes)}")
    part = split[split["repeat"] == repeat]
    out = {}
    for name in ("train", "val", "test"):
        rows = part[part["split"] == name]
        if rows.empty:
            continue
        out[name] = build_dataset(
            rows["path"], rows["label"].map(class_id), len(classes), image_size, batch_size,
            training=name == "train", flip=flip, normalisation=normalisation, seed=seed, progress=progress,
            replicas=replicas if name == "train" else 1, part=name,
        )
    return out
