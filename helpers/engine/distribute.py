"""One training over several devices or machines, the way tf.distribute intends, and what Keras 3 needs for it.

- `strategy_for` makes the strategy a device policy names, once per process: MirroredStrategy over this machine's
  GPUs (or the CPU's logical devices, CXR_LOGICAL_DEVICES), MultiWorkerMirroredStrategy across machines (TF_CONFIG),
  the default strategy on one device.
- Each replica takes the recipe's batch, so a step takes that times the replicas (`DevicePolicy.global_batch`), and
  the training pipeline hands out batches that split evenly over the replicas (`pipeline.build_dataset`): Keras 3
  fails on a first batch that does not (it averages the batch over replicas to learn its shapes,
  keras-team/keras#19246), and a replica left without images crashes in BatchNorm.
- Evaluation never runs under the strategy: a copy of the model on one device (`one_device_copy`) validates every
  epoch (`ValidateOnOneDevice`) and scores, re-estimates and saves the final model, so that every image counts
  exactly once and a run scores what its saved model scores anywhere.
- BatchNorm's moving statistics: Keras 3 creates them without an aggregation, so every replica keeps its own,
  updated from its own share of each batch. They are averaged over the replicas after every epoch
  (`AverageBatchNormStatistics`), before the epoch is validated and saved.
- Several workers must agree: on where a resumed run stands (`check_workers_agree`), on every epoch's validation
  figures (so that early stopping stops all of them at once), and on the end (`wait_for_every_worker`).
- Multi-worker training needs two fixes of Keras 3's own (`allow_multi_worker_fit`).
"""

from __future__ import annotations

import contextlib
import importlib
import types

import keras
import tensorflow as tf

from helpers.engine.devices import DevicePolicy

_STRATEGIES: dict = {}


class StrategyError(Exception):
    """The strategy a device policy asks for cannot be made or kept in step in this process."""


def strategy_for(policy: DevicePolicy):
    """The tf.distribute strategy of `policy`, made once per process (a multi-worker one must be made before
    TensorFlow runs anything else)."""
    key = (policy.strategy, policy.kind, policy.devices, policy.workers)
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
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices(policy.kind)])
    return tf.distribute.get_strategy()


def several_workers(strategy) -> bool:
    """Whether `strategy` spans several workers (the course makes a multi-worker strategy only for two or more)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


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


# --------------------------------------------------------------------------- keeping replicas and workers in step


def _on_every_replica(strategy, step):
    """`step` run on every replica (where collectives such as all_reduce are allowed), as one traced function; call
    the result to run it, and get the first local replica's result."""
    traced = tf.function(lambda: strategy.run(step))

    def run():
        results = traced()
        return None if results is None else strategy.experimental_local_results(results)[0]

    return run


def _all_reduce(strategy, values, op: str):
    """`values` (a list of tensors, the same shapes on every replica) reduced over all replicas, on every one."""
    return _on_every_replica(strategy, lambda: tf.distribute.get_replica_context().all_reduce(
        op, [tf.identity(value) for value in values]))()


def batchnorm_averager(model, strategy):
    """A function that gives every replica the mean of the replicas' BatchNorm moving means and variances (an
    all-reduce, across workers too); None on one replica or without BatchNorm. The mean of the variances leaves out
    how far the replicas' means lie apart, which Keras 2 also did (it averaged them on reading).

    Traced once: call it after every epoch."""
    variables = [variable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
                 for variable in (layer.moving_mean, layer.moving_variance)]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return None

    def on_each_replica():
        context = tf.distribute.get_replica_context()
        means = context.all_reduce("MEAN", [tf.identity(variable.value) for variable in variables])
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    return _on_every_replica(strategy, on_each_replica)


