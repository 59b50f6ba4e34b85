import pytest
import torch

from lookupvit import analytic_flops, layers, measured_flops, model_config

# Paper Table 1, GFLOPs at 224 px (FLOPs = 2 x MACs)
TABLE_1 = {
    "b16": {"vit": 35.1, 3: 12.9, 5: 16.5, 7: 21.9, 10: 33.6},
    "l16": {"vit": 123.5, 3: 46.2, 5: 58.8, 7: 77.7, 10: 118.5},
}


def paper_equation_flops(dim, depth, num_lookup, num_compressed=None, patch_in=3 * 16 * 16):
    """Eq. 5 / eq. 6 per block, times depth, plus the patch embedding; x2 for FLOPs."""
    if num_compressed is None:
        block = 2 * num_lookup**2 * dim + 12 * num_lookup * dim**2
    else:
        block = (3 * num_lookup * num_compressed + 2 * num_compressed**2) * dim + (4 * num_lookup + 15 * num_compressed) * dim**2
    return 2 * (depth * block + num_lookup * patch_in * dim)


@pytest.mark.parametrize("size", ["b16", "l16"])
@pytest.mark.parametrize("column", ["vit", 3, 5, 7, 10])
def test_flops_match_table_1_and_the_paper_equations(size, column):
    if column == "vit":
        config, grid, num_compressed = model_config(f"vit_{size}"), None, None
    else:
        config, grid, num_compressed = model_config(f"lookupvit_{size}"), column, column * column
    analytic = analytic_flops(config, grid=grid)
    measured = measured_flops(config, grid=grid)
    assert abs(measured - analytic) / analytic < 0.01
    paper = TABLE_1[size][column] * 1e9
    assert abs(analytic - paper) / paper < 0.04
    assert abs(measured - paper) / paper < 0.04
    # the block terms are eq. 5/6 exactly; what remains is heads and resize, well under 1 %
    equation = paper_equation_flops(config.embed_dim, config.depth, 196, num_compressed)
    assert 0 <= analytic - equation < 0.01 * equation


def test_flops_at_other_sizes_and_grids_stay_consistent():
    config = model_config("lookupvit_b16", img_size=384)
    for image_size, grid in [(384, (3, 3)), (384, (4, 9)), (384, (24, 24)), (224, 5), ((160, 320), (5, 7))]:
        analytic = analytic_flops(config, image_size=image_size, grid=grid)
        assert abs(measured_flops(config, image_size=image_size, grid=grid) - analytic) / analytic < 0.01
    vit_384 = analytic_flops(model_config("vit_b16", img_size=384))
    assert vit_384 / analytic_flops(config, grid=5) > 2.8  # the paper's "over 3x at 384"


@pytest.mark.parametrize("reassociated", [True, None], ids=["reassociated", "as-executed"])
def test_flops_of_the_reassociated_mhbc_order_are_counted_exactly(reassociated, monkeypatch):
    monkeypatch.setattr(layers, "_CPU_HAS_AMX", False)  # the AMD EPYC margins, on any host
    config = model_config("lookupvit_b16")
    for grid in (3, 5, 7, 10):
        assert analytic_flops(config, grid=grid, reassociated=reassociated) == measured_flops(config, grid=grid, reassociated=reassociated)
    # at 224 px the model executes fewer FLOPs than the paper's order up to 4x4 in fp32 and 6x6 with 16-bit products
    assert analytic_flops(config, grid=3, reassociated=None) < 0.7 * analytic_flops(config, grid=3)
    assert analytic_flops(config, grid=5, reassociated=None) == analytic_flops(config, grid=5)
    assert analytic_flops(config, grid=5, reassociated=None, dtype=torch.bfloat16) < 0.8 * analytic_flops(config, grid=5)
    for grid in (7, 10):
        assert analytic_flops(config, grid=grid, reassociated=None, dtype=torch.bfloat16) == analytic_flops(config, grid=grid)


def test_a_bfloat16_model_runs_the_order_the_count_expects(monkeypatch):
    """The order is chosen from the dtype the products run in; FlopCounterMode sees which one ran."""
    monkeypatch.setattr(layers, "_CPU_HAS_AMX", False)  # the AMD EPYC margins, on any host
    config = model_config("lookupvit_b16")
    for grid in (3, 5, 6, 7):
        executed = measured_flops(config, grid=grid, reassociated=None, dtype=torch.bfloat16)
        assert executed == analytic_flops(config, grid=grid, reassociated=None, dtype=torch.bfloat16)
    assert measured_flops(config, grid=5, reassociated=None, dtype=torch.bfloat16) < measured_flops(config, grid=5, reassociated=None)


def test_on_a_cpu_with_amx_fp32_runs_and_counts_the_reassociated_order_up_to_6x6(monkeypatch):
    monkeypatch.setattr(layers, "_CPU_HAS_AMX", True)
    config = model_config("lookupvit_b16")
    for grid in (5, 6, 7):
        assert measured_flops(config, grid=grid, reassociated=None) == analytic_flops(config, grid=grid, reassociated=None)
    assert analytic_flops(config, grid=6, reassociated=None) == analytic_flops(config, grid=6, reassociated=True)
    assert analytic_flops(config, grid=7, reassociated=None) == analytic_flops(config, grid=7, reassociated=False)


@pytest.mark.parametrize(
    "name,kwargs", [("vit_b16", {}), ("vit_b16", {"image_size": 384}), ("vit_nano4", {"image_size": 40}), ("vivit_nano4", {"num_frames": 8, "image_size": 36})]
)
def test_flops_count_the_class_token_exactly(name, kwargs):
    """A class token is one more token in every block; its position row is not resampled at another size."""
    config = model_config(name, class_token=True, mlp_activation="gelu_tanh")
    analytic = analytic_flops(config, **kwargs)
    assert analytic == measured_flops(config, **kwargs)
    plain = model_config(name)
    assert analytic > analytic_flops(plain, **kwargs) == measured_flops(plain, **kwargs)
