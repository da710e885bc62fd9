"""Apache Beam jobs of the data phase. Each module is one pipeline, runnable alone:
`python -m beam_jobs.ingest --help`. Nothing here imports model/ or stages/."""
