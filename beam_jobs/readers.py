"""Readers: one input file -> documents, or quarantine records saying what was wrong
(file and line). Plain functions, so they are tested without a pipeline.

A `.gz` file of any format is gunzipped first; one that is not valid gzip is quarantined
as "bad_gzip". A document whose text is more than `max_document_bytes` UTF-8 bytes (as
read, before normalization) is quarantined as "too_large"."""

import gzip
import io
import json
import os
import zlib

from beam_jobs.documents import make_document, quarantined

CODE_EXTENSIONS = {".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".java", ".js", ".ts",
                   ".sh", ".sql", ".rb", ".cs", ".kt", ".scala", ".toml", ".cfg", ".ini", ".yaml", ".yml"}


def _without_gz(path: str) -> str:
    return path[:-3] if path.lower().endswith(".gz") else path


def file_format(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    name = _without_gz(path).lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def kind_of(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "code" if os.path.splitext(_without_gz(path))[1].lower() in CODE_EXTENSIONS else "text"


def whole_file_document(path: str, declared_format: str = "auto") -> bool:
    """The file is one document (so its size is the document's size, unless gzipped)."""
    return file_format(path, declared_format) == "text" and not path.lower().endswith(".gz")


def too_large(origin: str, size: int | None, max_bytes: int, source: str, head: bytes | str = b"") -> dict:
    """size None: more than max_bytes (a gzipped document is not decompressed further)."""
    detail = (f"{size} bytes > max_document_bytes {max_bytes}" if size is not None
              else f"gunzips to more than max_document_bytes {max_bytes} bytes")
    return quarantined(origin, "too_large", detail, source, head)


def gunzip(path: str, data: bytes, source: str, limit: int | None = None):
    """(the decompressed bytes, None) or (None, a quarantine record): "bad_gzip" for data
    that is not gzip (or is truncated), "too_large" past `limit` bytes (read no further)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read() if limit is None else f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:   # BadGzipFile is an OSError; EOFError: truncated
        return None, quarantined(path, "bad_gzip", f"not a valid gzip file: {type(e).__name__}: {e}", source,
                                 data[:80])
    if limit is not None and len(out) > limit:
        return None, too_large(path, None, limit, source, out[:200])
    return out, None


def _decode(data: bytes, origin: str, source: str):
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, quarantined(origin, "undecodable", f"not UTF-8 at byte {e.start}: {e.reason}",
                                 source, data[max(0, e.start - 40):e.start + 40])


def _document_or_empty(text: str, source: str, kind: str, origin: str, max_bytes: int | None = None, **meta):
    if max_bytes is not None and len(text) > max_bytes // 4:   # cheap: UTF-8 takes 1-4 bytes a character
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            return too_large(origin, size, max_bytes, source, text[:200]), False
    if not text.strip():
        return quarantined(origin, "empty", "no non-whitespace text", source, text), False
    return make_document(text, source, kind, origin, **meta), True


def read_text_file(path: str, data: bytes, source: str, kind: str, max_bytes: int | None = None):
    """The whole file is one document. Yields (record, is_document)."""
    if max_bytes is not None and len(data) > max_bytes:
        yield too_large(path, len(data), max_bytes, source, data[:200]), False
        return
    text, bad = _decode(data, path, source)
    if bad:
        yield bad, False
        return
    yield _document_or_empty(text, source, kind_of(path, kind), path, path=path)


def read_jsonl_file(path: str, data: bytes, source: str, kind: str, text_field: str, max_bytes: int | None = None):
    """One document per line; every bad line is quarantined with its line number."""
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
                                 max_bytes, path=path, line=number)


def read_parquet_file(path: str, data: bytes, source: str, kind: str, text_field: str, max_bytes: int | None = None):
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
        yield _document_or_empty(text, row_source, row_kind, origin, max_bytes, path=path, row=number)


def read_file(path: str, data: bytes, source: str, kind: str = "auto", text_field: str = "text",
              declared_format: str = "auto", max_document_bytes: int | None = None):
    """One file's bytes -> (record, is_document) pairs: documents, and quarantine records."""
    fmt = file_format(path, declared_format)
    if path.lower().endswith(".gz"):
        # a gzipped single document is read no further than the size cap
        data, bad = gunzip(path, data, source, max_document_bytes if fmt == "text" else None)
        if bad:
            yield bad, False
            return
    if fmt == "jsonl":
        yield from read_jsonl_file(path, data, source, kind, text_field, max_document_bytes)
    elif fmt == "parquet":
        yield from read_parquet_file(path, data, source, kind, text_field, max_document_bytes)
    else:
        yield from read_text_file(path, data, source, kind, max_document_bytes)
