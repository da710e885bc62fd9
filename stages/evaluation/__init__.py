"""Evaluation harnesses used by the `evaluate` stage: perplexity by context length,
passkey retrieval and HumanEval."""
