"""Stage `tokenize`: the mixed documents -> packed TFRecord shards (beam_jobs.tokenize),
with the tokenizer from the `tokenizer` stage."""

import dataclasses

from beam_jobs import tokenize as tokenize_job
from beam_jobs.params import check_settings
from stages.config import ConfigError
from stages.data_common import job_result


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    seq_len: int = 256
    num_shards: int = 8
    batch_size: int = 256

    def validate(self, key):
        check_settings(tokenize_job.TokenizeParams, self, key, ConfigError)   # the job's checks, one copy


def run(ctx):
    c = ctx.config
    tokenizer = ctx.inputs["tokenizer"].file
    params = tokenize_job.TokenizeParams(input=ctx.inputs["mix"].pattern, tokenizer=tokenizer,
                                         seq_len=c.seq_len, output=ctx.output_dir, num_shards=c.num_shards,
                                         batch_size=c.batch_size)
    result = job_result(tokenize_job.run(params, ctx.beam_args), None)
    result["index"] = "index.json"
    return result