class AverageBatchNormStatistics(keras.callbacks.Callback):
    """After every epoch, every replica gets the mean of the replicas' BatchNorm statistics (`batchnorm_averager`).
    Put it before the callbacks that validate or save the epoch."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy, self.average = strategy, None

    def on_epoch_end(self, epoch, logs=None):
        if self.average is None:
            self.average = batchnorm_averager(self.model, self.strategy) or (lambda: None)
        self.average()


class ValidateOnOneDevice(keras.callbacks.Callback):
    """Validation for a model trained under a strategy of several replicas: after each epoch, a one-device copy with
    the epoch's weights evaluates `dataset`, and its results join the epoch's logs as Keras' own validation would put
    them (val_loss, val_accuracy, …). Several workers average their figures, so that all see the same numbers and
    early stopping stops them at the same epoch. Put it after `AverageBatchNormStatistics` and before the callbacks
    that save the epoch or stop early.

    `twin` is the compiled one-device copy; `before_evaluation` is called first (e.g. to stop a training clock)."""

    def __init__(self, twin, dataset, strategy, before_evaluation=lambda: None):
        super().__init__()
        self.twin, self.dataset, self.strategy, self.before_evaluation = twin, dataset, strategy, before_evaluation

    def on_epoch_end(self, epoch, logs=None):
        self.before_evaluation()
        self.twin.set_weights(self.model.get_weights())
        results = self.twin.evaluate(self.dataset, verbose=0, return_dict=True)
        if several_workers(self.strategy):
            results = agreed(self.strategy, results)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})


def agreed(strategy, results: dict) -> dict:
    """Each worker's figures (name → number) averaged over the workers: all see the same numbers, so early stopping
    stops them at the same epoch."""
    means = _all_reduce(strategy, [tf.constant(float(v)) for v in results.values()], "MEAN")
    return dict(zip(results, means))


def check_workers_agree(strategy, epochs_done: int) -> None:
    """Refuse to train when the workers would resume a run from different epochs (they each read the run folder:
    it must be the same folder, on storage every worker sees). Call it before any variable is made: workers that
    build different models (one fresh, one from a checkpoint) fail in tf.distribute's own start-up, obscurely.
    No-op on one machine."""
    if not several_workers(strategy):
        return
    every = _on_every_replica(strategy, lambda: tf.distribute.get_replica_context().all_gather(
        tf.constant([epochs_done], tf.int64), axis=0))().numpy()
    low, high = int(every.min()), int(every.max())
    if low != high:
        raise StrategyError(f"the workers would resume this run from different epochs ({low} and {high}): every worker "
                            "must read the same run folder, on a disk they all see")


def wait_for_every_worker(strategy) -> None:
    """A last all-reduce: no worker leaves before the chief has scored and saved the run (a worker that is gone looks
    lost to the others). No-op on one machine."""
    if several_workers(strategy):
        _all_reduce(strategy, [tf.constant(0.0)], "SUM")


# --------------------------------------------------------------------------- Keras 3 under several workers


def allow_multi_worker_fit(model, strategy) -> None:
    """Two Keras 3 defects stop `fit` under MultiWorkerMirroredStrategy in its first step (keras-team/keras#20585,
    open as of Keras 3.15; tensorflow/tensorflow#72388). Both are fixed here, and only when several workers train:

    1. Before the first step Keras averages a whole input batch over the replicas to learn its shapes; across
       workers that average cannot be taken ("Attempt to convert a value (PerReplica…)"). One replica's batch has
       the shapes it needs. Fixed for `model`.
    2. It then averages each step's scalar logs along an axis they do not have ("Invalid reduction dimension 0").
       A plain mean over the replicas is what it means. Fixed in Keras' trainer module, for this process; the fix
       changes nothing for a strategy on one machine.

    Keras' private modules are imported here, not when the course starts, so that a Keras release that moved them
    fails only multi-worker training, with this message, and nothing else.
    """
    if not several_workers(strategy):
        return
    try:
        keras_tf_trainer = importlib.import_module("keras.src.backend.tensorflow.trainer")
    except ImportError:
        keras_tf_trainer = None
    missing = [name for name in ("_maybe_symbolic_build", "_symbolic_build", "_distribute_strategy")
               if not hasattr(model, name)]
    missing += [name for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker")
                if not hasattr(keras_tf_trainer, name)]
    if missing:
        raise StrategyError(f"Keras {keras.__version__} changed the internals that multi-worker training works around "
                            f"({', '.join(missing)}); train on one machine, or with the Keras version the course tests")
    model._maybe_symbolic_build = types.MethodType(_build_from_one_replica, model)
    if not getattr(keras_tf_trainer.reduce_per_replica, "fixed_for_multi_worker", False):
        keras_tf_trainer.reduce_per_replica = _reduce_per_replica_fixed(keras_tf_trainer)


def _build_from_one_replica(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return
    strategy = self.distribute_strategy
    if iterator is not None:
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda value: strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues) else value, next(batches))
            break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica_fixed(keras_tf_trainer):
    original = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto" and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.fixed_for_multi_worker = True
    return reduce_per_replica
