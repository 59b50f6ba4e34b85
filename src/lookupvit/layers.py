"""Building blocks shared by LookupViT and the baselines (ViT, TokenLearner, Perceiver).

Every module here works on flat token sequences of shape (batch, tokens, dim); the spatial
(or spatio-temporal) grid a sequence came from travels beside it as a tuple of ints.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.autograd.forward_ad
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

Grid = tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Parameter-free token-grid resize
# --------------------------------------------------------------------------------------------


def _resize_matrix_1d(size_in: int, size_out: int) -> Tensor:
    """(size_out, size_in) weights of an antialiased linear (triangle-filter) resize.

    Matches `jax.image.resize(..., "linear", antialias=True)` and torch's
    `interpolate(mode="bilinear", antialias=True, align_corners=False)`: output sample i sits at
    input coordinate (i + 0.5) * size_in / size_out - 0.5; when downsampling the triangle is
    widened by the scale so that every input token contributes (an average, not a sample).
    """
    scale = size_out / size_in
    kernel_scale = min(scale, 1.0)  # widen the filter only when downsampling
    centers = (torch.arange(size_out, dtype=torch.float64) + 0.5) / scale - 0.5
    positions = torch.arange(size_in, dtype=torch.float64)
    distance = (positions[None, :] - centers[:, None]).abs() * kernel_scale
    weights = (1.0 - distance).clamp(min=0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def _build_resize_matrix(grid_in: Grid, grid_out: Grid, device: torch.device, dtype: torch.dtype) -> Tensor:
    # A matrix first built under inference_mode would be an inference tensor, which autograd
    # refuses to save; the cache must serve training calls too.
    with torch.inference_mode(False):
        matrix = torch.ones(1, 1, dtype=torch.float64)
        for size_in, size_out in zip(grid_in, grid_out):
            matrix = torch.kron(matrix, _resize_matrix_1d(size_in, size_out))
        return matrix.to(device=device, dtype=dtype)


_cached_resize_matrix = functools.lru_cache(maxsize=256)(_build_resize_matrix)


def resize_matrix(grid_in: Grid, grid_out: Grid, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(prod(grid_out), prod(grid_in)) matrix of the separable antialiased linear resize.

    Works for any number of grid dimensions (2-D images, 3-D video). Built once per
    (grid_in, grid_out, device, dtype) and cached, so resizing a token grid is one GEMM.
    """
    if len(grid_in) != len(grid_out):
        raise ValueError(f"cannot resize a {len(grid_in)}-D grid {grid_in} to a {len(grid_out)}-D grid {grid_out}")
    if torch.compiler.is_compiling():
        # torch.compile/export trace with fake tensors: caching one would poison later eager calls,
        # and in a compiled graph the matrix is a constant anyway.
        return _build_resize_matrix(tuple(grid_in), tuple(grid_out), device, dtype)
    return _cached_resize_matrix(tuple(grid_in), tuple(grid_out), device, dtype)


def resize_tokens(tokens: Tensor, grid_in: Grid, grid_out: Grid) -> Tensor:
    """Resize a flattened token grid (..., prod(grid_in), dim) to (..., prod(grid_out), dim)."""
    if tuple(grid_in) == tuple(grid_out):
        return tokens
    matrix = resize_matrix(tuple(grid_in), tuple(grid_out), tokens.device, tokens.dtype)
    return torch.matmul(matrix, tokens)


# --------------------------------------------------------------------------------------------
# Linear layer
# --------------------------------------------------------------------------------------------

# A private op (the one Inductor emits for CPU linears): re-check these conditions and
# tests/test_linear.py when upgrading torch.
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_HAS_ONEDNN_BF16 = _HAS_ONEDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported()
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16) if _HAS_ONEDNN_BF16 else (torch.float32,)
# Rows oneDNN is told to expect when packing a weight; the packed layout serves any row count.
_PACKING_ROWS = 64


