"""The one document record of the data phase (a Parquet row with an explicit schema)
and the records that account for every document a job does not pass on."""

import hashlib
import json
import unicodedata

import pyarrow as pa

KINDS = ("code", "text")

DOCUMENT_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.large_string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),   # "code" | "text"
    pa.field("meta", pa.string(), nullable=False),   # a JSON object: origin path, line, ...
]
DOCUMENT_SCHEMA = pa.schema(DOCUMENT_FIELDS)

# A document a job removed, with why. Dedup fills cluster_id and kept_id.
REMOVED_SCHEMA = pa.schema(DOCUMENT_FIELDS + [
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=True),
    pa.field("kept_id", pa.string(), nullable=True),
])

# An input that never became a document: where it came from and why.
QUARANTINE_SCHEMA = pa.schema([
    pa.field("origin", pa.string(), nullable=False),   # path, path:line or path#row
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("snippet", pa.string(), nullable=False),  # the first bytes, escaped
])

# Codec for every Parquet file we write (Beam's WriteToParquet defaults to none).
PARQUET_CODEC = "zstd"


def normalize_text(text: str) -> str:
    """Unicode NFC, newlines unified to \\n."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def document_id(origin: str, text: str) -> str:
    """Stable id from the normalized content and where it came from: the same file
    ingested twice gets the same id, two copies of one text in two places do not."""
    h = hashlib.blake2b(digest_size=10)
    h.update(origin.encode("utf-8"))
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def make_document(text: str, source: str, kind: str, origin: str, **meta) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r} for {origin}")
    text = normalize_text(text)
    return {"id": document_id(origin, text), "text": text, "source": source, "kind": kind,
            "meta": json.dumps({"origin": origin, **meta}, sort_keys=True)}


def removed(doc: dict, reason: str, detail: str = "", cluster_id=None, kept_id=None) -> dict:
    return {**{f.name: doc[f.name] for f in DOCUMENT_FIELDS}, "reason": reason, "detail": detail,
            "cluster_id": cluster_id, "kept_id": kept_id}


def quarantined(origin: str, reason: str, detail: str, source: str, raw: bytes | str = b"") -> dict:
    snippet = raw if isinstance(raw, str) else raw[:200].decode("utf-8", "backslashreplace")
    return {"origin": origin, "reason": reason, "detail": detail, "source": source, "snippet": snippet[:200]}
