"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on a streamed sample of
the corpus: Parquet files are read batch by batch and every document is taken with
probability --sample (by a hash of its id, so the sample is reproducible); nothing loads
the whole corpus.

    python -m beam_jobs.train_tokenizer --input 'DIR/kept-*.parquet' --output DIR \\
        [--vocab-size 8192] [--min-frequency 2] [--sample 1.0] [--max-documents N]

In process: `train_tokenizer.run(train_tokenizer.TrainTokenizerParams(input=GLOB, output=DIR, ...))`.
No Beam pipeline: the trainer runs in this process (run() accepts beam_args like the other
jobs, and ignores them).

Special tokens take the first ids, DeepSeek style: 0 BOS, 1 EOS, 2 PAD, then the chat and
reasoning markers later stages use. Writes DIR/tokenizer.json and DIR/job-manifest.json."""

import dataclasses
import hashlib
import json
import os
import sys
import time

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs.params import JobParams, ParamError, param, parse_args as _parse_args

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT, THINK, END_THINK]   # ids 0..6
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


@dataclasses.dataclass(frozen=True)
class TrainTokenizerParams(JobParams):
    input: str = param(help="glob of document Parquet files")
    output: str = param(help="directory for tokenizer.json")
    vocab_size: int = param(8192, minimum=MIN_VOCAB_SIZE,
                            help=f"vocabulary size, at least {MIN_VOCAB_SIZE} (256 bytes + the special tokens)")
    min_frequency: int = param(2, minimum=0, help="minimum pair frequency for a merge")
    sample: float = param(1.0, help="fraction of documents to train on, in (0, 1]")
    max_documents: int | None = param(None, minimum=1, help="train on at most N documents")

    def check(self):
        if not 0.0 < self.sample <= 1.0:
            raise ParamError("sample", f"must be in (0, 1], got {self.sample}")


def _sampled(doc_id: str, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2 ** 64 < fraction


def stream_texts(pattern: str, fraction: float = 1.0, max_documents: int | None = None, stats: dict | None = None):
    paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    if not paths:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    stats = stats if stats is not None else {}
    stats.setdefault("documents_seen", 0)
    stats.setdefault("documents_used", 0)
    stats.setdefault("bytes_used", 0)
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            try:
                parquet = pq.ParquetFile(f)
            except Exception as e:   # pyarrow raises several types for truncated or foreign files
                raise ValueError(f"{path}: not a readable Parquet file: {type(e).__name__}: {e}") from None
            for batch in parquet.iter_batches(batch_size=256, columns=["id", "text"]):
                for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                    stats["documents_seen"] += 1
                    if not _sampled(doc_id, fraction):
                        continue
                    if max_documents is not None and stats["documents_used"] >= max_documents:
                        return
                    stats["documents_used"] += 1
                    stats["bytes_used"] += len(text.encode("utf-8"))
                    yield text


def train(texts, vocab_size: int, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size {vocab_size} is below the 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected, f"{token} got id {tokenizer.token_to_id(token)}"
    return tokenizer


def run(params: TrainTokenizerParams, beam_args=()) -> dict:
    """Train and save OUTPUT/tokenizer.json; returns the manifest (also written to
    OUTPUT/job-manifest.json). `beam_args` is accepted for the jobs' common signature and
    unused: training streams the Parquet files in this process."""
    params.validate()
    start = time.time()
    stats: dict = {}
    tokenizer = train(stream_texts(params.input, params.sample, params.max_documents, stats), params.vocab_size,
                      params.min_frequency)
    os.makedirs(params.output, exist_ok=True)
    tokenizer.save(os.path.join(params.output, "tokenizer.json"))
    manifest = {"job": "train_tokenizer", "params": dataclasses.asdict(params), "vocab_size": tokenizer.get_vocab_size(),
                "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
                "documents_in": stats["documents_seen"], "documents_kept": stats["documents_used"],
                "documents_removed": stats["documents_seen"] - stats["documents_used"],
                "removed_by_reason": {"not_in_sample": stats["documents_seen"] - stats["documents_used"]},
                "documents_quarantined": 0, "quarantined_by_reason": {}, "tokens_out": 0,
                "stats": {"bytes_used": stats["bytes_used"]}, "wall_seconds": round(time.time() - start, 3)}
    with open(os.path.join(params.output, "job-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def parse_args(argv=None) -> tuple[TrainTokenizerParams, list[str]]:
    return _parse_args(TrainTokenizerParams, argv, "python -m beam_jobs.train_tokenizer",
                       __doc__, beam=False)


def main(argv=None) -> int:
    params, _ = parse_args(argv)
    m = run(params)
    print({k: m[k] for k in ("vocab_size", "documents_kept", "wall_seconds")})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
