"""dedup: exact dedup by content hash, then MinHash-LSH near-dedup with connected
components computed inside Beam.

    python -m beam_jobs.dedup --input 'DIR/kept-*.parquet' --output DIR \\
        [--threshold 0.8] [--num-perm 120] [--bands 20] [--rows 6] [--ngram 5] [--cc-rounds 6]

In process: `dedup.run(dedup.DedupParams(input=GLOB, output=DIR, threshold=0.8, ...), beam_args)`.

Steps (each a transform below):
  1. signatures and content hashes in one pass over the text (datasketch MinHash over
     word n-gram shingles); exact: group ids by content hash, the smallest id survives,
     the rest are removed ("exact_duplicate").
  2-3. bands of the survivors: group (id, signature) by (band, rows' hash values); every
     pair in a bucket is a candidate.
  4. verify: a candidate pair is an edge if its estimated Jaccard >= threshold; each
     bucket's verified edges are reduced to a star per local component (same
     connectivity, n-1 edges).
  5. clusters: connected components of the verified pairs (large-star/small-star rounds).
  6. survivors: per cluster (cluster_id: its smallest id, which stays) the members are
     taken in id order, and one is removed ("near_duplicate") only if its estimated
     Jaccard with a document kept so far reaches the threshold (its kept_id); else it
     stays too (counted "chain_member_kept"). So a chain a ~ b ~ c with a, c far apart
     removes b and keeps a and c.
  7. Exact duplicates point at what their survivor points at. Only ids, hashes and
     signatures are shuffled before this step; the decisions are joined back onto the
     documents once.
Outputs DIR/kept-*.parquet, DIR/removed-*.parquet and DIR/job-manifest.json."""

import dataclasses
import logging
import sys
import typing

import apache_beam as beam
import numpy as np

from beam_jobs import accounting, options, parquet_io
from beam_jobs.components import ConnectedComponents, check_converged
from beam_jobs.documents import REMOVED_SCHEMA, content_hash, removed
from beam_jobs.minhash import (DEFAULT_BANDS, DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_ROWS,
                               DEFAULT_THRESHOLD, Signer, band_keys, check_banding)
from beam_jobs.params import JobParams, ParamError, param, parse_args as _parse_args

DEFAULT_CC_ROUNDS = 6


