"""Stage `filter`: quality heuristics (beam_jobs.filter); rules from the config."""

import dataclasses

from beam_jobs import filter as filter_job
from beam_jobs.params import check_settings
from beam_jobs.quality import CodeRules, TextRules
from stages.config import ConfigError
from stages.data_common import job_result


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    text: TextRules = dataclasses.field(default_factory=TextRules)
    code: CodeRules = dataclasses.field(default_factory=CodeRules)

    def validate(self, key):
        check_settings(filter_job.FilterParams, self, key, ConfigError)   # the job's checks, one copy


def run(ctx):
    params = filter_job.FilterParams(input=ctx.inputs["dedup"].pattern, output=ctx.output_dir,
                                     text=ctx.config.text, code=ctx.config.code)
    return job_result(filter_job.run(params, ctx.beam_args), "kept-*.parquet")
