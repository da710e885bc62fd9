"""Counting what each job kept, removed (by reason) and quarantined, with Beam counters,
and writing the job's manifest from them once the pipeline has finished.

Counter names: "in", "kept", "removed/<reason>", "quarantined/<reason>", "tokens_out",
plus free-form statistics (anything else). The manifest checks
in == kept + sum(removed) + sum(quarantined) and fails loudly when it does not hold."""

import json
import os
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "seekforge"
MANIFEST = "job-manifest.json"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


class CountAs(beam.DoFn):
    """Pass elements through, counting each one under `name`."""

    def __init__(self, name: str):
        self.name = name
        self._counter = None

    def setup(self):
        self._counter = counter(self.name)

    def process(self, element):
        self._counter.inc()
        yield element


class CountByReason(beam.DoFn):
    """Pass removed/quarantined records through, counted under "<prefix>/<reason>"."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def process(self, record):
        counter(f"{self.prefix}/{record['reason']}").inc()
        yield record


def collect_counters(result) -> dict[str, int]:
    counters = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    return counters


def summarize(counters: dict[str, int], conserve: bool = True) -> dict:
    removed = {k.split("/", 1)[1]: v for k, v in counters.items() if k.startswith("removed/")}
    quarantined = {k.split("/", 1)[1]: v for k, v in counters.items() if k.startswith("quarantined/")}
    summary = {
        "documents_in": counters.get("in", 0),
        "documents_kept": counters.get("kept", 0),
        "documents_removed": sum(removed.values()),
        "documents_quarantined": sum(quarantined.values()),
        "removed_by_reason": dict(sorted(removed.items())),
        "quarantined_by_reason": dict(sorted(quarantined.items())),
        "tokens_out": counters.get("tokens_out", 0),
        "stats": {k: v for k, v in sorted(counters.items())
                  if k not in ("in", "kept", "tokens_out") and "/" not in k},
    }
    accounted = summary["documents_kept"] + summary["documents_removed"] + summary["documents_quarantined"]
    if conserve and summary["documents_in"] != accounted:
        raise RuntimeError(f"document counts do not add up: in {summary['documents_in']} != kept "
                           f"{summary['documents_kept']} + removed {summary['documents_removed']} + "
                           f"quarantined {summary['documents_quarantined']}")
    return summary


def run_and_account(pipeline, output_dir: str, job: str, params: dict, conserve: bool = True,
                    check=None) -> dict:
    """Run the pipeline to completion, then write DIR/job-manifest.json with its counts.
    `check(counters)` may raise to fail the job after the run (e.g. no convergence)."""
    start = time.time()
    result = pipeline.run()
    result.wait_until_finish()
    counters = collect_counters(result)
    if check is not None:
        check(counters)
    manifest = {"job": job, "params": params, **summarize(counters, conserve),
                "wall_seconds": round(time.time() - start, 3)}
    write_json(os.path.join(output_dir, MANIFEST), manifest)
    return manifest


def write_json(path: str, obj) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def read_manifest(output_dir: str) -> dict:
    with FileSystems.open(os.path.join(output_dir, MANIFEST)) as f:
        return json.loads(f.read().decode("utf-8"))
