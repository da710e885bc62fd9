"""The training input: packed shards (beam_jobs/shards.py) -> batches of token ids,
segment ids, position ids and a loss mask, sharded per worker, shuffled by seed,
repeated and prefetched, so the trainer never waits for data.

Rows longer than the shards' are formed by joining consecutive shard rows before
shuffling. Segments are recomputed from EOS tokens (a new document starts after each EOS),
which also rejoins a document that the packer split across rows; positions restart at
each document so a packed sequence trains like separate ones.
"""

import tensorflow as tf

from beam_jobs import shards

SHUFFLE_BUFFER = 1024


def document_segments(token_ids, shard_segments, eos_id: int):
    """[b, s] segment ids 1, 2, ... starting after each EOS; 0 where the shard pads."""
    after_eos = tf.cast(tf.equal(token_ids, eos_id), tf.int32)
    starts = tf.pad(after_eos[:, :-1], [[0, 0], [1, 0]])
    return tf.where(shard_segments > 0, 1 + tf.cumsum(starts, axis=1), 0)


def segment_positions(segment_ids):
    """[b, s] position of each token within its segment (padding counts on from the last)."""
    length = tf.shape(segment_ids)[1]
    # segment ids are non-decreasing except trailing padding (0): sort padding last
    ordered = tf.where(segment_ids > 0, segment_ids, tf.int32.max)
    first = tf.searchsorted(ordered, ordered, side="left")
    return tf.range(length)[None, :] - tf.cast(first, tf.int32)


def to_features(token_ids, shard_segments, eos_id: int, mask_documents: bool):
    segments = document_segments(token_ids, shard_segments, eos_id)
    positions = segment_positions(segments) if mask_documents else \
        tf.broadcast_to(tf.range(tf.shape(token_ids)[1])[None, :], tf.shape(token_ids))
    return {"token_ids": token_ids, "segment_ids": segments, "position_ids": positions,
            "loss_mask": tf.cast(segments > 0, tf.int32)}


def training_dataset(shard_dir: str, seq_len: int, batch_size: int, seed: int, eos_id: int,
                     mask_documents: bool = True, input_context: tf.distribute.InputContext | None = None,
                     skip_batches: int = 0, sharding: str = "batches"):
    """An endless dataset of batches [batch_size, seq_len] for one input pipeline, its
    order fixed by the seed; skip_batches resumes it where a run left off.

    With several input pipelines (workers), sharding "batches" has every worker read the
    whole stream and keep every n-th batch: the global batch is then exactly the one a
    single process would see (small scale, tests). "files" splits the records between
    workers so each reads 1/n of the data: the only choice at scale.
    """
    if sharding not in ("batches", "files"):
        raise ValueError(f"input sharding must be 'batches' or 'files', got {sharding!r}")
    index = shards.verify_shards(shard_dir)   # a truncated shard is named here, not mid-training
    shard_len = index["seq_len"]
    if seq_len % shard_len:
        raise ValueError(f"{shard_dir}: seq_len {seq_len} is not a multiple of the shards' {shard_len}")
    files = shards.shard_files(shard_dir, index)
    if not files:
        raise ValueError(f"{shard_dir}: no packed rows to train on")
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    records = tf.data.TFRecordDataset(files)
    if pipelines > 1 and sharding == "files":
        records = records.shard(pipelines, input_context.input_pipeline_id)
    rows = records.map(shards.parse_fn(shard_len), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    join = seq_len // shard_len
    rows = rows.batch(join, drop_remainder=True).map(
        lambda r: {k: tf.reshape(v, [seq_len]) for k, v in r.items()})
    batches = (rows.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
               .repeat()
               .batch(batch_size, drop_remainder=True))
    if pipelines > 1 and sharding == "batches":
        batches = batches.shard(pipelines, input_context.input_pipeline_id)
    return (batches
            .map(lambda r: to_features(r["token_ids"], r["segment_ids"], eos_id, mask_documents),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .skip(skip_batches)
            .prefetch(tf.data.AUTOTUNE))


def array_dataset(features: dict, batch_size: int, seed: int,
                  input_context: tf.distribute.InputContext | None = None, skip_batches: int = 0):
    """An endless, seed-ordered dataset of batches from feature arrays held in memory
    (packed SFT rows: token_ids, segment_ids, position_ids, loss_mask), sharded per
    worker by batches like training_dataset's exact mode."""
    rows = len(features["token_ids"])
    if rows < batch_size:
        raise ValueError(f"{rows} packed rows are fewer than one batch of {batch_size}")
    batches = (tf.data.Dataset.from_tensor_slices(features)
               .shuffle(rows, seed=seed, reshuffle_each_iteration=True)
               .repeat()
               .batch(batch_size, drop_remainder=True))
    if input_context is not None and input_context.num_input_pipelines > 1:
        batches = batches.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return batches.skip(skip_batches).prefetch(tf.data.AUTOTUNE)
