"""The routed experts' SwiGLU, computed only for the (token, expert) pairs the router chose.

Assignments are sorted by expert; then one of these grouped-matmul paths runs, chosen by
`expert_matmul_impl` (each is tested against a dense reference):

- "blocks" (portable, every backend): each expert's rows are padded to a multiple of a
  block size, blocks of rows are multiplied by their expert's weights in one batched
  matmul. Static shapes (XLA-friendly), no token dropping, experts with zero tokens
  cost nothing but the at most n_routed_experts spare blocks that the static bound
  reserves.
- "capacity" (portable): rows scattered into a [experts, capacity, hidden] buffer and one
  batched matmul over experts (no weight gather). The capacity is static, CAPACITY_FACTOR
  times the mean rows per expert; when an expert gets more rows than that, the step runs
  "blocks" instead (a cond), so no token is ever dropped.
- "ragged_dot" (JAX only): jax.lax.ragged_dot over the sorted rows. On GPU, XLA computes
  it as a dense product per group (about 1/E of the matmul rate): correct but slow.
- "grouped_gemm" (JAX on Hopper GPUs, bf16): JAX's Pallas Mosaic-GPU grouped GEMM kernels
  with a custom VJP (model/experts_grouped_gemm.py); other dtypes or devices use "capacity".

The default is "grouped_gemm" on JAX (fastest forward + backward on an H200: 9.0 ms vs
14.0 for "capacity", 85 for "blocks", 240 for "ragged_dot" at the `small` preset's training
shapes; benchmarks/bench_gpu_small.py, benchmarks/RESULTS.md) and "blocks" on TensorFlow.

No Python loop over tokens or experts, and no expert runs on tokens it was not chosen for.
"""

import keras
from keras import ops

from model.fp8 import master_weight, uses_fp8

MAX_BLOCK_SIZE = 64
CAPACITY_FACTOR = 1.25
IMPLS = ("blocks", "capacity", "ragged_dot", "grouped_gemm")


def default_impl() -> str:
    return "grouped_gemm" if keras.backend.backend() == "jax" else "blocks"


