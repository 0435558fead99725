"""ResNet50 classifiers built flat from the backbone's own input and output.

Flat (no model nested inside another) so that every layer, the last convolutional block and the
pre-softmax `logits` included, is reachable by name: Grad-CAM and CAM read them directly, and a nested
model would fail with "Graph disconnected".
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
import weakref
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.config import first_line
from helpers.pipeline import to_model_input

HEADS = ("paper_a", "linear")
# "toy": two small convolutions with BatchNorm, a stand-in that trains in seconds: for tests of the machinery
# (resuming, checkpoints, interruptions), never for results.
BACKBONES = ("resnet50", "resnet18", "toy")
# KerasHub's ResNet18 (the "resnet_18_imagenet" preset has 11,186,112 parameters; this matches it).
RESNET18_ARCHITECTURE = {
    "input_conv_filters": [64], "input_conv_kernel_sizes": [7], "stackwise_num_filters": [64, 128, 256, 512],
    "stackwise_num_blocks": [2, 2, 2, 2], "stackwise_num_strides": [1, 2, 2, 2], "block_type": "basic_block",
    "use_pre_activation": False,
}
# Layer names that code reads (CAM, Grad-CAM, the notebooks), each named here only.
LOGITS = "logits"  # the pre-softmax Dense layer of every head
LAST_CONV_LAYER = "conv5_block3_out"  # ResNet50's last block: CAM's features, Grad-CAM's default layer
HEAD_LAYERS = ("gap", "fc1024", "dropout", LOGITS, "probabilities")
PIXELS_LAYER = "pixels_to_input"  # the first layer of a model that takes uint8 grayscale pixels
PIXEL_INPUT_BACKBONES = ("resnet50", "toy")  # built on the model's own input; KerasHub's ResNet18 is not
PAPER_A_TABLE_1 = {"backbone": 23_587_712, "dense_1024": 1_049_600, "output_4_classes": 4_100}


def load_backbone(weights: str, image_size: int, backbone: str = "resnet50", input_tensor=None):
    """ResNet without its top, and what was actually loaded: (model, weights_used, fallback_reason).

    `weights` is "imagenet", "none" or a path to a weights file for the backbone without top. When the
    ImageNet download fails (no network), the backbone is randomly initialised and a warning that cannot
    be missed is printed: such a run is not transfer learning. `input_tensor` (resnet50, toy): build the backbone
    on it, flat, instead of on an input of its own.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}; found {backbone!r}")
    if input_tensor is not None and backbone not in PIXEL_INPUT_BACKBONES:
        raise ValueError(f"backbone {backbone} cannot be built on another input; "
                         f"only {', '.join(PIXEL_INPUT_BACKBONES)} can")
    if backbone == "resnet18":
        return _load_resnet18(weights, image_size)
    if backbone == "toy":
        return _toy_backbone(image_size, weights, input_tensor), str(weights or "none"), None

    def resnet50(loaded):
        return keras.applications.ResNet50(weights=loaded, include_top=False, input_shape=(image_size, image_size, 3),
                                           input_tensor=input_tensor)

    if weights in (None, "none"):
        return resnet50(None), "none", None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights must be 'imagenet', 'none' or an existing file; {path} not found")
        return resnet50(str(path)), str(path), None
    reason = imagenet_unavailable()
    if reason is None:
        return resnet50("imagenet"), "imagenet", None
    warn_random_init(reason)
    return resnet50(None), "none", reason


