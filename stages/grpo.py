"""Stage `grpo`: Group Relative Policy Optimization from the SFT model (DeepSeekMath,
DeepSeek-R1), with rule-based rewards on the verifiable problems of `posttrain_data`.
The loop and the objective are in stages/posttrain/grpo_trainer.py and grpo_loss.py.

Defaults are DeepSeekMath's (G 64, beta 0.04, lr 1e-6, one update per rollout);
configs/v3-671b.yaml holds R1's; README's "Post-training" compares them with TRL's.
Before/after on held-out problems: mean reward, accuracy and format compliance.
"""

import dataclasses
import os

from stages.config import ConfigError
from stages.posttrain import upstream
from stages.posttrain.grpo_loss import LOSS_TYPES
from stages.pretrain import publish_model
from stages.trainer.config import OptimizerConfig



@dataclasses.dataclass(frozen=True)
class GRPOConfig(OptimizerConfig):
    steps: int = 100
    learning_rate: float = 1e-6          # DeepSeekMath
    warmup_steps: int = 0
    final_learning_rate: float = 1e-6
    weight_decay: float = 0.0
    prompts_per_step: int = 16
    num_generations: int = 64            # G, completions per prompt (DeepSeekMath 64, R1-Zero 16)
    max_prompt_length: int = 128
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.04                   # weight of the k3 KL to the reference (SFT) model
    epsilon_low: float = 0.2             # clip range of pi/pi_old: [1 - low, 1 + high]
    epsilon_high: float = 0.2
    num_iterations: int = 1              # policy updates per rollout (mu)
    loss_type: str = "grpo"              # grpo | bnpo | dr_grpo
    scale_rewards: bool = True           # divide by the group's std (False: Dr. GRPO)
    reward_functions: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    # held-out evaluation: greedy, and `eval_samples` samples at `temperature`
    eval_problems: int = 64
    eval_samples: int = 4

    def validate(self, key):
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"{key}.loss_type: one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.num_generations < 2:
            raise ConfigError(f"{key}.num_generations: a group needs >= 2 completions, got {self.num_generations}")
        if self.beta < 0 or self.epsilon_low < 0 or self.epsilon_high < 0:
            raise ConfigError(f"{key}: beta, epsilon_low and epsilon_high must be >= 0")
        if not self.reward_functions:
            raise ConfigError(f"{key}.reward_functions: name at least one reward function")
        from stages.posttrain.rewards import REWARD_FUNCTIONS
        unknown = sorted(set(self.reward_functions) - set(REWARD_FUNCTIONS))
        if unknown:
            raise ConfigError(f"{key}.reward_functions.{unknown[0]}: unknown; known: {', '.join(REWARD_FUNCTIONS)}")
        if self.num_iterations < 1 or self.prompts_per_step < 1:
            raise ConfigError(f"{key}: num_iterations and prompts_per_step must be >= 1")


def held_out_report(model, template, problems, cfg: GRPOConfig) -> dict:
    from stages.posttrain.policy_eval import evaluate_policy

    greedy = evaluate_policy(model, template, problems, cfg.reward_functions, cfg.max_completion_length)
    sampled = evaluate_policy(model, template, problems, cfg.reward_functions, cfg.max_completion_length,
                              samples=cfg.eval_samples, temperature=cfg.temperature, seed=cfg.seed + 1)
    return {"greedy": greedy, "sampled": sampled}


def run(ctx):
    from stages import tracking
    from stages.posttrain.grpo_trainer import GRPOTrainer
    from stages.posttrain.policy_eval import examples

    cfg = ctx.config
    parent, data = ctx.inputs["sft"], ctx.inputs["posttrain_data"]
    template = upstream.chat_template(ctx.inputs["tokenizer"])
    train_problems = data.records("prompts_train")
    held_out = data.records("prompts_held_out")[:cfg.eval_problems]
    if len(train_problems) < cfg.prompts_per_step:
        raise ValueError(f"{len(train_problems)} training prompts, fewer than prompts_per_step {cfg.prompts_per_step}")
    policy, reference = parent.load(), parent.load()
    ctx.log("held-out evaluation of the SFT model")
    before = held_out_report(policy, template, held_out, cfg)
    ml = tracking.mlflow()
    trainer = GRPOTrainer(policy, reference, template, cfg, ctx.work_dir,
                          log_metrics=lambda metrics, step: ml.log_metrics(metrics, step=step))
    summary = trainer.fit(train_problems, discard_unreadable=ctx.force)
    ctx.log("held-out evaluation of the GRPO model")
    after = held_out_report(policy, template, held_out, cfg)
    model_uri = publish_model(ctx, policy, os.path.join(ctx.work_dir, "metrics.jsonl"),
                              lineage={"parent_model": parent.mlflow_model, "reference_model": parent.mlflow_model,
                                       "training_data": data.uri})
    return {"model": "model", "checkpoint": "checkpoint/final", "steps": cfg.steps, "mlflow_model": model_uri,
            "held_out": {"before": before, "after": after},
            "examples": examples(policy, template, held_out, cfg.max_completion_length), "final": summary}
