import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs import filter as filter_job
from beam_jobs import mix
from beam_jobs.documents import DOCUMENT_SCHEMA, make_document
from beam_jobs.quality import CodeRules, TextRules, check_code, check_text

from beam_test_helpers import IN_MEMORY, load_stdlib_sources, read_rows

PROSE = ("The quick brown fox jumps over the lazy dog and then it runs to the river with the other animals. "
         "It was a long day, and the sun was warm over the fields that have been green all summer. ") * 3


def test_rules_name_what_fired():
    assert check_text(PROSE, TextRules()) is None
    assert check_text("too short", TextRules())[0] == "min_words"
    assert check_text(PROSE + " lorem ipsum dolor", TextRules())[0] == "lorem_ipsum"
    assert check_text("\n".join(["- item and the thing"] * 60), TextRules())[0] in ("bullet_lines", "duplicate_lines")
    assert check_code("x = 1\n", CodeRules()) is None
    assert check_code("x = '" + "a" * 2000 + "'\n", CodeRules())[0] == "max_line_length"
    assert check_code("# Auto-generated file. Do not edit.\nx = 1\n", CodeRules())[0] == "auto_generated"
    assert check_code("{}[]();;;;\n" * 20, CodeRules())[0] == "alphanumeric_fraction"


def _write(path, docs):
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA), path / "kept-0.parquet")


def test_filter_conserves_counts_and_writes_reasons(tmp_path):
    docs = [make_document(PROSE, "t", "text", "p"), make_document("tiny text", "t", "text", "s"),
            make_document("# auto-generated\nx=1\n", "c", "code", "g"), make_document("def f():\n    pass\n", "c", "code", "f")]
    _write(tmp_path / "in", docs)
    m = filter_job.run(filter_job.FilterParams(input=str(tmp_path / "in" / "*.parquet"), output=str(tmp_path / "out"),
                                               text=TextRules(min_words=20)), IN_MEMORY)
    removed = read_rows(tmp_path / "out", "removed")
    assert m["documents_in"] == m["documents_kept"] + m["documents_removed"] == 4
    assert m["removed_by_reason"] == {"auto_generated": 1, "min_words": 1}
    assert sorted(r["reason"] for r in removed) == ["auto_generated", "min_words"]
    assert all(r["detail"] for r in removed)


def test_mix_hits_weights_and_is_reproducible(tmp_path):
    code = [make_document(t, "stdlib", "code", p) for p, t in load_stdlib_sources()[:120]]
    text = [make_document(PROSE + str(i), "docs", "text", f"t{i}") for i in range(60)]
    _write(tmp_path / "in", code + text)
    runs = []
    for name in ("a", "b"):
        m = mix.run(mix.MixParams(input=str(tmp_path / "in" / "*.parquet"), output=str(tmp_path / name),
                                  weights={"code": 0.75, "text": 0.25}, target_documents=80, seed=5), IN_MEMORY)
        assert m["documents_in"] == m["documents_kept"] + m["documents_removed"] == len(code) + len(text)
        runs.append(sorted(d["id"] for d in read_rows(tmp_path / name)))
    assert runs[0] == runs[1]
    kept = read_rows(tmp_path / "a")
    n_code = sum(d["kind"] == "code" for d in kept)
    assert 45 <= n_code <= 75 and 8 <= len(kept) - n_code <= 32


def test_a_truncated_parquet_input_is_an_error_naming_the_file(tmp_path):
    import pytest
    _write(tmp_path / "in", [make_document(PROSE, "t", "text", "p")])
    good = (tmp_path / "in" / "kept-0.parquet").read_bytes()
    (tmp_path / "in" / "kept-1.parquet").write_bytes(good[:len(good) // 2])
    with pytest.raises(Exception, match=r"kept-1\.parquet: not a readable Parquet file"):
        filter_job.run(filter_job.FilterParams(input=str(tmp_path / "in" / "*.parquet"), output=str(tmp_path / "out")),
                       IN_MEMORY)