@lru_cache(maxsize=1)
def imagenet_unavailable() -> str | None:
    """None when ResNet50's ImageNet weights can be had (downloaded once to ~/.keras/models), else why not.

    Asked once per process: offline, each attempt costs a network timeout.
    """
    try:
        keras.applications.ResNet50(weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    except Exception as exc:  # noqa: BLE001 - any download failure means the same thing here
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def weights_or_none(requested: str = "imagenet") -> str | None:
    """What to pass as `weights=` to `keras.applications.ResNet50`: "imagenet" when those weights can be
    downloaded, else None (random initialisation) after a warning that cannot be missed. Other values (a local
    weights file, "none") are passed through."""
    if requested in (None, "none"):
        return None
    if requested != "imagenet":
        return requested
    reason = imagenet_unavailable()
    if reason is not None:
        warn_random_init(reason)
        return None
    return "imagenet"


def _toy_backbone(image_size: int, weights, input_tensor=None):
    x = keras.Input((image_size, image_size, 3)) if input_tensor is None else input_tensor
    inputs = keras.utils.get_source_inputs(x)[0]
    for i, filters in enumerate((8, 16), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"toy{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"toy{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"toy{i}_out")(x)
    model = keras.Model(inputs, x, name="toy")
    if weights not in (None, "none"):
        model.load_weights(str(Path(weights).expanduser()))
    return model


def _load_resnet18(weights: str, image_size: int):
    """Paper B's own backbone, from KerasHub (an optional extra: it pulls tensorflow-text)."""
    try:
        import keras_hub
    except ImportError:
        raise ImportError("ResNet18 comes from KerasHub, an optional extra kept out of the default install "
                          "(it pulls tensorflow-text): pip install 'cxr-resnet50-course[resnet18]'") from None
    shape = (image_size, image_size, 3)

    def architecture():
        return keras_hub.models.ResNetBackbone(**RESNET18_ARCHITECTURE, image_shape=shape)

    if weights in (None, "none"):
        return architecture(), "none", None
    if weights != "imagenet":
        model = architecture()
        model.load_weights(str(Path(weights).expanduser()))
        return model, str(weights), None
    try:
        return keras_hub.models.ResNetBackbone.from_preset("resnet_18_imagenet", image_shape=shape), "imagenet", None
    except Exception as exc:  # noqa: BLE001 - any download failure means the same thing here
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    warn_random_init(reason)
    return architecture(), "none", reason


def warn_random_init(reason: str) -> None:
    banner = (
        "\n" + "!" * 78 + "\n"
        "!!  ImageNet weights could not be loaded: the ResNet50 backbone is RANDOMLY INITIALISED.\n"
        "!!  This run is NOT transfer learning; its results say nothing about pretrained models.\n"
        f"!!  Reason: {reason}\n"
        "!!  Fix: run where the download works, or pass a local weights file (--weights PATH).\n"
        + "!" * 78 + "\n"
    )
    print(banner, file=sys.stderr)
    warnings.warn("ResNet50 backbone randomly initialised: ImageNet weights unavailable", stacklevel=3)


@dataclasses.dataclass(frozen=True)
class BuiltModel:
    """A new model and the backbone weights it actually starts from: "imagenet", a weights file, or "none" (random
    init, with `fallback_reason` saying why when other weights were asked for)."""

    model: keras.Model
    weights_used: str
    fallback_reason: str | None


def build_model(head: str = "paper_a", n_classes: int = 4, image_size: int = 224, weights: str = "imagenet",
                dropout: float | None = None, backbone: str = "resnet50",
                pixel_inputs: str | None = None) -> BuiltModel:
    """A ResNet classifier (ResNet50 unless `backbone` says 18) and the weights it starts from.

    head "paper_a": GAP → Dense(1024, ReLU) → Dropout(0.5) → Dense(n) → softmax, as Paper A.
    head "linear":  GAP → [Dropout] → Dense(n) → softmax: a linear map from pooled features to logits,
                    which is what makes a class activation map exact (Paper B's CAM).
    `pixel_inputs` (a normalisation, e.g. "resnet50"): the model takes uint8 grayscale pixels (S, S, 1) and
    normalises them itself, as `pipeline.to_model_input` does, so that a GPU is sent 12× fewer bytes a batch.
    It has the same weights as the model without: `inputs_for` gives either what it takes.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}; found {head!r}")
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes; found {n_classes}")
    inputs = normalised = None
    if pixel_inputs is not None:
        inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="pixels")
        normalised = PixelsToInput(pixel_inputs, name=PIXELS_LAYER)(inputs)
    base, weights_used, fallback = load_backbone(weights, image_size, backbone, input_tensor=normalised)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base.output)
    if head == "paper_a":
        x = keras.layers.Dense(1024, activation="relu", name="fc1024")(x)
        x = keras.layers.Dropout(0.5 if dropout is None else dropout, name="dropout")(x)
    elif dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name=LOGITS)(x)
    # Softmax in float32 even under mixed precision, so probabilities sum to 1 exactly enough.
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(base.input if inputs is None else inputs, probabilities, name=f"{backbone}_{head}")
    return BuiltModel(model, weights_used, fallback)


@keras.saving.register_keras_serializable(package="cxr_course")
class PixelsToInput(keras.layers.Layer):
    """uint8 grayscale pixels (B, S, S, 1) → the backbone's normalised 3-channel input, inside the model: the
    pipeline's `to_model_input`, computed in float32 whatever the policy (as the pipeline computes it)."""

    def __init__(self, normalisation: str, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        to_model_input(tf.zeros((1, 1, 1, 1), tf.uint8), normalisation)  # refuses an unknown one now, not later
        self.normalisation = normalisation

    def call(self, pixels):
        return to_model_input(pixels, self.normalisation)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "normalisation": self.normalisation}


def takes_pixels(model) -> bool:
    """Whether `model` takes uint8 grayscale pixels (built with `pixel_inputs`) rather than normalised images."""
    return model.inputs[0].shape[-1] == 1


def fed_normalisation(model, normalisation: str) -> str | None:
    """What a dataset for `model` normalises with (`pipeline.build_dataset`): None, uint8 pixels, if it takes them."""
    return None if takes_pixels(model) else normalisation


def inputs_for(model, pixels, normalisation: str):
    """Grayscale images (N, H, W, 1), 0–255, as `model` takes them: uint8 pixels (a model trained on a GPU), or
    normalised (`to_model_input`). Float pixels (a resizing loader's) are rounded to uint8 for the first."""
    if not takes_pixels(model):
        return to_model_input(pixels, normalisation)
    pixels = tf.convert_to_tensor(pixels)
    return pixels if pixels.dtype == tf.uint8 else tf.saturate_cast(tf.round(pixels), tf.uint8)


# --------------------------------------------------------------------------- a model any Keras 3 can rebuild


def architecture(model, head: str, backbone: str, dropout: float | None, normalisation: str) -> dict:
    """What `rebuild` needs to make `model` again with the course's own code: a saved .keras file holds the
    exporter's Keras' configuration (one Keras may not read another's), while this and the weights travel."""
    return {"head": head, "backbone": backbone, "dropout": dropout, "n_classes": int(model.output.shape[-1]),
            "image_size": int(model.inputs[0].shape[1]),
            "pixel_inputs": normalisation if takes_pixels(model) else None}


def keras_error_line(exc: BaseException, limit: int = 240) -> str:
    """A Keras loading error as one line: its innermost cause (Keras nests each layer's failure in the model's,
    each after "Exception encountered:", the model's config in between)."""
    innermost = str(exc).rsplit("Exception encountered:", 1)[-1].strip().splitlines()
    return innermost[0][:limit] if innermost else first_line(exc, limit)


def weights_by_path(model) -> dict[str, np.ndarray]:
    """Every weight of `model` under its path ("conv1_conv/kernel"): layer names that the course's code gives,
    the same in every Keras 3."""
    return {variable.path: np.asarray(variable) for variable in model.weights}


def rebuild(architecture: dict, weights: dict[str, np.ndarray]):
    """The model `architecture` describes, built here (no download: every weight comes from `weights`), with
    `weights` put in by path. A weight missing, left over or of another shape is named: the model is not the one
    described. The description comes from another machine (a run archive): its sizes are bounded before anything
    is built."""
    size, classes = architecture.get("image_size"), architecture.get("n_classes")
    if not (type(size) is int and 32 <= size <= 1024 and type(classes) is int and 2 <= classes <= 64):
        raise ValueError(f"a model of {size!r} px and {classes!r} classes is not one the course builds (32-1024 px, "
                         "2-64 classes)")
    model = build_model(architecture["head"], architecture["n_classes"], architecture["image_size"], "none",
                        architecture["dropout"], backbone=architecture["backbone"],
                        pixel_inputs=architecture["pixel_inputs"]).model
    wanted = {variable.path: variable for variable in model.weights}
    missing, extra = sorted(wanted.keys() - weights.keys()), sorted(weights.keys() - wanted.keys())
    wrong = [f"{path} {tuple(weights[path].shape)} instead of {tuple(wanted[path].shape)}"
             for path in sorted(wanted.keys() & weights.keys())
             if tuple(weights[path].shape) != tuple(wanted[path].shape)]
    if missing or extra or wrong:
        said = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                f"{len(extra)} unknown (e.g. {extra[0]})" if extra else "", f"{wrong[0]}" if wrong else ""]
        raise ValueError(f"the weights do not fit a {architecture['backbone']} {architecture['head']} model: "
                         + "; ".join(s for s in said if s))
    for path, variable in wanted.items():
        variable.assign(weights[path])
    return model


def backbone_layers(model) -> list:
    return [layer for layer in model.layers
            if layer.name not in HEAD_LAYERS and not isinstance(layer, keras.layers.InputLayer)]


def parameter_table(model) -> pd.DataFrame:
    """Parameters in the form of Paper A's Table 1: the backbone as one row, then each head layer."""
    backbone = backbone_layers(model)
    backbone_name = {"resnet18": "ResNet18", "toy": "Toy"}.get(model.name.split("_")[0], "ResNet50")
    rows = [{"layer": f"{backbone_name} (no top)", "output shape": str(model.get_layer("gap").input.shape),
             "parameters": sum(layer.count_params() for layer in backbone)}]
    for name in HEAD_LAYERS:
        if name in [layer.name for layer in model.layers]:
            layer = model.get_layer(name)
            rows.append({"layer": f"{name} ({type(layer).__name__})", "output shape": str(layer.output.shape),
                         "parameters": layer.count_params()})
    table = pd.DataFrame(rows)
    total = pd.DataFrame([{"layer": "total", "output shape": "", "parameters": int(table["parameters"].sum())}])
    return pd.concat([table, total], ignore_index=True)


def format_parameter_table(table: pd.DataFrame) -> str:
    lines = [f"{'Layer (type)':<34}{'Output shape':<26}{'Param #':>14}", "-" * 74]
    for row in table.itertuples():
        if row.layer == "total":
            lines.append("-" * 74)
        lines.append(f"{row.layer:<34}{row._2:<26}{row.parameters:>14,}")
    return "\n".join(lines)


def set_backbone_trainable(model, trainable: bool, batchnorm_trainable: bool | None = None) -> None:
    """Freeze or unfreeze the backbone. A frozen BatchNormalization layer runs in inference mode
    (it uses, and keeps, its moving statistics), which is what fine-tuning a pretrained model needs."""
    for layer in backbone_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and batchnorm_trainable is not None:
            layer.trainable = batchnorm_trainable
        else:
            layer.trainable = trainable


RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                 keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def has_random_layers(model) -> bool:
    """Whether training draws random numbers inside the model (dropout, noise), from generators whose state moves."""
    pending = list(model.layers)
    while pending:
        layer = pending.pop()
        if isinstance(layer, RANDOM_LAYERS):
            return True
        pending.extend(getattr(layer, "layers", []))
    return False


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Random-init runs: Keras' default momentum 0.99 makes the moving statistics lag far behind
    weights that change fast, so evaluation (which uses them) sees a different network than training."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def reestimate_batchnorm(model, dataset, max_batches: int | None = None, traced: bool = True) -> int:
    """Replace every BatchNorm layer's moving statistics by their average over `dataset` batches,
    computed with the final weights (a forward pass in training mode; no weight is updated).

    With momentum 0 each pass leaves its own batch's statistics in the layer, which are summed here: the same
    average as a momentum of k/(k+1) at batch k, but one traced forward pass serves every batch (eager calls of
    ResNet50 took 11 s for Paper B's 27 demo batches, traced 4 s). The traced pass is kept with the model, so that
    re-estimating after every epoch (random-init runs, `training.ValidateAsSaved`) traces once. Untraced
    (`traced=False`, under CXR_EAGER=1) for a few batches: tracing the fast profile's 3 cost 10 s. Every other
    non-trainable variable (dropout's random generator) is put back afterwards: re-estimating must not change which
    dropout masks training draws next. Returns the number of batches used.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    others = [v for v in model.non_trainable_variables if id(v) not in statistics]
    kept = [v.numpy() for v in others]
    saved = {layer.name: (layer.momentum, layer.trainable) for layer in layers}
    for layer in layers:
        layer.trainable, layer.momentum = True, 0.0
    forward = _forward_pass(model, dataset) if traced else (lambda images: model(images, training=True))
    sums = [[0.0, 0.0] for _ in layers]
    used = 0
    for images, _ in dataset:
        forward(images)
        for layer, total in zip(layers, sums):
            total[0] += layer.moving_mean.numpy().astype("float64")
            total[1] += layer.moving_variance.numpy().astype("float64")
        used += 1
        if max_batches and used >= max_batches:
            break
    for layer, (mean, variance) in zip(layers, sums):
        if used:
            layer.moving_mean.assign((mean / used).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((variance / used).astype(layer.moving_variance.dtype))
        layer.momentum, layer.trainable = saved[layer.name]
    for variable, value in zip(others, kept):
        variable.assign(value)
    return used


_FORWARD_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_pass(model, dataset):
    """The model's traced training-mode forward pass for batches shaped as `dataset`'s, traced once per model and
    batch shape (a partial last batch traces again). Traced with every BatchNorm at momentum 0, as it is called."""
    spec = getattr(dataset, "element_spec", None)
    signature = None if spec is None else [spec[0]]
    passes = _FORWARD_PASSES.setdefault(model, {})
    key = repr(signature)
    if key not in passes:
        held = weakref.ref(model)  # the cache must not keep the model alive
        passes[key] = tf.function(lambda images: held()(images, training=True), reduce_retracing=True,
                                  input_signature=signature)
    return passes[key]


def float32_copy(model):
    """The same model computing in float32 (the model itself when it already does).

    A model trained under `mixed_float16` (the full profile on a GPU) computes its layers in float16; gradients
    through it, which Grad-CAM needs, lose most of their precision. Its variables are float32 already.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=in_float32)
    copy.set_weights(model.get_weights())
    return copy


def predict_pixels(model, pixels, normalisation: str, batch_size: int = 64, progress: bool | None = None):
    """Class probabilities for uint8 grayscale images (N, H, W), a chunk at a time so that no float copy of a
    large set is ever held; with a progress bar for more than a few chunks."""
    starts = range(0, len(pixels), batch_size)
    if progress if progress is not None else len(starts) > 4:
        starts = tqdm(starts, desc="predicting", unit="batch")
    chunks = [np.asarray(model(inputs_for(model, pixels[i:i + batch_size, ..., np.newaxis], normalisation),
                               training=False), dtype=np.float64) for i in starts]
    return np.concatenate(chunks) if chunks else np.zeros((0, model.output.shape[-1]))
