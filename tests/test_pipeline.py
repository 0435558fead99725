"""The tf.data pipeline: decode once into a uint8 cache, then shuffle, flip, normalise, batch."""

import numpy as np
import pytest
import tensorflow as tf
from keras.applications.resnet50 import preprocess_input

from helpers import pipeline
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.pipeline import build_dataset, datasets_from_split, random_horizontal_flip, to_model_input
from helpers.splits import paper_a_split
from helpers.tasks import CLASSES
from tests.conftest import write_png


@pytest.fixture
def asymmetric_images(tmp_path):
    """Images whose left half is dark and right half bright, so a flip is visible."""
    array = np.zeros((16, 16), dtype=np.uint8)
    array[:, 8:] = 200
    return [write_png(tmp_path / f"img-{i}.png", array) for i in range(64)]


def _epoch(ds):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


def test_batches_have_model_shapes_and_one_hot_labels(asymmetric_images):
    ds = build_dataset(asymmetric_images, [i % 4 for i in range(64)], 4, image_size=8, batch_size=10)
    images, labels = _epoch(ds)
    assert images.shape == (64, 8, 8, 3) and images.dtype == np.float32
    assert labels.shape == (64, 4)
    np.testing.assert_array_equal(labels.argmax(1), [i % 4 for i in range(64)])  # evaluation keeps order


def test_without_a_normalisation_batches_stay_uint8_grayscale_and_normalise_to_the_same_inputs(asymmetric_images):
    """Issue 22's option for a fast GPU: the cached bytes sent as they are, 12× fewer than float32 RGB, and the
    model input they make (normalised on the device) equal to the pipeline's own."""
    labels = [i % 4 for i in range(64)]
    grey, _ = _epoch(build_dataset(asymmetric_images, labels, 4, image_size=8, batch_size=10, normalisation=None))
    ready, _ = _epoch(build_dataset(asymmetric_images, labels, 4, image_size=8, batch_size=10))
    assert grey.shape == (64, 8, 8, 1) and grey.dtype == np.uint8 and ready.nbytes == 12 * grey.nbytes
    np.testing.assert_array_equal(to_model_input(grey).numpy(), ready)


def test_each_file_is_decoded_once_however_many_epochs(asymmetric_images, monkeypatch):
    calls = []
    original = pipeline.load_grayscale
    monkeypatch.setattr(pipeline, "load_grayscale", lambda *a: calls.append(a) or original(*a))
    ds = build_dataset(asymmetric_images, [0] * 64, 2, image_size=8, batch_size=16, training=True, flip=True)
    for _ in range(3):
        _epoch(ds)
    assert len(calls) == 64


def test_cache_holds_uint8_grayscale_not_floats(asymmetric_images):
    """The element spec right before shuffling is the cached one: uint8, one channel."""
    ds = build_dataset(asymmetric_images, [0] * 64, 2, image_size=8, training=True)
    node = ds
    while not isinstance(node, tf.data.Dataset) or "Cache" not in type(node).__name__:
        node = node._input_dataset
    assert node.element_spec[0] == tf.TensorSpec((8, 8, 1), tf.uint8)


def test_training_flips_about_half_and_evaluation_never(asymmetric_images):
    train = build_dataset(asymmetric_images, [0] * 64, 2, image_size=16, training=True, flip=True,
                          normalisation="rescale", seed=1)
    images, _ = _epoch(train)
    flipped = images[:, 0, 0, 0] > 0.5  # bright on the left: this one was flipped
    assert 16 <= flipped.sum() <= 48
    again, _ = _epoch(train)
    assert not np.array_equal(flipped, again[:, 0, 0, 0] > 0.5), "new flips every epoch"
    plain, _ = _epoch(build_dataset(asymmetric_images, [0] * 64, 2, image_size=16, flip=True,
                                    normalisation="rescale"))
    assert (plain[:, 0, 0, 0] < 0.5).all()


def test_random_horizontal_flip_flips_where_the_bit_is_odd():
    batch = tf.reshape(tf.range(2 * 1 * 3 * 1), (2, 1, 3, 1))
    out = random_horizontal_flip(batch, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(out[0, 0, :, 0], [2, 1, 0])
    np.testing.assert_array_equal(out[1, 0, :, 0], [3, 4, 5])


def test_normalisations_match_paper_a_and_resnet50():
    batch = tf.constant(np.arange(0, 256, 64, dtype=np.uint8).reshape(1, 2, 2, 1))
    rescaled = to_model_input(batch, "rescale").numpy()
    np.testing.assert_allclose(rescaled[..., 0].ravel(), [0, 64 / 255, 128 / 255, 192 / 255], rtol=1e-6)
    expected = preprocess_input(np.repeat(batch.numpy().astype(np.float32), 3, axis=-1))
    np.testing.assert_allclose(to_model_input(batch, "resnet50").numpy(), expected, rtol=1e-6)
    torch_style = to_model_input(batch, "imagenet_torch").numpy()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch_style[0, 1, 1], (192 / 255 - mean) / std, rtol=1e-5)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        to_model_input(batch, "imagenet")


def test_bad_arguments_are_rejected_before_any_work(asymmetric_images):
    with pytest.raises(ValueError, match="as many labels as paths"):
        build_dataset(asymmetric_images, [0], 2, image_size=8)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        build_dataset(asymmetric_images, [3] * 64, 2, image_size=8)


def test_datasets_from_a_saved_split(phantom_root):
    scan = scan_dataset(find_dataset(phantom_root))
    split = paper_a_split(scan.index, task=4)
    split["path"] = [str(phantom_root / p) for p in split["relpath"]]
    parts = datasets_from_split(split, CLASSES, image_size=32, batch_size=8)
    assert set(parts) == {"train", "val", "test"}
    _, labels = _epoch(parts["test"])
    expected = split.loc[split["split"] == "test", "label"].map(CLASSES.index).to_numpy()
    np.testing.assert_array_equal(labels.argmax(1), expected)
    with pytest.raises(ValueError, match="not in the task's classes"):
        datasets_from_split(split, ("COVID", "Normal"), image_size=32)


def test_a_file_that_went_bad_after_the_scan_is_left_out_and_named_not_a_crash(asymmetric_images, capsys):
    corrupt, deleted = asymmetric_images[3], asymmetric_images[5]
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated, as by an interrupted copy
    deleted.unlink()
    ds = build_dataset(asymmetric_images, [i % 2 for i in range(64)], 2, image_size=8, batch_size=10,
                       training=True, flip=True)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Left out 2 image(s) that could not be read" in error
    assert f"{corrupt} (not an image" in error and f"{deleted} (file not found)" in error
    assert ds.cardinality().numpy() == 7, "the length is known (62 images in batches of 10): progress bars end"
    for _ in range(2):  # every epoch runs to its end without the two files
        images, _ = _epoch(ds)
        assert len(images) == 62
    assert set(pipeline.unreadable_files(asymmetric_images)) == {str(corrupt), str(deleted)}


def test_without_a_cache_a_bad_file_keeps_its_place_as_a_blank_and_is_named(asymmetric_images):
    asymmetric_images[0].write_bytes(b"")
    ds = build_dataset(asymmetric_images, [1] * 64, 2, image_size=8, cache=False, normalisation="rescale")
    images, labels = _epoch(ds)
    assert len(images) == 64 and images[0].max() == 0 and images[1].max() > 0, "rows stay aligned with files"
    assert pipeline.unreadable_files([asymmetric_images[0]]) == {str(asymmetric_images[0]): "empty file (0 bytes)"}
