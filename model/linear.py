"""The model's linear layers: a Keras Dense (same `kernel` [in, out], same checkpoints) whose
GEMMs follow DeepSeek-V3's FP8 recipe (model/fp8.py) under the FP8MixedPrecision policy.

The three GEMMs of a linear layer y = x W (paper Figure 6), each on E4M3 operands with
FP32 accumulation:
- Fprop  y  = Q(x; 1x128)  Q(W; 128x128)                 -> BF16
- Dgrad  dx = Q(dy; 1x128) Q(W; 128x128)^T               -> BF16
- Wgrad  dW = Q(x; 128x1)^T Q(dy; 128x1)                 -> FP32 (master weights)
The backward pass keeps only Q(x; 1x128), 1 byte per value plus a scale per 128 (paper
§3.3.3, "Low-Precision Activation"); Wgrad re-tiles it to 128x1 from those FP8 values, as
the paper does. The weight is re-quantized from the FP32 master in the backward pass
rather than kept.

Departure: the paper caches the input of the linear after attention (o_proj) in a custom
E5M6 format; with no such dtype, o_proj caches its FP8 input like every other linear.
"""

import keras
from keras import ops

from model import fp8


def _flat(x):
    return ops.reshape(x, (-1, ops.shape(x)[-1]))


def fp8_matmul(x, kernel, compute_dtype: str = "bfloat16"):
    """x [..., in] @ kernel [in, out] with FP8 Fprop, Dgrad and Wgrad (see the module
    docstring) -> [..., out] in compute_dtype."""

    @ops.custom_gradient
    def matmul(x, kernel):
        x_q = fp8.quantize(_flat(x), fp8.ACTIVATION_TILE)
        w = fp8.dequantize(fp8.quantize(kernel, fp8.WEIGHT_BLOCK), compute_dtype)
        y = ops.matmul(fp8.dequantize(x_q, compute_dtype), w)

        def grad(*args, upstream=None):
            dy = _flat(args[0] if upstream is None else upstream)
            w_q = fp8.dequantize(fp8.quantize(kernel, fp8.WEIGHT_BLOCK), compute_dtype)
            dx = ops.matmul(fp8.fake_quantize(dy, fp8.ACTIVATION_TILE, compute_dtype), ops.transpose(w_q))
            x_t = fp8.fake_quantize(fp8.dequantize(x_q), fp8.WGRAD_TILE, "float32")
            d_kernel = ops.matmul(ops.transpose(x_t), fp8.fake_quantize(dy, fp8.WGRAD_TILE, "float32"))
            return ops.reshape(ops.cast(dx, x.dtype), ops.shape(x)), ops.cast(d_kernel, kernel.dtype)

        return ops.reshape(y, (*ops.shape(x)[:-1], ops.shape(kernel)[-1])), grad

    return matmul(x, kernel)


class Linear(keras.layers.Dense):
    """Dense without bias; FP8 GEMMs when its dtype policy is fp8.FP8MixedPrecision."""

    def __init__(self, units: int, **kwargs):
        super().__init__(units, use_bias=False, **kwargs)

    def call(self, inputs, training=None):
        if not fp8.uses_fp8(self):
            return super().call(inputs, training=training)
        return fp8_matmul(inputs, fp8.master_weight(self.kernel), self.compute_dtype)
