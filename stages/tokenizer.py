"""Stage `tokenizer`: byte-level BPE trained on a streamed sample of the mixed corpus
(beam_jobs.train_tokenizer). Publishes tokenizer.json; ids 0 BOS, 1 EOS, 2 PAD."""

import dataclasses

from beam_jobs import train_tokenizer as tokenizer_job
from stages.config import ConfigError
from stages.data_common import documents_of
from stages.registry import stage


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 8192          # the model preset's vocab_size (tiny 8192, V3 129280)
    min_frequency: int = 2
    sample: float = 1.0             # fraction of documents streamed into training
    max_documents: int | None = None

    def validate(self, key):
        if self.vocab_size < 263:
            raise ConfigError(f"{key}.vocab_size: at least 263 (256 bytes + 7 special tokens), got {self.vocab_size}")
        if not 0.0 < self.sample <= 1.0:
            raise ConfigError(f"{key}.sample: must be in (0, 1], got {self.sample}")


@stage("tokenizer", TokenizerConfig, inputs=("mix",), code_files=(tokenizer_job.__file__,))
def run(ctx):
    c = ctx.config
    argv = ["--input", documents_of(ctx.inputs["mix"]), "--output", ctx.output_dir,
            "--vocab-size", str(c.vocab_size), "--min-frequency", str(c.min_frequency), "--sample", str(c.sample)]
    if c.max_documents is not None:
        argv += ["--max-documents", str(c.max_documents)]
    m = tokenizer_job.run(argv)
    return {"vocab_size": m["vocab_size"], "documents_in": m["documents_in"], "documents_kept": m["documents_kept"],
            "removed_by_reason": m["removed_by_reason"], "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
            "tokenizer": "tokenizer.json"}
