"""Apache Beam jobs of the data phase. Each module is one pipeline, runnable alone
(`python -m beam_jobs.ingest --help`) or in process with typed parameters
(`ingest.run(ingest.IngestParams(...), beam_args)`; params.py). Nothing here imports
model/ or stages/."""
