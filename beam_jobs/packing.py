"""Packing token streams into fixed-length rows with segment ids.

Schema of one packed example (what the training input pipeline reads):
    token_ids   [seq_len] int32  tokens of one or more documents, each followed by EOS;
                                  the tail of the last row is PAD
    segment_ids [seq_len] int32  1, 2, 3, ... for the documents (or document pieces) in
                                  this row, in order; 0 for padding
A document longer than the room left in a row continues in the next row(s), where its
piece gets a new segment id (ids restart at 1 in each row), so attention masked by
segment never crosses a document boundary."""

import numpy as np


class Packer:
    def __init__(self, seq_len: int, eos_id: int, pad_id: int):
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len, self.eos_id, self.pad_id = seq_len, eos_id, pad_id
        self._tokens = np.full(seq_len, pad_id, np.int32)
        self._segments = np.zeros(seq_len, np.int32)
        self._fill = 0
        self._segment = 0
        self.pad_tokens = 0

    def add(self, token_ids):
        """Append one document (+ EOS); yields every row that became full."""
        ids = np.asarray(list(token_ids) + [self.eos_id], np.int32)
        while len(ids):
            room = self.seq_len - self._fill
            piece, ids = ids[:room], ids[room:]
            self._segment += 1
            self._tokens[self._fill:self._fill + len(piece)] = piece
            self._segments[self._fill:self._fill + len(piece)] = self._segment
            self._fill += len(piece)
            if self._fill == self.seq_len:
                yield self._take()

    def flush(self):
        """The last, padded row, if any tokens are pending."""
        if self._fill:
            self.pad_tokens += self.seq_len - self._fill
            yield self._take()

    def _take(self):
        row = (self._tokens.copy(), self._segments.copy())
        self._tokens[:] = self.pad_id
        self._segments[:] = 0
        self._fill = 0
        self._segment = 0
        return row


def unpack(rows, eos_id: int) -> list[list[int]]:
    """Inverse of packing (for tests and inspection): documents' token ids, EOS stripped,
    pieces split across rows joined again."""
    docs, current = [], []
    for token_ids, segment_ids in rows:
        for token, segment in zip(token_ids.tolist(), segment_ids.tolist()):
            if segment == 0:
                continue
            if token == eos_id:
                docs.append(current)
                current = []
                continue
            current.append(token)
    if current:
        docs.append(current)
    return docs
