"""Shuffled training data that a resumed run continues where the killed one stopped.

NeMo's map-style training loader shuffles with ``RandomSampler``, whose order depends on the global RNG and which
keeps no position: after a mid-epoch resume Lightning warns that the dataloader is not resumable, and the epoch
starts a new order. Here the order of epoch ``e`` is a pure function of ``(seed, e)`` (Lightning calls
``set_epoch`` at every epoch start), and a resumed run skips the batches the checkpoint had already consumed in
its epoch: the model reads that count from the checkpoint's loop state (``on_load_checkpoint``) and asks the
sampler to skip them when the epoch starts.

Single-process training only: under DDP, Lightning replaces the sampler with its ``DistributedSampler``, whose
order is also a function of (seed, epoch), but which cannot skip.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

__all__ = ["EpochSeededSampler", "consumed_batches", "resumable_loader"]


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch, seeded by (seed, epoch), that can start ``skip`` indices in (once)."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, count: int) -> None:
        """Leave out the first ``count`` indices of the next iteration (the part of the epoch already trained on)."""
        self._skip = count

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)[self._skip :]
        self._skip = 0
        return iter(order.tolist())

    def __len__(self) -> int:
        # The full epoch, even when skipping: Lightning counts the epoch's batches from the restored progress.
        return self.num_samples


def resumable_loader(loader: Any, seed: int = 0) -> Any:
    """``loader`` with its ``RandomSampler`` replaced by an :class:`EpochSeededSampler`; anything else unchanged
    (sequential evaluation loaders, batch samplers, iterable and lhotse datasets)."""
    if not isinstance(loader, DataLoader) or not isinstance(loader.sampler, RandomSampler):
        return loader
    return DataLoader(
        dataset=loader.dataset,
        batch_size=loader.batch_size,
        sampler=EpochSeededSampler(len(loader.dataset), seed),
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )


def consumed_batches(checkpoint: dict) -> Optional[int]:
    """Batches of the current epoch a Lightning checkpoint had trained on (None if it holds no loop state).

    "processed", not "completed": a checkpoint written from ``on_train_batch_end`` (ModelCheckpoint with
    ``every_n_train_steps``) is dumped after the batch's optimiser step but before Lightning counts it completed.
    """
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return None
