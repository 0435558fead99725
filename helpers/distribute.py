"""One training over several devices or machines, the way tf.distribute intends, and what Keras 3 needs for it.

- `strategy_for` makes the strategy a device policy names, once per process: MirroredStrategy over this machine's
  GPUs (or the CPU's logical devices, CXR_LOGICAL_DEVICES), MultiWorkerMirroredStrategy across machines (TF_CONFIG),
  the default strategy on one device.
- Each replica takes the recipe's batch, so a step takes that times the replicas (`DevicePolicy.global_batch`), and
  the training pipeline hands out batches that split evenly over the replicas (`pipeline.build_dataset`): Keras 3
  fails on a first batch that does not (it averages the batch over replicas to learn its shapes,
  keras-team/keras#19246), and a replica left without images crashes in BatchNorm.
- Evaluation never runs under the strategy: a copy of the model on one device (`one_device_copy`) validates every
  epoch and scores, re-estimates and saves the final model, so that every image counts exactly once and a run scores
  what its saved model scores anywhere.
- BatchNorm's moving statistics: Keras 3 creates them without an aggregation, so every replica keeps its own,
  updated from its own share of each batch. They are averaged over the replicas after every epoch
  (`average_batchnorm_statistics`), before the epoch is validated and saved.
- Multi-worker training needs two fixes of Keras 3's own (`allow_multi_worker_fit`).
"""

from __future__ import annotations

import contextlib
import types

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from helpers.config import DevicePolicy

_STRATEGIES: dict = {}


class StrategyError(Exception):
    """The strategy a device policy asks for cannot be made in this process."""


def strategy_for(policy: DevicePolicy):
    """The tf.distribute strategy of `policy`, made once per process (a multi-worker one must be made before
    TensorFlow runs anything else)."""
    key = (policy.strategy, policy.devices, policy.workers)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _make_strategy(policy)
    strategy = _STRATEGIES[key]
    if strategy.num_replicas_in_sync != policy.replicas:
        raise StrategyError(f"the device policy asks for {policy.replicas} replicas, but tf.distribute made "
                           f"{strategy.num_replicas_in_sync}: {policy.reason}")
    return strategy


def _make_strategy(policy: DevicePolicy):
    if policy.strategy == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise StrategyError("multi-worker training (TF_CONFIG) must start before TensorFlow runs anything in this "
                               f"process; train with `python -m helpers train` ({exc})") from None
    if policy.strategy == "mirrored":
        kind = "CPU" if policy.devices[0].startswith("CPU") else "GPU"
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices(kind)])
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def global_dtype_policy(name: str):
    """Build and train under the dtype policy `name` ("mixed_float16" or "float32"), then restore the previous
    one: the models keep their layers' policies, and the rest of a notebook is not silently switched to float16."""
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def one_device_copy(model):
    """The same model, weights and dtype policies on one device (built outside any strategy)."""
    if tf.distribute.has_strategy():
        raise RuntimeError("one_device_copy must be called outside a tf.distribute strategy's scope")
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _batchnorm_statistics(model) -> list:
    return [variable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            for variable in (layer.moving_mean, layer.moving_variance)]


def average_batchnorm_statistics(model, strategy) -> int:
    """Give every replica the mean of the replicas' BatchNorm moving statistics (an all-reduce; across workers too).
    Returns the number of variables averaged (0 on one device)."""
    variables = _batchnorm_statistics(model)
    if strategy.num_replicas_in_sync == 1 or not variables:
        return 0

    def on_each_replica():
        context = tf.distribute.get_replica_context()
        means = context.all_reduce("MEAN", [tf.identity(variable.value) for variable in variables])
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    tf.function(lambda: strategy.run(on_each_replica))()
    return len(variables)


class ValidateOnOneDevice(keras.callbacks.Callback):
    """Validation for a model trained under a strategy of several replicas: after each epoch, the replicas' BatchNorm
    statistics are averaged and a one-device copy with the epoch's weights evaluates `dataset`, adding its results to
    the epoch's logs as Keras' own validation would (val_loss, val_accuracy, …). Put it first among the callbacks,
    so that those after it (checkpoints, early stopping, the progress bar) see them.

    `twin` is the compiled one-device copy; `before_evaluation` is called first (e.g. to stop a training clock)."""

    def __init__(self, twin, dataset, strategy, before_evaluation=lambda: None):
        super().__init__()
        self.twin, self.dataset, self.strategy, self.before_evaluation = twin, dataset, strategy, before_evaluation

    def on_epoch_end(self, epoch, logs=None):
        self.before_evaluation()
        average_batchnorm_statistics(self.model, self.strategy)
        self.twin.set_weights(self.model.get_weights())
        results = self.twin.evaluate(self.dataset, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})


def allow_multi_worker_fit(model, strategy) -> None:
    """Two Keras 3 defects stop `fit` under MultiWorkerMirroredStrategy in its first step (keras-team/keras#20585,
    open as of Keras 3.15; tensorflow/tensorflow#72388). Both are fixed here for this model, and only when several
    workers train, so nothing changes on one machine:

    1. Before the first step Keras averages a whole input batch over the replicas to learn its shapes; across
       workers that average cannot be taken ("Attempt to convert a value (PerReplica…)"). One replica's batch has
       the shapes it needs.
    2. It then averages each step's scalar logs along an axis they do not have ("Invalid reduction dimension 0").
       A plain mean over the replicas is what it means.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    missing = [name for name in ("_maybe_symbolic_build", "_symbolic_build", "_distribute_strategy")
               if not hasattr(model, name)]
    missing += [name for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker")
                if not hasattr(keras_tf_trainer, name)]
    if missing:
        raise StrategyError(f"Keras {keras.__version__} changed the internals that multi-worker training works around "
                           f"({', '.join(missing)}); train on one machine, or with the Keras version the course tests")
    model._maybe_symbolic_build = types.MethodType(_build_from_one_replica, model)
    if not getattr(keras_tf_trainer.reduce_per_replica, "fixed_for_multi_worker", False):
        keras_tf_trainer.reduce_per_replica = _reduce_per_replica_fixed(keras_tf_trainer.reduce_per_replica)


def _build_from_one_replica(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return
    strategy = self.distribute_strategy
    if iterator is not None:
        for _, _, batches in iterator:
            data_batch = tree.map_structure(
                lambda value: strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues) else value, next(batches))
            break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica_fixed(original):
    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto" and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.fixed_for_multi_worker = True
    return reduce_per_replica
