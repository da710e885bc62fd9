"""ingest: files, JSONL or Parquet -> normalized documents (NFC, stable ids).

    python -m beam_jobs.ingest --input 'DIR_OR_GLOB' [--input ...] --output DIR \\
        [--source NAME] [--kind auto|code|text] [--format auto|text|jsonl|parquet] [--text-field text] \\
        [--max-files N] [--max-document-bytes 1048576]

In process: `ingest.run(ingest.IngestParams(input=(...), output=DIR, ...), beam_args)`.

Writes DIR/kept-*.parquet (documents), DIR/quarantine-*.parquet (inputs that never became
a document, with the reason and file:line) and DIR/job-manifest.json. Quarantine reasons:
undecodable, empty, bad_json, missing_field, bad_parquet, bad_gzip (a .gz file that is
not valid gzip), too_large (a document over max_document_bytes), unreadable (a file that
could not be opened).

max_document_bytes (default 1 MiB) bounds what later jobs hold in memory per document
(dedup's signature of one 50 MB document took 8 GB). It is above what the default quality
filters keep anyway (code: max_bytes 1,000,000; text: max_words 100,000), and the largest
file of the tiny preset's corpus (the stdlib and site-packages) is about 230 KB."""

import dataclasses
import logging
import os
import sys
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import QUARANTINE_SCHEMA, quarantined
from beam_jobs.params import JobParams, param, parse_args as _parse_args
from beam_jobs.readers import read_file, too_large, whole_file_document

DEFAULT_MAX_DOCUMENT_BYTES = 1 << 20    # 1 MiB


@dataclasses.dataclass(frozen=True)
class IngestParams(JobParams):
    input: tuple[str, ...] = param(help="a directory, file or glob")
    output: str = param(help="output directory")
    source: str = param("default", help="source name recorded on every document")
    kind: str = param("auto", choices=("auto", "code", "text"),
                      help="document kind; auto = code for source-code extensions, else text")
    format: str = param("auto", choices=("auto", "text", "jsonl", "parquet"),
                        help="input format; auto = by extension (.jsonl/.ndjson, .parquet, else text; "
                             "a .gz suffix is gunzipped)")
    text_field: str = param("text", help="JSONL field / Parquet column holding the text")
    max_files: int | None = param(None, minimum=1, help="take only the first N matched files (sorted)")
    max_document_bytes: int = param(DEFAULT_MAX_DOCUMENT_BYTES, minimum=1,
                                    help="quarantine documents of more UTF-8 bytes as too_large")


def match_inputs(patterns, max_files: int | None = None) -> list[tuple[str, int]]:
    """(path, size in bytes) of every input file. Directories become DIR/** (recursively);
    globs are matched now, so a pattern that matches nothing is an error naming it.
    Sorted, so max_files takes a stable subset."""
    files = {}
    for pattern in patterns:
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "**")
        matched = [m for r in FileSystems.match([pattern]) for m in r.metadata_list]
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no files")
        files.update((m.path, m.size_in_bytes) for m in matched if not os.path.isdir(m.path))
    files = sorted(files.items())
    return files[:max_files] if max_files else files


def expand_inputs(patterns, max_files: int | None = None) -> list[str]:
    return [path for path, _ in match_inputs(patterns, max_files)]


class ReadFile(beam.DoFn):
    def __init__(self, params: IngestParams):
        self.source, self.kind, self.text_field = params.source, params.kind, params.text_field
        self.declared_format, self.max_bytes = params.format, params.max_document_bytes

    def process(self, path_size):
        path, size = path_size
        records = self._records(path, size)
        for record, is_document in records:
            accounting.counter("in").inc()
            if is_document:
                yield record
            else:
                yield beam.pvalue.TaggedOutput("quarantine", record)

    def _records(self, path, size):
        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                if whole_file_document(path, self.declared_format) and size > self.max_bytes:
                    # one document over the cap: never read it whole
                    return [(too_large(path, size, self.max_bytes, self.source, f.read(200)), False)]
                data = f.read()
        except OSError as e:   # deleted since matched, permissions, ... (Beam's BeamIOError is one too)
            return [(quarantined(path, "unreadable", f"{type(e).__name__}: {e}", self.source), False)]
        accounting.counter("bytes_in").inc(len(data))
        return read_file(path, data, self.source, self.kind, self.text_field, self.declared_format, self.max_bytes)


def build(pipeline, files: list[tuple[str, int]], params: IngestParams):
    read = (pipeline
            | "Paths" >> beam.Create(files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadFile(params)).with_output_types(typing.Any)
            .with_outputs("quarantine", main="docs"))
    parquet_io.write(read.docs | "Count kept" >> beam.ParDo(accounting.CountAs("kept")), params.output, "kept")
    parquet_io.write(read.quarantine | "Count quarantined" >> beam.ParDo(accounting.CountByReason("quarantined")),
                     params.output, "quarantine", QUARANTINE_SCHEMA)


def run(params: IngestParams, beam_args=()) -> dict:
    """Run the job; returns its manifest (also written to OUTPUT/job-manifest.json)."""
    params.validate()
    files = match_inputs(params.input, params.max_files)
    pipeline = beam.Pipeline(options=options.pipeline_options(beam_args))
    build(pipeline, files, params)
    return accounting.run_and_account(pipeline, params.output, "ingest",
                                      {**dataclasses.asdict(params), "files": len(files)})


def parse_args(argv=None) -> tuple[IngestParams, list[str]]:
    return _parse_args(IngestParams, argv, "python -m beam_jobs.ingest", __doc__)


def main(argv=None) -> int:
    params, beam_args = parse_args(argv)
    manifest = run(params, beam_args)
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "documents_quarantined")})
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main(sys.argv[1:]))
