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

The GEMMs themselves: the operands are dequantised (exactly) and multiplied in BF16 (FP32
for Wgrad); or, with model/fp8_gemm.MODE switched on (JAX; unmeasured on a GPU so far),
its kernel multiplies the E4M3 operands on Hopper's FP8 tensor cores and applies the scales
in FP32 every 128 of K.

Departure: the paper caches the input of the linear after attention (o_proj) in a custom
E5M6 format; with no such dtype, o_proj caches its FP8 input like every other linear.
"""

import keras
from keras import ops

from model import fp8


def _flat(x):
    return ops.reshape(x, (-1, ops.shape(x)[-1]))


def _kernel_gemm():
    """model/fp8_gemm where its kernel runs (JAX on a Hopper GPU, or interpreted in tests),
    else None: the operands are dequantised and multiplied in `operand_dtype`."""
    if keras.backend.backend() != "jax":
        return None
    from model import fp8_gemm
    return fp8_gemm if fp8_gemm.enabled() else None


def _gemm(a_q, b_q, out_dtype, operand_dtype, transpose_a=False, transpose_b=False, kernel_gemm=None):
    """op(A) @ op(B) of two Quantized operands (op: transposed or not) -> unpadded, out_dtype."""
    if kernel_gemm is None:
        a, b = fp8.dequantize(a_q, operand_dtype), fp8.dequantize(b_q, operand_dtype)
        product = ops.matmul(ops.transpose(a) if transpose_a else a, ops.transpose(b) if transpose_b else b)
        return ops.cast(product, out_dtype)
    rows = a_q.shape[1] if transpose_a else a_q.shape[0]
    cols = b_q.shape[0] if transpose_b else b_q.shape[1]
    product = kernel_gemm.scaled_matmul(*kernel_gemm.operands(a_q, transpose_a),
                                        *kernel_gemm.operands(b_q, transpose_b), out_dtype=out_dtype)
    return product[:rows, :cols]


def fp8_matmul(x, kernel, compute_dtype: str = "bfloat16"):
    """x [..., in] @ kernel [in, out] with FP8 Fprop, Dgrad and Wgrad (see the module
    docstring) -> [..., out] in compute_dtype."""
    kernel_gemm = _kernel_gemm()

    @ops.custom_gradient
    def matmul(x, kernel):
        x_q = fp8.quantize(_flat(x), fp8.ACTIVATION_TILE)
        y = _gemm(x_q, fp8.quantize(kernel, fp8.WEIGHT_BLOCK), compute_dtype, compute_dtype, kernel_gemm=kernel_gemm)

        def grad(*args, upstream=None):
            dy = _flat(args[0] if upstream is None else upstream)
            w_q = fp8.quantize(kernel, fp8.WEIGHT_BLOCK)
            dx = _gemm(fp8.quantize(dy, fp8.ACTIVATION_TILE), w_q, compute_dtype, compute_dtype,
                       transpose_b=True, kernel_gemm=kernel_gemm)
            x_t = fp8.quantize(fp8.dequantize(x_q), fp8.WGRAD_TILE)
            d_kernel = _gemm(x_t, fp8.quantize(dy, fp8.WGRAD_TILE), "float32", "float32",
                             transpose_a=True, kernel_gemm=kernel_gemm)
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
