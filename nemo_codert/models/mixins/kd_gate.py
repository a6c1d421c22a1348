"""KD that starts once the teacher leads: ``model.codert.kd_start: teacher_leads``.

Why: distilling a teacher that is worse than its student pulls the student towards a worse model. In tandem the
larger teacher often learns more slowly at first (on 2 CPU cores it still trailed after 500 steps, and KD then
cost the student 1.8 % at λ=0.1, 5.6 % at λ=1: README, "Does CoDERT help here?"), so the KD term waits for the
first validation at which the teacher's dev WER is below the student's, and stays on from then (a latch: one noisy
dev point must not switch the target on and off). ``kd_warmup_steps`` then ramps λ from that step.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from nemo.utils import logging

__all__ = ["KdGateMixin"]

_CHECKPOINT_KEY = "codert_kd_started_at_step"


class KdGateMixin:
    """Put it before ``PairLossesMixin`` and ``SideMetricsMixin`` in the bases. It overrides ``kd_start_step`` (the
    step λ's ramp starts from; None while the KD term is off), ``multi_validation_epoch_end`` (opens the gate from
    the dev WERs the metrics mixin computed), ``on_fit_start`` (a gate needs a dev set) and the checkpoint hooks (a
    resumed run keeps its gate). The host provides ``codert`` (``kd_start``) and ``has_teacher``."""

    _kd_started_at: Optional[int] = None

    def kd_start_step(self) -> Optional[int]:
        if self.codert.kd_start == "always":
            return super().kd_start_step()
        return self._kd_started_at

    def on_fit_start(self) -> None:
        super().on_fit_start()
        loaders = self._validation_dl  # NeMo keeps one loader, or a list of them (possibly empty) once fit starts
        if isinstance(loaders, (list, tuple)):
            loaders = [x for x in loaders if x is not None]
        if self.codert.kd_start == "teacher_leads" and self.has_teacher and not loaders:
            raise ValueError(
                "model.codert.kd_start: 'teacher_leads' opens the KD term at a validation where the teacher's dev "
                "WER is below the student's; this run has no model.validation_ds, so KD would never start"
            )

    def multi_validation_epoch_end(self, outputs, dataloader_idx: int = 0) -> Dict[str, Any]:
        result = super().multi_validation_epoch_end(outputs, dataloader_idx)
        logs = result.get("log", {})
        gated = self.codert.kd_start == "teacher_leads" and "val_wer_teacher" in logs
        trainer = getattr(self, "_trainer", None)
        # Only a validation inside training judges: Lightning's sanity check (a few batches before step 0) or a
        # trainer.validate() would otherwise latch the gate on a comparison no training step produced.
        judging = trainer is None or not (trainer.sanity_checking or trainer.state.fn == "validate")
        if gated and judging and dataloader_idx == 0 and self._kd_started_at is None:
            leads = bool(logs["val_wer_teacher"] < logs["val_wer"])
            if trainer is not None:
                # Under DDP each rank sees its shard of the dev set: rank 0's decision holds for all.
                leads = bool(trainer.strategy.broadcast(leads, src=0))
            if leads:
                self._kd_started_at = int(trainer.global_step) if trainer is not None else 0
                logging.info(
                    f"CoDERT: the teacher leads on dev (WER {float(logs['val_wer_teacher']):.3f} vs the student's "
                    f"{float(logs['val_wer']):.3f}): the KD term starts at step {self._kd_started_at}"
                )
        if gated:
            logs["val_kd_started"] = torch.tensor(float(self._kd_started_at is not None))
        return result

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[_CHECKPOINT_KEY] = self._kd_started_at

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._kd_started_at = checkpoint.get(_CHECKPOINT_KEY)
