"""LookupViT against an independent, deliberately naive float64 re-implementation of the paper."""

import math

import pytest
import torch
import torch.nn.functional as F

from lookupvit.models.lookupvit import LookupViTBlock

from .conftest import randomize_


def layer_norm(x, params, prefix, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * params[prefix + ".weight"] + params[prefix + ".bias"]


def linear(x, params, prefix):
    return x @ params[prefix + ".weight"].T + params[prefix + ".bias"]


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def softmax_rows(scores):
    exp = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return exp / exp.sum(dim=-1, keepdim=True)


def naive_block(params, compressed, lookup, num_heads):
    """One LookupViT block for one sample (M, D), (N, D), written from SPEC section 1 with explicit head loops."""
    dim = compressed.shape[-1]
    head_dim = dim // num_heads
    heads = [slice(i * head_dim, (i + 1) * head_dim) for i in range(num_heads)]

    # MHBC l->p
    q = linear(layer_norm(compressed, params, "gather_norm_compressed"), params, "cross_attn.query")
    kv = linear(layer_norm(lookup, params, "gather_norm_lookup"), params, "cross_attn.key_value")
    k, v = kv[:, :dim], kv[:, dim:]
    attention = [softmax_rows(q[:, h] @ k[:, h].T / math.sqrt(head_dim)) for h in heads]  # each (M, N)
    mixed = torch.cat([a @ v[:, h] for a, h in zip(attention, heads)], dim=-1)
    compressed = compressed + linear(mixed, params, "cross_attn.gather_proj")

    # ViT block on the compressed tokens
    qkv = linear(layer_norm(compressed, params, "compressed_block.norm1"), params, "compressed_block.attn.qkv")
    sq, sk, sv = qkv[:, :dim], qkv[:, dim : 2 * dim], qkv[:, 2 * dim :]
    mixed = torch.cat([softmax_rows(sq[:, h] @ sk[:, h].T / math.sqrt(head_dim)) @ sv[:, h] for h in heads], dim=-1)
    compressed = compressed + linear(mixed, params, "compressed_block.attn.proj")
    hidden = gelu(linear(layer_norm(compressed, params, "compressed_block.norm2"), params, "compressed_block.mlp.fc1"))
    compressed = compressed + linear(hidden, params, "compressed_block.mlp.fc2")

    # MHBC p->l with the same A, transposed, values from the refined compressed tokens
    v_back = linear(layer_norm(compressed, params, "infuse_norm"), params, "cross_attn.infuse_value")
    mixed = torch.cat([a.T @ v_back[:, h] for a, h in zip(attention, heads)], dim=-1)
    lookup = lookup + linear(mixed, params, "cross_attn.infuse_proj")
    hidden = gelu(linear(layer_norm(lookup, params, "lookup_mlp_norm"), params, "lookup_mlp.fc1"))
    lookup = lookup + linear(hidden, params, "lookup_mlp.fc2")
    return compressed, lookup, torch.stack(attention)


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("reassociate", [False, True], ids=["paper-order", "reassociated"])
def test_block_matches_naive_float64_reimplementation(reassociate):
    torch.manual_seed(0)
    dim, heads, num_compressed, num_lookup = 48, 6, 9, 49
    block = randomize_(LookupViTBlock(dim, heads, mlp_ratio=4.0, lookup_mlp_ratio=0.5, qkv_bias=True, drop_path=0.0)).double().eval()
    block.cross_attn.reassociate = reassociate
    compressed = torch.randn(3, num_compressed, dim, dtype=torch.float64)
    lookup = torch.randn(3, num_lookup, dim, dtype=torch.float64)
    params = dict(block.named_parameters())

    with torch.no_grad():
        out_compressed, out_lookup, out_attention = block(compressed, lookup)
        for i in range(3):
            ref_compressed, ref_lookup, ref_attention = naive_block(params, compressed[i], lookup[i], heads)
            assert relative_error(out_compressed[i], ref_compressed) < 1e-6
            assert relative_error(out_lookup[i], ref_lookup) < 1e-6
            assert relative_error(out_attention[i], ref_attention) < 1e-6
    # the compared quantities actually moved: a block that returned its inputs would not pass
    assert relative_error(out_lookup, lookup) > 1e-2 and relative_error(out_compressed, compressed) > 1e-2


@pytest.mark.parametrize("reassociate", [False, True], ids=["paper-order", "reassociated"])
def test_reverse_pass_reuses_forward_attention_unnormalised(reassociate):
    torch.manual_seed(1)
    block = randomize_(LookupViTBlock(32, 4, 4.0, 0.5, True, 0.0)).double().eval()
    block.cross_attn.reassociate = reassociate
    compressed = torch.randn(2, 4, 32, dtype=torch.float64)
    lookup = torch.randn(2, 30, 32, dtype=torch.float64)
    seen = {}
    original_gather, original_infuse = block.cross_attn.gather, block.cross_attn.infuse

    def spy_gather(*args):
        seen["gather"] = original_gather(*args)
        return seen["gather"]

    def spy_infuse(refined, attention):
        seen["infuse_args"] = (refined, attention)
        seen["infuse"] = original_infuse(refined, attention)
        return seen["infuse"]

    block.cross_attn.gather, block.cross_attn.infuse = spy_gather, spy_infuse
    with torch.no_grad():
        block(compressed, lookup)
    attention = seen["gather"][1]
    refined, passed = seen["infuse_args"]
    assert passed is attention  # the very tensor of l->p, not a recomputation
    # A is a softmax over lookup tokens; A^T is then *not* normalised over compressed tokens
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, 4, dtype=torch.float64))
    assert (attention.transpose(-2, -1).sum(-1) - 1).abs().max() > 0.1

    # the lookup update is W_o' (A^T V') with V' from the refined compressed tokens, per head
    ca = block.cross_attn
    values = (refined @ ca.infuse_value.weight.T + ca.infuse_value.bias).view(2, 4, 4, 8).transpose(1, 2)
    expected = torch.einsum("bhmn,bhmd->bnhd", attention, values).reshape(2, 30, 32)
    expected = expected @ ca.infuse_proj.weight.T + ca.infuse_proj.bias
    torch.testing.assert_close(seen["infuse"], expected)


