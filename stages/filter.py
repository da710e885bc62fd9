"""Stage `filter`: quality heuristics (beam_jobs.filter); rules from the config."""

import dataclasses
import json

from beam_jobs import filter as filter_job
from beam_jobs.quality import CodeRules, TextRules
from stages.data_common import documents_of, job_result
from stages.registry import stage


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    text: TextRules = dataclasses.field(default_factory=TextRules)
    code: CodeRules = dataclasses.field(default_factory=CodeRules)


@stage("filter", FilterConfig, inputs=("dedup",), code_files=(filter_job.__file__,))
def run(ctx):
    argv = ["--input", documents_of(ctx.inputs["dedup"]), "--output", ctx.output_dir,
            "--text-rules", json.dumps(dataclasses.asdict(ctx.config.text)),
            "--code-rules", json.dumps(dataclasses.asdict(ctx.config.code))]
    return job_result(filter_job.run(argv + ctx.beam_args), "kept-*.parquet")
