"""The shared trainer behind pretrain, extend_32k, extend_128k (and later SFT, GRPO and
distillation): a custom loop over a tf.distribute strategy, with gradient accumulation,
global-norm clipping, auxiliary-loss-free bias updates and exactly resumable checkpoints."""
