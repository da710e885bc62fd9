"""Stage `tokenizer`: byte-level BPE trained on a streamed sample of the mixed corpus
(beam_jobs.train_tokenizer). Publishes tokenizer.json; ids 0 BOS, 1 EOS, 2 PAD."""

import dataclasses

from beam_jobs import train_tokenizer as tokenizer_job
from beam_jobs.params import check_settings
from stages.config import ConfigError


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 8192          # the model preset's vocab_size (tiny 8192, V3 129280)
    min_frequency: int = 2
    sample: float = 1.0             # fraction of documents streamed into training
    max_documents: int | None = None

    def validate(self, key):
        check_settings(tokenizer_job.TrainTokenizerParams, self, key, ConfigError)   # the job's checks, one copy


def run(ctx):
    c = ctx.config
    params = tokenizer_job.TrainTokenizerParams(input=ctx.inputs["mix"].pattern, output=ctx.output_dir,
                                                vocab_size=c.vocab_size, min_frequency=c.min_frequency,
                                                sample=c.sample, max_documents=c.max_documents)
    m = tokenizer_job.run(params)   # trains in this process: no Beam options
    return {"vocab_size": m["vocab_size"], "documents_in": m["documents_in"], "documents_kept": m["documents_kept"],
            "removed_by_reason": m["removed_by_reason"], "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
            "tokenizer": "tokenizer.json"}
