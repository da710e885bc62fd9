import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs import ingest
from beam_jobs.documents import DOCUMENT_SCHEMA

from beam_test_helpers import IN_MEMORY, read_rows


def test_bad_inputs_are_quarantined_with_reasons_and_good_documents_kept(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "good.txt").write_text("Caf\u0065\u0301 is decomposed here.\n")     # NFD -> NFC
    (src / "sub" / "code.py").write_text("def f():\n    return 1\n")
    (src / "empty.txt").write_bytes(b"")
    (src / "blank.txt").write_text("   \n\n")
    (src / "latin1.txt").write_bytes("na\u00efve".encode("latin-1"))
    (src / "docs.jsonl").write_text('{"text": "one"}\n{broken\n\n{"body": "no text field"}\n{"text": "two"}\n')
    table = pa.table({"text": ["from parquet", ""], "source": ["pq", "pq"]})
    pq.write_table(table, src / "rows.parquet")
    out = tmp_path / "out"

    manifest = ingest.run(ingest.IngestParams(input=(str(src),), output=str(out), source="test"), IN_MEMORY)

    kept = read_rows(out)
    quarantine = read_rows(out, "quarantine")
    texts = sorted(d["text"] for d in kept)
    assert texts == sorted(["Caf\u00e9 is decomposed here.\n", "def f():\n    return 1\n", "one", "two", "from parquet"])
    reasons = sorted(q["reason"] for q in quarantine)
    assert reasons == ["bad_json", "empty", "empty", "empty", "missing_field", "undecodable"]
    bad_json = next(q for q in quarantine if q["reason"] == "bad_json")
    assert bad_json["origin"].endswith("docs.jsonl:2") and "line 2" in bad_json["detail"]
    assert next(q for q in quarantine if q["reason"] == "undecodable")["origin"].endswith("latin1.txt")
    # conservation, and the manifest agrees with the files
    assert manifest["documents_in"] == manifest["documents_kept"] + manifest["documents_quarantined"] == 11
    assert manifest["documents_kept"] == len(kept) and manifest["documents_quarantined"] == len(quarantine)
    assert manifest["quarantined_by_reason"] == {"bad_json": 1, "empty": 3, "missing_field": 1, "undecodable": 1}
    assert json.loads(next(d for d in kept if d["text"].startswith("def"))["meta"])["origin"].endswith("code.py")
    assert next(d for d in kept if d["text"].startswith("def"))["kind"] == "code"
    assert pq.read_schema(next(out.glob("kept-*.parquet"))).equals(DOCUMENT_SCHEMA)
    assert pq.ParquetFile(next(out.glob("kept-*.parquet"))).metadata.row_group(0).column(1).compression == "ZSTD"


def test_ids_are_stable_across_runs(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("stable text")
    ids = []
    for run in ("one", "two"):
        ingest.run(ingest.IngestParams(input=(str(src),), output=str(tmp_path / run)), IN_MEMORY)
        ids.append([d["id"] for d in read_rows(tmp_path / run)])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_a_pattern_matching_nothing_is_an_error_naming_it(tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        ingest.run(ingest.IngestParams(input=(str(tmp_path / "nothing-here*"),), output=str(tmp_path / "o")), IN_MEMORY)


def test_corrupt_and_oversized_inputs_are_quarantined_naming_the_file(tmp_path):
    """Not valid gzip, truncated gzip, a truncated Parquet file and documents over
    max_document_bytes go to the quarantine with a reason and the file; nothing fails
    the job, and good (gzipped) inputs are still read."""
    import gzip
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.jsonl.gz").write_bytes(gzip.compress(b'{"text": "zipped line"}\n'))
    (src / "note.txt.gz").write_bytes(gzip.compress(b"zipped text file"))
    (src / "plain.jsonl.gz").write_bytes(b'{"text": "not actually gzipped"}\n')
    (src / "cut.txt.gz").write_bytes(gzip.compress(b"short text, truncated")[:20])
    pq.write_table(pa.table({"text": ["row"] * 200}), src / "whole.parquet")
    whole = (src / "whole.parquet").read_bytes()
    (src / "cut.parquet").write_bytes(whole[:len(whole) // 2])
    (src / "whole.parquet").unlink()
    (src / "big.txt").write_text("x" * 101)
    (src / "big.txt.gz").write_bytes(gzip.compress(b"y" * 5000))
    (src / "lines.jsonl").write_text(json.dumps({"text": "z" * 101}) + "\n" + json.dumps({"text": "small"}) + "\n")
    (src / "small.txt").write_text("s" * 100)     # exactly the cap: kept
    out = tmp_path / "out"

    manifest = ingest.run(ingest.IngestParams(input=(str(src),), output=str(out), max_document_bytes=100), IN_MEMORY)

    kept = sorted(d["text"] for d in read_rows(out))
    assert kept == sorted(["zipped line", "zipped text file", "small", "s" * 100])
    quarantine = {os.path.basename(q["origin"]): q for q in read_rows(out, "quarantine")}
    assert {name: q["reason"] for name, q in quarantine.items()} == {
        "plain.jsonl.gz": "bad_gzip", "cut.txt.gz": "bad_gzip", "cut.parquet": "bad_parquet",
        "big.txt": "too_large", "big.txt.gz": "too_large", "lines.jsonl:1": "too_large"}
    assert "not a valid gzip file" in quarantine["plain.jsonl.gz"]["detail"]
    assert quarantine["big.txt"]["detail"] == "101 bytes > max_document_bytes 100"
    assert quarantine["lines.jsonl:1"]["detail"] == "101 bytes > max_document_bytes 100"
    assert quarantine["big.txt"]["snippet"] == "x" * 101
    assert manifest["quarantined_by_reason"] == {"bad_gzip": 2, "bad_parquet": 1, "too_large": 3}
    assert manifest["documents_in"] == manifest["documents_kept"] + manifest["documents_quarantined"] == 10


def test_readers_cap_documents_without_the_pipeline():
    from beam_jobs.readers import read_file
    (record, ok), = read_file("/d/huge.py", b"x = 1\n" * 10, "s", max_document_bytes=59)
    assert not ok and record["reason"] == "too_large" and record["origin"] == "/d/huge.py"
    (record, ok), = read_file("/d/fits.py", b"x = 1\n" * 10, "s", max_document_bytes=60)
    assert ok and record["kind"] == "code"
    (record, ok), = read_file("/d/fits.py.gz", b"\x1f\x8b garbage", "s")
    assert not ok and record["reason"] == "bad_gzip" and record["origin"] == "/d/fits.py.gz"


def test_the_default_size_cap_keeps_every_file_of_the_tiny_corpus():
    """max_document_bytes' default quarantines nothing the tiny preset ingests (its
    largest files, e.g. _pydecimal.py and some LICENSE texts, are about 230 KB)."""
    import yaml
    from stages.ingest import SourceConfig, expand
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml")) as f:
        sources = yaml.safe_load(f)["ingest"]["sources"]
    sizes = [os.path.getsize(p) for s in sources for p in expand(SourceConfig(**s))]
    assert len(sizes) > 500 and max(sizes) <= ingest.DEFAULT_MAX_DOCUMENT_BYTES / 2