def _plain_inference_call(x: Tensor) -> bool:
    """Whether this call needs no gradient and is seen by no tracer: the only calls that may use kernels or weight
    layouts autograd does not know about.

    Any autograd (reverse or forward mode, torch.func transforms) must see the plain ops; so must tracers,
    export, FX proxies and dispatch modes (e.g. FLOP counters), which would otherwise record a private op or
    nothing at all.
    """
    return (
        type(x) is Tensor  # not an FX proxy or a tensor subclass
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.is_grad_enabled()
        and torch.autograd.forward_ad._current_level < 0  # no forward-mode AD level open
        and torch._C._functorch.peek_interpreter_stack() is None  # no torch.func transform active
        and _get_current_dispatch_mode() is None
    )


def _onednn_linear_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the oneDNN op computes exactly what F.linear would for this call (it has no derivative of either kind)."""
    return (
        _HAS_ONEDNN_LINEAR
        and _plain_inference_call(x)
        and torch.backends.mkldnn.enabled  # the user's switch turns this path off with the rest of oneDNN
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and x.dtype in _ONEDNN_DTYPES
        and x.dim() >= 2
        and x.shape[-1] == weight.shape[1]  # a mismatch gets F.linear's clear shape error, not oneDNN's
        and not torch.is_autocast_enabled("cpu")  # autocast casts to bf16, and F.linear runs that on oneDNN already
    )


def _weight_stamp(weight: Tensor) -> tuple:
    """What identifies a parameter's current values: a re-layout made from them is valid while this is unchanged.

    In-place updates (optimizer steps, load_state_dict, copy_ under no_grad) bump the version counter; `.to()`
    and `.data = ...` move the storage. Edits through `.data` do neither, so pack_for_inference must be called
    again after them.
    """
    version = None if weight.is_inference() else weight._version
    return (weight.data_ptr(), version, weight.dtype, weight.device, tuple(weight.shape))


class _DerivedWeight:
    """A tensor computed from a parameter for inference kernels, valid while the parameter is unchanged."""

    def __init__(self, weight: Tensor, derived: Tensor):
        self.stamp = _weight_stamp(weight)
        self.derived = derived

    def valid_for(self, weight: Tensor) -> bool:
        return self.stamp == _weight_stamp(weight)

    def __reduce__(self):
        # A deep copy or pickle of the module gets no derived weight (oneDNN's packed tensors have no storage to
        # copy, and the copy's parameters live elsewhere anyway): it runs unpacked until packed itself.
        return (type(None), ())


def _derived_weight(cache: _DerivedWeight | None, weight: Tensor) -> Tensor | None:
    return cache.derived if cache is not None and cache.valid_for(weight) else None


class Linear(nn.Linear):
    """nn.Linear whose fp32 and bf16 CPU inference runs on oneDNN instead of the default BLAS.

    PyTorch sends fp32 CPU matmuls to MKL. On the AMD EPYC machines this project is measured on,
    MKL reaches 56-172 GFLOP/s on B/16's shapes and oneDNN 87-207 (`benchmarks/linear_backends.py`);
    the gap is widest for LookupViT's few-row compressed-token GEMMs at small batch. In bf16 the oneDNN op
    adds the bias inside the kernel, where torch's addmm first copies it into the output. Same weights,
    same parameters, outputs equal to F.linear within rounding; every other case is F.linear.

    After `pack_for_inference`, the weight is also kept in oneDNN's blocked layout, so no call re-lays it out
    (a bf16 weight must be, for AMX and AVX-512 bf16 kernels). Tools that match modules by exact type, such
    as `quantize_dynamic(model, {nn.Linear})`, need this class named too.
    """

    _packed: _DerivedWeight | None = None

    def forward(self, x: Tensor) -> Tensor:
        if _onednn_linear_applies(x, self.weight):
            weight = _derived_weight(self._packed, self.weight)
            return torch.ops.mkldnn._linear_pointwise(x, self.weight if weight is None else weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def pack_weights(self) -> None:
        """Keep a copy of the weight in oneDNN's blocked layout for inference (see pack_for_inference)."""
        self._packed = None
        if _HAS_ONEDNN_LINEAR and self.weight.device.type == "cpu" and self.weight.dtype in _ONEDNN_DTYPES:
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), _PACKING_ROWS)
                self._packed = _DerivedWeight(self.weight, packed)


