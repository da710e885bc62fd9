"""ingest: files, JSONL or Parquet -> normalized documents (NFC, stable ids).

    python -m beam_jobs.ingest --input 'DIR_OR_GLOB' [--input ...] --output DIR \\
        [--source NAME] [--kind auto|code|text] [--format auto|text|jsonl|parquet] [--text-field text]

Writes DIR/kept-*.parquet (documents), DIR/quarantine-*.parquet (inputs that never became
a document, with the reason and file:line) and DIR/job-manifest.json."""

import argparse
import logging
import os
import sys
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import QUARANTINE_SCHEMA
from beam_jobs.readers import read_file


def expand_inputs(patterns: list[str], max_files: int | None = None) -> list[str]:
    """Directories become DIR/** (recursively); globs are matched now, so a pattern that
    matches nothing is an error naming it. Sorted, so --max-files takes a stable subset."""
    paths = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "**")
        matched = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no files")
        paths.update(p for p in matched if not os.path.isdir(p))
    paths = sorted(paths)
    return paths[:max_files] if max_files else paths


class ReadFile(beam.DoFn):
    def __init__(self, source, kind, text_field, declared_format):
        self.source, self.kind, self.text_field, self.declared_format = source, kind, text_field, declared_format

    def process(self, path):
        with FileSystems.open(path, compression_type="uncompressed") as f:
            data = f.read()
        accounting.counter("bytes_in").inc(len(data))
        for record, is_document in read_file(path, data, self.source, self.kind, self.text_field,
                                             self.declared_format):
            accounting.counter("in").inc()
            if is_document:
                yield record
            else:
                yield beam.pvalue.TaggedOutput("quarantine", record)


def build(pipeline, paths: list[str], output: str, source: str, kind: str, text_field: str, fmt: str):
    read = (pipeline
            | "Paths" >> beam.Create(paths)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadFile(source, kind, text_field, fmt)).with_output_types(typing.Any).with_outputs("quarantine", main="docs"))
    parquet_io.write(read.docs | "Count kept" >> beam.ParDo(accounting.CountAs("kept")), output, "kept")
    parquet_io.write(read.quarantine | "Count quarantined" >> beam.ParDo(accounting.CountByReason("quarantined")),
                     output, "quarantine", QUARANTINE_SCHEMA)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_jobs.ingest", description=__doc__.splitlines()[0])
    p.add_argument("--input", action="append", required=True, help="a directory, file or glob (repeatable)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--source", default="default", help="source name recorded on every document")
    p.add_argument("--kind", default="auto", choices=["auto", "code", "text"],
                   help="document kind; auto = code for source-code extensions, else text")
    p.add_argument("--format", default="auto", choices=["auto", "text", "jsonl", "parquet"])
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text")
    p.add_argument("--max-files", type=int, default=None, help="take only the first N matched files (sorted)")
    return p


def run(argv=None) -> dict:
    args, beam_options = options.parse(parser(), argv)
    paths = expand_inputs(args.input, args.max_files)
    with_params = {k: v for k, v in vars(args).items()}
    pipeline = beam.Pipeline(options=beam_options)
    build(pipeline, paths, args.output, args.source, args.kind, args.text_field, args.format)
    return accounting.run_and_account(pipeline, args.output, "ingest", {**with_params, "files": len(paths)})


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    manifest = run(sys.argv[1:])
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "documents_quarantined")})
