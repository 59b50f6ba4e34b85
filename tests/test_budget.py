"""The compute-budget dial: the largest compressed grid within a GFLOPs or milliseconds budget."""

import pytest
import torch

from lookupvit import analytic_flops, create_model, grid_for_milliseconds


def test_the_dial_picks_the_largest_grid_within_the_gflops_budget():
    model = create_model("lookupvit_b16")
    for budget in (12.0, 16.5, 20.0, 35.0, 1000.0):
        grid = model.grid_for_budget(budget)
        assert analytic_flops(model.config, grid=grid) / 1e9 <= budget
        side = grid[-1]
        if side < 14:  # the next larger grid would exceed the budget
            assert analytic_flops(model.config, grid=(side + 1, side + 1)) / 1e9 > budget
    assert model.grid_for_budget(1000.0) == (14, 14)  # the whole lookup grid
    assert model.grid_for_budget(1000.0, image_size=(384, 384)) == (24, 24)
    with pytest.raises(ValueError, match=r"no compressed grid fits 10 GFLOPs per image: the cheapest, 1x1, costs 11.6"):
        model.grid_for_budget(10.0)


def test_video_models_keep_their_frame_count_and_square_the_rest():
    video = create_model("lookupvivit_nano4")  # lookup grid 8x7x7, default compressed grid 4x4x4
    assert video.grid_for_budget(1e9) == (4, 7, 7)


def test_the_milliseconds_dial_measures_every_grid_up_to_the_first_over_budget():
    torch.manual_seed(0)
    model = create_model("lookupvit_nano4")
    images = torch.randn(2, 1, 28, 28)
    grid, timings = grid_for_milliseconds(model, images, milliseconds=1e6)
    assert grid == (7, 7) and list(timings) == [(k, k) for k in range(1, 8)]
    with pytest.raises(ValueError, match=r"no compressed grid fits 1e-06 ms per batch of 2: the cheapest, 1x1, costs"):
        grid_for_milliseconds(model, images, milliseconds=1e-6)
