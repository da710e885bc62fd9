"""Training checkpoints (TensorFlow), the same for every stage that updates weights."""

import shutil

import tensorflow as tf

from stages.trainer.model_checkpoint import CheckpointError, checkpoint_key, variable_path


def model_variables(model) -> tf.Module:
    """Every model variable by its path inside the model, for tf.train.Checkpoint.

    Checkpointing the Keras model object itself would silently skip the layers held in
    Python lists (decoder_layers, mtp_layers): Keras tracks them, TensorFlow's object
    graph does not."""
    holder = tf.Module()
    holder.variables_by_path = {variable_path(v): v for v in model.variables}
    if len(holder.variables_by_path) != len(model.variables):
        raise ValueError("model variable paths are not unique")
    return holder


def checkpoint_values(prefix: str) -> dict[str, list[int]]:
    """{key: shape} of a checkpoint after reading every value once, so a truncated or
    corrupt checkpoint is found before any variable is assigned from it."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        for key in shapes:
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError) as e:   # IndexError: a truncated data file
        raise CheckpointError(f"{prefix}: not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]})") from None
    return {key: list(shape) for key, shape in shapes.items()}


def missing_model_variables(prefix: str, holder: tf.Module) -> list[str]:
    """The model variable paths with no value of the same shape in the checkpoint."""
    shapes = checkpoint_values(prefix)
    return [path for path, variable in holder.variables_by_path.items()
            if shapes.get(checkpoint_key(path)) != list(variable.shape)]


def load_weights(model, checkpoint_prefix: str) -> None:
    """Every model variable from a checkpoint written by a training stage (extra values,
    the optimizer's, are ignored). A checkpoint that lacks any of the model's variables is
    an error naming them: a model half-initialised at random must never train on."""
    variables = model_variables(model)
    missing = missing_model_variables(checkpoint_prefix, variables)
    if missing:
        raise CheckpointError(f"{checkpoint_prefix}: {len(missing)} of the model's {len(model.variables)} "
                              f"variables are not in this checkpoint (e.g. {', '.join(missing[:3])}); is it a "
                              "checkpoint of a model of this shape?")
    tf.train.Checkpoint(model=variables).read(checkpoint_prefix).expect_partial()


def resumable(model, optimizer, directory: str, keep: int, init_weights: str | None = None,
              discard_unreadable: bool = False):
    """(checkpoint, manager) over model + optimizer in `directory`, restored from its newest
    checkpoint if there is one, else the model initialised from init_weights if given.

    A resume checkpoint that cannot be restored whole is an error naming it, or, with
    discard_unreadable (the stage's --force), removed with a message, and the run starts
    over. It is read through once before restoring, so a bad one assigns nothing."""
    holder = model_variables(model)
    checkpoint = tf.train.Checkpoint(model=holder, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)
    latest = manager.latest_checkpoint
    if latest:
        try:
            missing = missing_model_variables(latest, holder)
            if missing:
                raise CheckpointError(f"{latest}: lacks {len(missing)} model variables (e.g. {missing[0]})")
            checkpoint.restore(latest).assert_consumed()
        except (CheckpointError, AssertionError) as e:
            if not discard_unreadable:
                raise CheckpointError(f"{latest}: the resume checkpoint cannot be restored ({e}); rerun with "
                                      "--force to discard it and start over") from None
            print(f"discarding the unreadable resume checkpoint {latest} ({e}); starting over", flush=True)
            shutil.rmtree(directory, ignore_errors=True)
            manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)
        else:
            print(f"resumed from {latest} at step {int(optimizer.iterations.numpy())}", flush=True)
            return checkpoint, manager
    if init_weights:
        load_weights(model, init_weights)
        print(f"initialised from {init_weights}", flush=True)
    return checkpoint, manager
