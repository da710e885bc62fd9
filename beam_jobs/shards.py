"""The packed training shards: TFRecord files whose records are raw little-endian int32
arrays, token_ids [seq_len] followed by segment_ids [seq_len] (8 * seq_len bytes; schema
in packing.py). tf.data streams them record by record with TFRecordDataset and
tf.io.decode_raw; no shard is ever loaded whole.

The TFRecord framing (length, masked CRC32C of the length, data, masked CRC32C of the data)
is written here with google-crc32c, so writing shards does not import TensorFlow.

index.json lists the shards: {"seq_len": N, "shards": [{"path", "rows", "bytes", ...}]}
("rows" is the shard's record count; "bytes" its size, in indexes written by the tokenize
job). Every record is 16 + 8 * seq_len bytes framed, so a shard's size follows from its
rows as well. verify_shards() checks the files against the index before training; every
error here names the file."""

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


def framed_size(seq_len: int) -> int:
    """Bytes of one framed record: 8 length + 4 CRC + 8 * seq_len data + 4 CRC."""
    return 16 + 8 * seq_len


def read_records(path: str):
    """Yield (token_ids, segment_ids) from one shard, checking the framing and CRCs (no
    TensorFlow). A truncated or corrupt shard is a ValueError naming the file and byte."""
    with open(path, "rb") as f:
        offset = 0
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: truncated shard: a record header at byte {offset} has "
                                 f"{len(header)} of 12 bytes")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path}: corrupt record length at byte {offset}")
            data = f.read(length)
            crc = f.read(4)
            if len(data) < length or len(crc) < 4:
                raise ValueError(f"{path}: truncated shard: the record at byte {offset} has "
                                 f"{len(data) + len(crc)} of {length + 4} bytes after its header")
            if _masked_crc(data) != struct.unpack("<I", crc)[0]:
                raise ValueError(f"{path}: corrupt record data at byte {offset}")
            offset += 16 + length
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
    index = verify_shards(directory)
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


def _beam_filesystems(paths):
    """Beam's FileSystems (any URI: gs://, s3://, ...), or None for local paths where Beam
    is not installed (the JAX trainer's GPU image reads shards without it)."""
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        if any("://" in path for path in paths):
            raise
        return None
    return FileSystems


def _file_sizes(paths: list[str]) -> list[int | None]:
    """Size in bytes of each path, None where it does not exist."""
    filesystems = _beam_filesystems(paths)
    if filesystems is None:
        return [os.path.getsize(p) if os.path.isfile(p) else None for p in paths]
    matches = filesystems.match(paths) if paths else []
    return [m.metadata_list[0].size_in_bytes if m.metadata_list else None for m in matches]


def read_index(directory: str) -> dict:
    """DIR/index.json, checked: a missing or malformed index is an error naming it."""
    path = os.path.join(directory, INDEX)
    filesystems = _beam_filesystems([path])
    if not (filesystems.exists(path) if filesystems else os.path.isfile(path)):
        raise FileNotFoundError(f"{path}: no shard index (is {directory} the output of the tokenize job?)")
    if filesystems is None:
        with open(path, "rb") as f:
            raw = f.read()
    else:
        with filesystems.open(path, compression_type="uncompressed") as f:
            raw = f.read()
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a valid shard index: {e}") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path}: not a valid shard index: expected a JSON object")
    seq_len = index.get("seq_len")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"{path}: not a valid shard index: seq_len must be a positive integer, got {seq_len!r}")
    if not isinstance(index.get("shards"), list):
        raise ValueError(f"{path}: not a valid shard index: no list of shards")
    for i, entry in enumerate(index["shards"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"{path}: not a valid shard index: shards[{i}] has no path")
        for key in ("rows", "bytes"):
            value = entry.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{path}: not a valid shard index: shards[{i}].{key} must be a "
                                 f"non-negative integer, got {value!r}")
        if "rows" not in entry:
            raise ValueError(f"{path}: not a valid shard index: shards[{i}] has no rows")
    return index


def verify_shards(directory: str, read_all: bool = False) -> dict:
    """Check every shard the index lists: it exists and has the size its record count
    implies (and the recorded byte size, where the index records one); with read_all,
    also read every record (framing and CRCs) and count them. Returns the index; raises
    ValueError naming the bad file (FileNotFoundError for a missing one)."""
    index = read_index(directory)
    record = framed_size(index["seq_len"])
    paths = [os.path.join(directory, entry["path"]) for entry in index["shards"]]
    for entry, path, size in zip(index["shards"], paths, _file_sizes(paths)):
        if size is None:
            raise FileNotFoundError(f"{path}: shard listed in {os.path.join(directory, INDEX)} does not exist")
        rows = entry["rows"]
        expected = rows * record
        if entry.get("bytes", expected) != expected:
            raise ValueError(f"{os.path.join(directory, INDEX)}: {entry['path']} is recorded with {rows} records "
                             f"of {record} bytes but {entry['bytes']} bytes")
        if size != expected:
            raise ValueError(f"{path}: {size} bytes, but {INDEX} records {rows} records of {record} bytes "
                             f"({expected} bytes): the shard is truncated or was overwritten")
        if read_all:
            count = 0
            for token_ids, _ in read_records(path):
                if len(token_ids) != index["seq_len"]:
                    raise ValueError(f"{path}: record {count} has {len(token_ids)} tokens, not seq_len "
                                     f"{index['seq_len']}")
                count += 1
            if count != rows:
                raise ValueError(f"{path}: {count} records, but {INDEX} records {rows}")
    return index
