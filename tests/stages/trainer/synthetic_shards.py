"""Packed shards of a learnable synthetic corpus, in the tokenize stage's format, so the
trainer tests need neither the data phase nor a tokenizer."""

import glob
import json
import os
import sysconfig

import numpy as np

from beam_jobs.packing import Packer
from beam_jobs.shards import INDEX, frame, record_bytes

EOS, PAD = 1, 2


ALPHABET = 64  # documents use ids 3 .. 3 + ALPHABET - 1, so even unigram statistics pay off early


def documents(count: int, seed: int = 0):
    """Arithmetic progressions mod ALPHABET: token t+1 follows from tokens t-1 and t."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        length, start, stride = rng.integers(20, 120), rng.integers(0, ALPHABET), rng.integers(1, 6)
        yield [int(3 + (start + stride * i) % ALPHABET) for i in range(length)]


def stdlib_documents(count: int, seed: int = 0):
    """Real text with real entropy: Python standard-library source files (present on every
    installation), one byte per token (ids 3 .. 258), files in a seeded order."""
    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    for index in np.random.default_rng(seed).permutation(len(paths))[:count]:
        with open(paths[index], "rb") as f:
            yield [3 + byte for byte in f.read()]


def write_shards(directory: str, seq_len: int, num_documents: int = 400,
                 num_shards: int = 2, seed: int = 0, corpus=documents) -> str:
    os.makedirs(directory, exist_ok=True)
    packer = Packer(seq_len, EOS, PAD)
    rows = []
    for doc in corpus(num_documents, seed):
        rows.extend(packer.add(doc))
    rows.extend(packer.flush())
    entries = []
    for shard in range(num_shards):
        name = f"shard-{shard:05d}-of-{num_shards:05d}.tfrecord"
        mine = rows[shard::num_shards]
        with open(os.path.join(directory, name), "wb") as f:
            for tokens, segments in mine:
                f.write(frame(record_bytes(tokens, segments)))
        entries.append({"path": name, "shard": shard, "rows": len(mine)})
    with open(os.path.join(directory, INDEX), "w") as f:
        json.dump({"seq_len": seq_len, "shards": entries, "rows": len(rows)}, f)
    return directory
