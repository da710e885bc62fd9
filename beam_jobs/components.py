"""Connected components inside Beam: alternating large-star / small-star rounds
(Kiveris et al., "Connected Components in MapReduce and Beyond", 2014).

Edges are (u, v) pairs of comparable node ids. After convergence every non-root node v
has exactly the edge (v, root), root = the smallest id of its component. The rounds are
unrolled into the pipeline (a bounded number); a final check compares the last round's
edges with one more round's and counts differences in "cc_unconverged_edges", so a job
can fail loudly instead of publishing half-merged clusters."""

import apache_beam as beam

from beam_jobs import accounting


def _large_star(node_neighbours):
    u, neighbours = node_neighbours
    neighbours = set(neighbours)
    m = min(neighbours | {u})
    for v in neighbours:
        if v > u:
            yield (v, m)


def _small_star(node_neighbours):
    u, neighbours = node_neighbours
    neighbours = set(neighbours)
    m = min(neighbours | {u})
    for v in neighbours | {u}:
        if v != m:
            yield (v, m)


def large_star(edges, label):
    return (edges
            | f"{label} both ways" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
            | f"{label} group" >> beam.GroupByKey()
            | f"{label} link to min" >> beam.FlatMap(_large_star))


def small_star(edges, label):
    return (edges
            | f"{label} orient down" >> beam.Map(lambda e: (max(e), min(e)))
            | f"{label} group" >> beam.GroupByKey()
            | f"{label} link to min" >> beam.FlatMap(_small_star))


def _count_differences(keyed):
    _, (before, after) = keyed
    if bool(list(before)) != bool(list(after)):
        accounting.counter("cc_unconverged_edges").inc()


class ConnectedComponents(beam.PTransform):
    """edges (u, v) -> (node, root) for every node in an edge; root = min id of its component."""

    def __init__(self, rounds: int = 6):
        super().__init__()
        if rounds < 1:
            raise ValueError(f"connected-component rounds must be >= 1, got {rounds}")
        self.rounds = rounds

    def expand(self, edges):
        edges = edges | "Drop self loops" >> beam.Filter(lambda e: e[0] != e[1])
        for i in range(self.rounds):
            edges = small_star(large_star(edges, f"Round {i} large-star"), f"Round {i} small-star")
        extra = small_star(large_star(edges, "Check large-star"), "Check small-star")
        (({"before": edges | "Key before" >> beam.Map(lambda e: (e, None)),
           "after": extra | "Key after" >> beam.Map(lambda e: (e, None))})
         | "Compare rounds" >> beam.CoGroupByKey()
         | "Count changed edges" >> beam.Map(lambda kv: _count_differences((kv[0], (kv[1]["before"], kv[1]["after"])))))
        # Every node's root: min over the edges touching it (itself for the root).
        return (edges
                | "Both ends" >> beam.FlatMap(lambda e: [(e[0], min(e)), (e[1], min(e))])
                | "Root per node" >> beam.CombinePerKey(min))


def check_converged(counters: dict) -> None:
    changed = counters.get("cc_unconverged_edges", 0)
    if changed:
        raise RuntimeError(f"connected components did not converge: one more round changed {changed} "
                           "edges; rerun with more --cc-rounds")
