"""Stage `mix`: sample by group weights to a target (beam_jobs.mix)."""

import dataclasses

from beam_jobs import mix as mix_job
from stages.config import ConfigError
from stages.data_common import documents_of, job_result
from stages.registry import stage


@dataclasses.dataclass(frozen=True)
class MixConfig:
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(mix_job.DEFAULT_WEIGHTS))
    group_by: str = "kind"                      # kind | source
    target_documents: int | None = None
    target_tokens: int | None = None            # estimated as UTF-8 bytes / bytes_per_token
    bytes_per_token: float = 4.0
    seed: int = 0

    def validate(self, key):
        if self.group_by not in ("kind", "source"):
            raise ConfigError(f"{key}.group_by: expected kind or source, got {self.group_by!r}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ConfigError(f"{key}.weights: non-negative with a positive total, got {self.weights}")
        if self.target_documents is not None and self.target_tokens is not None:
            raise ConfigError(f"{key}.target_tokens: give at most one of target_documents and target_tokens")


@stage("mix", MixConfig, inputs=("filter",), code_files=(mix_job.__file__,))
def run(ctx):
    c = ctx.config
    argv = ["--input", documents_of(ctx.inputs["filter"]), "--output", ctx.output_dir,
            "--weights", ",".join(f"{k}={v}" for k, v in c.weights.items()), "--group-by", c.group_by,
            "--bytes-per-token", str(c.bytes_per_token), "--seed", str(c.seed)]
    if c.target_documents is not None:
        argv += ["--target-documents", str(c.target_documents)]
    if c.target_tokens is not None:
        argv += ["--target-tokens", str(c.target_tokens)]
    return job_result(mix_job.run(argv + ctx.beam_args), "kept-*.parquet")
