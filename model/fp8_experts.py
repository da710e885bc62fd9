"""The routed experts' SwiGLU under DeepSeek-V3's FP8 recipe (model/fp8.py, model/linear.py).

Each of the three grouped GEMMs (gate, up, down) runs Fprop, Dgrad and Wgrad on E4M3
operands like a linear layer: activations and gradients in 1x128 tiles, each expert's
weights in 128x128 blocks, the Wgrad operands re-tiled to 128x1 (128 consecutive sorted
rows of a channel; a tile may straddle two experts' rows).

What the backward pass keeps (paper §3.3.3): the FP8 input rows of gate/up and the FP8
SwiGLU inputs (gate and up outputs); the SwiGLU output is recomputed from the latter, not
stored.

The grouped GEMMs: JAX's Mosaic-GPU grouped kernels on Hopper (model/experts_grouped_gemm.py,
16-bit operands); elsewhere the portable "blocks" layout of model/experts.py (whatever
`expert_matmul_impl` says: the FP8 path needs a weight-gradient GEMM per layout, and these
two have one).
"""

from keras import ops

from model import fp8
from model.experts import block_layout, from_blocks, to_blocks


class _BlockGemms:
    """Grouped GEMMs over the "blocks" layout (every backend)."""

    def __init__(self, sorted_experts, counts, num_experts: int):
        self.num_experts = num_experts
        self.slot, self.slot_source, self.block_expert, self.block = block_layout(sorted_experts, counts, num_experts)

    def matmul(self, rows, w):
        """rows [N, K] sorted by expert, w [E, K, M] -> rows @ w[expert of row] [N, M]."""
        blocks = to_blocks(rows, self.slot_source, self.block)
        return from_blocks(ops.matmul(blocks, ops.take(w, self.block_expert, axis=0)), self.slot)

    def weight_grad(self, a, b):
        """a [N, K], b [N, M] -> per expert a_e^T b_e [E, K, M] float32."""
        a_blocks = ops.cast(to_blocks(a, self.slot_source, self.block), "float32")
        b_blocks = ops.cast(to_blocks(b, self.slot_source, self.block), "float32")
        per_block = ops.matmul(ops.transpose(a_blocks, (0, 2, 1)), b_blocks)
        return ops.segment_sum(per_block, self.block_expert, num_segments=self.num_experts)


class _HopperGemms:
    """Grouped GEMMs through the Mosaic-GPU kernels (JAX on Hopper, 16-bit operands)."""

    def __init__(self, counts):
        self.sizes = ops.cast(counts, "int32")

    def matmul(self, rows, w):
        from model.experts_grouped_gemm import FORWARD_TILES, _kernels

        return _kernels()[0](rows, w, group_sizes=self.sizes, **FORWARD_TILES)

    def weight_grad(self, a, b):
        from model.experts_grouped_gemm import grouped_weight_grad

        return grouped_weight_grad(ops.cast(a, "bfloat16"), ops.cast(b, "bfloat16"), self.sizes)


def _gemms(impl, dtype, sorted_experts, counts, num_experts: int):
    if impl == "grouped_gemm":
        from model.experts_grouped_gemm import grouped_gemm_supported

        if grouped_gemm_supported(dtype):
            return _HopperGemms(counts)
    return _BlockGemms(sorted_experts, counts, num_experts)


def _transposed(w):
    return ops.transpose(w, (0, 2, 1))


def fp8_grouped_swiglu(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down, impl=None):
    """model.experts.grouped_swiglu with FP8 GEMMs: SwiGLU of each sorted row with its
    expert's weights -> [N, H] in x's dtype (the compute dtype)."""
    dtype = x.dtype
    rows = x if token_of_row is None else ops.take(x, token_of_row, axis=0)
    gemms = _gemms(impl, dtype, sorted_experts, counts, w_gate.shape[0])

    def weight(w):
        return fp8.fake_quantize(w, fp8.WEIGHT_BLOCK, dtype)

    def activation(a):
        return fp8.fake_quantize(a, fp8.ACTIVATION_TILE, dtype)

    def wgrad_operand(a):
        return fp8.fake_quantize(a, fp8.WGRAD_TILE, dtype)

    @ops.custom_gradient
    def swiglu(rows, w_gate, w_up, w_down):
        rows_q = fp8.quantize(rows, fp8.ACTIVATION_TILE)
        rows_dq = fp8.dequantize(rows_q, dtype)
        gate, up = gemms.matmul(rows_dq, weight(w_gate)), gemms.matmul(rows_dq, weight(w_up))
        gate_q, up_q = fp8.quantize(gate), fp8.quantize(up)   # the cached SwiGLU inputs
        gate, up = ops.cast(gate, "float32"), ops.cast(up, "float32")   # SwiGLU in FP32, quantized once
        out = gemms.matmul(activation(ops.silu(gate) * up), weight(w_down))

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            gate, up = fp8.dequantize(gate_q), fp8.dequantize(up_q)   # float32
            sigmoid = ops.sigmoid(gate)
            silu = gate * sigmoid
            d_hidden = ops.cast(gemms.matmul(activation(dy), _transposed(weight(w_down))), "float32")
            d_w_down = gemms.weight_grad(wgrad_operand(silu * up), wgrad_operand(dy))
            d_gate = d_hidden * up * sigmoid * (1 + gate * (1 - sigmoid))
            d_up = d_hidden * silu
            d_rows = (gemms.matmul(activation(d_gate), _transposed(weight(w_gate)))
                      + gemms.matmul(activation(d_up), _transposed(weight(w_up))))
            rows_t = wgrad_operand(fp8.dequantize(rows_q))
            d_w_gate = gemms.weight_grad(rows_t, wgrad_operand(d_gate))
            d_w_up = gemms.weight_grad(rows_t, wgrad_operand(d_up))
            return (ops.cast(d_rows, rows.dtype), ops.cast(d_w_gate, w_gate.dtype), ops.cast(d_w_up, w_up.dtype),
                    ops.cast(d_w_down, w_down.dtype))

        return out, grad

    return swiglu(rows, w_gate, w_up, w_down)
