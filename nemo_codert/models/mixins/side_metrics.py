"""Validation and test metrics of both sides of a pair, and of the KD term between them."""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional

import torch

__all__ = ["SideMetricsMixin"]


class SideMetricsMixin:
    """NeMo's ``validation_pass`` and epoch-end reductions for a pair.

    The (primary) student's metrics carry NeMo's plain names (``val_wer`` is what exp_manager monitors: the student
    is what gets deployed; with several students ``model.codert.primary_student`` says which), the teacher's the
    suffix ``_teacher`` and a further student's ``_NAME`` (with several students the primary's WER is also logged as
    ``val_wer_NAME``); ``val_kd`` and ``val_kd_weighted`` (λ·τ²·KL, as it enters the loss; ``_NAME`` for a further
    student) sit beside them; the test pass logs the same with ``test_``. The host model provides ``has_teacher``,
    ``student_names``, ``extra_students``, ``side(name)``, ``metric_suffix(name)`` and the loss pieces its training
    step uses: ``_features``, ``_decoder_outputs``, ``_transducer_loss``, ``_kd`` and ``kd_scale``, so evaluation
    computes exactly what training optimises; and ``teacher_is_frozen``: a frozen teacher's loss and WER on an
    evaluation batch never change, so they are computed once per batch and reused at every later validation (its
    encoder still runs: the KD term needs its logits).
    """

    _frozen_teacher_metrics: Optional[Dict[Hashable, Dict[str, torch.Tensor]]] = None

    def _frozen_teacher_key(self, batch, batch_idx: int, dataloader_idx: int) -> Optional[Hashable]:
        """Where a frozen teacher's metrics on this batch are kept: the stage (validation and test share
        ``validation_pass``), the batch's place and a fingerprint of its contents, and the decoding object itself (a
        new decoding strategy may decode differently; the key keeps the object alive, so its identity is never
        reused the way a bare ``id()`` of a freed object can be)."""
        if not (self.has_teacher and self.teacher_is_frozen):
            return None
        signal, signal_len, transcript, transcript_len = batch
        fingerprint = (tuple(signal.shape), int(signal_len.sum()), int(transcript.sum()), int(transcript_len.sum()))
        stage = "test" if self.trainer is not None and self.trainer.testing else "val"
        return stage, dataloader_idx, batch_idx, fingerprint, self.teacher.decoding

    def _eval_sides(self) -> Dict[str, str]:
        """Metric-name suffix -> side name: the primary student's plain, the teacher's ``_teacher``, a further
        student's ``_NAME``."""
        sides = {"": self.student_names[0]}
        if self.has_teacher:
            sides["_teacher"] = "teacher"
        sides.update({self.metric_suffix(name): name for name in self.extra_students})
        return sides

    def _student_suffixes(self) -> Dict[str, str]:
        """Metric-name suffix -> student name, the primary student's plain."""
        return {suffix: name for suffix, name in self._eval_sides().items() if name != "teacher"}

    def validation_pass(self, batch, batch_idx, dataloader_idx=0):
        signal, signal_len, transcript, transcript_len = batch
        features, feature_len = self._features(input_signal=signal, input_signal_length=signal_len)
        del signal

        sides = {name: self.side(name) for name in self._eval_sides().values()}
        # The lattice KD target needs the prediction networks' outputs even without the loss.
        needs_decoded = self.compute_eval_loss or (self.has_teacher and self.codert.kd_target == "joint_lattice")
        decoded = self._decoder_outputs(transcript, transcript_len, sides) if needs_decoded else {}
        logs, encoded = {}, {}
        frozen_key = self._frozen_teacher_key(batch, batch_idx, dataloader_idx)
        if self._frozen_teacher_metrics is None:
            self._frozen_teacher_metrics = {}
        cache = self._frozen_teacher_metrics
        for suffix, name in self._eval_sides().items():
            side = sides[name]
            enc, enc_len = side.encoder(audio_signal=features, length=feature_len)
            encoded[name] = (enc, enc_len)
            teacher = name == "teacher"
            if teacher and frozen_key in cache:
                logs.update(cache[frozen_key])
                continue
            decoder_out, target_len = decoded[name] if self.compute_eval_loss else (None, transcript_len)
            loss, wer_num, wer_denom = self._transducer_loss(
                side, enc, enc_len, decoder_out, target_len, transcript, transcript_len, compute_wer=True
            )
            if loss is not None:
                logs[f"val_loss{suffix}"] = loss
            logs[f"val_wer_num{suffix}"] = wer_num
            logs[f"val_wer_denom{suffix}"] = wer_denom
            logs[f"val_wer{suffix}"] = wer_num.float() / wer_denom
            if teacher and frozen_key is not None:
                cache[frozen_key] = {k: v.detach() for k, v in logs.items() if k.endswith(suffix)}
        if self.has_teacher:
            enc_t = encoded["teacher"][0]
            for suffix, name in self._student_suffixes().items():
                enc_s, enc_s_len = encoded[name]
                kd = self._kd(
                    sides[name],
                    enc_s,
                    None,
                    enc_t,
                    None,
                    enc_s_len,
                    decoded.get(name),
                    decoded.get("teacher"),
                    transcript,
                    transcript_len,
                )
                logs[f"val_kd{suffix}"] = kd
                logs[f"val_kd_weighted{suffix}"] = self.kd_scale(self.codert.weights_of(name)[1]) * kd

        self.log("global_step", torch.tensor(self.trainer.global_step, dtype=torch.float32))
        return logs

    def _epoch_metrics(self, outputs: List[Dict[str, torch.Tensor]], prefix: str) -> Dict[str, Any]:
        logs = {}
        for suffix in self._eval_sides():
            if f"{prefix}_loss{suffix}" in outputs[0]:
                logs[f"{prefix}_loss{suffix}"] = torch.stack([x[f"{prefix}_loss{suffix}"] for x in outputs]).mean()
            num = torch.stack([x[f"{prefix}_wer_num{suffix}"] for x in outputs]).sum()
            denom = torch.stack([x[f"{prefix}_wer_denom{suffix}"] for x in outputs]).sum()
            logs[f"{prefix}_wer{suffix}"] = num.float() / denom
        if self.extra_students:  # every student's WER under its own name; the primary's plain name stays monitored
            logs[f"{prefix}_wer_{self.student_names[0]}"] = logs[f"{prefix}_wer"]
        for suffix in self._student_suffixes():
            for name in (f"{prefix}_kd{suffix}", f"{prefix}_kd_weighted{suffix}"):
                if name in outputs[0]:
                    logs[name] = torch.stack([x[name] for x in outputs]).mean()
        return {**logs, "log": logs}

    def multi_validation_epoch_end(self, outputs, dataloader_idx: int = 0):
        return self._epoch_metrics(outputs, "val")

    def multi_test_epoch_end(self, outputs, dataloader_idx: int = 0):
        return self._epoch_metrics(outputs, "test")
