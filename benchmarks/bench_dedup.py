"""Dedup throughput, side by side on the same documents and MinHash parameters:
our Beam job (1 and 2 workers, DirectRunner multi-processing) vs a plain single-process
datasketch MinHash + MinHashLSH script (the baseline). Both are scored against exact-Jaccard
ground truth. Recall: true pairs of which at least one document is removed (the kept
output holds no copy of the pair); precision: removed documents that are near-duplicates
of the document kept for them. Also printed, the earlier cluster-based figures: true pairs
that end in one cluster, and removed documents with a true near-duplicate in their cluster.

    python benchmarks/bench_dedup.py [--files 300] [--workers 1 2]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "beam_jobs"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from datasketch import MinHash, MinHashLSH  # noqa: E402

from beam_jobs import dedup  # noqa: E402
from beam_jobs.minhash import (DEFAULT_BANDS, DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_ROWS,  # noqa: E402
                               DEFAULT_THRESHOLD, SCHEME, shingles)
from beam_test_helpers import read_rows  # noqa: E402
from test_dedup_quality import plant, precision_against_kept, recall_in_output, score  # noqa: E402
from beam_jobs.minhash import Signer, exact_jaccard  # noqa: E402


def stdlib_corpus(limit):
    root = os.path.dirname(os.__file__)
    out = []
    for dirpath, _, files in sorted(os.walk(root)):
        if "site-packages" in dirpath or "test" in dirpath:
            continue
        for name in sorted(files):
            if name.endswith(".py"):
                try:
                    text = open(os.path.join(dirpath, name), encoding="utf-8").read()
                except UnicodeDecodeError:
                    continue
                if 2000 < len(text) < 60000:
                    out.append((os.path.join(dirpath, name), text))
    return out[:limit]


def exact_pairs(docs, threshold):
    """Ground truth: every pair with exact Jaccard >= threshold on the same shingles, by the
    AllPairs prefix filter (a pair above the threshold shares a token among the rarest
    |S| - ceil(t|S|) + 1 of each set), so no O(n^2) loop is needed."""
    import math
    sets = {d["id"]: shingles(d["text"], DEFAULT_NGRAM) for d in docs}
    freq = {}
    for s in sets.values():
        for g in s:
            freq[g] = freq.get(g, 0) + 1
    index, candidates = {}, set()
    for doc_id, s in sets.items():
        ordered = sorted(s, key=lambda g: (freq[g], g))
        for g in ordered[:len(ordered) - math.ceil(threshold * len(ordered)) + 1]:
            for other in index.setdefault(g, []):
                candidates.add((min(doc_id, other), max(doc_id, other)))
            index[g].append(doc_id)
    return {(a, b) for a, b in candidates if exact_jaccard(sets[a], sets[b]) >= threshold}


def write_docs(directory, docs, shards=8):
    """Several Parquet files, as an ingest output has, so workers can split the read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from beam_jobs.documents import DOCUMENT_SCHEMA
    os.makedirs(directory, exist_ok=True)
    for k in range(shards):
        part = docs[k::shards]
        pq.write_table(pa.Table.from_pylist(part, schema=DOCUMENT_SCHEMA),
                       os.path.join(directory, f"kept-{k:05d}-of-{shards:05d}.parquet"), compression="zstd")


def baseline(docs, fast_hashing=False):
    """The plain script: exact hash dedup, MinHash per doc, MinHashLSH query-then-insert
    (a document is removed if it matches an already kept one), same parameters.
    fast_hashing: the same signatures as our job (datasketch over shingle_hashes)
    instead of datasketch's default SHA1 of every shingle string."""
    seen, kept, removed = {}, [], []
    template = MinHash(num_perm=DEFAULT_NUM_PERM, seed=1, scheme=SCHEME)
    signer = Signer(DEFAULT_NUM_PERM)
    lsh = MinHashLSH(threshold=DEFAULT_THRESHOLD, num_perm=DEFAULT_NUM_PERM, params=(DEFAULT_BANDS, DEFAULT_ROWS))
    sigs = {}
    for d in sorted(docs, key=lambda d: d["id"]):
        if d["text"] in seen:
            removed.append({**d, "cluster_id": seen[d["text"]]})
            continue
        seen[d["text"]] = d["id"]
        if fast_hashing:
            m = MinHash(num_perm=DEFAULT_NUM_PERM, permutations=template.permutations, scheme=SCHEME,
                        hashvalues=signer.signature(d["text"], DEFAULT_NGRAM))
        else:
            m = MinHash(num_perm=DEFAULT_NUM_PERM, permutations=template.permutations, scheme=SCHEME)
            m.update_batch(list(shingles(d["text"], DEFAULT_NGRAM)))
        match = [c for c in lsh.query(m) if m.jaccard(sigs[c]) >= DEFAULT_THRESHOLD]
        if match:
            removed.append({**d, "cluster_id": min(match)})
        else:
            lsh.insert(d["id"], m)
            sigs[d["id"]] = m
            kept.append(d)
    return kept, removed


