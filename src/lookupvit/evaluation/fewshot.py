"""Few-shot linear probes on frozen features, computed the way big_vision's `fewshot_lsr` evaluator does.

The probe is closed-form ridge regression onto one-hot targets rescaled to {-1, +1}:
  - features are standardised per dimension with the mean and (population) std of the few-shot
    training sample, std + 1e-5, and the test features reuse those statistics;
  - the bias is a constant feature of value 100 appended to every example, so it is regularised
    like any weight but with an effective strength of l2 / 100^2, i.e. almost not at all;
  - one eigendecomposition of the Gram matrix X^T X (N >= D) or of the kernel X X^T (N < D) gives
    the solution for every l2 strength, (Q diag(1 / (eigs + l2)) Q^T applied to the right side);
  - the prediction is the argmax over classes, the metric top-1 accuracy.
big_vision's configs use l2 = 2^10, our default; LookupViT's Table 9 reports 1/5/25-shot accuracies
from such a probe, presumably with big_vision's settings.

Everything is float64 on the CPU: with the bias constant the Gram matrix spans several orders of
magnitude, and the problems are small (shots x classes examples).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models import LookupViT

BIAS_FEATURE = 100.0  # large, so the bias's ridge penalty is l2 / 100^2
STD_EPSILON = 1e-5  # keeps constant feature dimensions finite after standardising
DEFAULT_L2_REG = 2.0**10  # big_vision's configs/common_fewshot.py
LOOKUP_FEATURES = ("concat", "compressed", "lookup")


def _check_features_and_labels(features: Tensor, labels: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.ndim != 2:
        got = getattr(features, "shape", type(features))
        raise ValueError(f"{name} features must be a tensor of shape (examples, dim), got {got}")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} labels must be a 1-D integer tensor, got {getattr(labels, 'dtype', type(labels))}")
    if len(features) != len(labels):
        raise ValueError(f"{name}: {len(features)} feature rows but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{name}: no examples")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} features contain NaN or infinite values; the model or its inputs diverged")
    if labels.min() < 0:
        raise ValueError(f"{name} labels must be non-negative class ids, got {labels.min().item()}")


def _check_l2_reg(l2_reg: float) -> None:
    # At 0 the eigenvalues of a rank-deficient Gram matrix (always the case for few shots) divide by 0.
    if not l2_reg > 0 or l2_reg == float("inf"):
        raise ValueError(f"l2_reg must be positive and finite, got {l2_reg}")


@dataclass
class RidgeProbe:
    """A factorised ridge problem: `weights(l2)` for any number of l2 strengths costs one eigh."""

    mean: Tensor  # (1, D) of the training features
    std: Tensor  # (1, D), epsilon included
    eigenvalues: Tensor  # (K,), K = D + 1 (primal) or N (dual)
    left: Tensor  # (D + 1, K)
    right: Tensor  # (K, C)

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor, num_classes: int) -> RidgeProbe:
        _check_features_and_labels(features, labels, "train")
        if labels.max() >= num_classes:
            raise ValueError(f"train label {labels.max().item()} is out of range for {num_classes} classes")
        x = features.detach().to("cpu", torch.float64)
        mean = x.mean(dim=0, keepdim=True)
        std = x.std(dim=0, correction=0, keepdim=True) + STD_EPSILON
        x = cls._with_bias((x - mean) / std)
        targets = 2.0 * nn.functional.one_hot(labels.cpu(), num_classes).to(torch.float64) - 1.0
        # (X^T X + l2 I)^-1 X^T Y == X^T (X X^T + l2 I)^-1 Y: factorise whichever matrix is smaller.
        if x.shape[0] >= x.shape[1]:
            eigenvalues, q = torch.linalg.eigh(x.T @ x)
            left, right = q, q.T @ (x.T @ targets)
        else:
            eigenvalues, q = torch.linalg.eigh(x @ x.T)
            left, right = x.T @ q, q.T @ targets
        return cls(mean, std, eigenvalues, left, right)

    @staticmethod
    def _with_bias(x: Tensor) -> Tensor:
        return nn.functional.pad(x, (0, 1), value=BIAS_FEATURE)

    def weights(self, l2_reg: float) -> Tensor:
        """(D + 1, C) regression weights, the last row the bias (it multiplies BIAS_FEATURE)."""
        _check_l2_reg(l2_reg)
        return (self.left / (self.eigenvalues + l2_reg)) @ self.right

    def predict(self, features: Tensor, l2_reg: float) -> Tensor:
        """Class ids (N,) for raw features (N, D), standardised with the training statistics."""
        x = self._with_bias((features.detach().to("cpu", torch.float64) - self.mean) / self.std)
        return (x @ self.weights(l2_reg)).argmax(dim=1)


def ridge_probe_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, l2_reg: float
) -> float:
    """Top-1 test accuracy of big_vision's least-squares probe fitted on the training features."""
    _check_features_and_labels(train_features, train_labels, "train")
    _check_features_and_labels(test_features, test_labels, "test")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} but test features {test_features.shape[1]}")
    _check_l2_reg(l2_reg)
    # As in big_vision, a class missing from the training sample still gets a column (all -1 targets).
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = RidgeProbe.fit(train_features, train_labels, num_classes)
    return (probe.predict(test_features, l2_reg) == test_labels.cpu()).double().mean().item()


