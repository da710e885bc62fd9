"""The tiny preset's corpus holds real near-duplicates (vendored copies of packages that
are also installed on their own, stdlib modules derived from PyPI packages), and the
dedup stage finds them."""

import glob
import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from stages import artifacts, cli
from stages.ingest import SourceConfig, expand

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_MEMORY = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def tiny():
    with open(os.path.join(REPO, "configs", "tiny.yaml")) as f:
        return yaml.safe_load(f)


def test_tiny_sources_resolve_to_a_bounded_real_corpus():
    sources = {s["name"]: expand(SourceConfig(**s)) for s in tiny()["ingest"]["sources"]}
    assert 100 <= len(sources["stdlib"]) <= 400
    assert len(sources["package-docs"]) >= 50
    assert all(os.path.isfile(p) for files in sources.values() for p in files)


@pytest.mark.slow
def test_dedup_finds_the_vendored_copies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    config = tiny()
    vendored = next(s for s in config["ingest"]["sources"] if s["name"] == "vendored")
    vendored["paths"].append("{stdlib}/tomllib/*.py")
    config["ingest"]["sources"] = [vendored]
    config["pipeline"].update(artifacts=str(tmp_path / "artifacts"), beam_args=IN_MEMORY)
    if len(expand(SourceConfig(**vendored))) < 10:
        pytest.skip("this environment vendors too few packages")
    path = tmp_path / "tiny-vendored.yaml"
    path.write_text(yaml.safe_dump(config))

    assert cli.main(["pipeline", "--config", str(path), "--until", "dedup"]) == 0

    out = artifacts.latest(artifacts.stage_root(str(tmp_path / "artifacts"), "tiny", "dedup")).uri + "/"
    kept = {r["id"]: r for p in glob.glob(out + "kept-*.parquet") for r in pq.read_table(p).to_pylist()}
    removed = [r for p in glob.glob(out + "removed-*.parquet") for r in pq.read_table(p).to_pylist()]
    origin = lambda doc: json.loads(doc["meta"])["origin"]
    pairs = [(origin(r), origin(kept[r["kept_id"]])) for r in removed if r["reason"] == "near_duplicate"]
    across = [(a, b) for a, b in pairs if ("_vendor" in a) != ("_vendor" in b) or ("tomllib" in a) != ("tomllib" in b)]
    assert len(across) >= 5, pairs
    # the same module name on both sides: a copy, not a coincidence
    assert all(os.path.basename(a) == os.path.basename(b) for a, b in across), across
