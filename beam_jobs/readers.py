"""Readers: one input file -> documents, or quarantine records saying what was wrong
(file and line). Plain functions, so they are tested without a pipeline."""

import io
import json
import os

from beam_jobs.documents import make_document, quarantined

CODE_EXTENSIONS = {".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".java", ".js", ".ts",
                   ".sh", ".sql", ".rb", ".cs", ".kt", ".scala", ".toml", ".cfg", ".ini", ".yaml", ".yml"}


def file_format(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    name = path.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def kind_of(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "code" if os.path.splitext(path)[1].lower() in CODE_EXTENSIONS else "text"


def _decode(data: bytes, origin: str, source: str):
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, quarantined(origin, "undecodable", f"not UTF-8 at byte {e.start}: {e.reason}",
                                 source, data[max(0, e.start - 40):e.start + 40])


def _document_or_empty(text: str, source: str, kind: str, origin: str, **meta):
    if not text.strip():
        return quarantined(origin, "empty", "no non-whitespace text", source, text), False
    return make_document(text, source, kind, origin, **meta), True


def read_text_file(path: str, data: bytes, source: str, kind: str):
    """The whole file is one document. Yields (record, is_document)."""
    text, bad = _decode(data, path, source)
    if bad:
        yield bad, False
        return
    yield _document_or_empty(text, source, kind_of(path, kind), path, path=path)


def read_jsonl_file(path: str, data: bytes, source: str, kind: str, text_field: str):
    """One document per line; every bad line is quarantined with its line number."""
    if path.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
    lines = data.split(b"\n")
    if not any(line.strip() for line in lines):
        yield quarantined(path, "empty", "file has no JSON lines", source), False
        return
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        origin = f"{path}:{number}"
        line, bad = _decode(raw, origin, source)
        if bad:
            yield bad, False
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield quarantined(origin, "bad_json", f"line {number}: {e.msg} at column {e.colno}", source, line), False
            continue
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            yield quarantined(origin, "missing_field", f"line {number}: no string field {text_field!r}",
                              source, line), False
            continue
        record_kind = record.get("kind") if record.get("kind") in ("code", "text") else kind_of(path, kind)
        yield _document_or_empty(record[text_field], record.get("source") or source, record_kind, origin,
                                 path=path, line=number)


def read_parquet_file(path: str, data: bytes, source: str, kind: str, text_field: str):
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for corrupt files
        yield quarantined(path, "bad_parquet", f"{type(e).__name__}: {e}", source, data[:80]), False
        return
    if text_field not in table.column_names:
        yield quarantined(path, "missing_field", f"no column {text_field!r} (columns: {table.column_names})",
                          source), False
        return
    has = set(table.column_names)
    for number, row in enumerate(table.to_pylist()):
        origin = f"{path}#{number}"
        text = row[text_field]
        if not isinstance(text, str):
            yield quarantined(origin, "missing_field", f"row {number}: {text_field!r} is not a string",
                              source), False
            continue
        row_source = row["source"] if "source" in has and row["source"] else source
        row_kind = row["kind"] if "kind" in has and row["kind"] in ("code", "text") else kind_of(path, kind)
        yield _document_or_empty(text, row_source, row_kind, origin, path=path, row=number)


def read_file(path: str, data: bytes, source: str, kind: str = "auto", text_field: str = "text",
              declared_format: str = "auto"):
    fmt = file_format(path, declared_format)
    if fmt == "jsonl":
        yield from read_jsonl_file(path, data, source, kind, text_field)
    elif fmt == "parquet":
        yield from read_parquet_file(path, data, source, kind, text_field)
    else:
        yield from read_text_file(path, data, source, kind)