def sample_shots(labels: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Indices of exactly `shots` examples of every class present in `labels`, drawn without replacement."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or len(labels) == 0:
        raise ValueError("labels must be a non-empty 1-D integer tensor")
    labels = labels.cpu()
    classes, counts = labels.unique(return_counts=True)
    short = [(c.item(), n.item()) for c, n in zip(classes, counts) if n < shots]
    if short:
        raise ValueError(f"{shots}-shot sampling needs {shots} examples of every class; (class, count) short of that: {short}")
    chosen = []
    for cls in classes:
        members = (labels == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(chosen)


def draw_seed(seed: int, shots: int, draw: int) -> int:
    """The sampling seed of one draw. Unlike big_vision, whose k-shot sets of one seed are nested
    prefixes of a single permutation, every (shots, draw) gets its own independent sample."""
    return (seed * 1_000_003 + shots * 7919 + draw) % 2**63


def few_shot_accuracy(
    features_pool: Tensor,
    labels_pool: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    shots: Sequence[int] = (1, 5, 25),
    draws: int = 5,
    seed: int = 0,
    l2_reg: float = DEFAULT_L2_REG,
) -> dict[int, dict]:
    """{k: {"mean", "std", "accuracies"}}: the probe fitted on `draws` random k-per-class samples of the pool.

    "std" is the sample standard deviation over draws (0.0 for a single draw).
    """
    _check_features_and_labels(features_pool, labels_pool, "pool")
    _check_features_and_labels(test_features, test_labels, "test")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    _check_l2_reg(l2_reg)
    results = {}
    for k in shots:
        accuracies = []
        for draw in range(draws):
            indices = sample_shots(labels_pool, k, torch.Generator().manual_seed(draw_seed(seed, k, draw)))
            train_features, train_labels = features_pool[indices], labels_pool[indices]
            accuracies.append(ridge_probe_accuracy(train_features, train_labels, test_features, test_labels, l2_reg))
        std = statistics.stdev(accuracies) if draws > 1 else 0.0
        results[k] = {"mean": statistics.fmean(accuracies), "std": std, "accuracies": accuracies}
    return results


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: Tensor,
    normalization: Callable[[Tensor], Tensor],
    batch_size: int,
    device: torch.device,
    grid: int | tuple[int, int] | None = None,
    lookup_features: str = "concat",
) -> Tensor:
    """Frozen pooled features (N, D) on the CPU, in eval mode; `normalization` maps a raw batch on `device` to model inputs.

    For LookupViT, `lookup_features` picks the pooled compressed tokens, the pooled lookup tokens,
    or (default) both concatenated (N, 2D): both heads are trained and the paper does not say which
    representation its few-shot probe reads, so the concatenation lets the probe use either.
    Other models (ViT) give their `.pooled` (N, D) and take no grid.
    """
    if lookup_features not in LOOKUP_FEATURES:
        raise ValueError(f"lookup_features must be one of {LOOKUP_FEATURES}, got {lookup_features!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to extract features from")
    is_lookup = isinstance(model, LookupViT)
    if grid is not None and not is_lookup:
        raise ValueError(f"grid only applies to LookupViT, not {type(model).__name__}")
    was_training = model.training
    model.eval()  # no stochastic depth: a feature depends on the image alone
    try:
        features = []
        for start in range(0, len(images), batch_size):
            batch = normalization(images[start : start + batch_size].to(device))
            if is_lookup:
                output = model.forward_features(batch, grid=grid)
                chosen = {
                    "concat": (output.compressed_pooled, output.lookup_pooled),
                    "compressed": (output.compressed_pooled,),
                    "lookup": (output.lookup_pooled,),
                }[lookup_features]
                features.append(torch.cat(chosen, dim=1).cpu())
            else:
                features.append(model.forward_features(batch).pooled.cpu())
    finally:
        model.train(was_training)  # callers may be mid-training
    return torch.cat(features)
