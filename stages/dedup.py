"""Stage `dedup`: exact + MinHash-LSH near-dedup of the ingested documents (beam_jobs.dedup)."""

import dataclasses

from beam_jobs import dedup as dedup_job
from beam_jobs.minhash import (DEFAULT_BANDS, DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_ROWS, DEFAULT_THRESHOLD,
                               candidate_probability, check_banding)
from stages.config import ConfigError
from stages.data_common import documents_of, job_result
from stages.registry import stage


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    threshold: float = DEFAULT_THRESHOLD
    num_perm: int = DEFAULT_NUM_PERM
    bands: int = DEFAULT_BANDS
    rows: int = DEFAULT_ROWS
    ngram: int = DEFAULT_NGRAM
    cc_rounds: int = 6

    def validate(self, key):
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"{key}.threshold: must be in (0, 1], got {self.threshold}")
        try:
            check_banding(self.num_perm, self.bands, self.rows)
        except ValueError as e:
            raise ConfigError(f"{key}.bands: {e}") from None
        if self.ngram < 1 or self.cc_rounds < 1:
            raise ConfigError(f"{key}.ngram and {key}.cc_rounds must be >= 1")


@stage("dedup", DedupConfig, inputs=("ingest",), code_files=(dedup_job.__file__,))
def run(ctx):
    c = ctx.config
    argv = ["--input", documents_of(ctx.inputs["ingest"]), "--output", ctx.output_dir,
            "--threshold", str(c.threshold), "--num-perm", str(c.num_perm), "--bands", str(c.bands),
            "--rows", str(c.rows), "--ngram", str(c.ngram), "--cc-rounds", str(c.cc_rounds)]
    result = job_result(dedup_job.run(argv + ctx.beam_args), "kept-*.parquet")
    result["candidate_probability_at_threshold"] = candidate_probability(c.threshold, c.bands, c.rows)
    return result
