"""Training batches, step by step, identical for any number of processes, accumulation steps and workers.

The order of an epoch is a seeded permutation of the whole training set; step s takes rows
s*B..(s+1)*B of it (B the global batch), and process r's micro-batch m takes rows
(m*K + r)*b.. of those (K processes, b = B / (K x accumulation steps)). A streamed image's random
transform is seeded by (seed, epoch, image index) in whichever worker decodes it. So the batches
depend on nothing but the seed and the step: a run resumed at step s reads from step s on (no
re-reading of the epoch), and K processes x W workers see exactly the images of one process.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .sources import CorruptImage

# How many following images a corrupt one may be replaced by before the loader gives up.
REPLACEMENT_TRIES = 16


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed for one random stream of one step (or epoch), from the run's seed."""
    return (seed * 1_000_003 + step * 7919 + stream) % (2**63)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, size: int) -> Tensor:
    return torch.randperm(size, generator=torch.Generator().manual_seed(step_seed(seed, epoch, 999_983)))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image `index`'s random transform in `epoch`."""
    return (step_seed(seed, epoch, 424_243) * 6_364_136_223_846_793_005 + index) % (2**63)


@dataclass(frozen=True)
class BatchPlan:
    """Which rows of which global batch this process trains on."""

    num_images: int
    batch_size: int  # global
    local_batch: int
    accum_steps: int
    world_size: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        if self.local_batch * self.world_size * self.accum_steps != self.batch_size or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"a batch plan needs local_batch x world_size x accum_steps = batch_size and 0 <= rank < world_size, got {self}"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_images // self.batch_size

    def first_row(self, micro: int) -> int:
        return (micro * self.world_size + self.rank) * self.local_batch

    def global_batch(self, step: int) -> tuple[int, Tensor]:
        """(epoch, dataset indices of the step's global batch)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.seed, epoch, self.num_images)
        return epoch, order[position * self.batch_size : (position + 1) * self.batch_size]

    def micro_batch(self, step: int, micro: int) -> tuple[int, Tensor]:
        epoch, indices = self.global_batch(step)
        first = self.first_row(micro)
        return epoch, indices[first : first + self.local_batch]


class StepBatchSampler:
    """For torch's DataLoader: this process's micro-batches from `start_step` on, as lists of (epoch, index)."""

    def __init__(self, plan: BatchPlan, start_step: int, total_steps: int):
        self.plan, self.start_step, self.total_steps = plan, start_step, total_steps

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.plan.accum_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.plan.accum_steps):
                epoch, indices = self.plan.micro_batch(step, micro)
                yield [(epoch, index) for index in indices.tolist()]


class TransformedImages(torch.utils.data.Dataset):
    """source[(epoch, index)] -> (transformed image, label, 1 if the image was corrupt and replaced, index)."""

    def __init__(self, source, transform: Callable[[Tensor], Tensor], seed: int):
        self.source, self.transform, self.seed = source, transform, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int, int]:
        epoch, index = key
        # Seeded before the read, by the requested index: a source that draws at random while reading (a video's clip
        # start) and the transform then depend only on (seed, epoch, index), in whichever worker decodes the sample;
        # a corrupt file fails before drawing, so its replacement draws what the original would have.
        torch.manual_seed(sample_seed(self.seed, epoch, index))
        random.seed(sample_seed(self.seed, epoch, index))
        replaced = 0
        for attempt in range(REPLACEMENT_TRIES):
            candidate = (index + attempt) % len(self.source)
            try:
                image = self.source.read(candidate)
                break
            except CorruptImage:
                replaced = 1
        else:
            raise CorruptImage(f"{REPLACEMENT_TRIES} images in a row from index {index} do not decode; the data is damaged")
        return self.transform(image), int(self.source.labels[candidate]), replaced, index


def collate(samples: list[tuple[Tensor, int, int, int]]) -> tuple[Tensor, Tensor, int, Tensor]:
    images, labels, replaced, indices = zip(*samples)
    return torch.stack(images), torch.tensor(labels), sum(replaced), torch.tensor(indices)


def _one_thread_per_worker(_: int) -> None:
    torch.set_num_threads(1)  # W workers x torch's default threads would oversubscribe the cores


def check_workers(workers: int, cores: int) -> None:
    if workers > cores:
        raise ValueError(
            f"workers={workers} data-loading processes, but this machine lets the process run on {cores} core(s); "
            f"more workers than cores cannot run at once and only compete with training. Use workers <= {cores}"
        )


def make_loader(dataset: torch.utils.data.Dataset, batch_sampler, workers: int, pin_memory: bool, persistent: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread_per_worker if workers else None,
        multiprocessing_context="fork" if workers and os.name == "posix" else None,
    )


class InMemoryTrainingBatches:
    """Yields (step, micro, images, labels, 0) from `start_step` for an ImageDataset in RAM.

    The batch is augmented on the training device by `augment`, whose draws are made for the whole
    global batch (seeded by the step) before this micro-batch takes its rows.
    """

    def __init__(self, dataset, normalization, augment_config, plan: BatchPlan, start_step: int, total_steps: int, device: torch.device):
        self.dataset, self.normalization, self.augment_config = dataset, normalization, augment_config
        self.plan, self.start_step, self.total_steps, self.device = plan, start_step, total_steps, device

    def __iter__(self) -> Iterator[tuple[int, int, Tensor, Tensor, int]]:
        from .augment import augment

        for step in range(self.start_step, self.total_steps):
            for micro in range(self.plan.accum_steps):
                _, indices = self.plan.micro_batch(step, micro)
                generator = torch.Generator().manual_seed(step_seed(self.plan.seed, step, 0))
                images = self.dataset.images[indices].to(self.device).float() / 255
                images = augment(images, self.augment_config, generator, self.plan.batch_size, self.plan.first_row(micro))
                yield step, micro, self.normalization.normalize(images), self.dataset.labels[indices], 0


def dataset_batches(dataset, normalization, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(normalised images, labels) of an in-memory dataset in order: what `evaluate` iterates."""
    for start in range(0, len(dataset), batch_size):
        yield normalization(dataset.images[start : start + batch_size]), dataset.labels[start : start + batch_size]


