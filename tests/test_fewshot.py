import pytest
import torch

from lookupvit import create_model
from lookupvit.data import Normalization
from lookupvit.evaluation.fewshot import (
    RidgeProbe,
    draw_seed,
    extract_features,
    few_shot_accuracy,
    ridge_probe_accuracy,
    sample_shots,
)


def naive_ridge_weights(features, labels, num_classes, l2_reg):
    """The primal normal equations (X^T X + l2 I) w = X^T Y on standardised features plus a bias feature of 100."""
    x = features.double()
    mean = x.mean(dim=0)
    std = ((x - mean) ** 2).mean(dim=0).sqrt() + 1e-5
    x = torch.cat([(x - mean) / std, torch.full((len(x), 1), 100.0, dtype=torch.float64)], dim=1)
    targets = torch.full((len(x), num_classes), -1.0, dtype=torch.float64)
    targets[torch.arange(len(x)), labels] = 1.0
    weights = torch.linalg.solve(x.T @ x + l2_reg * torch.eye(x.shape[1], dtype=torch.float64), x.T @ targets)
    return weights, mean, std


def random_problem(examples, dim, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    scale, offset = torch.rand(dim, generator=generator) * 3, torch.randn(dim, generator=generator)  # whitening has work to do
    features = torch.randn(examples, dim, generator=generator) * scale + offset
    labels = torch.arange(examples) % classes
    return features, labels


@pytest.mark.parametrize("examples,dim", [(60, 8), (12, 40)])  # primal (N >= D + 1) and dual (N < D + 1) branch
def test_ridge_weights_and_accuracy_equal_a_naive_primal_solve(examples, dim):
    features, labels = random_problem(examples, dim, classes=4, seed=examples)
    test_features, test_labels = random_problem(200, dim, classes=4, seed=1)
    probe = RidgeProbe.fit(features, labels, num_classes=4)
    assert len(probe.eigenvalues) == min(examples, dim + 1)  # the smaller of X^T X and X X^T was factorised
    for l2_reg in (0.5, 2.0**10):  # one factorisation, several strengths
        expected, mean, std = naive_ridge_weights(features, labels, 4, l2_reg)
        torch.testing.assert_close(probe.weights(l2_reg), expected, rtol=1e-8, atol=1e-10)
        test_x = torch.cat([(test_features.double() - mean) / std, torch.full((200, 1), 100.0, dtype=torch.float64)], dim=1)
        naive_accuracy = ((test_x @ expected).argmax(dim=1) == test_labels).double().mean().item()
        assert 0.0 < naive_accuracy < 1.0  # the comparison is informative
        assert ridge_probe_accuracy(features, labels, test_features, test_labels, l2_reg) == naive_accuracy


def clusters(per_class, classes, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 5
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=generator), labels


def test_separable_clusters_are_classified_perfectly():
    pool, pool_labels = clusters(30, classes=10, dim=16, seed=1)
    test, test_labels = clusters(20, classes=10, dim=16, seed=2)
    results = few_shot_accuracy(pool, pool_labels, test, test_labels, shots=(1, 5, 25), draws=3)
    assert sorted(results) == [1, 5, 25]
    for result in results.values():
        assert result["mean"] == 1.0 and result["std"] == 0.0 and result["accuracies"] == [1.0] * 3


def test_random_features_give_chance_accuracy():
    generator = torch.Generator().manual_seed(3)
    pool, test = torch.randn(500, 32, generator=generator), torch.randn(2000, 32, generator=generator)
    pool_labels = torch.randint(0, 10, (500,), generator=generator)
    test_labels = torch.randint(0, 10, (2000,), generator=generator)
    results = few_shot_accuracy(pool, pool_labels, test, test_labels, shots=(1, 5, 25), draws=3)
    for result in results.values():
        assert abs(result["mean"] - 0.1) < 0.03
        assert len(set(result["accuracies"])) == 3  # every draw is a different sample
        assert result["std"] > 0


def test_sample_shots_takes_exactly_k_per_class_deterministically():
    labels = torch.cat([torch.full((n,), c) for c, n in [(0, 7), (2, 9), (5, 12), (6, 30)]])[torch.randperm(58)]
    indices = sample_shots(labels, 5, torch.Generator().manual_seed(0))
    assert len(indices.unique()) == 20
    assert labels[indices].bincount(minlength=7).tolist() == [5, 0, 5, 0, 0, 5, 5]
    assert torch.equal(indices, sample_shots(labels, 5, torch.Generator().manual_seed(0)))
    assert not torch.equal(indices, sample_shots(labels, 5, torch.Generator().manual_seed(1)))
    assert len(sample_shots(labels, 7, torch.Generator().manual_seed(0))) == 28


def test_each_draw_is_seeded_from_seed_shots_and_draw():
    assert len({draw_seed(s, k, d) for s in range(3) for k in (1, 5, 25) for d in range(5)}) == 45
    generator = torch.Generator().manual_seed(4)
    pool, pool_labels = torch.randn(300, 16, generator=generator), torch.arange(300) % 6
    test, test_labels = torch.randn(100, 16, generator=generator), torch.arange(100) % 6
    results = few_shot_accuracy(pool, pool_labels, test, test_labels, shots=(5,), draws=3, seed=7)
    assert results == few_shot_accuracy(pool, pool_labels, test, test_labels, shots=(5,), draws=3, seed=7)
    for draw, accuracy in enumerate(results[5]["accuracies"]):
        indices = sample_shots(pool_labels, 5, torch.Generator().manual_seed(draw_seed(7, 5, draw)))
        assert accuracy == ridge_probe_accuracy(pool[indices], pool_labels[indices], test, test_labels, 2.0**10)
    other_seed = few_shot_accuracy(pool, pool_labels, test, test_labels, shots=(5,), draws=3, seed=8)
    assert results[5]["accuracies"] != other_seed[5]["accuracies"]


@pytest.fixture
def images_and_normalization():
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images, Normalization(mean=0.3, std=0.35)


def test_lookupvit_features_are_its_pooled_outputs_in_eval_mode(images_and_normalization):
    images, normalization = images_and_normalization
    torch.manual_seed(0)
    model = create_model("lookupvit_nano4", drop_path_rate=0.5)  # stochastic depth would show if eval mode were skipped
    cpu = torch.device("cpu")
    features = extract_features(model, images, normalization, batch_size=2, device=cpu)
    lookup = extract_features(model, images, normalization, batch_size=2, device=cpu, grid=(3, 3), lookup_features="lookup")
    assert model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        output = model.forward_features(normalization(images))
        output_3x3 = model.forward_features(normalization(images), grid=(3, 3))
    assert features.shape == (5, 2 * 96) and not features.requires_grad
    torch.testing.assert_close(features, torch.cat([output.compressed_pooled, output.lookup_pooled], dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lookup, output_3x3.lookup_pooled, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(output.lookup_pooled, output_3x3.lookup_pooled)  # the grid reached the model


def test_vit_features_are_its_pooled_output(images_and_normalization):
    images, normalization = images_and_normalization
    torch.manual_seed(0)
    model = create_model("vit_nano4", drop_path_rate=0.5)
    features = extract_features(model, images, normalization, batch_size=3, device=torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        expected = model.forward_features(normalization(images)).pooled
    assert features.shape == (5, 96)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def with_nan(features):
    features = features.clone()
    features[1, 2] = float("nan")
    return features


def ridge_call(**changes):
    features, labels = torch.randn(10, 4), torch.arange(10) % 2
    arguments = {"train_features": features, "train_labels": labels, "test_features": features[:3], "test_labels": labels[:3]}
    return lambda: ridge_probe_accuracy(**{**arguments, "l2_reg": 1.0, **changes})


def few_shot_call(**changes):
    features, labels = torch.randn(10, 4), torch.arange(10) % 2
    arguments = {"features_pool": features, "labels_pool": labels, "test_features": features[:3], "test_labels": labels[:3]}
    return lambda: few_shot_accuracy(**{**arguments, **changes})


@pytest.mark.parametrize(
    "call,message",
    [
        (ridge_call(train_labels=torch.arange(9) % 2), "10 feature rows but 9 labels"),
        (ridge_call(test_features=torch.randn(3, 5)), "dim 4 but test features 5"),
        (ridge_call(train_features=with_nan(torch.randn(10, 4))), "train features contain NaN"),
        (ridge_call(test_features=with_nan(torch.randn(3, 4))), "test features contain NaN"),
        (ridge_call(train_labels=torch.arange(10) % 2 - 1), "must be non-negative class ids"),
        (ridge_call(l2_reg=0.0), "l2_reg must be positive"),
        (few_shot_call(test_labels=torch.arange(4) % 2), "3 feature rows but 4 labels"),
        (few_shot_call(shots=(0,)), "shots must be a positive int"),
        (few_shot_call(shots=(6,)), r"needs 6 examples .*\(0, 5\), \(1, 5\)"),
        (few_shot_call(features_pool=with_nan(torch.randn(10, 4))), "pool features contain NaN"),
        (few_shot_call(draws=0), "draws must be a positive int"),
        (lambda: sample_shots(torch.arange(10) % 2, -1, torch.Generator()), "shots must be a positive int"),
    ],
)
def test_bad_inputs_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_extract_features_rejects_bad_options(images_and_normalization):
    images, normalization = images_and_normalization
    lookupvit, vit = create_model("lookupvit_nano4"), create_model("vit_nano4")
    with pytest.raises(ValueError, match="lookup_features must be one of"):
        extract_features(lookupvit, images, normalization, 2, torch.device("cpu"), lookup_features="cls")
    with pytest.raises(ValueError, match="grid only applies to LookupViT"):
        extract_features(vit, images, normalization, 2, torch.device("cpu"), grid=3)
