"""The JAX trainer's input: batches of the packed shards (beam_jobs/shards.py) read with
numpy, no TensorFlow (the GPU machines carry none).

Every record has the same framed size, so row r of a shard is read at byte r * size by a
memory map: nothing is loaded whole. A batch is a function of (seed, batch number) alone:
each epoch is a permutation of the rows drawn from the seed, so a resumed run (or another
process) recomputes exactly the batches an uninterrupted one saw. Features follow
stages/trainer/input.py: segments restart after each EOS, positions restart per segment.
"""

import numpy as np

from beam_jobs import shards


def document_segments(token_ids, shard_segments, eos_id: int):
    """[b, s] segment ids 1, 2, ... starting after each EOS; 0 where the shard pads."""
    starts = np.pad((token_ids == eos_id)[:, :-1], ((0, 0), (1, 0))).astype(np.int32)
    return np.where(shard_segments > 0, 1 + np.cumsum(starts, axis=1), 0).astype(np.int32)


def segment_positions(segment_ids):
    """[b, s] position of each token within its segment (padding counts on from the last)."""
    length = segment_ids.shape[1]
    ordered = np.where(segment_ids > 0, segment_ids, np.iinfo(np.int32).max)
    first = np.stack([np.searchsorted(row, row, side="left") for row in ordered])
    return (np.arange(length)[None, :] - first).astype(np.int32)


class PackedRows:
    def __init__(self, shard_dir: str, seq_len: int, eos_id: int, seed: int, mask_documents: bool = True):
        index = shards.verify_shards(shard_dir)   # a truncated shard is named here, not mid-training
        self.shard_len = index["seq_len"]
        if seq_len % self.shard_len:
            raise ValueError(f"{shard_dir}: seq_len {seq_len} is not a multiple of the shards' {self.shard_len}")
        self.join, self.seq_len, self.eos_id, self.seed = seq_len // self.shard_len, seq_len, eos_id, seed
        self.mask_documents = mask_documents
        record = shards.framed_size(self.shard_len)
        self.maps = [np.memmap(path, np.uint8, "r", shape=(entry["rows"], record))
                     for path, entry in zip(shards.shard_files(shard_dir, index), (e for e in index["shards"]
                                                                                   if e["rows"]))]
        # (shard, row) of every record in index order; training rows join `join` consecutive ones
        self.records = [(s, r) for s, m in enumerate(self.maps) for r in range(m.shape[0])]
        self.rows = len(self.records) // self.join
        if not self.rows:
            raise ValueError(f"{shard_dir}: no packed rows of {seq_len} tokens to train on")

    def _row(self, row: int):
        values = []
        for shard, record in self.records[row * self.join:(row + 1) * self.join]:
            data = np.asarray(self.maps[shard][record, 12:12 + 8 * self.shard_len]).view("<i4")
            values.append(data.reshape(2, self.shard_len))
        joined = np.concatenate(values, axis=1)
        return joined[0], joined[1]

    def batch(self, number: int, size: int) -> dict:
        """Batch `number` of `size` rows: [size, seq_len] int32 features."""
        if size > self.rows:
            raise ValueError(f"a batch of {size} sequences needs more than the {self.rows} packed rows")
        per_epoch = self.rows // size
        epoch, position = divmod(number, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        picked = [self._row(r) for r in order[position * size:(position + 1) * size]]
        token_ids = np.stack([p[0] for p in picked]).astype(np.int32)
        segments = document_segments(token_ids, np.stack([p[1] for p in picked]), self.eos_id)
        positions = segment_positions(segments) if self.mask_documents else \
            np.broadcast_to(np.arange(self.seq_len, dtype=np.int32), token_ids.shape).copy()
        return {"token_ids": token_ids, "segment_ids": segments, "position_ids": positions,
                "loss_mask": (segments > 0).astype(np.int32)}

    def step_batches(self, step: int, micro_batches: int, size: int) -> dict:
        """The micro-batches of optimizer step `step`, stacked: [micro_batches, size, seq_len]."""
        parts = [self.batch(step * micro_batches + i, size) for i in range(micro_batches)]
        return {k: np.stack([p[k] for p in parts]) for k in parts[0]}
