"""KD from a teacher's cached encoder logits (``model.codert.mode: offline_teacher``): no teacher is built or run."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from nemo.utils import logging

from nemo_codert.data.teacher_cache import TeacherCache, utterance_key

__all__ = ["OfflineTeacherMixin", "RETIMING_AUGMENTATIONS"]

# NeMo's perturbations (``model.train_ds.augmentor`` keys) that change an utterance's duration.
RETIMING_AUGMENTATIONS = ("speed", "time_stretch")


class OfflineTeacherMixin:
    """Finds each training utterance in the teacher cache before training, and serves a batch's cached logits.

    ``setup_training_data`` (offline_teacher only): a speed/time-stretch augmentor is rejected before NeMo's loader
    is built; after NeMo's, the cache is opened and checked against the model's vocabulary and every utterance of
    the training set (one clear error before the first step, never a misaligned target later), and NeMo's dataset
    is asked for each item's index (``return_sample_id``, NeMo's own option, set on the dataset rather than in
    ``train_ds`` so that the exported student's config stays stock).
    ``offline_teacher_logits(sample_ids, frames, width)``: the batch's cached top-k logits and classes, on the model's
    device. The host provides ``codert`` (set before NeMo's constructor sets up data), ``tokenizer`` and NeMo's
    ``_train_dl``; its training step passes the batch's sample ids to the KD term.
    """

    _teacher_cache: Optional[TeacherCache] = None
    _teacher_cache_rows: Optional[list] = None

    def setup_training_data(self, train_data_config: Optional[Dict[str, Any]]) -> None:
        if self.codert.mode == "offline_teacher":
            retimed = sorted(set((train_data_config or {}).get("augmentor") or {}) & set(RETIMING_AUGMENTATIONS))
            if retimed:
                # The cache holds one logit row per frame of the audio as it is on disk; a resampled or stretched
                # utterance has other frames, so every batch would fail (or, at equal counts, pair the wrong frames).
                raise ValueError(
                    f"model.train_ds.augmentor: {', '.join(retimed)} changes an utterance's length, so its frames no "
                    "longer match the teacher cache's, made once from the audio as it is on disk (mode "
                    "'offline_teacher'); drop it (model.train_ds.augmentor=null)"
                )
        super().setup_training_data(train_data_config)
        if self.codert.mode != "offline_teacher" or getattr(self, "_train_dl", None) is None:
            return
        source = (train_data_config or {}).get("manifest_filepath")
        dataset = self._train_dl.dataset
        collection = getattr(getattr(dataset, "manifest_processor", None), "collection", None)
        if collection is None or not hasattr(dataset, "return_sample_id"):
            raise ValueError(
                "model.train_ds: mode 'offline_teacher' reads NeMo manifest datasets (manifest_filepath), whose items "
                f"it finds in the teacher cache; this one is a {type(dataset).__name__} (use_lhotse is not supported)"
            )
        cache = TeacherCache(self.codert.teacher_cache)
        cache.check_vocabulary(self.tokenizer.vocab)
        keys = [utterance_key(item.audio_file, item.offset) for item in collection]
        self._teacher_cache_rows = cache.rows(keys, source=f"model.train_ds.manifest_filepath ({source})")
        self._teacher_cache = cache
        dataset.return_sample_id = True
        logging.info(
            f"CoDERT: offline teacher: {len(keys)} training utterances found in {cache.directory} (top {cache.k} of "
            f"{cache.classes} classes per frame)"
        )

    def offline_teacher_logits(
        self, sample_ids: torch.Tensor, frames: torch.Tensor, width: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cached logits, class indices), B x width x k, of the utterances NeMo's dataset numbered ``sample_ids``;
        ``frames`` are the student's encoder lengths, checked against the cache, ``width`` its padded frame count."""
        if self._teacher_cache is None:
            raise RuntimeError("the teacher cache is opened with the training data (setup_training_data)")
        cuts = [self._teacher_cache_rows[i] for i in sample_ids.tolist()]
        values, indices = self._teacher_cache.batch(cuts, frames.cpu(), width)
        return values.to(frames.device), indices.to(frames.device)