def pack_for_inference(model: nn.Module) -> nn.Module:
    """Lay out every weight of `model` as its CPU inference kernels read it, once, instead of at every call.

    For a model cast to bf16 this removes a re-layout of every weight per call, which at batch 1 is a large
    part of the time (docs/matrix-engines-2026-12-02.md). Costs a second copy of the weights in memory. Training and
    any call that needs gradients, tracing or compiling ignore the packed copies, and a packed copy is
    dropped from use as soon as its parameter changes in place or moves; after editing weights through
    `.data`, call this again. Returns `model` (packed in place).
    """
    for module in model.modules():
        if isinstance(module, (Linear, BidirectionalCrossAttention)):
            module.pack_weights()
    return model


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping patches (2-D) or tubelets (3-D) projected to `embed_dim` by one convolution."""

    def __init__(self, patch_size: Grid, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.in_chans = in_chans
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[len(self.patch_size)]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Grid]:
        """(B, C, *spatial) -> tokens (B, N, D) and the token grid."""
        # Pixels take the weights' dtype, so a model cast with .to(torch.bfloat16) takes the same
        # float32 images as before; under autocast the convolution casts both anyway.
        features = self.proj(pixels.to(self.proj.weight.dtype))
        grid = tuple(features.shape[2:])
        # One copy here: a transposed view would keep its strides through every residual add and
        # make each later LayerNorm and linear copy the N tokens again.
        return features.flatten(2).transpose(1, 2).contiguous(), grid


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    batch, tokens, dim = x.shape
    return x.view(batch, tokens, num_heads, dim // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention (MHSA) through F.scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        """`causal=True`: token i attends to tokens 0..i only (a text decoder's self-attention)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=causal)))


# Intel Xeons with AMX tiles (Sapphire Rapids and later) move the fp32 break-even of MHBC's two orders; see
# reassociation_margin.
_CPU_HAS_AMX = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def reassociation_margin(dtype: torch.dtype, device_type: str = "cpu") -> float:
    """The fraction of the paper order's lookup-side MACs below which MHBC's reassociated order is faster.

    Measured with `python benchmarks/mhbc_order.py`: 0.8 for 16-bit products; 0.35 for fp32 on AMD EPYC
    (docs/mhbc-order-2026-12-02.md), and 0.8 for fp32 on an Intel Xeon with AMX too, where the reassociated order
    was 1.2-1.45x faster at B/16 5x5 (docs/matrix-engines-2026-12-02.md). Other devices get the AMD values.
    """
    # "meta" is where measured_flops counts what this host's CPU would execute.
    if dtype not in (torch.float32, torch.float64) or (device_type in ("cpu", "meta") and _CPU_HAS_AMX):
        return 0.8
    return 0.35


def reassociation_is_cheaper(
    num_compressed: int, num_lookup: int, dim: int, num_heads: int, dtype: torch.dtype = torch.float32, device_type: str = "cpu"
) -> bool:
    """Whether MHBC's reassociated order is clearly cheaper than the paper's for products in `dtype` on `device_type`.

    Per direction the paper's order costs N D^2 + M N D on the lookup side, the reassociated one
    M D^2 + h M N D: fewer multiply-accumulates while M (D + (h - 1) N) < N D. But the reassociated
    order spends them in many small per-head products (inner size d) and writes h M x D intermediates,
    which run at a lower rate than the paper order's large Linear GEMMs; more so in fp32, where the
    intermediates are twice the bytes. So it is taken only below a fraction of the paper order's MACs,
    `reassociation_margin`: for B/16 at 224 px that is up to 4x4 in fp32 (6x6 on a CPU with AMX) and 6x6 in bf16.
    """
    margin = reassociation_margin(dtype, device_type)
    return num_compressed * (dim + (num_heads - 1) * num_lookup) < margin * num_lookup * dim


class BidirectionalCrossAttention(nn.Module):
    """Multi-Head Bidirectional Cross-attention (MHBC) between compressed and lookup tokens.

    `gather` (l->p): compressed tokens query the lookup tokens and return the per-head
    post-softmax attention A (B, h, M, N). `infuse` (p->l): lookup tokens receive values projected
    from the (refined) compressed tokens, mixed by the same A transposed. No second query/key
    projection and no second softmax: that reuse is what makes the lookup path cost O(N M D).

    Two evaluation orders compute the same function. The paper's order projects keys and values of
    all N lookup tokens (2 N D^2 multiply-accumulates per direction). When h M is small against N,
    it is cheaper to move the projections onto the M side instead: scores = (q_h W_k,h) x^T,
    values = (A_h x) W_v,h^T, and p->l output = sum_h A_h^T (v_h W_proj,h), which never forms
    per-head keys or values of the lookup tokens (no N x D projection, no head transposes).
    `reassociate=None` picks the cheaper order per call; True/False force one (tests compare them).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, infuse: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.reassociate: bool | None = None
        self._infuse_by_head: _DerivedWeight | None = None
        # l->p
        self.query = Linear(dim, dim, bias=qkv_bias)
        self.key_value = Linear(dim, 2 * dim, bias=qkv_bias)  # one GEMM over the N lookup tokens
        self.gather_proj = Linear(dim, dim)
        # p->l (absent in the "no MHBC p->l" ablation, so no parameter goes untrained)
        if infuse:
            self.infuse_value = Linear(dim, dim, bias=qkv_bias)
            self.infuse_proj = Linear(dim, dim)

    def _reassociated(self, num_compressed: int, num_lookup: int, dim: int, dtype: torch.dtype = torch.float32, device_type: str = "cpu") -> bool:
        if self.reassociate is not None:
            return self.reassociate
        return reassociation_is_cheaper(num_compressed, num_lookup, dim, self.num_heads, dtype, device_type)

    def gather(self, compressed: Tensor, lookup: Tensor) -> tuple[Tensor, Tensor]:
        """Update for the compressed tokens and the attention A, shape (B, h, M, N)."""
        # Every reshape names its sizes: with an empty batch, -1 cannot be inferred from 0 elements.
        batch, num_compressed, dim = compressed.shape
        num_lookup = lookup.shape[1]
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.query(compressed) * self.scale  # its dtype is the products' (bf16 under autocast)
        if not self._reassociated(num_compressed, num_lookup, dim, q.dtype, q.device.type):
            kv = self.key_value(lookup).view(batch, num_lookup, 2, heads, head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            attention = torch.softmax(_split_heads(q, heads) @ k.transpose(-2, -1), dim=-1)
            return self.gather_proj(_merge_heads(attention @ v)), attention
        key_weight, value_weight = self.key_value.weight.view(2, heads, head_dim, dim).unbind(0)
        # Queries mapped into the lookup tokens' space, (B, h, M, D). The key bias adds the same
        # q_h . b_k,h to a whole row of scores, which the softmax ignores, so it is left out.
        queries = torch.einsum("bmhe,hed->bhmd", q.view(batch, num_compressed, heads, head_dim), key_weight)
        lookup_cast = lookup.to(queries.dtype)  # under autocast, one cast of the N tokens for both products
        # bmm, not @: matmul copies the transposed lookup tokens first.
        attention = torch.softmax(torch.bmm(queries.flatten(1, 2), lookup_cast.transpose(1, 2)), dim=-1)  # (B, h M, N)
        mixed = torch.bmm(attention, lookup_cast).view(batch, heads, num_compressed, dim)  # A_h x, (B, h, M, D)
        values = torch.einsum("bhmd,hed->bmhe", mixed, value_weight).reshape(batch, num_compressed, dim)
        if self.key_value.bias is not None:
            values = values + self.key_value.bias[dim:]  # rows of A sum to 1: the value bias passes through
        return self.gather_proj(values), attention.view(batch, heads, num_compressed, num_lookup)

    def infuse(self, compressed: Tensor, attention: Tensor) -> Tensor:
        """Update for the lookup tokens from compressed tokens through A^T, shape (B, N, D)."""
        batch, num_compressed, dim = compressed.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        v = self.infuse_value(compressed)
        if not self._reassociated(num_compressed, attention.shape[-1], dim, v.dtype, v.device.type):
            return self.infuse_proj(_merge_heads(attention.transpose(-2, -1) @ _split_heads(v, heads)))
        # Each head's values through its slice of the output projection, (B, h M, D), then one
        # product with A^T sums the heads: no (B, h, N, d) tensor and no head merge on N tokens.
        values_by_head = v.view(batch * num_compressed, heads, head_dim).transpose(0, 1)  # (h, B M, d)
        projected = torch.bmm(values_by_head, self._infuse_weight_by_head(v)).view(heads, batch, num_compressed, dim)
        projected = projected.transpose(0, 1).reshape(batch, heads * num_compressed, dim)  # a copy only when B > 1
        # The bias enters the product (baddbmm), so no separate pass over the (B, N, D) output; under
        # autocast it is then added in bf16, as the paper-order path's Linear does.
        return torch.baddbmm(self.infuse_proj.bias, attention.flatten(1, 2).transpose(1, 2), projected)

    def _infuse_weight_by_head(self, values: Tensor) -> Tensor:
        """The p->l output projection as (h, d, D): per head, the slice of the (D, h d) weight that head's values multiply.

        A strided view, which the product copies to head-major order at every call in bf16; after
        pack_weights, inference calls read a head-major copy made once.
        """
        weight = self.infuse_proj.weight
        by_head = _derived_weight(self._infuse_by_head, weight) if _plain_inference_call(values) else None
        return weight.view(weight.shape[0], self.num_heads, -1).permute(1, 2, 0) if by_head is None else by_head

    def pack_weights(self) -> None:
        """Keep a head-major copy of the p->l output projection for inference (see pack_for_inference)."""
        self._infuse_by_head = None
        if hasattr(self, "infuse_proj"):
            weight = self.infuse_proj.weight.detach()
            by_head = weight.view(weight.shape[0], self.num_heads, -1).permute(1, 2, 0).contiguous()
            self._infuse_by_head = _DerivedWeight(weight, by_head)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries (B, M, D) read a context (B, N, D) and the context is not updated."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = Linear(dim, dim, bias=qkv_bias)
        self.key_value = Linear(dim, 2 * dim, bias=qkv_bias)  # one GEMM over the N context tokens
        self.proj = Linear(dim, dim)

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        """Update for the queries, shape (B, M, D)."""
        q = _split_heads(self.query(queries), self.num_heads)
        batch, tokens, dim = context.shape
        kv = self.key_value(context).view(batch, tokens, 2, self.num_heads, dim // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


# --------------------------------------------------------------------------------------------
# MLP and stochastic depth
# --------------------------------------------------------------------------------------------


# MLP activation name -> F.gelu's `approximate`. "gelu_tanh" is the tanh approximation that
# converted checkpoints were trained with (transformers' "gelu_fast" / "gelu_pytorch_tanh", e.g. ViViT):
# it differs from the exact GELU by up to 5e-4 per unit, which over 12 blocks moves logits visibly.
MLP_ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu"):
        super().__init__()
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {tuple(MLP_ACTIVATIONS)}, got {activation!r}")
        self.approximate = MLP_ACTIVATIONS[activation]
        self.fc1 = Linear(dim, hidden_dim)
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


# (global batch, first row) of the micro-batch being trained, set by the training loop.
_batch_rows: tuple[int, int] | None = None


@contextlib.contextmanager
def global_batch_rows(global_batch: int, first_row: int):
    """Within this context, stochastic depth draws its masks for the whole global batch and keeps
    rows first_row.. of it, so gradient accumulation and DDP drop the same samples as one full
    batch on one process would (with the same RNG seed). Backward must run inside it too: grad
    checkpointing redraws the masks there."""
    global _batch_rows
    saved, _batch_rows = _batch_rows, (global_batch, first_row)
    try:
        yield
    finally:
        _batch_rows = saved


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, rescaling the survivors."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        global_batch, first_row = _batch_rows or (x.shape[0], 0)
        draws = torch.rand(global_batch, device=x.device)[first_row : first_row + x.shape[0]]
        mask = (draws < keep).to(x.dtype).view((x.shape[0],) + (1,) * (x.ndim - 1))
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0, mlp_activation: str = "gelu"
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), mlp_activation)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """big_vision's ViT initialisation: Xavier-uniform linears, LeCun-normal patch convolution, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
        fan_in = module.weight[0].numel()
        nn.init.trunc_normal_(module.weight, std=fan_in**-0.5)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth probability growing linearly from 0 at the first block to `rate` at the last."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]

