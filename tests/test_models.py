"""Models: Paper A's exact parameter counts, a flat graph with reachable logits, honest weights."""

import keras
import numpy as np
import pytest

from helpers import models
from helpers.cli import main
from helpers.models import LAST_CONV_LAYER, build_model, parameter_table


@pytest.fixture(scope="module")
def paper_a_model():
    built = build_model("paper_a", n_classes=4, image_size=64, weights="none")
    assert built.weights_used == "none" and built.fallback_reason is None, "none asked, none used: no fallback"
    return built.model


def test_paper_a_parameter_counts_match_table_1_where_the_arithmetic_allows(paper_a_model):
    counts = parameter_table(paper_a_model).set_index("layer")["parameters"]
    assert counts["ResNet50 (no top)"] == 23_587_712  # as Paper A's Table 1
    assert counts["logits (Dense)"] == 4_100  # as Paper A's Table 1
    assert counts["fc1024 (Dense)"] == 2048 * 1024 + 1024 == 2_098_176  # the paper prints 1,049,600
    assert counts["total"] == paper_a_model.count_params()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_head_is_linear_on_pooled_features(n_classes):
    model = build_model("linear", n_classes=n_classes, image_size=32, weights="none").model
    counts = parameter_table(model).set_index("layer")["parameters"]
    assert counts["logits (Dense)"] == 2048 * n_classes + n_classes
    assert "fc1024 (Dense)" not in counts
    assert model.output_shape == (None, n_classes)


def test_graph_is_flat_and_logits_are_reachable(paper_a_model):
    assert not any(isinstance(layer, keras.Model) for layer in paper_a_model.layers), "no nested model"
    probe = keras.Model(paper_a_model.input, [paper_a_model.get_layer(LAST_CONV_LAYER).output,
                                              paper_a_model.get_layer("logits").output])
    features, logits = probe(np.zeros((2, 64, 64, 3), np.float32))
    assert features.shape == (2, 2, 2, 2048) and logits.shape == (2, 4)


