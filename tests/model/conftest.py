"""Shared fixtures for the model tests."""

import keras
import pytest

from model.config import ModelConfig
from model.transformer import DeepSeekV3CausalLM


@pytest.fixture(scope="session")
def tiny_config():
    return ModelConfig.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """The tiny preset, float32, fixed seed; tests must not change its weights."""
    keras.utils.set_random_seed(0)
    return DeepSeekV3CausalLM(tiny_config)

