"""Class activation maps: where in the image the evidence for a class lies, and how to check it.

CAM (Zhou et al. 2016, as in Paper B) needs the linear head of `models.build_model(head="cam")`: the
logits are a weighted sum of the pooled last-block features, so the same weights applied to the
unpooled features give a map per class, for every class of a batch from one forward pass.
Grad-CAM (Selvaraju et al. 2017) works for any head, Paper A's included, and any convolutional layer:
it weights the feature channels by the mean gradient of the class logit. For a linear head the two agree.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

HEAD_INPUT = "gap"  # the last convolutional features are this layer's input in every course model


def feature_model(model, layer: str | None = None):
    """A model returning (feature maps of `layer`, logits); default: the last block's features."""
    features = model.get_layer(layer).output if layer else model.get_layer(HEAD_INPUT).input
    return keras.Model(model.input, [features, model.get_layer("logits").output])


def normalise(maps, method: str = "minmax"):
    """Scale each map to [0, 1]: "minmax" (Paper B's CAM) or "relu" (negative evidence dropped, then / max)."""
    maps = np.asarray(maps, dtype=np.float64)
    axes = (1, 2)
    if method == "relu":
        maps = np.maximum(maps, 0.0)
        low = np.zeros_like(maps.min(axis=axes, keepdims=True))
    elif method == "minmax":
        low = maps.min(axis=axes, keepdims=True)
    else:
        raise ValueError(f"method must be 'minmax' or 'relu'; found {method!r}")
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def _linear_head_weights(model):
    """The logits layer's kernel (channels × classes), after checking that the head is linear."""
    path = [layer.name for layer in model.layers[model.layers.index(model.get_layer(HEAD_INPUT)):]]
    if any(name not in (HEAD_INPUT, "dropout", "logits", "probabilities") for name in path):
        raise ValueError("CAM needs a linear head (GAP → [Dropout] → Dense logits), as build_model(head='cam') "
                         "makes; for Paper A's head use grad_cam")
    return model.get_layer("logits").get_weights()[0]


def class_activation_maps(model, images, normalise_method: str | None = "minmax"):
    """CAM for every class of every image: (B, h, w, K), from one forward pass over the batch."""
    features, logits = feature_model(model)(images, training=False)
    maps = np.einsum("bhwc,ck->bhwk", np.asarray(features, np.float64), _linear_head_weights(model))
    if normalise_method is None:
        return maps
    return np.stack([normalise(maps[..., k], normalise_method) for k in range(maps.shape[-1])], axis=-1)


def grad_cam(model, images, class_index=None, layer: str | None = None, normalise_method: str | None = "relu"):
    """Grad-CAM of one class per image (default: the predicted class): (B, h, w), batched.

    The gradient of each image's own class logit is taken in one pass: images do not interact
    (BatchNorm runs in inference mode), so the gradient of the sum is the per-image gradient.
    """
    probe = feature_model(model, layer)
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, logits = probe(images, training=False)
        tape.watch(features)
        if class_index is None:
            class_index = tf.argmax(logits, axis=-1)
        index = tf.cast(tf.reshape(tf.convert_to_tensor(class_index), [-1]), tf.int32)
        if index.shape[0] == 1 and logits.shape[0] != 1:
            index = tf.repeat(index, tf.shape(logits)[0])
        target = tf.reduce_sum(tf.gather(logits, index, axis=1, batch_dims=1))
    gradients = tape.gradient(target, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # channel importance per image
    maps = tf.reduce_sum(weights * features, axis=-1).numpy()
    return maps if normalise_method is None else normalise(maps, normalise_method)


def upsample(maps, size: int):
    """Maps (B, h, w) → (B, size, size), bilinear, to lay over the image or compare with masks."""
    return tf.image.resize(np.asarray(maps, np.float32)[..., np.newaxis], (size, size), "bilinear").numpy()[..., 0]


# --------------------------------------------------------------------------- measuring maps


def pointing_game(maps, masks) -> np.ndarray:
    """Per image: is the map's peak inside the mask? (maps and masks at the same size)."""
    maps, masks = np.asarray(maps), np.asarray(masks) > 0
    flat_peak = maps.reshape(len(maps), -1).argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(maps)), flat_peak]


def energy_inside(maps, masks) -> np.ndarray:
    """Per image: the share of the map's total (non-negative) energy that falls inside the mask."""
    maps, masks = np.maximum(np.asarray(maps, np.float64), 0), np.asarray(masks) > 0
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
