"""mix: sample documents by per-group weights (group = kind or source) to a target
document or token count, reproducibly by seed.

    python -m beam_jobs.mix --input 'DIR/kept-*.parquet' --output DIR \\
        [--weights code=0.87,text=0.13] [--group-by kind|source] \\
        [--target-documents N | --target-tokens N] [--bytes-per-token 4.0] [--seed 0]

Each group g with weight w_g gets w_g * target units (documents, or tokens estimated as
UTF-8 bytes / bytes-per-token, since the tokenizer is trained after the mix). Without a
target, the largest mixture that needs no upsampling. A document is kept floor(rate) +
Bernoulli(frac(rate)) times, decided by a hash of (seed, id), so the same seed gives the
same mixture on any runner. Extra copies get ids "ID#rK". Documents sampled zero times
are written to DIR/removed-*.parquet ("not_sampled" or "zero_weight")."""

import argparse
import hashlib
import logging
import math
import sys
import typing

import apache_beam as beam

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import REMOVED_SCHEMA, removed

DEFAULT_WEIGHTS = {"code": 0.87, "text": 0.13}   # the seed document's mixture


def parse_weights(value: str) -> dict[str, float]:
    weights = {}
    for item in value.split(","):
        name, sep, number = item.partition("=")
        try:
            weights[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"--weights item {item!r} is not NAME=NUMBER") from None
        if not sep or weights[name.strip()] < 0:
            raise ValueError(f"--weights item {item!r} is not NAME=NONNEGATIVE_NUMBER")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("--weights must have a positive total")
    return {k: v / total for k, v in weights.items()}


def units(doc: dict, target_kind: str, bytes_per_token: float) -> float:
    return 1.0 if target_kind == "documents" else len(doc["text"].encode("utf-8")) / bytes_per_token


def sampling_rates(available: dict[str, float], weights: dict[str, float], target: float | None) -> dict[str, float]:
    """Copies per document for each group: weight * target / available."""
    present = {g: a for g, a in available.items() if weights.get(g, 0) > 0 and a > 0}
    if not present:
        return {}
    if target is None:  # the largest mixture without upsampling
        target = min(a / weights[g] for g, a in present.items())
    return {g: weights[g] * target / a for g, a in present.items()}


def uniform(seed: int, doc_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


class Sample(beam.DoFn):
    def __init__(self, group_by, weights, seed):
        self.group_by, self.weights, self.seed = group_by, weights, seed

    def process(self, doc, rates):
        group = doc[self.group_by]
        if self.weights.get(group, 0) <= 0:
            yield beam.pvalue.TaggedOutput("removed", removed(doc, "zero_weight", f"{self.group_by} {group!r}"))
            return
        rate = rates[group]
        copies = math.floor(rate) + (1 if uniform(self.seed, doc["id"]) < rate - math.floor(rate) else 0)
        if copies == 0:
            yield beam.pvalue.TaggedOutput("removed", removed(doc, "not_sampled", f"rate {rate:.4f}"))
            return
        accounting.counter("kept").inc()
        yield doc
        for k in range(1, copies):
            accounting.counter("repeated_copies").inc()
            yield {**doc, "id": f"{doc['id']}#r{k}"}


def build(pipeline, input_glob, output, weights=DEFAULT_WEIGHTS, group_by="kind", target_documents=None,
          target_tokens=None, bytes_per_token=4.0, seed=0):
    if target_documents is not None and target_tokens is not None:
        raise ValueError("give at most one of --target-documents and --target-tokens")
    target_kind = "tokens" if target_tokens is not None else "documents"
    target = target_tokens if target_tokens is not None else target_documents
    docs = parquet_io.read(pipeline, input_glob) | "Count in" >> beam.ParDo(accounting.CountAs("in"))
    available = (docs
                 | "Units per group" >> beam.Map(lambda d: (d[group_by], units(d, target_kind, bytes_per_token)))
                 | "Sum per group" >> beam.CombinePerKey(sum)
                 | "As one dict" >> beam.combiners.ToDict())
    rates = available | "Rates" >> beam.Map(lambda a: sampling_rates(a, weights, target))
    sampled = docs | "Sample" >> beam.ParDo(Sample(group_by, weights, seed), rates=beam.pvalue.AsSingleton(rates)) \
        .with_output_types(typing.Any).with_outputs("removed", main="kept")
    parquet_io.write(sampled.kept, output, "kept")
    parquet_io.write(sampled.removed | "Count removed" >> beam.ParDo(accounting.CountByReason("removed")),
                     output, "removed", REMOVED_SCHEMA)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_jobs.mix", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", type=parse_weights, default=DEFAULT_WEIGHTS, help="NAME=WEIGHT,... (normalized)")
    p.add_argument("--group-by", choices=["kind", "source"], default="kind")
    p.add_argument("--target-documents", type=int, default=None)
    p.add_argument("--target-tokens", type=int, default=None)
    p.add_argument("--bytes-per-token", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def run(argv=None) -> dict:
    args, beam_options = options.parse(parser(), argv)
    pipeline = beam.Pipeline(options=beam_options)
    build(pipeline, args.input, args.output, args.weights, args.group_by, args.target_documents,
          args.target_tokens, args.bytes_per_token, args.seed)
    return accounting.run_and_account(pipeline, args.output, "mix", vars(args))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    manifest = run(sys.argv[1:])
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "removed_by_reason", "stats")})
