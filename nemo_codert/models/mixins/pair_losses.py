"""The CoDERT training objective of a teacher/student pair, and the training step that optimises it."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from nemo.core.classes.mixins import AccessMixin
from nemo.utils import logging

from nemo_codert.losses.encoder_kd import encoder_kd_loss, encoder_logits
from nemo_codert.losses.lattice_kd import joint_lattice, lattice_kd_loss
from nemo_codert.losses.topk_kd import topk_kd_loss
from nemo_codert.models.side import TransducerSide

__all__ = ["PairLossesMixin"]

# The loss terms of ``codert_losses`` that training logs (as train_<name>) and the NaN guard reports; a further
# student's (StudentLadderMixin) carry its name as a suffix: rnnt_student_NAME, ctc_student_NAME, kd_NAME, ...
_LOSS_TERMS = ("rnnt_student", "rnnt_teacher", "ctc_student", "ctc_teacher", "kd", "kd_weighted")


class PairLossesMixin:
    """teacher_rnnt_weight · L(teacher) + student_rnnt_weight · L(student) + λ·τ²·KL(z_T/τ ‖ z_S/τ), with
    L = (1 - w) · RNNT + w · CTC per side and z a side's encoder logits (or, with ``kd_target: joint_lattice``, the
    collapsed joint posteriors of each lattice node); the CTC term scores z or the side's aux_ctc head
    (``AuxCtcHeadsMixin``: ``ctc_weight``, ``_ctc_log_probs``).

    The host model is a NeMo RNN-T model whose ``encoder`` is the teacher's. It provides ``codert`` (the parsed
    ``model.codert`` section), ``has_teacher``, ``student``, ``teacher`` and ``students()`` (``TransducerSide``; the
    students by name, the primary first, and their ``student_names``/``extra_students``), ``_features`` (one
    preprocessor and spec-augment pass for both encoders), ``loss`` and (with ``ctc_weight``) ``ctc_loss``, and the
    ``NormStatisticsGuardMixin``'s two calls, which the training step makes; in mode offline_teacher,
    ``offline_teacher_logits`` (``OfflineTeacherMixin``) for the KD term of a batch whose sample ids NeMo's dataset
    handed over. ``codert_losses`` is the whole
    objective of one batch (tests and benchmarks call it directly); ``training_step`` replaces NeMo's.
    """

    def _transducer_loss(
        self,
        side: TransducerSide,
        encoded: torch.Tensor,
        encoded_len: torch.Tensor,
        decoder_out: Optional[torch.Tensor],
        target_len: torch.Tensor,
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
        compute_wer: bool,
    ):
        """RNN-T loss (None without decoder output) and WER counts of one side, via NeMo's joint/loss/WER."""
        if side.joint.fuse_loss_wer:
            loss, _, wer_num, wer_denom = side.joint(
                encoder_outputs=encoded,
                decoder_outputs=decoder_out,
                encoder_lengths=encoded_len,
                transcripts=transcript,
                transcript_lengths=target_len,
                compute_wer=compute_wer,
            )
            return loss, wer_num, wer_denom
        loss = None
        if decoder_out is not None:
            joint_out = side.joint(encoder_outputs=encoded, decoder_outputs=decoder_out)
            loss = self.loss(
                log_probs=joint_out, targets=transcript, input_lengths=encoded_len, target_lengths=target_len
            )
        wer_num = wer_denom = None
        if compute_wer:
            side.wer.update(
                predictions=encoded,
                predictions_lengths=encoded_len,
                targets=transcript,
                targets_lengths=transcript_len,
            )
            _, wer_num, wer_denom = side.wer.compute()
            side.wer.reset()
        return loss, wer_num, wer_denom

    def _kd(
        self,
        student: TransducerSide,
        enc_s: torch.Tensor,
        z_s: Optional[torch.Tensor],
        enc_t: torch.Tensor,
        z_t: Optional[torch.Tensor],
        lengths: torch.Tensor,
        decoded_s: Optional[tuple],
        decoded_t: Optional[tuple],
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
    ) -> torch.Tensor:
        """The unweighted KD term of ``model.codert.kd_target`` between ``student`` and the teacher (teacher side
        detached inside): the KL of the encoder logits ``z`` (computed here where the caller has none), or of the
        collapsed lattice posteriors (from the prediction-network outputs ``decoded_s``/``decoded_t``).

        KD never trains a ``joint_net`` (nor, on the lattice, a prediction network) that the student shares with the
        teacher: a KL into shared parts has a collapse for a minimum (see ``nemo_codert.losses.encoder_kd``)."""
        shared = student.joint.joint_net is self.teacher.joint.joint_net
        temperature, reduction = self.codert.kd_temperature, self.cfg.get("rnnt_reduction", "mean_batch")
        if self.codert.kd_target == "joint_lattice":
            with torch.no_grad():
                lattice_t = joint_lattice(self.teacher.joint, enc_t, decoded_t[0])
            lattice_s = joint_lattice(student.joint, enc_s, decoded_s[0], train_shared=not shared)
            return lattice_kd_loss(
                lattice_s, lattice_t, transcript, lengths, transcript_len, temperature=temperature, reduction=reduction
            )
        z_s = z_s if z_s is not None and not shared else encoder_logits(student.joint, enc_s, not shared)
        z_t = z_t if z_t is not None else encoder_logits(self.teacher.joint, enc_t)
        return encoder_kd_loss(
            z_s, z_t, lengths, temperature=temperature, reduction=reduction, frame_shift=self.codert.kd_frame_shift
        )

    def students_learn_now(self) -> bool:
        """Whether this step runs the students (``TeacherLeadMixin``: not while the teacher leads)."""
        return True

    def kd_start_step(self) -> Optional[int]:
        """The step the KD term starts at (λ's ramp counts from it); None while it is off. ``KdGateMixin`` may defer
        it until the teacher leads."""
        return 0

    def kd_scale(self, kd_weight: Optional[float] = None) -> float:
        """λ·τ² at the current step: 0 before the KD term starts, then λ ramps linearly from 0 over
        ``kd_warmup_steps``; λ is ``kd_weight`` (a student's own, ``student_weights``) or ``model.codert.kd_weight``.
        """
        start = self.kd_start_step()
        trainer = getattr(self, "_trainer", None)
        # A start still ahead (a teacher lead's hand-over) is off too: validation logs the weight training uses.
        if start is None or (trainer is not None and trainer.global_step < start):
            return 0.0
        lam = self.codert.kd_weight if kd_weight is None else kd_weight
        if self.codert.kd_warmup_steps > 0 and trainer is not None:
            lam *= min(1.0, max(0, trainer.global_step - start) / self.codert.kd_warmup_steps)
        return lam * self.codert.kd_temperature**2

    def _add_weighted_kd(
        self,
        out: Dict[str, Any],
        loss: torch.Tensor,
        kd_term: Callable[[], torch.Tensor],
        suffix: str = "",
        kd_weight: Optional[float] = None,
    ) -> torch.Tensor:
        """``loss`` + λ·τ²·``kd_term()`` (λ: ``kd_scale(kd_weight)``), the term and its weighted value recorded in
        ``out`` (kd, kd_weighted; + ``suffix`` for a further student's).

        At λ·τ² = 0 (implicit distillation only, or the start of a KD warm-up) the term is reported but builds no
        graph."""
        scale = self.kd_scale(kd_weight)
        with torch.set_grad_enabled(torch.is_grad_enabled() and scale > 0):
            kd = kd_term()
        out[f"kd{suffix}"], out[f"kd_weighted{suffix}"] = kd, scale * kd
        return loss + out[f"kd_weighted{suffix}"]

    def _with_ctc(
        self,
        rnnt: torch.Tensor,
        log_probs: Optional[torch.Tensor],
        lengths: torch.Tensor,
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
    ) -> tuple:
        """(side loss, CTC term or None): (1 - w)·RNNT + w·CTC(log_probs), NeMo's hybrid convention."""
        if log_probs is None:
            return rnnt, None
        w = self.ctc_weight
        ctc = self.ctc_loss(
            log_probs=log_probs,
            targets=transcript,
            input_lengths=lengths,
            target_lengths=transcript_len,
        )
        return (1.0 - w) * rnnt + w * ctc, ctc

    def _encode_teacher(self, features, lengths):
        # A static teacher is a constant function of the input: no graph, no gradient, no cost beyond inference.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.codert.mode == "tandem"):
            encoded, encoded_len = self.encoder(audio_signal=features, length=lengths)
        return encoded, encoded_len

    def _teacher_inference_targets(self, features, lengths, logits: bool):
        """The tandem teacher's encoding and, with ``logits``, its encoder logits, as at inference (no dropout in its
        encoder or joint; BatchNorm on its running statistics, which this pass leaves as they are), without a graph:
        the KD targets of ``kd_teacher_input: clean``. (The lattice target reads the prediction network's output of
        the training pass: the clean pass is of the acoustic side.)"""
        modules = (self.encoder, self.teacher.joint)
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            with torch.no_grad():
                enc, _ = self.encoder(audio_signal=features, length=lengths)
                return enc, encoder_logits(self.teacher.joint, enc) if logits else None
        finally:
            for m, training in zip(modules, was_training):
                m.train(training)

    def _decoder_outputs(self, transcript, transcript_len, sides: Dict[str, TransducerSide]) -> Dict[str, tuple]:
        """Prediction-network outputs (output, target lengths) of each of ``sides``, by name; a prediction network
        that several sides share runs once."""
        out: Dict[str, tuple] = {}
        by_decoder: Dict[int, tuple] = {}
        for name, side in sides.items():
            if id(side.decoder) not in by_decoder:
                by_decoder[id(side.decoder)] = side.decoder(targets=transcript, target_length=transcript_len)[:2]
            out[name] = by_decoder[id(side.decoder)]
        return out

    def codert_losses(
        self,
        signal: torch.Tensor,
        signal_len: torch.Tensor,
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
        compute_wer: bool = False,
        sample_ids: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """All CoDERT loss terms of one batch: ``loss`` (the weighted total) and its parts.

        Keys: loss, rnnt_student, rnnt_teacher (tandem only), ctc_student / ctc_teacher (with ``ctc_weight``),
        kd and kd_weighted = λ·τ²·kd (with a teacher, or an offline teacher and the batch's ``sample_ids``: NeMo's
        dataset index of each utterance), encoded_len, and wer_num / wer_denom of the student when ``compute_wer``.
        With several students the primary's terms carry these names and a further student NAME's the suffix _NAME
        (rnnt_student_NAME, ctc_student_NAME, kd_NAME, kd_weighted_NAME).
        """
        grad = torch.is_grad_enabled()
        clean, feature_len = self._features(input_signal=signal, input_signal_length=signal_len, augment=False)
        features = self._augment(clean, feature_len)
        # A static teacher has no RNN-T loss: its prediction network runs only for the lattice KD target.
        lattice = self.codert.kd_target == "joint_lattice"
        # The primary student first; more with model.student_encoders; none while a teacher head start runs.
        students = self.students() if self.students_learn_now() else {}
        sides = dict(students)
        if self.codert.mode == "tandem" or (lattice and self.has_teacher):
            sides["teacher"] = self.teacher
        decoded = self._decoder_outputs(transcript, transcript_len, sides)
        out: Dict[str, Any] = {}
        loss = 0.0
        encoded = {}  # name -> (encoding, lengths, encoder logits or None)
        for name, student in students.items():
            suffix = self.metric_suffix(name)
            primary = suffix == ""
            enc_s, enc_s_len = student.encoder(audio_signal=features, length=feature_len)
            rnnt_s, wer_num, wer_denom = self._transducer_loss(
                student, enc_s, enc_s_len, *decoded[name], transcript, transcript_len, compute_wer and primary
            )
            if primary:  # the primary student's: its WER is training's, its lengths NeMo's txu normalisation
                out.update(encoded_len=enc_s_len, wer_num=wer_num, wer_denom=wer_denom)
            out[f"rnnt_student{suffix}"] = rnnt_s
            # Shape (a) of the CTC term scores the encoder logits, which the KD term below then reuses.
            z_s = encoder_logits(student.joint, enc_s) if self.codert.ctc_weight > 0 else None
            ctc_in = self._ctc_log_probs(student.ctc_decoder, enc_s, z_s)
            loss_s, out[f"ctc_student{suffix}"] = self._with_ctc(rnnt_s, ctc_in, enc_s_len, transcript, transcript_len)
            loss = loss + self.codert.weights_of(name)[0] * loss_s
            encoded[name] = (enc_s, enc_s_len, z_s)
        student = self.student
        enc_s, enc_s_len, z_s = encoded.get(self.student_names[0], (None, None, None))

        if self.has_teacher:
            tandem = self.codert.mode == "tandem"
            # Clean KD targets (outside training the features are clean anyway): a static teacher serves KD only, so
            # it simply runs on the clean features; a tandem teacher trains on the augmented ones and runs once more.
            clean_targets = self.codert.kd_teacher_input == "clean" and features is not clean
            teacher_in = clean if clean_targets and not tandem else features
            enc_t, enc_t_len = self._encode_teacher(teacher_in, feature_len)
            if not students:  # the teacher leads alone: its lengths are the step's
                out.update(encoded_len=enc_t_len, wer_num=None, wer_denom=None)
            elif not torch.equal(enc_t_len, enc_s_len):
                raise RuntimeError(
                    f"CoDERT: teacher and student encoders emitted different frame counts "
                    f"({enc_t_len.tolist()} vs {enc_s_len.tolist()}); they must share one frame rate"
                )
            # The teacher's logits need a graph only where its own CTC term trains it; KD detaches them anyway.
            z_t = None
            if self.codert.ctc_weight > 0 or not lattice:
                with torch.set_grad_enabled(grad and tandem and self.codert.ctc_weight > 0):
                    z_t = encoder_logits(self.teacher.joint, enc_t)
            if tandem:
                rnnt_t, _, _ = self._transducer_loss(
                    self.teacher, enc_t, enc_t_len, *decoded["teacher"], transcript, transcript_len, False
                )
                ctc_in = self._ctc_log_probs(self.teacher.ctc_decoder, enc_t, z_t)
                loss_t, out["ctc_teacher"] = self._with_ctc(rnnt_t, ctc_in, enc_t_len, transcript, transcript_len)
                loss = loss + self.codert.teacher_rnnt_weight * loss_t
                out["rnnt_teacher"] = rnnt_t
            enc_kd, z_kd = enc_t, z_t
            if clean_targets and tandem:
                enc_kd, z_kd = self._teacher_inference_targets(clean, feature_len, logits=not lattice)
            # Every student distils the one teacher, each with its own λ.
            for name, side in students.items():
                enc, enc_len, z = encoded[name]
                loss = self._add_weighted_kd(
                    out,
                    loss,
                    lambda: self._kd(
                        side,
                        enc,
                        z,
                        enc_kd,
                        z_kd,
                        enc_len,
                        decoded[name],
                        decoded.get("teacher"),
                        transcript,
                        transcript_len,
                    ),
                    suffix=self.metric_suffix(name),
                    kd_weight=self.codert.weights_of(name)[1],
                )
        elif self.codert.mode == "offline_teacher" and sample_ids is not None:
            values, indices = self.offline_teacher_logits(sample_ids, enc_s_len, enc_s.shape[-1])
            # No teacher shares this joint_net: the KL trains the student's whole encoder-logit path.
            loss = self._add_weighted_kd(
                out,
                loss,
                lambda: topk_kd_loss(
                    z_s if z_s is not None else encoder_logits(student.joint, enc_s),
                    values,
                    indices,
                    enc_s_len,
                    temperature=self.codert.kd_temperature,
                    reduction=self.cfg.get("rnnt_reduction", "mean_batch"),
                ),
            )
        out["loss"] = loss
        return {k: v for k, v in out.items() if v is not None or k in ("wer_num", "wer_denom")}

    def _loss_term_names(self) -> list:
        """The names ``codert_losses`` may give its terms: ``_LOSS_TERMS``, and each further student's."""
        suffixes = [self.metric_suffix(name) for name in self.student_names]
        return [term + suffix for suffix in suffixes for term in _LOSS_TERMS]

    def training_step(self, batch, batch_nb):
        if AccessMixin.is_access_enabled(self.model_guid):
            AccessMixin.reset_registry(self)
        # NeMo's datasets add each item's index as a fifth element when asked (the offline teacher asks).
        signal, signal_len, transcript, transcript_len = batch[:4]
        sample_ids = batch[4] if len(batch) > 4 else None

        trainer = getattr(self, "_trainer", None)
        log_every = trainer.log_every_n_steps if trainer is not None else 1
        sample_id = trainer.global_step if trainer is not None else batch_nb
        compute_wer = (sample_id + 1) % log_every == 0

        # A non-finite loss (a corrupt utterance, an overflow) must not poison the model: NeMo's skip_nan_grad
        # drops its update, NormStatisticsGuardMixin its effect on the BatchNorm statistics.
        norm_stats = self.snapshot_norm_statistics()
        out = self.codert_losses(
            signal, signal_len, transcript, transcript_len, compute_wer=compute_wer, sample_ids=sample_ids
        )
        loss = self.add_auxiliary_losses(out["loss"])
        if not torch.isfinite(loss):
            self.restore_norm_statistics_after_backward(norm_stats)
            logging.warning(
                f"CoDERT: non-finite training loss at step {sample_id} "
                + ", ".join(f"{k}={out[k].item():.4g}" for k in self._loss_term_names() if k in out)
                + "; normalisation statistics restored"
                + (
                    ", gradients will be zeroed (skip_nan_grad)"
                    if getattr(self, "_skip_nan_grad", False)
                    else "; set model.skip_nan_grad=true to drop the update too"
                )
            )
        if AccessMixin.is_access_enabled(self.model_guid):
            AccessMixin.reset_registry(self)

        logs = {f"train_{k}": out[k].detach() for k in self._loss_term_names() if k in out}
        logs["train_loss"] = loss.detach()
        logs["learning_rate"] = self._optimizer.param_groups[0]["lr"]
        logs["global_step"] = torch.tensor(self.trainer.global_step, dtype=torch.float32)
        if compute_wer and out["wer_num"] is not None:  # (no student ran while the teacher leads alone)
            logs["training_batch_wer"] = out["wer_num"].float() / out["wer_denom"]
        self.log_dict(logs)

        if self._optim_normalize_joint_txu:
            self._optim_normalize_txu = [out["encoded_len"].max(), transcript_len.max()]
        return {"loss": loss}
