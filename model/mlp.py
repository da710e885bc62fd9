"""SwiGLU feed-forward: down_proj(silu(gate_proj(x)) * up_proj(x)). Used for the dense
layers (intermediate_size) and the shared experts (n_shared_experts * moe_intermediate_size)."""

import keras
from keras import ops

from model.linear import Linear


class SwiGLUMLP(keras.layers.Layer):
    def __init__(self, hidden_size: int, intermediate_size: int, initializer_range: float, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        dense = dict(kernel_initializer=init, dtype=self.dtype_policy)
        self.gate_proj = Linear(intermediate_size, name="gate_proj", **dense)
        self.up_proj = Linear(intermediate_size, name="up_proj", **dense)
        self.down_proj = Linear(hidden_size, name="down_proj", **dense)

    def build(self, input_shape):
        self.gate_proj.build(input_shape)
        self.up_proj.build(input_shape)
        self.down_proj.build((*input_shape[:-1], self.gate_proj.units))

    def call(self, x):
        return self.down_proj(ops.silu(self.gate_proj(x)) * self.up_proj(x))
