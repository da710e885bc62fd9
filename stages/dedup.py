"""Stage `dedup`: exact + MinHash-LSH near-dedup of the ingested documents (beam_jobs.dedup)."""

import dataclasses

from beam_jobs import dedup as dedup_job
from beam_jobs.minhash import (DEFAULT_BANDS, DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_ROWS, DEFAULT_THRESHOLD,
                               candidate_probability)
from beam_jobs.params import check_settings
from stages.config import ConfigError
from stages.data_common import job_result


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    threshold: float = DEFAULT_THRESHOLD
    num_perm: int = DEFAULT_NUM_PERM
    bands: int = DEFAULT_BANDS
    rows: int = DEFAULT_ROWS
    ngram: int = DEFAULT_NGRAM
    cc_rounds: int = 6

    def validate(self, key):
        check_settings(dedup_job.DedupParams, self, key, ConfigError)   # the job's checks, one copy


def run(ctx):
    c = ctx.config
    params = dedup_job.DedupParams(input=ctx.inputs["ingest"].pattern, output=ctx.output_dir,
                                   threshold=c.threshold, num_perm=c.num_perm, bands=c.bands, rows=c.rows,
                                   ngram=c.ngram, cc_rounds=c.cc_rounds)
    result = job_result(dedup_job.run(params, ctx.beam_args), "kept-*.parquet")
    result["candidate_probability_at_threshold"] = candidate_probability(c.threshold, c.bands, c.rows)
    return result
