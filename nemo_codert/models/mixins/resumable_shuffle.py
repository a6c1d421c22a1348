"""A training shuffle that a resumed run continues at the same data position (``nemo_codert.data.resumable``)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from nemo.utils import logging

from nemo_codert.data.resumable import EpochSeededSampler, consumed_batches, resumable_loader

__all__ = ["ResumableShuffleMixin"]


class ResumableShuffleMixin:
    """NeMo's dataloaders with an epoch-seeded shuffle, and a resume that skips what the epoch already trained on.

    Put it before the NeMo model in the bases; it overrides three hooks and calls ``super()`` in each:

    - ``_setup_dataloader_from_config``: NeMo's loader, its ``RandomSampler`` replaced by an
      ``EpochSeededSampler`` seeded by the dataset config's ``seed``;
    - ``on_load_checkpoint``: reads how many batches of its epoch the checkpoint had consumed;
    - ``on_train_epoch_start``: has the sampler skip them (single process; under DDP the epoch starts anew).
    """

    _resume_skip_batches: Optional[int] = None

    def _setup_dataloader_from_config(self, config: Optional[Dict]):
        loader = super()._setup_dataloader_from_config(config)
        return resumable_loader(loader, seed=int((config or {}).get("seed", 0) or 0))

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resume_skip_batches = consumed_batches(checkpoint)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        skip, self._resume_skip_batches = self._resume_skip_batches, None
        loader = getattr(self, "_train_dl", None)
        sampler = getattr(loader, "sampler", None)
        if skip and isinstance(sampler, EpochSeededSampler) and self.trainer.world_size == 1:
            sampler.skip(skip * loader.batch_size)
            logging.info(f"Resumed mid-epoch: skipping the {skip} batches this epoch had already trained on")
