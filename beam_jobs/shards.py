"""The packed training shards: TFRecord files whose records are raw little-endian int32
arrays, token_ids [seq_len] followed by segment_ids [seq_len] (8 * seq_len bytes; schema
in packing.py). tf.data streams them record by record with TFRecordDataset and
tf.io.decode_raw; no shard is ever loaded whole.

The TFRecord framing (length, masked CRC32C of the length, data, masked CRC32C of the data)
is written here with google-crc32c, so writing shards does not import TensorFlow."""

import json
import os
import struct

import numpy as np

INDEX = "index.json"


def _masked_crc(data: bytes) -> int:
    import google_crc32c
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


def record_bytes(token_ids: np.ndarray, segment_ids: np.ndarray) -> bytes:
    return np.concatenate([token_ids, segment_ids]).astype("<i4").tobytes()


def read_records(path: str):
    """Yield (token_ids, segment_ids) from one shard, checking the CRCs (no TensorFlow)."""
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path}: corrupt record length at byte {f.tell() - 12}")
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            if _masked_crc(data) != data_crc:
                raise ValueError(f"{path}: corrupt record data at byte {f.tell() - length - 4}")
            values = np.frombuffer(data, "<i4")
            half = len(values) // 2
            yield values[:half].astype(np.int32), values[half:].astype(np.int32)


def parse_fn(seq_len: int):
    import tensorflow as tf

    def parse(record):
        values = tf.reshape(tf.io.decode_raw(record, tf.int32, little_endian=True), [2, seq_len])
        return {"token_ids": values[0], "segment_ids": values[1]}
    return parse


def dataset(directory: str, shuffle_files: bool = False, seed: int = 0):
    """A tf.data.Dataset of {"token_ids": int32[seq_len], "segment_ids": int32[seq_len]}
    from a tokenize output directory."""
    import tensorflow as tf
    index = read_index(directory)
    files = shard_files(directory, index)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    return ds.map(parse_fn(index["seq_len"]), num_parallel_calls=tf.data.AUTOTUNE)


def shard_files(directory: str, index: dict) -> list[str]:
    """The shards of a tokenize output that hold rows, in index order."""
    return [os.path.join(directory, s["path"]) for s in index["shards"] if s["rows"]]


def read_index(directory: str) -> dict:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(os.path.join(directory, INDEX), compression_type="uncompressed") as f:
        return json.loads(f.read().decode("utf-8"))