def test_full_model_matches_naive_forward(small_config):
    """Patch embedding, position embedding, resize, blocks, norms, pooling and both heads, end to end."""
    from lookupvit import LookupViT

    torch.manual_seed(2)
    model = randomize_(LookupViT(small_config)).double().eval()
    params = dict(model.named_parameters())
    images = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    grid = (3, 5)
    with torch.no_grad():
        output = model.forward_features(images, grid=grid)

        patch = small_config.patch_size
        patches = images.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, C, 14, 14, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 196, -1)
        lookup = patches @ params["patch_embed.proj.weight"].reshape(32, -1).T + params["patch_embed.proj.bias"]
        lookup = lookup + params["pos_embed"]
        lookup_map = lookup.transpose(1, 2).reshape(2, 32, 14, 14)
        compressed = F.interpolate(lookup_map, size=grid, mode="bilinear", antialias=True, align_corners=False)
        compressed = compressed.flatten(2).transpose(1, 2)
        for index in range(small_config.depth):
            block_params = {k.split(".", 2)[2]: v for k, v in params.items() if k.startswith(f"blocks.{index}.")}
            pairs = [naive_block(block_params, compressed[i], lookup[i], small_config.num_heads)[:2] for i in range(2)]
            compressed = torch.stack([p[0] for p in pairs])
            lookup = torch.stack([p[1] for p in pairs])
        compressed_logits = linear(layer_norm(compressed, params, "norm_compressed").mean(1), params, "head_compressed")
        lookup_logits = linear(layer_norm(lookup, params, "norm_lookup").mean(1), params, "head_lookup")

    assert relative_error(output.compressed_logits, compressed_logits) < 1e-6
    assert relative_error(output.lookup_logits, lookup_logits) < 1e-6
    assert relative_error(output.logits, (compressed_logits + lookup_logits) / 2) < 1e-6
    torch.testing.assert_close(model(images, grid=grid, head="compressed"), output.compressed_logits)


def test_both_evaluation_orders_give_the_same_gradients():
    torch.manual_seed(3)
    block = randomize_(LookupViTBlock(24, 3, 4.0, 0.5, True, 0.0)).double()
    compressed = torch.randn(2, 5, 24, dtype=torch.float64)
    lookup = torch.randn(2, 20, 24, dtype=torch.float64)
    grads = []
    for reassociate in (False, True):
        block.zero_grad()
        block.cross_attn.reassociate = reassociate
        out_compressed, out_lookup, _ = block(compressed, lookup)
        (out_compressed.square().sum() + out_lookup.sin().sum()).backward()
        grads.append({name: p.grad.clone() for name, p in block.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_the_cheaper_order_is_picked_per_call(monkeypatch):
    from lookupvit import layers
    from lookupvit.layers import BidirectionalCrossAttention

    monkeypatch.setattr(layers, "_CPU_HAS_AMX", False)  # the AMD EPYC margins, on any host
    mhbc = BidirectionalCrossAttention(768, 12)  # B/16: N = 196 lookup tokens at 224 px, 576 at 384 px
    bf16 = torch.bfloat16
    # fp32: below 0.35 of the paper order's lookup-side MACs, i.e. up to 4x4 at 224 px and 384 px
    assert mhbc._reassociated(9, 196, 768) and mhbc._reassociated(16, 196, 768) and mhbc._reassociated(16, 576, 768)
    assert not mhbc._reassociated(25, 196, 768) and not mhbc._reassociated(25, 576, 768)
    # 16-bit: below 0.8, i.e. up to 6x6 at 224 px and 7x7 at 384 px
    assert mhbc._reassociated(25, 196, 768, bf16) and mhbc._reassociated(36, 196, 768, bf16) and mhbc._reassociated(49, 576, 768, bf16)
    assert not mhbc._reassociated(49, 196, 768, bf16) and not mhbc._reassociated(100, 576, 768, bf16)
    # On a CPU with AMX fp32 takes the 16-bit margin; other devices keep the AMD one.
    monkeypatch.setattr(layers, "_CPU_HAS_AMX", True)
    assert mhbc._reassociated(25, 196, 768) and mhbc._reassociated(36, 196, 768) and mhbc._reassociated(49, 576, 768)
    assert not mhbc._reassociated(49, 196, 768)
    assert not mhbc._reassociated(25, 196, 768, torch.float32, "cuda") and mhbc._reassociated(25, 196, 768, bf16, "cuda")
    mhbc.reassociate = False
    assert not mhbc._reassociated(9, 196, 768)  # a forced order wins over the rule
