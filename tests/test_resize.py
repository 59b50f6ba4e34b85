import pytest
import torch
import torch.nn.functional as F

from lookupvit.layers import resize_matrix, resize_tokens


def tokens_to_map(tokens, grid):
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


@pytest.mark.parametrize("grid_in,grid_out", [((14, 14), (3, 3)), ((14, 14), (5, 5)), ((14, 14), (10, 10)), ((24, 24), (5, 5)), ((14, 14), (3, 7)), ((7, 9), (14, 4))])
def test_resize_matches_torch_antialiased_bilinear(grid_in, grid_out):
    tokens = torch.randn(2, grid_in[0] * grid_in[1], 6, dtype=torch.float64)
    expected = F.interpolate(tokens_to_map(tokens, grid_in), size=grid_out, mode="bilinear", antialias=True, align_corners=False)
    actual = resize_tokens(tokens, grid_in, grid_out)
    torch.testing.assert_close(tokens_to_map(actual, grid_out), expected)


def test_downsampling_averages_every_lookup_token_instead_of_sampling():
    matrix = resize_matrix((14, 14), (3, 3), torch.device("cpu"), torch.float64)
    assert matrix.shape == (9, 196)
    torch.testing.assert_close(matrix.sum(1), torch.ones(9, dtype=torch.float64))
    assert (matrix.sum(0) > 0).all()  # no lookup token is ignored
    assert ((matrix > 0).sum(1) >= 25).all()  # each compressed token reads a neighbourhood, not 4 samples
    # plain (non-antialiased) bilinear would read at most 2x2 lookup tokens per output
    plain = F.interpolate(torch.eye(196).reshape(196, 1, 14, 14), size=(3, 3), mode="bilinear", align_corners=False)
    assert ((plain.reshape(196, 9).T > 0).sum(1) <= 4).all()


def test_three_dimensional_resize_is_separable_trilinear():
    grid_in, grid_out = (2, 3, 4), (4, 6, 7)  # upsampling, where torch's trilinear needs no antialiasing
    tokens = torch.randn(1, 24, 5, dtype=torch.float64)
    volume = tokens.transpose(1, 2).reshape(1, 5, *grid_in)
    expected = F.interpolate(volume, size=grid_out, mode="trilinear", align_corners=False)
    actual = resize_tokens(tokens, grid_in, grid_out).transpose(1, 2).reshape(1, 5, *grid_out)
    torch.testing.assert_close(actual, expected)


def test_resize_matrix_is_cached_and_identity_is_free():
    a = resize_matrix((14, 14), (5, 5), torch.device("cpu"), torch.float32)
    assert a is resize_matrix((14, 14), (5, 5), torch.device("cpu"), torch.float32)
    tokens = torch.randn(1, 196, 3)
    assert resize_tokens(tokens, (14, 14), (14, 14)) is tokens


def test_a_grid_first_seen_under_inference_mode_still_trains(small_model):
    images = torch.randn(2, 3, 28, 28)
    with torch.inference_mode():
        small_model(images, grid=(6, 5))  # builds and caches the (14x14 -> 6x5) matrix here
    small_model.train()
    small_model(images, grid=(6, 5)).sum().backward()  # autograd would refuse a cached inference tensor
    assert small_model.patch_embed.proj.weight.grad is not None


def test_tracing_does_not_poison_the_resize_cache(small_model):
    images = torch.randn(2, 3, 28, 28)
    torch.export.export(small_model, (images,), kwargs={"grid": (4, 3)}, strict=False)  # traces with fake tensors
    with torch.no_grad():
        output = small_model(images, grid=(4, 3))
    assert type(output) is torch.Tensor and torch.isfinite(output).all()