class StreamedTrainingBatches:
    """Yields (step, micro, images, labels, replaced) from `start_step`, decoded and transformed by workers."""

    def __init__(self, source, transform, plan: BatchPlan, start_step: int, total_steps: int, workers: int, pin_memory: bool):
        self.plan, self.start_step, self.total_steps = plan, start_step, total_steps
        sampler = StepBatchSampler(plan, start_step, total_steps)
        self.loader = make_loader(TransformedImages(source, transform, plan.seed), sampler, workers, pin_memory)

    def __iter__(self) -> Iterator[tuple[int, int, Tensor, Tensor, int]]:
        batches = iter(self.loader)
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.plan.accum_steps):
                images, labels, replaced, indices = next(batches)
                if not torch.equal(indices, self.plan.micro_batch(step, micro)[1]):
                    raise RuntimeError(f"the loader delivered other images than the plan's for step {step}, micro-batch {micro}")
                yield step, micro, images, labels, replaced


class EvalBatches:
    """(images, labels) of a whole source in order, transformed by workers: what `evaluate` iterates."""

    def __init__(self, source, transform, batch_size: int, workers: int, pin_memory: bool = False):
        indices = list(range(len(source)))
        batches = [[(0, i) for i in indices[start : start + batch_size]] for start in range(0, len(indices), batch_size)]
        # Persistent: the same loader evaluates after every epoch without starting its workers again.
        self.loader = make_loader(TransformedImages(source, transform, seed=0), batches, workers, pin_memory, persistent=True)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, _, _ in self.loader:
            yield images, labels