def corpus(base, rounds):
    docs, seen = [], set()
    for r in range(rounds):
        for d in plant(base, seed=r):
            if d["id"] not in seen:
                seen.add(d["id"])
                docs.append(d)
    return docs


RUNS = [("baseline: datasketch defaults (SHA1 per shingle) + MinHashLSH, 1 process", "base-default"),
        ("baseline: datasketch over our shingle_hashes + MinHashLSH, 1 process", "base-same-hash"),
        ("beam_jobs.dedup, DirectRunner in_memory, 1 worker", ("in_memory", 1)),
        ("beam_jobs.dedup, DirectRunner multi_processing, 1 worker", ("multi_processing", 1)),
        ("beam_jobs.dedup, DirectRunner multi_processing, 2 workers", ("multi_processing", 2))]


def measure(docs, truth, tmp):
    write_docs(os.path.join(tmp, "in"), docs)
    results = {}
    for label, how in RUNS:
        if isinstance(how, str):
            start = time.perf_counter()
            kept, removed = baseline(docs, fast_hashing=how == "base-same-hash")
            t = time.perf_counter() - start
        else:
            mode, workers = how
            out = os.path.join(tmp, f"out-{mode}-{workers}")
            start = time.perf_counter()
            dedup.run(dedup.DedupParams(input=os.path.join(tmp, "in", "*.parquet"), output=out),
                      ["--runner", "DirectRunner", "--direct_running_mode", mode, "--direct_num_workers", str(workers)])
            t = time.perf_counter() - start
            kept, removed = read_rows(out), read_rows(out, "removed")
        recall, precision, _ = score(kept, removed, truth)
        results[label] = (t, recall_in_output(kept, truth), precision_against_kept(docs, removed), recall, precision)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--rounds", type=int, nargs=2, default=[2, 8],
                   help="planting rounds of the small and the large corpus (each adds one variant per file)")
    args = p.parse_args()
    base = stdlib_corpus(args.files)
    sizes = []
    for rounds in args.rounds:
        docs = corpus(base, rounds)
        truth = exact_pairs(docs, DEFAULT_THRESHOLD)
        mb = sum(len(d["text"].encode()) for d in docs) / 1e6
        print(f"corpus: {len(docs)} documents ({mb:.1f} MB), {len(truth)} true pairs (exact Jaccard >= "
              f"{DEFAULT_THRESHOLD}); num_perm {DEFAULT_NUM_PERM}, {DEFAULT_BANDS} bands x {DEFAULT_ROWS} rows, "
              f"{DEFAULT_NGRAM}-word shingles")
        with tempfile.TemporaryDirectory() as tmp:
            results = measure(docs, truth, tmp)
        ref = results[RUNS[0][0]][0]
        ref_same = results[RUNS[1][0]][0]
        for label, (t, recall, precision, joined, in_cluster) in results.items():
            print(f"  {label}: {t:.1f}s  {len(docs) / t:.0f} docs/s  x{ref / t:.2f} vs default baseline, "
                  f"x{ref_same / t:.2f} vs same-hashing baseline; recall {recall:.3f} precision {precision:.3f} "
                  f"(one-cluster recall {joined:.3f}, in-cluster precision {in_cluster:.3f})")
        sizes.append((len(docs), results))
    (n1, r1), (n2, r2) = sizes
    print(f"marginal throughput from {n1} to {n2} documents (start-up cost removed):")
    marginal = {label: (n2 - n1) / (r2[label][0] - r1[label][0]) if r2[label][0] > r1[label][0] else None
                for label in r1}
    ref, ref_same = marginal[RUNS[0][0]], marginal[RUNS[1][0]]
    for label, rate in marginal.items():
        if rate is None or ref is None or ref_same is None:
            print(f"  {label}: n/a (the larger corpus was not slower: machine noise)")
            continue
        print(f"  {label}: {rate:.0f} docs/s  x{rate / ref:.2f} vs default baseline, x{rate / ref_same:.2f} vs "
              f"same-hashing baseline")


if __name__ == "__main__":
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    main()
