"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on a streamed sample of
the corpus: Parquet files are read batch by batch and every document is taken with
probability --sample (by a hash of its id, so the sample is reproducible); nothing loads
the whole corpus.

    python -m beam_jobs.train_tokenizer --input 'DIR/kept-*.parquet' --output DIR \\
        [--vocab-size 8192] [--sample 1.0] [--max-documents N]

Special tokens take the first ids, DeepSeek style: 0 BOS, 1 EOS, 2 PAD, then the chat and
reasoning markers later stages use. Writes DIR/tokenizer.json and DIR/job-manifest.json."""

import argparse
import hashlib
import json
import os
import sys
import time

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT, THINK, END_THINK]   # ids 0..6


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
            parquet = pq.ParquetFile(f)
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
    if vocab_size < len(SPECIAL_TOKENS) + 256:
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_jobs.train_tokenizer", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="glob of document Parquet files")
    p.add_argument("--output", required=True, help="directory for tokenizer.json")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--sample", type=float, default=1.0, help="fraction of documents to train on")
    p.add_argument("--max-documents", type=int, default=None)
    return p


def run(argv=None) -> dict:
    args = parser().parse_args(argv)
    if not 0.0 < args.sample <= 1.0:
        raise ValueError(f"--sample must be in (0, 1], got {args.sample}")
    start = time.time()
    stats: dict = {}
    tokenizer = train(stream_texts(args.input, args.sample, args.max_documents, stats), args.vocab_size,
                      args.min_frequency)
    os.makedirs(args.output, exist_ok=True)
    tokenizer.save(os.path.join(args.output, "tokenizer.json"))
    manifest = {"job": "train_tokenizer", "params": vars(args), "vocab_size": tokenizer.get_vocab_size(),
                "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
                "documents_in": stats["documents_seen"], "documents_kept": stats["documents_used"],
                "documents_removed": stats["documents_seen"] - stats["documents_used"],
                "removed_by_reason": {"not_in_sample": stats["documents_seen"] - stats["documents_used"]},
                "documents_quarantined": 0, "quarantined_by_reason": {}, "tokens_out": 0,
                "stats": {"bytes_used": stats["bytes_used"]}, "wall_seconds": round(time.time() - start, 3)}
    with open(os.path.join(args.output, "job-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


if __name__ == "__main__":
    m = run(sys.argv[1:])
    print({k: m[k] for k in ("vocab_size", "documents_kept", "wall_seconds")})
