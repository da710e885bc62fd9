"""Stage `mix`: sample by group weights to a target (beam_jobs.mix)."""

import dataclasses

from beam_jobs import mix as mix_job
from beam_jobs.params import check_settings
from stages.config import ConfigError
from stages.data_common import job_result


@dataclasses.dataclass(frozen=True)
class MixConfig:
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(mix_job.DEFAULT_WEIGHTS))
    group_by: str = "kind"                      # kind | source
    target_documents: int | None = None
    target_tokens: int | None = None            # estimated as UTF-8 bytes / bytes_per_token
    bytes_per_token: float = 4.0
    seed: int = 0

    def validate(self, key):
        check_settings(mix_job.MixParams, self, key, ConfigError)   # the job's checks, one copy


def run(ctx):
    c = ctx.config
    params = mix_job.MixParams(input=ctx.inputs["filter"].pattern, output=ctx.output_dir,
                               weights=dict(c.weights), group_by=c.group_by, target_documents=c.target_documents,
                               target_tokens=c.target_tokens, bytes_per_token=c.bytes_per_token, seed=c.seed)
    return job_result(mix_job.run(params, ctx.beam_args), "kept-*.parquet")
