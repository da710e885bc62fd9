"""DeepSeek-V3 in Keras 3 (`keras.ops` only), runnable on the TensorFlow and JAX backends.

`model.config` needs only the standard library; the layers import Keras on first use, so
`from model.config import ModelConfig` stays instant.
"""

from model.config import ConfigError, ModelConfig, count_parameters

__all__ = ["ConfigError", "ModelConfig", "count_parameters"]
