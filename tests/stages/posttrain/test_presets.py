"""The post-training sections of the presets load, validate, and hold the papers' values."""

import os

import pytest

from stages import config, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SECTIONS = ("posttrain_data", "sft", "grpo", "distill", "posttrain_evaluate")


@pytest.mark.parametrize("preset", ["tiny", "v3-671b"])
def test_post_training_sections_validate(preset):
    loaded = config.load(os.path.join(REPO, "configs", f"{preset}.yaml"))
    for name in SECTIONS:
        section = loaded[name]
        if hasattr(section, "validate"):
            section.validate(name)
    # the student shares the teacher's tokenizer
    assert loaded["distill"].student_config().vocab_size >= loaded["model"].build().vocab_size


def test_v3_values_are_the_papers():
    v3 = config.load(os.path.join(REPO, "configs", "v3-671b.yaml"))
    sft, grpo = v3["sft"], v3["grpo"]
    assert (sft.epochs, sft.learning_rate, sft.final_learning_rate) == (2, 5e-6, 1e-6)        # V3 §5.1
    assert (grpo.num_generations, grpo.beta, grpo.learning_rate) == (16, 0.001, 3e-6)          # R1-Zero
    assert grpo.epsilon_low == grpo.epsilon_high == 10.0                                        # R1 RL stage 1
    defaults = pipeline.get("grpo").config_class()                                              # DeepSeekMath
    assert (defaults.num_generations, defaults.beta, defaults.learning_rate, defaults.loss_type) == (
        64, 0.04, 1e-6, "grpo")
