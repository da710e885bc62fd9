"""Packing tokenised samples into fixed-length rows for SFT.

Samples are laid end to end (first fit, in the order given) into rows of seq_len tokens.
Each sample gets its own segment id (1, 2, ...) and positions that restart at 0, so with
the model's segment mask a packed row trains exactly like its samples run one by one
(V3 SFT: "packed samples masked from each other"). Padding has segment 0 and no loss.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class PackedRows:
    token_ids: np.ndarray       # [rows, seq_len] int32
    segment_ids: np.ndarray     # 1.. per sample, 0 = padding
    position_ids: np.ndarray    # restart at every sample
    loss_mask: np.ndarray       # 1 where the token is a training target
    samples: int                # samples packed
    dropped_too_long: int       # samples longer than seq_len (counted, not truncated)

    def features(self) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids, "segment_ids": self.segment_ids,
                "position_ids": self.position_ids, "loss_mask": self.loss_mask}

    @property
    def target_tokens(self) -> int:
        return int(self.loss_mask.sum())


def pack(samples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> PackedRows:
    """samples: (token ids, loss mask) pairs."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    dropped = 0
    for ids, mask in samples:
        if len(ids) != len(mask):
            raise ValueError(f"a sample has {len(ids)} tokens but a loss mask of {len(mask)}")
        if len(ids) > seq_len:
            dropped += 1
            continue
        # first fit: the first row with room, else a new one
        row = next((r for r, free in enumerate(room) if free >= len(ids)), None)
        if row is None:
            rows.append([])
            room.append(seq_len)
            row = len(rows) - 1
        rows[row].append((ids, mask))
        room[row] -= len(ids)
    shape = (len(rows), seq_len)
    token_ids = np.full(shape, pad_id, np.int32)
    segment_ids, position_ids, loss_mask = (np.zeros(shape, np.int32) for _ in range(3))
    for r, row in enumerate(rows):
        start = 0
        for segment, (ids, mask) in enumerate(row, start=1):
            end = start + len(ids)
            token_ids[r, start:end] = ids
            segment_ids[r, start:end] = segment
            position_ids[r, start:end] = np.arange(len(ids))
            loss_mask[r, start:end] = mask
            start = end
    return PackedRows(token_ids, segment_ids, position_ids, loss_mask, len(samples) - dropped, dropped)
