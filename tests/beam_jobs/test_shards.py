"""The packed shard reader, index and verify_shards: a truncated shard, a missing one
and a malformed index are errors that name the file (no TensorFlow, no pipeline)."""

import json
import os

import numpy as np
import pytest

from beam_jobs import shards

SEQ_LEN = 8


def write_shards(directory, rows_per_shard=(3, 2, 0), record_bytes=True):
    os.makedirs(directory, exist_ok=True)
    entries = []
    for shard, rows in enumerate(rows_per_shard):
        name = f"shard-{shard:05d}-of-{len(rows_per_shard):05d}.tfrecord"
        with open(os.path.join(directory, name), "wb") as f:
            for r in range(rows):
                tokens = np.arange(SEQ_LEN, dtype=np.int32) + 10 * r
                f.write(shards.frame(shards.record_bytes(tokens, np.ones(SEQ_LEN, np.int32))))
        entry = {"path": name, "shard": shard, "rows": rows}
        if record_bytes:
            entry["bytes"] = os.path.getsize(os.path.join(directory, name))
        entries.append(entry)
    with open(os.path.join(directory, shards.INDEX), "w") as f:
        json.dump({"seq_len": SEQ_LEN, "shards": entries, "rows": sum(rows_per_shard)}, f)
    return str(directory)


def _truncate(path, keep):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep])


def test_intact_shards_verify_with_and_without_recorded_sizes(tmp_path):
    for record_bytes in (True, False):      # indexes written before "bytes" was recorded verify too
        directory = write_shards(tmp_path / str(record_bytes), record_bytes=record_bytes)
        index = shards.verify_shards(directory, read_all=True)
        assert [s["rows"] for s in index["shards"]] == [3, 2, 0]
        assert shards.framed_size(SEQ_LEN) * 3 == os.path.getsize(os.path.join(directory, index["shards"][0]["path"]))
        rows = list(shards.read_records(os.path.join(directory, index["shards"][0]["path"])))
        assert [r[0][0] for r in rows] == [0, 10, 20]


@pytest.mark.parametrize("keep", [5, 40, shards.framed_size(SEQ_LEN) + 70])   # in a header, in data, in a CRC
def test_a_truncated_shard_is_an_error_naming_the_file(tmp_path, keep):
    directory = write_shards(tmp_path)
    path = os.path.join(directory, "shard-00000-of-00003.tfrecord")
    _truncate(path, keep)
    with pytest.raises(ValueError, match=rf"{path}: truncated shard"):
        list(shards.read_records(path))
    with pytest.raises(ValueError, match=rf"{path}: {keep} bytes, but index.json records 3 records"):
        shards.verify_shards(directory)


def test_a_corrupt_record_is_named_by_a_full_check(tmp_path):
    directory = write_shards(tmp_path)
    path = os.path.join(directory, "shard-00001-of-00003.tfrecord")
    with open(path, "r+b") as f:
        f.seek(shards.framed_size(SEQ_LEN) + 20)   # the data of the second record
        f.write(b"\xff")
    shards.verify_shards(directory)                # sizes still agree
    with pytest.raises(ValueError, match=rf"{path}: corrupt record data at byte {shards.framed_size(SEQ_LEN)}"):
        shards.verify_shards(directory, read_all=True)


def test_a_missing_shard_or_a_wrong_count_is_named(tmp_path):
    directory = write_shards(tmp_path)
    index_path = os.path.join(directory, shards.INDEX)
    with open(index_path) as f:
        index = json.load(f)
    index["shards"][1]["rows"] = 4
    del index["shards"][1]["bytes"]
    with open(index_path, "w") as f:
        json.dump(index, f)
    with pytest.raises(ValueError, match=r"shard-00001-of-00003.tfrecord: \d+ bytes, but index.json records 4"):
        shards.verify_shards(directory)
    os.remove(os.path.join(directory, "shard-00001-of-00003.tfrecord"))
    with pytest.raises(FileNotFoundError, match="shard-00001-of-00003.tfrecord: shard listed in .*index.json"):
        shards.verify_shards(directory)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid shard index: Expecting property name"),
    ("[]", "expected a JSON object"),
    ('{"shards": []}', "seq_len must be a positive integer"),
    ('{"seq_len": 8, "shards": [{"rows": 1}]}', r"shards\[0\] has no path"),
    ('{"seq_len": 8, "shards": [{"path": "a", "rows": -1}]}', r"shards\[0\].rows must be a non-negative integer"),
])
def test_a_malformed_index_is_an_error_naming_it(tmp_path, content, message):
    (tmp_path / shards.INDEX).write_text(content)
    with pytest.raises(ValueError, match=rf"{tmp_path / shards.INDEX}: .*{message}"):
        shards.read_index(str(tmp_path))
    with pytest.raises(ValueError, match=str(tmp_path / shards.INDEX)):
        shards.verify_shards(str(tmp_path))


def test_a_missing_index_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / shards.INDEX}: no shard index"):
        shards.read_index(str(tmp_path))
