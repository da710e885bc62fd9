"""Tokenize throughput, side by side on the same documents: beam_jobs.tokenize (encode,
EOS, pack, write TFRecord shards; DirectRunner, 1 worker) vs tokenizers' encode_batch
called directly (the baseline, encode only).

    python benchmarks/bench_tokenize.py [--files 600] [--workers 1 2]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from beam_jobs import tokenize, train_tokenizer  # noqa: E402
from beam_jobs.documents import DOCUMENT_SCHEMA, make_document  # noqa: E402
from bench_dedup import stdlib_corpus  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=600)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=4, help="copies of the corpus (distinct ids) to lengthen the run")
    args = p.parse_args()
    base_docs = stdlib_corpus(args.files)
    docs = [make_document(t, "stdlib", "code", f"{path}#{k}") for k in range(args.repeat) for path, t in base_docs]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "in"))
        pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA), os.path.join(tmp, "in", "kept-0.parquet"))
        train_tokenizer.run(train_tokenizer.TrainTokenizerParams(
            input=os.path.join(tmp, "in", "*.parquet"), output=os.path.join(tmp, "tk"), vocab_size=8192,
            max_documents=len(base_docs)))
        tok_path = os.path.join(tmp, "tk", "tokenizer.json")
        tok = Tokenizer.from_file(tok_path)
        start = time.perf_counter()
        n_tokens = 0
        texts = [d["text"] for d in docs]
        for i in range(0, len(texts), 256):
            n_tokens += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + 256], add_special_tokens=False))
        base = time.perf_counter() - start
        print(f"documents {len(docs)} ({mb:.1f} MB), tokens {n_tokens}")
        print(f"baseline tokenizers encode_batch (256/batch): {base:.2f}s  {n_tokens / base / 1e6:.2f} M tokens/s")
        for w in args.workers:
            out = os.path.join(tmp, f"out{w}")
            start = time.perf_counter()
            m = tokenize.run(tokenize.TokenizeParams(input=os.path.join(tmp, "in", "*.parquet"), tokenizer=tok_path,
                                                     seq_len=1024, output=out, num_shards=8),
                             ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                              "--direct_num_workers", str(w)])
            t = time.perf_counter() - start
            print(f"beam_jobs.tokenize, {w} worker(s) (read Parquet, encode, pack, write TFRecord): {t:.2f}s  "
                  f"{m['tokens_out'] / t / 1e6:.2f} M tokens/s  ratio vs baseline {base / t:.2f}x")


if __name__ == "__main__":
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    main()
