"""The digits transfer set against scikit-learn's own arrays."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from lookupvit.data.digits import load_digits, split_digits


def test_digits_are_sklearns_images_upsampled_to_uint8():
    digits = sklearn_digits()
    ours = load_digits(28)
    assert ours.images.shape == (1797, 1, 28, 28) and ours.images.dtype == torch.uint8
    assert torch.equal(ours.labels, torch.from_numpy(digits.target).long())
    # without corner alignment, bilinear upsampling puts each corner pixel of the output on its source's corner pixel
    for row, col in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        expected = np.round(digits.images[:, row, col] / 16 * 255)
        assert np.array_equal(ours.images[:, 0, row, col].numpy(), expected)
    # a naive bilinear resize (pixel centres, edges clamped) of a few digits, written out here
    source = np.clip((np.arange(28) + 0.5) * 8 / 28 - 0.5, 0, 7)
    low = np.floor(source).astype(int)
    high, weight = np.minimum(low + 1, 7), source - low
    for index in (0, 1, 100, 1796):
        image = digits.images[index] / 16 * 255
        rows = image[low] * (1 - weight)[:, None] + image[high] * weight[:, None]
        expected = rows[:, low] * (1 - weight)[None, :] + rows[:, high] * weight[None, :]
        assert np.abs(ours.images[index, 0].numpy().astype(float) - expected).max() <= 0.5 + 1e-3

def test_split_is_disjoint_and_sized():
    dataset = load_digits(8)
    pool, test = split_digits(dataset, 500, 300, seed=1)
    assert (len(pool), len(test)) == (500, 300)
    pool_rows = {tuple(image.flatten().tolist()) + (int(label),) for image, label in zip(pool.images, pool.labels)}
    shared = sum(tuple(image.flatten().tolist()) + (int(label),) in pool_rows for image, label in zip(test.images, test.labels))
    assert shared == 0  # the 1,797 digits hold no exact duplicates, so a shared image would be a shared index
    _, rest = split_digits(dataset, 500, None, seed=1)
    assert len(rest) == 1297


@pytest.mark.parametrize("pool", [0, 1797])
def test_a_pool_that_leaves_no_test_set_is_refused(pool):
    with pytest.raises(ValueError, match="digits pool must hold"):
        split_digits(load_digits(8), pool, None)


def test_too_small_an_image_size_is_refused():
    with pytest.raises(ValueError, match="at least the digits' own 8 px"):
        load_digits(4)
