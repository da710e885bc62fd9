"""Stage `tokenize`: the mixed documents -> packed TFRecord shards (beam_jobs.tokenize),
with the tokenizer from the `tokenizer` stage."""

import dataclasses

from beam_jobs import tokenize as tokenize_job
from stages.config import ConfigError
from stages.data_common import documents_of, job_result, tokenizer_file
from stages.registry import stage


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    seq_len: int = 256
    num_shards: int = 8
    batch_size: int = 256

    def validate(self, key):
        if self.seq_len < 2:
            raise ConfigError(f"{key}.seq_len: must be >= 2, got {self.seq_len}")
        if self.num_shards < 1 or self.batch_size < 1:
            raise ConfigError(f"{key}.num_shards and {key}.batch_size must be >= 1")


@stage("tokenize", TokenizeConfig, inputs=("mix", "tokenizer"), code_files=(tokenize_job.__file__,))
def run(ctx):
    c = ctx.config
    tokenizer = tokenizer_file(ctx.inputs["tokenizer"])
    argv = ["--input", documents_of(ctx.inputs["mix"]), "--output", ctx.output_dir, "--tokenizer", tokenizer,
            "--seq-len", str(c.seq_len), "--num-shards", str(c.num_shards), "--batch-size", str(c.batch_size)]
    result = job_result(tokenize_job.run(argv + ctx.beam_args), None)
    result["index"] = "index.json"
    return result
