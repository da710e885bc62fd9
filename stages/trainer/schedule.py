"""Learning rate: linear warmup -> constant -> cosine decay -> constant final rate
(V3: 0 -> 2.2e-4 over 2K steps, constant to 10T tokens, cosine to 2.2e-5 over 4.3T)."""

import math

import keras
from keras import ops


class WarmupConstantCosine(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, warmup_steps: int, constant_steps: int, decay_steps: int, final: float):
        self.peak, self.final = peak, final
        self.warmup_steps, self.constant_steps, self.decay_steps = warmup_steps, constant_steps, decay_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak * step / max(self.warmup_steps, 1)
        decay_start = self.warmup_steps + self.constant_steps
        progress = ops.clip((step - decay_start) / max(self.decay_steps, 1), 0.0, 1.0)
        cosine = self.final + 0.5 * (self.peak - self.final) * (1.0 + ops.cos(math.pi * progress))
        after_warmup = ops.where(step < decay_start, self.peak, cosine if self.decay_steps else self.peak)
        return ops.where(step < self.warmup_steps, warmup, after_warmup)

    def get_config(self):
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, constant_steps=self.constant_steps,
                    decay_steps=self.decay_steps, final=self.final)

    @classmethod
    def from_training_config(cls, cfg) -> "WarmupConstantCosine":
        return cls(cfg.learning_rate, cfg.warmup_steps, cfg.constant_steps, cfg.decay_steps, cfg.final_learning_rate)
