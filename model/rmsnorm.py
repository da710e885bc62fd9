"""RMSNorm, computed in float32 and scaled by its weight in the layer's compute dtype
(as the official inference code and transformers' DeepseekV3RMSNorm do)."""

import keras
from keras import ops


class RMSNorm(keras.layers.Layer):
    def __init__(self, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        x32 = ops.cast(x, "float32")
        x32 = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.eps)
        return ops.cast(x32, self.compute_dtype) * ops.cast(self.weight, self.compute_dtype)