def _block_size(num_rows, num_experts: int) -> int:
    """Rows per block: about the mean rows per expert, a power of two in [1, MAX_BLOCK_SIZE],
    so the spare-block overhead stays small for a handful of decoding tokens too."""
    if not isinstance(num_rows, int):
        return MAX_BLOCK_SIZE
    size = 1
    while size * 2 <= min(MAX_BLOCK_SIZE, num_rows // num_experts):
        size *= 2
    return size


def expert_counts(flat_indices, num_experts: int):
    """Rows per expert [E] int32. A scatter-add rather than bincount, which XLA on TF
    cannot compile."""
    ones = ops.ones_like(flat_indices, dtype="int32")
    return ops.scatter(ops.cast(flat_indices, "int32")[:, None], ones, (num_experts,))


def _dispatch(expert_indices, num_experts: int):
    """Sort the flattened (token, slot) assignments by expert.

    Returns order [N] (assignment ids sorted by expert), sorted_experts [N],
    counts [E] (rows per expert) and inverse [N] (the sorted position of each assignment).
    """
    flat = ops.reshape(expert_indices, (-1,))
    order = ops.argsort(flat)
    sorted_experts = ops.take(flat, order)
    counts = expert_counts(flat, num_experts)
    inverse = ops.argsort(order)
    return order, sorted_experts, counts, inverse


def block_layout(sorted_experts, counts, num_experts: int, token_of_row=None):
    """The "blocks" layout of rows sorted by expert: each expert's rows padded to a multiple
    of a block size. -> (slot [N]: each sorted row's slot; slot_source [S]: the row of x
    (token_of_row, or the sorted row itself when None) + 1 in each slot, 0 for padding;
    block_expert [B]; block size)."""
    num_rows = ops.shape(sorted_experts)[0]
    if token_of_row is None:  # x is already one row per sorted assignment
        token_of_row = ops.arange(num_rows, dtype="int32")
    block = _block_size(num_rows, num_experts)
    counts = ops.cast(counts, "int32")
    padded_counts = (counts + block - 1) // block * block
    padded_ends = ops.cumsum(padded_counts)
    offsets = ops.cumsum(counts) - counts
    # destination slot of each sorted row: its expert's padded start + its rank there
    rank = ops.arange(num_rows, dtype="int32") - ops.take(offsets, sorted_experts)
    slot = ops.take(padded_ends - padded_counts, sorted_experts) + rank
    num_blocks = num_rows // block + num_experts  # static bound on sum(ceil(count / block))
    # source token + 1 of each slot, 0 for padding slots (which read zeros; gathering from
    # a zero-padded copy of x instead crashed the XLA CPU compiler in the backward pass)
    slot_source = ops.scatter(slot[:, None], token_of_row + 1, (num_blocks * block,))
    block_start = ops.arange(num_blocks, dtype="int32") * block
    block_expert = ops.minimum(
        ops.sum(ops.cast(padded_ends[None, :] <= block_start[:, None], "int32"), axis=1), num_experts - 1)
    return slot, slot_source, block_expert, block


def to_blocks(x, slot_source, block: int):
    """x's rows placed in their slots -> [B, block, width], zeros in padding slots."""
    slot_rows = ops.take(x, ops.maximum(slot_source - 1, 0), axis=0)
    slot_rows = slot_rows * ops.cast(slot_source > 0, x.dtype)[:, None]
    return ops.reshape(slot_rows, (-1, block, ops.shape(x)[-1]))


def from_blocks(blocks, slot):
    """[B, block, width] -> the sorted rows' results [N, width]."""
    return ops.take(ops.reshape(blocks, (-1, ops.shape(blocks)[-1])), slot, axis=0)


def _swiglu_blocks(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down):
    """Block-padded grouped SwiGLU. x [T, H]; rows sorted by expert. Returns the output of
    each sorted row [N, H]."""
    slot, slot_source, block_expert, block = block_layout(sorted_experts, counts, w_gate.shape[0], token_of_row)
    x_blocks = to_blocks(x, slot_source, block)
    gate = ops.matmul(x_blocks, ops.take(w_gate, block_expert, axis=0))
    up = ops.matmul(x_blocks, ops.take(w_up, block_expert, axis=0))
    out = ops.matmul(ops.silu(gate) * up, ops.take(w_down, block_expert, axis=0))
    return from_blocks(out, slot)


def _capacity(num_rows: int, num_experts: int) -> int:
    """Static rows per expert of the "capacity" layout: CAPACITY_FACTOR x the mean, rounded
    up to a multiple of 8 (of 128 for training-size batches, for the matmul tiles)."""
    mean = -(-num_rows // num_experts)
    multiple = 128 if mean >= 512 else 8
    return -(-int(mean * CAPACITY_FACTOR) // multiple) * multiple


def _swiglu_capacity(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down):
    """Per-expert padded SwiGLU: [E, capacity, H] x [E, H, I] batched matmuls."""
    num_rows = sorted_experts.shape[0]
    num_experts = w_gate.shape[0]
    if not isinstance(num_rows, int):  # dynamic batch (TF graphs): no static capacity
        return _swiglu_blocks(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down)
    capacity = _capacity(num_rows, num_experts)
    if token_of_row is None:
        token_of_row = ops.arange(num_rows, dtype="int32")
    counts = ops.cast(counts, "int32")
    rank = ops.arange(num_rows, dtype="int32") - ops.take(ops.cumsum(counts) - counts, sorted_experts)

    def padded():
        slot = ops.cast(sorted_experts, "int32") * capacity + rank
        # source token + 1 of each slot, 0 for padding (zero rows: they add nothing to dW)
        slot_source = ops.scatter(slot[:, None], token_of_row + 1, (num_experts * capacity,))
        rows = ops.take(x, ops.maximum(slot_source - 1, 0), axis=0) * ops.cast(slot_source > 0, x.dtype)[:, None]
        rows = ops.reshape(rows, (num_experts, capacity, -1))
        hidden = ops.silu(ops.einsum("ech,ehi->eci", rows, w_gate)) * ops.einsum("ech,ehi->eci", rows, w_up)
        out = ops.einsum("eci,eih->ech", hidden, w_down)
        return ops.take(ops.reshape(out, (num_experts * capacity, -1)), slot, axis=0)

    def blocks():
        return _swiglu_blocks(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down)

    return ops.cond(ops.max(counts) <= capacity, padded, blocks)


def _swiglu_ragged_dot(x, token_of_row, counts, w_gate, w_up, w_down):
    import jax  # only reached on the JAX backend

    rows = x if token_of_row is None else ops.take(x, token_of_row, axis=0)
    sizes = ops.cast(counts, "int32")
    gate = jax.lax.ragged_dot(rows, w_gate, sizes)
    up = jax.lax.ragged_dot(rows, w_up, sizes)
    return jax.lax.ragged_dot(ops.silu(gate) * up, w_down, sizes)


def grouped_swiglu(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down, impl: str | None = None,
                   fp8: bool = False):
    """SwiGLU of each assignment row with its expert's weights, rows sorted by expert ->
    [N, H] in sorted order. Row i is x[token_of_row[i]], or x[i] when token_of_row is None
    (rows already gathered, as the expert-parallel dispatch delivers them). fp8: the GEMMs
    follow DeepSeek-V3's FP8 recipe (model/fp8_experts.py)."""
    impl = impl or default_impl()
    if fp8:
        from model.fp8_experts import fp8_grouped_swiglu

        return fp8_grouped_swiglu(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down, impl)
    if impl == "blocks":
        return _swiglu_blocks(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down)
    if impl == "capacity":
        return _swiglu_capacity(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down)
    if impl == "ragged_dot":
        return _swiglu_ragged_dot(x, token_of_row, counts, w_gate, w_up, w_down)
    if impl == "grouped_gemm":
        from model.experts_grouped_gemm import grouped_gemm_supported, swiglu_grouped_gemm

        if grouped_gemm_supported(x.dtype):
            return swiglu_grouped_gemm(x, token_of_row, counts, w_gate, w_up, w_down)
        return _swiglu_capacity(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down)
    raise ValueError(f"unknown expert_matmul_impl {impl!r}; use one of {IMPLS}")


def routed_expert_ffn(x, expert_indices, expert_weights, w_gate, w_up, w_down, impl: str | None = None,
                      fp8: bool = False):
    """sum_k weight[t, k] * SwiGLU_{expert[t, k]}(x[t]).

    x [T, H]; expert_indices, expert_weights [T, K]; w_gate, w_up [E, H, I]; w_down [E, I, H].
    """
    num_experts = w_gate.shape[0]
    top_k = expert_indices.shape[-1]
    order, sorted_experts, counts, inverse = _dispatch(expert_indices, num_experts)
    token_of_row = ops.cast(order // top_k, "int32")
    out_sorted = grouped_swiglu(x, token_of_row, sorted_experts, counts, w_gate, w_up, w_down, impl, fp8)
    out = ops.reshape(ops.take(out_sorted, inverse, axis=0), (-1, top_k, ops.shape(x)[-1]))
    return ops.sum(out * ops.cast(expert_weights, out.dtype)[..., None], axis=1)


class RoutedExperts(keras.layers.Layer):
    """n_routed_experts SwiGLU experts stored stacked: gate_proj, up_proj [E, H, I] and
    down_proj [E, I, H] (input dim first, like a Keras Dense kernel)."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int,
                 initializer_range: float, impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.initializer_range = initializer_range
        self.impl = impl

    def build(self, input_shape=None):
        init = keras.initializers.RandomNormal(stddev=self.initializer_range)
        e, h, i = self.num_experts, self.hidden_size, self.intermediate_size
        self.gate_proj = self.add_weight(name="gate_proj", shape=(e, h, i), initializer=init)
        self.up_proj = self.add_weight(name="up_proj", shape=(e, h, i), initializer=init)
        self.down_proj = self.add_weight(name="down_proj", shape=(e, i, h), initializer=init)

    def call(self, x, expert_indices, expert_weights):
        return self.dispatch(x, expert_indices, expert_weights)[0]

    def dispatch(self, x, expert_indices, expert_weights):
        """-> (output [T, H], assignments dropped: always 0 unless an expert-parallel mesh
        runs with a capacity; model/expert_parallel.py)."""
        use_fp8 = uses_fp8(self)
        variables = (self.gate_proj, self.up_proj, self.down_proj)
        weights = [master_weight(w) if use_fp8 else ops.convert_to_tensor(w) for w in variables]
        if keras.backend.backend() == "jax":
            from model.expert_parallel import active_dispatch  # imports jax: JAX backend only

            dispatch = active_dispatch()
            if dispatch is not None:
                return dispatch(x, expert_indices, expert_weights, *weights, impl=self.impl, fp8=use_fp8)
        return (routed_expert_ffn(x, expert_indices, expert_weights, *weights, self.impl, use_fp8),
                ops.zeros((), "int32"))
