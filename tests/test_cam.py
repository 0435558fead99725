"""Class activation maps: CAM equals Grad-CAM on a linear head, maps peak where the evidence is,
batched equals per-image, shapes and ranges, and the localisation measures."""

import keras
import numpy as np
import pytest

from helpers import cam
from helpers.models import build_model


def tiny_model(head="cam", seed=0):
    """A small flat model with the course's layer names: conv features → gap → [fc] → logits → softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head == "paper_a":
        x = keras.layers.Dense(5, activation="relu", name="fc1024")(x)
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))


IMAGES = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)


def test_cam_equals_grad_cam_for_a_linear_head():
    model = tiny_model()
    raw = cam.class_activation_maps(model, IMAGES, normalise_method=None)
    for k in range(3):
        expected = cam.normalise(raw[..., k], "relu")
        np.testing.assert_allclose(cam.grad_cam(model, IMAGES, class_index=[k] * 4), expected, atol=1e-5)


def test_maps_peak_where_the_pattern_is():
    """A hand-built model: one feature channel lights up on bright pixels and votes for class 1."""
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 1))])
    model.get_layer("logits").set_weights([np.array([[-1.0, 1.0]]), np.zeros(2)])
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 3:6, 10:13] = 1.0
    maps = cam.class_activation_maps(model, image)
    assert np.unravel_index(maps[0, ..., 1].argmax(), (16, 16))[0] in range(3, 6)
    assert maps[0, 4, 11, 1] == 1.0 and maps[0, 12, 2, 1] == 0.0
    gc = cam.grad_cam(model, image, class_index=[1])
    assert gc[0, 4, 11] == 1.0 and gc[0, 12, 2] == 0.0


def test_batched_grad_cam_equals_one_image_at_a_time():
    model = tiny_model("paper_a")
    batched = cam.grad_cam(model, IMAGES)
    single = np.concatenate([cam.grad_cam(model, IMAGES[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_shapes_and_ranges_on_the_course_models():
    model, _, _ = build_model("cam", n_classes=3, image_size=64, weights="none")
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    maps = cam.class_activation_maps(model, images)
    assert maps.shape == (2, 2, 2, 3) and maps.min() >= 0 and maps.max() <= 1
    paper_a, _, _ = build_model("paper_a", n_classes=4, image_size=64, weights="none")
    with pytest.raises(ValueError, match="CAM needs a linear head"):
        cam.class_activation_maps(paper_a, images)
    finer = cam.grad_cam(paper_a, images, layer="conv4_block6_out")
    assert finer.shape == (2, 4, 4) and 0 <= finer.min() and finer.max() <= 1
    assert cam.upsample(finer, 64).shape == (2, 64, 64)


def test_pointing_game_and_energy_inside_masks():
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 1], maps[0, 3, 3] = 3.0, 1.0
    maps[1, 0, 0] = 1.0
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2, :2] = True
    masks[1] = False
    masks[1, 2:, 2:] = True
    np.testing.assert_array_equal(cam.pointing_game(maps, masks), [True, False])
    np.testing.assert_allclose(cam.energy_inside(maps, masks), [0.75, 0.0])
    assert np.isnan(cam.energy_inside(np.zeros((1, 4, 4)), masks[:1]))[0]
