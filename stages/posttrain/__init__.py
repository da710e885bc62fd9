"""Post-training: chat data, verifiable tasks, rewards, SFT/GRPO/distillation helpers."""