@dataclasses.dataclass(frozen=True)
class DedupParams(JobParams):
    input: str = param(help="glob of document Parquet files")
    output: str = param(help="output directory")
    threshold: float = param(DEFAULT_THRESHOLD, help="Jaccard similarity of duplicates, in (0, 1]")
    num_perm: int = param(DEFAULT_NUM_PERM, minimum=1, help="MinHash permutations")
    bands: int = param(DEFAULT_BANDS, minimum=1, help="LSH bands (bands x rows <= num_perm)")
    rows: int = param(DEFAULT_ROWS, minimum=1, help="rows per LSH band")
    ngram: int = param(DEFAULT_NGRAM, minimum=1, help="words per shingle")
    cc_rounds: int = param(DEFAULT_CC_ROUNDS, minimum=1,
                           help="large-star/small-star rounds (checked for convergence)")

    def check(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ParamError("threshold", f"must be in (0, 1], got {self.threshold}")
        try:
            check_banding(self.num_perm, self.bands, self.rows)
        except ValueError as e:
            raise ParamError("bands", str(e)) from None


def _exact_groups(keyed):
    """(content hash, ids) -> the smallest id (the survivor), and tagged
    (survivor id, copy id) for every other copy."""
    _, ids = keyed
    ids = sorted(ids)
    yield ids[0]
    for copy in ids[1:]:
        accounting.counter("exact_copies").inc()
        yield beam.pvalue.TaggedOutput("copies", (ids[0], copy))


class Sign(beam.DoFn):
    """doc -> (content hash, id) for exact dedup, and tagged (id, signature)."""

    def __init__(self, num_perm, ngram):
        self.num_perm, self.ngram = num_perm, ngram

    def setup(self):
        self.signer = Signer(self.num_perm)

    def process(self, doc):
        yield (content_hash(doc["text"]), doc["id"])
        yield beam.pvalue.TaggedOutput("signatures", (doc["id"], self.signer.signature(doc["text"], self.ngram)))


def _survivor_bands(keyed, bands, rows):
    """Band keys of exact-dedup survivors only: (band key, (id, signature))."""
    doc_id, grouped = keyed
    if grouped["survivor"]:
        for signature in grouped["sig"]:
            for key in band_keys(signature, bands, rows):
                yield (key, (doc_id, signature))


class VerifyBucket(beam.DoFn):
    """One LSH bucket -> verified edges. Every candidate pair in the bucket is compared by
    estimated Jaccard; the verified pairs are reduced to a star per local component
    (member -> smallest member), which keeps the bucket's connectivity with n-1 edges
    instead of up to n(n-1)/2. The global components are computed afterwards."""

    def __init__(self, threshold):
        self.threshold = threshold

    def process(self, keyed):
        _, members = keyed
        members = sorted(dict(members).items())
        n = len(members)
        if n < 2:
            return
        ids = [m[0] for m in members]
        signatures = np.stack([m[1] for m in members])
        parent = list(range(n))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        # Counted per bucket: a pair sharing several bands is compared (and counted) in each.
        # A huge bucket costs n^2/2 comparisons of num_perm values, all on one worker.
        accounting.counter("candidate_pairs").inc(n * (n - 1) // 2)
        for i in range(n - 1):
            # estimated Jaccard = fraction of equal hash values (as minhash.estimated_jaccard)
            similar = np.count_nonzero(signatures[i + 1:] == signatures[i], axis=1) / signatures.shape[1] >= self.threshold
            for j in np.flatnonzero(similar) + i + 1:
                accounting.counter("verified_pairs").inc()
                a, b = find(i), find(int(j))
                if a != b:
                    parent[max(a, b)] = min(a, b)
        for i in range(n):
            root = find(i)
            if root != i:
                yield (ids[i], ids[root])


def _to_cluster(keyed):
    """(id, {root: [its cluster's root], sig: [signature]}) -> (root, (id, signature)) for
    every document of a cluster, the root included."""
    doc_id, grouped = keyed
    for root in grouped["root"]:
        for signature in grouped["sig"]:
            yield (root, (doc_id, signature))


class VerifyAgainstKept(beam.DoFn):
    """One cluster -> its removals, each checked against a document that stays. Connected
    components join chains (a ~ b ~ c with a and c far apart), so the root alone cannot
    stand for the cluster: members are taken in id order, the root (smallest id) first, and
    a member is removed only if its estimated Jaccard with one of the documents kept so far
    reaches the threshold (that one is its kept_id); otherwise it is kept too, counted as
    "chain_member_kept". No removal lacks a near-duplicate that stays, and no two documents
    that stay are near-duplicates by their signatures."""

    def __init__(self, threshold):
        self.threshold = threshold

    def process(self, keyed):
        root, members = keyed
        kept_ids, kept_signatures = [], []
        for member, signature in sorted(members, key=lambda m: m[0]):
            kept_id = next((kept for kept, other in zip(kept_ids, kept_signatures)
                            if np.count_nonzero(other == signature) / len(signature) >= self.threshold), None)
            if kept_id is not None:
                yield (member, ("near_duplicate", f"cluster of {root}, near {kept_id}", root, kept_id))
                continue
            if kept_ids:
                accounting.counter("chain_member_kept").inc()
            kept_ids.append(member)
            kept_signatures.append(signature)


def _exact_decisions(keyed):
    """Exact copies point at what their survivor points at: its cluster and the document
    kept for it when the survivor is removed, else the survivor."""
    survivor, grouped = keyed
    _, _, cluster, kept = next(iter(grouped["decision"]), (None, None, survivor, survivor))
    for copy in grouped["copies"]:
        yield (copy, ("exact_duplicate", f"same content as {survivor}", cluster, kept))


def _apply(keyed):
    """(id, {doc: [doc], decision: [...]}) -> kept doc, or tagged removed record."""
    _, grouped = keyed
    decision = next(iter(grouped["decision"]), None)
    for doc in grouped["doc"]:
        if decision is None:
            yield doc
        else:
            reason, detail, cluster, kept = decision
            yield beam.pvalue.TaggedOutput("removed", removed(doc, reason, detail, cluster_id=cluster, kept_id=kept))


def build(pipeline, params: DedupParams):
    """Only ids, hashes and signatures are shuffled until the last step, which joins
    the decisions back onto the documents (the one shuffle of document text)."""
    num_perm, bands, rows, ngram = params.num_perm, params.bands, params.rows, params.ngram
    threshold, cc_rounds, output = params.threshold, params.cc_rounds, params.output
    docs = (parquet_io.read(pipeline, params.input)
            | "Count in" >> beam.ParDo(accounting.CountAs("in")))
    signed = (docs | "Sign" >> beam.ParDo(Sign(num_perm, ngram))
              .with_output_types(typing.Any).with_outputs("signatures", main="hashes"))

    # 1. exact duplicates: group ids by content hash
    exact = (signed.hashes
             | "Group by content" >> beam.GroupByKey()
             | "Exact survivor" >> beam.FlatMap(_exact_groups).with_output_types(typing.Any)
             .with_outputs("copies", main="survivors"))

    # 2-4. LSH bands of the survivors -> buckets -> verified edges
    edges = ({"sig": signed.signatures, "survivor": exact.survivors | "Mark survivor" >> beam.Map(lambda i: (i, True))}
             | "Join survivors" >> beam.CoGroupByKey()
             | "Bands" >> beam.FlatMap(_survivor_bands, bands, rows)
             | "Group bands" >> beam.GroupByKey()
             | "Verify buckets" >> beam.ParDo(VerifyBucket(threshold)))

    # 5. clusters
    roots = edges | "Clusters" >> ConnectedComponents(cc_rounds)

    # 6. each cluster's members checked, in id order, against the documents it keeps
    near = ({"root": roots, "sig": signed.signatures}
            | "Join cluster signatures" >> beam.CoGroupByKey()
            | "To clusters" >> beam.FlatMap(_to_cluster)
            | "Group clusters" >> beam.GroupByKey()
            | "Verify against kept" >> beam.ParDo(VerifyAgainstKept(threshold)))

    # 7. decisions (id -> reason, detail, kept id), joined back onto the documents
    exact_removed = ({"copies": exact.copies, "decision": near}
                     | "Join copies" >> beam.CoGroupByKey()
                     | "Exact decisions" >> beam.FlatMap(_exact_decisions))
    decisions = (near, exact_removed) | "All decisions" >> beam.Flatten()
    applied = ({"doc": docs | "Key doc" >> beam.Map(lambda d: (d["id"], d)), "decision": decisions}
               | "Join decisions" >> beam.CoGroupByKey()
               | "Apply" >> beam.FlatMap(_apply).with_output_types(typing.Any).with_outputs("removed", main="kept"))

    parquet_io.write(applied.kept | "Count kept" >> beam.ParDo(accounting.CountAs("kept")), output, "kept")
    parquet_io.write(applied.removed | "Count removed" >> beam.ParDo(accounting.CountByReason("removed")),
                     output, "removed", REMOVED_SCHEMA)


def run(params: DedupParams, beam_args=()) -> dict:
    """Run the job; returns its manifest (also written to OUTPUT/job-manifest.json)."""
    params.validate()
    pipeline = beam.Pipeline(options=options.pipeline_options(beam_args))
    build(pipeline, params)
    return accounting.run_and_account(pipeline, params.output, "dedup", dataclasses.asdict(params),
                                      check=check_converged)


def parse_args(argv=None) -> tuple[DedupParams, list[str]]:
    return _parse_args(DedupParams, argv, "python -m beam_jobs.dedup", __doc__)


def main(argv=None) -> int:
    params, beam_args = parse_args(argv)
    manifest = run(params, beam_args)
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "removed_by_reason")})
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main(sys.argv[1:]))
