"""Reading and writing document Parquet files (explicit schema, zstd compression)."""

import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.documents import DOCUMENT_SCHEMA, PARQUET_CODEC


def write(pcoll, output_dir: str, name: str, schema=DOCUMENT_SCHEMA, label: str | None = None):
    """DIR/NAME-SSSSS-of-NNNNN.parquet; an empty PCollection still writes one valid file."""
    return pcoll | (label or f"Write {name}") >> beam.io.WriteToParquet(
        os.path.join(output_dir, name), schema, codec=PARQUET_CODEC, file_name_suffix=".parquet")


def read(pipeline, pattern: str, label: str = "Read documents"):
    """Documents of every file the glob matches. The file names are spread over the
    workers first (a cheap shuffle of names), so reading and everything fused after it
    runs in parallel even on runners that would read a small glob in one bundle. Each
    file's footer is read first, so a truncated or foreign file fails the job with an
    error naming it (Beam's Parquet reader does not name the file)."""
    paths = ensure_matches(pattern)
    return (pipeline
            | f"{label}: files" >> beam.Create(paths)
            | f"{label}: spread" >> beam.Reshuffle()
            | f"{label}: check" >> beam.Map(check_parquet)
            | label >> beam.io.ReadAllFromParquet())


def check_parquet(path: str) -> str:
    """The path, once its Parquet footer reads; else ValueError naming the file."""
    import pyarrow.parquet as pq
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            pq.ParquetFile(f).metadata
    except Exception as e:   # pyarrow raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    return path


def ensure_matches(pattern: str) -> list[str]:
    """The files a glob names, or a clear error at construction time."""
    paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    if not paths:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return paths


def documents_glob(directory: str, name: str = "kept") -> str:
    return os.path.join(directory, f"{name}-*.parquet")
