"""checkpoint/final: the model checkpoint a training stage publishes and the next one
starts from. A TensorFlow checkpoint of every model variable by its path inside the model
(the TensorFlow trainer writes it with tf.train.Checkpoint(model=model_variables(model)),
stages/trainer/optimizer.py); the JAX trainer reads and writes the same keys from numpy
values here, so either backend's output feeds either backend's next stage.

    values = read_values(prefix, {"layers_0/mlp/up_proj/kernel": (32, 64), ...})
    write_values(prefix, {"layers_0/mlp/up_proj/kernel": array, ...})

TensorFlow is imported only when a checkpoint is read or written (by `_tensorflow`), so
the JAX trainer runs without it otherwise.
"""

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that lacks variables of the model."""


def variable_path(variable) -> str:
    """A variable's path inside its model: without the model's own name, which Keras
    numbers per process (deep_seek_v3_causal_lm_1/...)."""
    return variable.path.split("/", 1)[1]


def checkpoint_key(path: str) -> str:
    # tf.train escapes "." and "/" in the dictionary keys of the object graph
    escaped = path.replace(".", "..").replace("/", ".S")
    return f"model/variables_by_path/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def _tensorflow():
    """TensorFlow on the CPU only: it must not take the accelerators the JAX trainer holds."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:   # TensorFlow started already (its devices are fixed by then)
        pass
    return tf


def read_values(prefix: str, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """{path: value} for every path of `shapes` ({path: shape}) from the checkpoint at
    `prefix`. A path with no value of that shape in it is an error naming the paths: a
    model half-initialised at random must never train on."""
    tf = _tensorflow()
    try:
        reader = tf.train.load_checkpoint(prefix)
        saved = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        raise _unreadable(prefix, e) from None
    missing = [path for path, shape in shapes.items() if saved.get(checkpoint_key(path)) != list(shape)]
    if missing:
        raise CheckpointError(f"{prefix}: {len(missing)} of the model's {len(shapes)} variables are not in this "
                              f"checkpoint with their shape (e.g. {', '.join(missing[:3])}); is it a checkpoint of "
                              "a model of this shape?")
    try:
        return {path: reader.get_tensor(checkpoint_key(path)) for path in shapes}
    except (tf.errors.OpError, ValueError, IndexError) as e:   # IndexError: a truncated data file
        raise _unreadable(prefix, e) from None


def _unreadable(prefix: str, error: Exception) -> CheckpointError:
    return CheckpointError(f"{prefix}: not a readable checkpoint ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:300]})")


def write_values(prefix: str, values: dict[str, np.ndarray]) -> str:
    """Write {path: value} as a checkpoint with the TensorFlow trainer's keys; returns
    the prefix written."""
    tf = _tensorflow()
    holder = tf.Module()
    with tf.device("/CPU:0"):
        holder.variables_by_path = {path: tf.Variable(value) for path, value in values.items()}
    return tf.train.Checkpoint(model=holder).write(prefix)
