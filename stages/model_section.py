"""The `model` config section: a preset plus Hugging Face field overrides."""

import dataclasses
from typing import Any

from model.config import ModelConfig
from stages.config import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelSection:
    preset: str = "tiny"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {num_hidden_layers: 2}

    def build(self) -> ModelConfig:
        return ModelConfig.from_preset(self.preset).replace(**self.overrides)

    def validate(self, key: str) -> None:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise ConfigError(f"{key}.overrides.{unknown[0]}: not a ModelConfig field")
        try:
            self.build()
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None

