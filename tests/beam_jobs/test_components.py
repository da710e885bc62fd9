"""Connected components inside Beam and dedup clusters across chains."""

import glob
import itertools
import json
import os
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import dedup
from beam_jobs.components import ConnectedComponents
from beam_jobs.documents import make_document
from beam_jobs.minhash import Signer, estimated_jaccard

from beam_test_helpers import IN_MEMORY, read_rows
from test_dedup_quality import write_docs


def components(edges, workers, out_dir, mode="multi_processing", rounds=6):
    """Run ConnectedComponents; only Beam and stdlib callables in the pipeline (workers
    in other processes cannot import this test module)."""
    options = PipelineOptions(["--runner", "DirectRunner", "--direct_running_mode", mode,
                               "--direct_num_workers", str(workers)])
    prefix = os.path.join(out_dir, f"roots-{workers}-{mode}")
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(edges) | ConnectedComponents(rounds) | beam.Map(json.dumps)
         | beam.io.WriteToText(prefix))
    roots = {}
    for path in glob.glob(prefix + "*"):
        with open(path) as f:
            roots.update(json.loads(line) for line in f)
    return roots


@pytest.mark.slow
def test_chains_and_random_graphs_match_a_reference_union_find(tmp_path):
    rng = random.Random(3)
    nodes = [f"n{rng.randrange(10**9):09d}" for _ in range(300)]
    edges = [(nodes[i], nodes[i + 1]) for i in range(0, 40)]           # a 41-node path in random id order
    edges += [(rng.choice(nodes[50:]), rng.choice(nodes[50:])) for _ in range(200)]
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x
    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members = {}
    for n in {x for e in edges for x in e}:
        members.setdefault(find(n), []).append(n)
    expected = {n: min(group) for group in members.values() for n in group}

    one = components(edges, 1, str(tmp_path))
    two = components(edges, 2, str(tmp_path))
    assert one == expected
    assert two == one
    assert len({one[n] for n in nodes[:41]}) == 1


def test_too_few_rounds_is_detected(tmp_path):
    from beam_jobs.components import check_converged
    with pytest.raises(RuntimeError, match="did not converge"):
        check_converged({"cc_unconverged_edges": 3})


def _chain_documents():
    rng = random.Random(7)
    words = [f"w{rng.randrange(10**6)}" for _ in range(400)]
    b = list(words)
    a = list(words)
    c = list(words)
    for i in range(0, 40):       # A differs from B at the front, C at the back
        a[i] = f"a{i}"
        c[-1 - i] = f"c{i}"
    return [make_document(" ".join(x), "t", "text", name) for name, x in (("A", a), ("B", b), ("C", c))]


@pytest.mark.slow
def test_a_chain_is_one_cluster_that_removes_only_near_duplicates_of_its_kept_document(tmp_path):
    docs = _chain_documents()
    signer = Signer()
    sig = {d["meta"]: signer.signature(d["text"]) for d in docs}
    ja, jb, jc = (sig[f'{{"origin": "{n}"}}'] for n in "ABC")
    threshold = 0.7
    assert estimated_jaccard(ja, jb) >= threshold and estimated_jaccard(jb, jc) >= threshold
    assert estimated_jaccard(ja, jc) < threshold, "precondition: A and C are not similar"
    write_docs(tmp_path / "in", docs)
    results = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        dedup.run(dedup.DedupParams(input=str(tmp_path / "in" / "*.parquet"), output=str(out), threshold=threshold),
                  ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                   "--direct_num_workers", str(workers)])
        kept, removed = read_rows(out), read_rows(out, "removed")
        results.append((sorted(d["id"] for d in kept), sorted((r["id"], r["cluster_id"], r["kept_id"]) for r in removed)))
    assert results[0] == results[1]
    kept, removed = results[0]
    signature_of = {d["id"]: sig[d["meta"]] for d in docs}
    root = min(signature_of)   # the cluster's id: its smallest id, which stays
    assert root in kept and {r[1] for r in removed} == {root}, "one cluster"
    for doc_id, _, kept_id in removed:   # each removal is a near-duplicate of a document that stays
        assert kept_id in kept and estimated_jaccard(signature_of[doc_id], signature_of[kept_id]) >= threshold
    for a, b in itertools.combinations(kept, 2):   # and no two that stay are near-duplicates
        assert estimated_jaccard(signature_of[a], signature_of[b]) < threshold
    assert len(removed) >= 1
