"""Stage `ingest`: each configured source (globs of files, JSONL or Parquet) through
beam_jobs.ingest into DIR/sources/NAME/. Glob placeholders: {stdlib} (the standard
library's directory) and {site_packages} (this environment's purelib)."""

import dataclasses
import glob
import hashlib
import os
import sysconfig

from beam_jobs import ingest as ingest_job
from beam_jobs.params import check_settings
from stages.config import ConfigError
from stages.data_common import job_result, merge_counts, subdir


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    name: str
    paths: list[str]
    kind: str = "auto"                  # code | text | auto (by extension)
    format: str = "auto"                # auto | text | jsonl | parquet
    text_field: str = "text"
    max_files: int | None = None        # the first N matched files (sorted), to bound a run
    exclude: list[str] = dataclasses.field(default_factory=list)   # fnmatch patterns on the path
    skip_missing: bool = False          # a pattern that matches nothing is fine (optional corpus parts)
    # a larger document is quarantined as "too_large" (bounds the memory of later jobs)
    max_document_bytes: int = ingest_job.DEFAULT_MAX_DOCUMENT_BYTES

    def validate(self, key):
        if not self.paths:
            raise ConfigError(f"{key}.paths: at least one path or glob")
        # kind, format, text_field, max_files, max_document_bytes: the job's checks, one copy
        check_settings(ingest_job.IngestParams, self, key, ConfigError, source=self.name)


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    sources: list[SourceConfig] = dataclasses.field(default_factory=list)

    def validate(self, key):
        if not self.sources:
            raise ConfigError(f"{key}.sources: at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"{key}.sources: source names must be unique, got {names}")


PLACEHOLDERS = {"stdlib": sysconfig.get_paths()["stdlib"], "site_packages": sysconfig.get_paths()["purelib"]}


def expand(source: SourceConfig) -> list[str]:
    import fnmatch
    files = set()
    for pattern in source.paths:
        try:
            resolved = os.path.expanduser(pattern.format(**PLACEHOLDERS))
        except KeyError as e:
            raise ConfigError(f"ingest.sources.{source.name}.paths: unknown placeholder {e} in {pattern!r}") from None
        if os.path.isdir(resolved):
            resolved = os.path.join(resolved, "**", "*")
        matched = [p for p in glob.glob(resolved, recursive=True) if os.path.isfile(p)]
        if not matched and not source.skip_missing:
            raise FileNotFoundError(f"ingest.sources.{source.name}: {pattern!r} ({resolved}) matches no files")
        files.update(os.path.abspath(p) for p in matched
                     if not any(fnmatch.fnmatch(p, x) for x in source.exclude))
    files = sorted(files)
    return files[:source.max_files] if source.max_files else files


def _digest(files: list[str]) -> str:
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            h.update(path.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def external_inputs(config: IngestConfig) -> dict:
    out = {}
    for source in config.sources:
        files = expand(source)
        if not files:
            raise FileNotFoundError(f"ingest.sources.{source.name}: no files to ingest")
        out[f"source:{source.name}"] = (os.path.commonpath(files) if len(files) > 1 else files[0], _digest(files))
    return out


def run(ctx):
    results = {}
    for source in ctx.config.sources:
        files = expand(source)
        out = subdir(ctx, os.path.join("sources", source.name))
        ctx.log(f"source {source.name}: {len(files)} files")
        params = ingest_job.IngestParams(input=tuple(files), output=out, source=source.name, kind=source.kind,
                                         format=source.format, text_field=source.text_field,
                                         max_document_bytes=source.max_document_bytes)
        results[source.name] = job_result(ingest_job.run(params, ctx.beam_args), None)
    return {**merge_counts(list(results.values())), "by_source": results,
            "documents": os.path.join("sources", "*", "kept-*.parquet")}