def test_probabilities_sum_to_one(paper_a_model):
    images = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(paper_a_model.predict(images, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


def test_unreachable_imagenet_weights_fall_back_loudly(monkeypatch, capsys):
    original = keras.applications.ResNet50

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure: Name or service not known")
        return original(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    models.imagenet_unavailable.cache_clear()
    try:
        with pytest.warns(UserWarning, match="randomly initialised"):
            built = build_model("linear", 2, 32, weights="imagenet")
        assert built.weights_used == "none" and "URL fetch failure" in built.fallback_reason
        assert "RANDOMLY INITIALISED" in capsys.readouterr().err
        with pytest.warns(UserWarning, match="randomly initialised"):  # what a notebook passes to ResNet50 itself
            assert models.weights_or_none("imagenet") is None
        assert models.weights_or_none("none") is None and models.weights_or_none("w.h5") == "w.h5"
    finally:
        models.imagenet_unavailable.cache_clear()


def test_local_weights_file_is_loaded(tmp_path):
    donor = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    donor.save_weights(path)
    for pixel_inputs in (None, "resnet50"):  # also into a model that takes uint8 pixels (a GPU's)
        built = build_model("linear", 2, 32, weights=str(path), pixel_inputs=pixel_inputs)
        model = built.model
        assert built.weights_used == str(path) and built.fallback_reason is None
        for layer in ("conv1_conv", "conv5_block3_3_bn"):
            for mine, theirs in zip(model.get_layer(layer).get_weights(), donor.get_layer(layer).get_weights()):
                np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(FileNotFoundError, match="weights must be 'imagenet', 'none' or an existing file"):
        build_model("linear", 2, 32, weights=str(tmp_path / "missing.h5"))


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "eager"])
def test_batchnorm_reestimation_recovers_the_data_statistics(traced):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    data = np.random.default_rng(1).normal(loc=[5.0, -2.0, 0.0], scale=[1.0, 3.0, 0.5], size=(512, 3))
    batches = [(data[i:i + 64].astype(np.float32), None) for i in range(0, 512, 64)]
    assert models.reestimate_batchnorm(model, batches, traced=traced) == 8
    layer = model.get_layer("bn")
    np.testing.assert_allclose(layer.moving_mean.numpy(), data.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(layer.moving_variance.numpy(), data.var(axis=0), rtol=0.1)
    assert layer.momentum == 0.99, "the layer's own momentum is put back"
    per_batch = np.stack([b.mean(axis=0) for b, _ in batches]), np.stack([b.var(axis=0) for b, _ in batches])
    np.testing.assert_allclose(layer.moving_mean.numpy(), per_batch[0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), per_batch[1].mean(axis=0), rtol=1e-4)


def test_model_cli_prints_paper_a_table(capsys):
    assert main(["model", "--recipe", "paper_a", "--task", "4", "--weights", "none", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    for number in ("23,587,712", "2,098,176", "4,100", "1,049,600"):
        assert number in out


def test_resnet18_is_an_optional_extra_with_a_clear_message(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as in the default install
    with pytest.raises(ImportError, match=r"pip install 'cxr-resnet50-course\[resnet18\]'"):
        build_model("linear", 2, 32, weights="none", backbone="resnet18")
    assert main(["model", "--recipe", "paper_b_resnet18", "--task", "2", "--weights", "none"]) == 2
    assert "optional extra" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model("linear", 2, 32, weights="none", backbone="vgg16")


def test_a_mixed_precision_model_has_a_float32_twin_with_the_same_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_model("linear", 3, 32, weights="none").model
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("conv1_conv").compute_dtype == "float16"
    exact = models.float32_copy(mixed)
    assert all(layer.compute_dtype == "float32" for layer in exact.layers)
    for a, b in zip(mixed.get_weights(), exact.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(exact(images), mixed(images), atol=0.02)  # the same model, less rounding
    float32_model = build_model("linear", 3, 32, weights="none").model
    assert models.float32_copy(float32_model) is float32_model


@pytest.mark.parametrize("backbone, size, normalisation", [
    ("resnet50", 64, "resnet50"), ("toy", 32, "rescale"), ("toy", 32, "imagenet_torch")])
def test_a_model_that_takes_uint8_pixels_predicts_and_maps_as_the_one_fed_normalised_images(
        tmp_path, backbone, size, normalisation):
    """The GPU's input path (issue 22): the same weights give the same probabilities and maps, reloaded too."""
    from helpers import cam, pipeline

    fed = build_model("linear", 3, size, "none", backbone=backbone).model
    own = build_model("linear", 3, size, "none", backbone=backbone, pixel_inputs=normalisation).model
    assert not models.takes_pixels(fed) and models.takes_pixels(own)
    assert own.inputs[0].dtype == "uint8" and own.inputs[0].shape == (None, size, size, 1)
    assert not any(isinstance(layer, keras.Model) for layer in own.layers), "still flat, for the maps"
    assert parameter_table(own)["parameters"].tolist() == parameter_table(fed)["parameters"].tolist()
    own.set_weights(fed.get_weights())  # the very same list of weights
    own.save(tmp_path / "own.keras")
    reloaded = keras.models.load_model(tmp_path / "own.keras")  # safe mode: a registered layer, no lambda

    pixels = np.random.default_rng(0).integers(0, 256, (4, size, size, 1), dtype=np.uint8)
    images = pipeline.to_model_input(pixels, normalisation)
    np.testing.assert_array_equal(models.inputs_for(own, pixels, normalisation), pixels)
    np.testing.assert_array_equal(models.inputs_for(fed, pixels, normalisation), images)
    expected = fed(images, training=False).numpy()
    for model in (own, reloaded):
        np.testing.assert_allclose(model(pixels, training=False).numpy(), expected, rtol=1e-6, atol=1e-7)
        for method in ("cam", "grad-cam"):
            maps = cam.maps(model, models.inputs_for(model, pixels, normalisation), method).maps
            np.testing.assert_allclose(maps, cam.maps(fed, images, method).maps, atol=1e-6)
    # a dataset follows the model it feeds: uint8 batches (None) for the one that normalises itself
    assert models.fed_normalisation(own, normalisation) is None
    assert models.fed_normalisation(fed, normalisation) == normalisation


def test_pixel_inputs_refuse_what_they_cannot_build():
    with pytest.raises(ValueError, match="normalisation must be one of"):
        build_model("linear", 2, 32, "none", backbone="toy", pixel_inputs="div255")
    with pytest.raises(ValueError, match="backbone resnet18 cannot be built on another input; only resnet50, toy"):
        models.load_backbone("none", 32, "resnet18", input_tensor=keras.Input((32, 32, 3)))
