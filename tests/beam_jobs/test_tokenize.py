"""Tokenize + pack: decoding a shard gives back the documents in order, with EOS and
segment ids; tf.data reads the shards."""

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from beam_jobs import shards, tokenize, train_tokenizer
from beam_jobs.documents import DOCUMENT_SCHEMA, make_document
from beam_jobs.packing import Packer, unpack

from beam_test_helpers import IN_MEMORY, load_stdlib_sources


def test_packer_splits_long_documents_and_marks_segments():
    packer = Packer(seq_len=8, eos_id=1, pad_id=2)
    rows = list(packer.add([10, 11, 12])) + list(packer.add([20, 21, 22, 23, 24, 25])) + list(packer.flush())
    tokens = [r[0].tolist() for r in rows]
    segments = [r[1].tolist() for r in rows]
    assert tokens == [[10, 11, 12, 1, 20, 21, 22, 23], [24, 25, 1, 2, 2, 2, 2, 2]]
    assert segments == [[1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 0, 0, 0, 0, 0]]
    assert unpack(rows, eos_id=1) == [[10, 11, 12], [20, 21, 22, 23, 24, 25]]
    assert packer.pad_tokens == 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    texts = [text for _, text in load_stdlib_sources()[:30]] + ["short one", "x = 1\n"]
    docs = [make_document(t, "s", "code", f"doc{i}") for i, t in enumerate(texts)]
    (root / "docs").mkdir()
    pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA), root / "docs" / "kept-0.parquet")
    train_tokenizer.run(train_tokenizer.TrainTokenizerParams(input=str(root / "docs" / "*.parquet"),
                                                             output=str(root / "tk"), vocab_size=1024))
    return root, docs


def test_tokenizer_has_deepseek_special_tokens(corpus):
    root, _ = corpus
    tok = Tokenizer.from_file(str(root / "tk" / "tokenizer.json"))
    assert tok.token_to_id("<｜begin▁of▁sentence｜>") == 0
    assert tok.token_to_id("<｜end▁of▁sentence｜>") == 1
    for t in ("<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"):
        assert tok.token_to_id(t) is not None
    assert tok.get_vocab_size() == 1024
    assert tok.decode(tok.encode("def f(x):\n    return x  # é").ids) == "def f(x):\n    return x  # é"


@pytest.mark.slow
def test_shards_decode_to_the_documents_in_order(corpus):
    root, docs = corpus
    out = root / "packed"
    seq_len = 64
    manifest = tokenize.run(tokenize.TokenizeParams(input=str(root / "docs" / "*.parquet"),
                                                    tokenizer=str(root / "tk" / "tokenizer.json"), seq_len=seq_len,
                                                    output=str(out), num_shards=3), IN_MEMORY)
    tok = Tokenizer.from_file(str(root / "tk" / "tokenizer.json"))
    index = shards.read_index(str(out))
    assert manifest["documents_in"] == manifest["documents_kept"] == len(docs) == index["documents"]
    by_id = {d["id"]: d for d in docs}
    total_rows = 0
    for shard in index["shards"]:
        rows = list(shards.read_records(os.path.join(out, shard["path"])))
        total_rows += len(rows)
        assert len(rows) == shard["rows"]
        for token_ids, segment_ids in rows:
            assert token_ids.shape == segment_ids.shape == (seq_len,)
            assert np.all(np.diff(segment_ids[segment_ids > 0]) >= 0)   # 1, 2, 3 ... within a row
            assert np.all(token_ids[segment_ids == 0] == 2)             # padding is PAD with segment 0
        expected = sorted((d for d in docs if tokenize.shard_of(d["id"], 3) == shard["shard"]), key=lambda d: d["id"])
        decoded = [tok.decode(ids) for ids in unpack(rows, eos_id=1)]
        assert decoded == [d["text"] for d in expected]
        eos_count = sum(int(np.sum(t == 1)) for t, _ in rows)
        assert eos_count == len(expected)
    assert total_rows == index["rows"]
    assert all(s["bytes"] == os.path.getsize(out / s["path"]) == s["rows"] * shards.framed_size(seq_len)
               for s in index["shards"])
    assert shards.verify_shards(str(out), read_all=True) == index
    assert manifest["tokens_out"] == index["tokens"] == sum(len(tok.encode(d["text"]).ids) + 1 for d in docs)

    import tensorflow as tf
    ds = shards.dataset(str(out))
    first = next(iter(ds))
    assert first["token_ids"].dtype == tf.int32 and first["token_ids"].shape == (seq_len,)
    assert sum(1 for _ in ds) == index["rows"]
