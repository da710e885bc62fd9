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
are written to DIR/removed-*.parquet ("not_sampled" or "zero_weight").

In process: `mix.run(mix.MixParams(input=GLOB, output=DIR, weights={"code": 0.87, "text": 0.13}, ...),
beam_args)`."""

import dataclasses
import hashlib
import logging
import math
import sys
import typing

import apache_beam as beam

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import REMOVED_SCHEMA, removed
from beam_jobs.params import JobParams, ParamError, param, parse_args as _parse_args

DEFAULT_WEIGHTS = {"code": 0.87, "text": 0.13}   # the seed document's mixture


def parse_weights(value: str) -> dict[str, float]:
    """"code=0.87,text=0.13" -> {"code": 0.87, "text": 0.13} (checked by MixParams, normalized by the job)."""
    weights = {}
    for item in value.split(","):
        name, sep, number = item.partition("=")
        try:
            weights[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"item {item!r} is not NAME=NUMBER") from None
        if not sep or not name.strip():
            raise ValueError(f"item {item!r} is not NAME=NUMBER")
    return weights


def normalized(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@dataclasses.dataclass(frozen=True)
class MixParams(JobParams):
    input: str = param(help="glob of document Parquet files")
    output: str = param(help="output directory")
    weights: dict[str, float] = param(factory=lambda: dict(DEFAULT_WEIGHTS), parse=parse_weights,
                                      show=",".join(f"{k}={v}" for k, v in DEFAULT_WEIGHTS.items()),
                                      help="NAME=WEIGHT,... per group (normalized to sum 1)")
    group_by: str = param("kind", choices=("kind", "source"), help="the document field that names the group")
    target_documents: int | None = param(None, minimum=1, help="documents in the mixture")
    target_tokens: int | None = param(None, minimum=1,
                                      help="tokens in the mixture, estimated as UTF-8 bytes / bytes_per_token")
    bytes_per_token: float = param(4.0, help="UTF-8 bytes per token, for target_tokens")
    seed: int = param(0, help="sampling seed")

    def check(self):
        if not isinstance(self.weights, dict) or not self.weights:
            raise ParamError("weights", f"expected a non-empty mapping of group to weight, got {self.weights!r}")
        bad = {k: w for k, w in self.weights.items()
               if not isinstance(k, str) or isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0}
        if bad or sum(self.weights.values()) <= 0:
            raise ParamError("weights", f"non-negative numbers with a positive total, got {self.weights}")
        if self.target_documents is not None and self.target_tokens is not None:
            raise ParamError("target_tokens", "give at most one of target_documents and target_tokens")
        if not self.bytes_per_token > 0:
            raise ParamError("bytes_per_token", f"must be > 0, got {self.bytes_per_token}")


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


def build(pipeline, params: MixParams):
    group_by, seed, bytes_per_token = params.group_by, params.seed, params.bytes_per_token
    weights = normalized(params.weights)
    target_kind = "tokens" if params.target_tokens is not None else "documents"
    target = params.target_tokens if params.target_tokens is not None else params.target_documents
    docs = parquet_io.read(pipeline, params.input) | "Count in" >> beam.ParDo(accounting.CountAs("in"))
    available = (docs
                 | "Units per group" >> beam.Map(lambda d: (d[group_by], units(d, target_kind, bytes_per_token)))
                 | "Sum per group" >> beam.CombinePerKey(sum)
                 | "As one dict" >> beam.combiners.ToDict())
    rates = available | "Rates" >> beam.Map(lambda a: sampling_rates(a, weights, target))
    sampled = docs | "Sample" >> beam.ParDo(Sample(group_by, weights, seed), rates=beam.pvalue.AsSingleton(rates)) \
        .with_output_types(typing.Any).with_outputs("removed", main="kept")
    parquet_io.write(sampled.kept, params.output, "kept")
    parquet_io.write(sampled.removed | "Count removed" >> beam.ParDo(accounting.CountByReason("removed")),
                     params.output, "removed", REMOVED_SCHEMA)


def run(params: MixParams, beam_args=()) -> dict:
    """Run the job; returns its manifest (also written to OUTPUT/job-manifest.json)."""
    params.validate()
    pipeline = beam.Pipeline(options=options.pipeline_options(beam_args))
    build(pipeline, params)
    return accounting.run_and_account(pipeline, params.output, "mix", dataclasses.asdict(params))


def parse_args(argv=None) -> tuple[MixParams, list[str]]:
    return _parse_args(MixParams, argv, "python -m beam_jobs.mix", __doc__)


def main(argv=None) -> int:
    params, beam_args = parse_args(argv)
    manifest = run(params, beam_args)
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "removed_by_reason", "stats")})
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main(sys.argv[1:]))
