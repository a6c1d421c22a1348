"""CoDERT: a teacher and a student transducer encoder trained in tandem (Swaminathan et al., Interspeech 2021).

``CodertRNNTBPEModel`` is NeMo's ``EncDecRNNTBPEModel`` whose ``encoder`` is the teacher, plus a
``student_encoder`` with its own projection into the joint. Per batch, one preprocessor and one spec-augment pass
feed both encoders; the loss is

    teacher_rnnt_weight · L(teacher) + student_rnnt_weight · L(student) + λ·τ²·KL(z_T/τ ‖ z_S/τ),
    L = (1 - ctc_weight) · RNNT + ctc_weight · CTC(z)

with z the encoder logits (``nemo_codert.losses.encoder_kd``), the teacher side of the KL detached, and the KL
never training a joint_net the two sides share. With
``share_decoder`` both encoders use one prediction network and joint ("implicit distillation"); the student's
joint is a second ``RNNTJoint`` whose ``pred`` and ``joint_net`` *are* the teacher joint's modules and whose
``enc`` is the student's own projection, so every NeMo component (decoding, WER, fused joint, export) works on the
student unchanged.

Inference (``forward``, ``decoding``, ``wer``, ``transcribe``) is the student's by default, because the student is
what gets deployed; ``transcribe(..., use_teacher=True)`` or ``with model.use_side("teacher"):`` give the teacher.
The side is state (``_infer_teacher``): NeMo's ``decoding``/``wer`` attributes always point at the active side's
(``student_decoding``/``teacher_decoding``), also after NeMo rebuilds them mid-``transcribe``.

This module holds the pair's structure and its training losses. Cross-cutting concerns live in
``nemo_codert.models.mixins`` (inference on a chosen side, validation/test metrics of both sides, atomic ``.nemo``
writes, the BatchNorm guard for non-finite batches, the resumable shuffle); the static teacher's loading in
``nemo_codert.models.static_teacher``.

Layout per mode:
    tandem / static_teacher: teacher = (encoder, decoder, joint); student = (student_encoder,
        decoder or student_decoder, student_joint).
    student_only: a stock NeMo transducer whose ``encoder`` is built from ``model.student_encoder``: no teacher
        module exists, so its cost and WER are an honest baseline.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Union

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, open_dict

from nemo.collections.asr.losses.ctc import CTCLoss
from nemo.collections.asr.models import EncDecRNNTBPEModel, EncDecRNNTModel
from nemo.core.classes.common import typecheck
from nemo.core.classes.mixins import AccessMixin
from nemo.utils import logging, model_utils

from nemo_codert.losses.encoder_kd import encoder_kd_loss, encoder_logits
from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss
from nemo_codert.models.config import CodertConfig, parse_codert_config
from nemo_codert.models.frame_rate import check_same_frame_rate
from nemo_codert.models.mixins import (
    AtomicSaveMixin,
    NormStatisticsGuardMixin,
    ResumableShuffleMixin,
    SideInferenceMixin,
    SideMetricsMixin,
)
from nemo_codert.models.side import TransducerSide
from nemo_codert.models.static_teacher import adopt_teacher_config, load_teacher_weights, restore_teacher

__all__ = ["CodertRNNTBPEModel"]

# The loss terms of ``codert_losses`` that training logs (as train_<name>) and the NaN guard reports.
_LOSS_TERMS = ("rnnt_student", "rnnt_teacher", "ctc_student", "ctc_teacher", "kd", "kd_weighted")


class CodertRNNTBPEModel(
    AtomicSaveMixin,
    NormStatisticsGuardMixin,
    ResumableShuffleMixin,
    SideInferenceMixin,
    SideMetricsMixin,
    EncDecRNNTBPEModel,
):
    """NeMo BPE transducer with a CoDERT student encoder trained by in-place encoder-logit distillation."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = model_utils.convert_model_config_to_dict_config(cfg)
        cfg = model_utils.maybe_update_config_version(cfg)
        codert = parse_codert_config(cfg)

        restoring = self._is_model_being_restored()
        if codert.mode == "static_teacher" and not restoring:
            cfg = adopt_teacher_config(cfg, codert.teacher_nemo)
        # The student's joint projection (and, in student_only, the joint itself) is sized by the student encoder's
        # output width, whatever kind of NeMo encoder the user chose: build it to learn it (only its width is
        # needed in student_only, where NeMo builds the encoder itself from cfg.encoder).
        student_encoder = _build_student_encoder(cfg.student_encoder, width_only=codert.mode == "student_only")
        student_hidden = student_encoder._feat_out
        if codert.mode == "student_only":
            cfg = copy.deepcopy(cfg)
            with open_dict(cfg):
                cfg.encoder = copy.deepcopy(cfg.student_encoder)
                cfg.model_defaults.enc_hidden = student_hidden

        super().__init__(cfg=cfg, trainer=trainer)
        self.codert: CodertConfig = codert
        self._infer_teacher = False  # True only inside use_side("teacher"): which side NeMo's inference runs
        self._student_hidden = student_hidden
        self._setup_losses()

        if self.has_teacher:
            self.student_encoder = student_encoder
            check_same_frame_rate(self.encoder, self.student_encoder, self.cfg.encoder.feat_in)
            self._build_student_decoder_and_joint()
            if codert.mode == "static_teacher":
                if not restoring:
                    load_teacher_weights(self, restore_teacher(codert.teacher_nemo), codert.teacher_nemo)
                for module in self._frozen_teacher_modules():
                    module.requires_grad_(False)
                    module.eval()
        # Builds the student's decoding and WER next to the teacher's, and hands both joints the loss.
        self.change_decoding_strategy(self.cfg.decoding, verbose=False)

    def _setup_losses(self) -> None:
        """The RNN-T loss (vectorised on CPU tensors if asked) and the auxiliary CTC loss, at the current vocabulary."""
        num_classes = self.joint.num_classes_with_blank - 1
        reduction = self.cfg.get("rnnt_reduction", "mean_batch")
        if self.codert.cpu_rnnt_loss == "vectorised":
            # Same constructor arguments NeMo uses; CUDA tensors still reach NeMo's numba kernel through it.
            loss_name, loss_kwargs = self.extract_rnnt_loss_cfg(self.cfg.get("loss", None))
            self.loss = CpuRNNTLoss(
                num_classes=num_classes, loss_name=loss_name, loss_kwargs=loss_kwargs, reduction=reduction
            )
        if self.codert.ctc_weight > 0:
            # NeMo's CTC loss over the encoder logits; blank is the last class there as in NeMo's CTC decoders.
            self.ctc_loss = CTCLoss(
                num_classes=num_classes,
                zero_infinity=True,  # a too-short utterance for its transcript gives 0, not inf
                reduction=reduction,
            )

    # ------------------------------------------------------------------ structure

    @property
    def has_teacher(self) -> bool:
        return self.codert.mode != "student_only"

    @property
    def teacher_is_frozen(self) -> bool:
        return self.codert.mode == "static_teacher"

    @property
    def student(self) -> TransducerSide:
        """The student transducer (what gets deployed)."""
        if not self.has_teacher:
            return TransducerSide(self.encoder, self.decoder, self.joint, self.decoding, self.wer)
        return TransducerSide(
            self.student_encoder,
            self._student_prediction_net,
            self.student_joint,
            self.student_decoding,
            self.student_wer,
        )

    @property
    def _student_prediction_net(self) -> torch.nn.Module:
        """The student's own decoder, or the teacher's when shared (``student_decoder`` is None then)."""
        return self.decoder if self.student_decoder is None else self.student_decoder

    @property
    def teacher(self) -> TransducerSide:
        if not self.has_teacher:
            raise ValueError("model.codert.mode is 'student_only': this model has no teacher")
        return TransducerSide(self.encoder, self.decoder, self.joint, self.teacher_decoding, self.teacher_wer)

    def _build_student_decoder_and_joint(self) -> None:
        """The student's prediction network (only with ``share_decoder: false``) and its joint, whose ``enc``
        projection is its own and whose ``pred``/``joint_net`` are the teacher joint's modules when shared."""
        share = self.codert.share_decoder
        self.student_decoder = None if share else EncDecRNNTModel.from_config_dict(self.cfg.decoder)
        joint_cfg = copy.deepcopy(self.cfg.joint)
        with open_dict(joint_cfg):
            joint_cfg.jointnet.encoder_hidden = self._student_hidden
        self.student_joint = EncDecRNNTModel.from_config_dict(joint_cfg)
        if share:
            # Implicit distillation: the same module objects, so one set of weights learns from both encoders.
            self.student_joint.pred = self.joint.pred
            self.student_joint.joint_net = self.joint.joint_net

    def _frozen_teacher_modules(self) -> List[torch.nn.Module]:
        # With a shared decoder the student plugs into the static teacher's prediction network and joint as they
        # are, so they stay frozen too: the student learns its encoder and its projection only.
        return [self.encoder, self.decoder, self.joint]

    def setup_optimizer_param_groups(self) -> None:
        """NeMo's parameter groups, with the teacher encoder in a group of its own at lr × ``teacher_lr_scale``."""
        super().setup_optimizer_param_groups()
        scale = self.codert.teacher_lr_scale
        if not self.has_teacher or scale == 1.0 or self._optimizer_param_groups is None:
            return
        teacher = list(self.encoder.parameters())
        ids = {id(p) for p in teacher}
        rest = [p for group in self._optimizer_param_groups for p in group["params"] if id(p) not in ids]
        self._optimizer_param_groups = [{"params": rest}, {"params": teacher, "lr": self.cfg.optim.lr * scale}]

    def train(self, mode: bool = True) -> "CodertRNNTBPEModel":
        super().train(mode)
        if self.codert.mode == "static_teacher":
            # A frozen teacher must also keep its batch-norm statistics and drop no units.
            for module in self._frozen_teacher_modules():
                module.eval()
        return self

    def change_vocabulary(
        self,
        new_tokenizer_dir: Union[str, DictConfig],
        new_tokenizer_type: str,
        decoding_cfg: Optional[DictConfig] = None,
    ) -> None:
        """NeMo's ``change_vocabulary`` for the pair: new teacher decoder and joint (NeMo), then the student's joint
        rebuilt and re-shared, the losses rebuilt at the new vocabulary, both decodings rebuilt."""
        if self.codert.mode == "static_teacher":
            raise ValueError(
                "change_vocabulary: model.codert.mode is 'static_teacher', whose prediction network and joint are the "
                "frozen teacher's: its vocabulary is that of model.codert.teacher_nemo. Change the teacher's "
                "vocabulary (and fine-tune it) first, or train in tandem"
            )
        super().change_vocabulary(new_tokenizer_dir, new_tokenizer_type, decoding_cfg)
        self._setup_losses()  # NeMo's rebuild drops the configured loss (and knows nothing of the CTC term)
        if self.has_teacher:
            self._build_student_decoder_and_joint()
        self.change_decoding_strategy(self.cfg.decoding, verbose=False)

    # ------------------------------------------------------------------ forward

    def _features(
        self, input_signal=None, input_signal_length=None, processed_signal=None, processed_signal_length=None
    ):
        """One preprocessor and one spec-augment pass: both encoders must see exactly the same features."""
        if processed_signal is None:
            if input_signal is None or input_signal_length is None:
                raise ValueError("pass either input_signal and input_signal_length, or processed_signal and length")
            processed_signal, processed_signal_length = self.preprocessor(
                input_signal=input_signal, length=input_signal_length
            )
        if self.spec_augmentation is not None and self.training:
            processed_signal = self.spec_augmentation(input_spec=processed_signal, length=processed_signal_length)
        return processed_signal, processed_signal_length

    @typecheck()
    def forward(
        self, input_signal=None, input_signal_length=None, processed_signal=None, processed_signal_length=None
    ):
        """Acoustic forward of the side selected for inference (the student unless inside ``use_side``)."""
        features, lengths = self._features(
            input_signal, input_signal_length, processed_signal, processed_signal_length
        )
        encoder = self.teacher.encoder if self._infer_teacher else self.student.encoder
        return encoder(audio_signal=features, length=lengths)

    # ------------------------------------------------------------------ losses

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

    def _kd(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The unweighted KL term (B x T x C logits; teacher side detached inside)."""
        return encoder_kd_loss(
            student_logits,
            teacher_logits,
            lengths,
            temperature=self.codert.kd_temperature,
            reduction=self.cfg.get("rnnt_reduction", "mean_batch"),
        )

    def kd_scale(self) -> float:
        """λ·τ² at the current step: λ ramps linearly from 0 over ``kd_warmup_steps``."""
        lam = self.codert.kd_weight
        trainer = getattr(self, "_trainer", None)
        if self.codert.kd_warmup_steps > 0 and trainer is not None:
            lam *= min(1.0, trainer.global_step / self.codert.kd_warmup_steps)
        return lam * self.codert.kd_temperature**2

    def _with_ctc(
        self,
        rnnt: torch.Tensor,
        logits: torch.Tensor,
        lengths: torch.Tensor,
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
    ) -> tuple:
        """(side loss, CTC term or None): (1 - w)·RNNT + w·CTC on the encoder logits, NeMo's hybrid convention."""
        w = self.codert.ctc_weight
        if w == 0:
            return rnnt, None
        ctc = self.ctc_loss(
            log_probs=logits.log_softmax(dim=-1),
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

    def _decoder_outputs(self, transcript, transcript_len, teacher: bool) -> Dict[str, Any]:
        """Prediction-network outputs of the student and (``teacher``) the teacher; a shared decoder runs once."""
        out = {"student": self.student.decoder(targets=transcript, target_length=transcript_len)[:2]}
        if teacher:
            if self.teacher.decoder is self.student.decoder:
                out["teacher"] = out["student"]
            else:
                out["teacher"] = self.teacher.decoder(targets=transcript, target_length=transcript_len)[:2]
        return out

    def codert_losses(
        self,
        signal: torch.Tensor,
        signal_len: torch.Tensor,
        transcript: torch.Tensor,
        transcript_len: torch.Tensor,
        compute_wer: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """All CoDERT loss terms of one batch: ``loss`` (the weighted total) and its parts.

        Keys: loss, rnnt_student, rnnt_teacher (tandem only), ctc_student / ctc_teacher (with ``ctc_weight``),
        kd and kd_weighted = λ·τ²·kd (with a teacher), encoded_len, and wer_num / wer_denom of the student when
        ``compute_wer``.
        """
        grad = torch.is_grad_enabled()
        features, feature_len = self._features(input_signal=signal, input_signal_length=signal_len)
        # A static teacher has no RNN-T loss: its prediction network need not run.
        decoded = self._decoder_outputs(transcript, transcript_len, teacher=self.codert.mode == "tandem")
        student = self.student
        enc_s, enc_s_len = student.encoder(audio_signal=features, length=feature_len)
        rnnt_s, wer_num, wer_denom = self._transducer_loss(
            student, enc_s, enc_s_len, *decoded["student"], transcript, transcript_len, compute_wer
        )
        out = {"rnnt_student": rnnt_s, "encoded_len": enc_s_len, "wer_num": wer_num, "wer_denom": wer_denom}
        z_s = encoder_logits(student.joint, enc_s) if self.codert.ctc_weight > 0 else None
        loss_s, out["ctc_student"] = self._with_ctc(rnnt_s, z_s, enc_s_len, transcript, transcript_len)
        loss = self.codert.student_rnnt_weight * loss_s

        if self.has_teacher:
            enc_t, enc_t_len = self._encode_teacher(features, feature_len)
            if not torch.equal(enc_t_len, enc_s_len):
                raise RuntimeError(
                    f"CoDERT: teacher and student encoders emitted different frame counts "
                    f"({enc_t_len.tolist()} vs {enc_s_len.tolist()}); they must share one frame rate"
                )
            tandem = self.codert.mode == "tandem"
            # The teacher's logits need a graph only where its own CTC term trains it; KD detaches them anyway.
            with torch.set_grad_enabled(grad and tandem and self.codert.ctc_weight > 0):
                z_t = encoder_logits(self.teacher.joint, enc_t)
            if tandem:
                rnnt_t, _, _ = self._transducer_loss(
                    self.teacher, enc_t, enc_t_len, *decoded["teacher"], transcript, transcript_len, False
                )
                loss_t, out["ctc_teacher"] = self._with_ctc(rnnt_t, z_t, enc_t_len, transcript, transcript_len)
                loss = loss + self.codert.teacher_rnnt_weight * loss_t
                out["rnnt_teacher"] = rnnt_t
            scale = self.kd_scale()
            # λ = 0 (implicit distillation only, or the start of a KD warm-up): KD is reported but builds no graph.
            with torch.set_grad_enabled(grad and scale > 0):
                # KD never trains a joint_net shared with the teacher (a collapse, see nemo_codert.losses.encoder_kd).
                shared = student.joint.joint_net is self.teacher.joint.joint_net
                z_s_kd = z_s if z_s is not None and not shared else encoder_logits(student.joint, enc_s, not shared)
                kd = self._kd(z_s_kd, z_t, enc_s_len)
            out["kd"], out["kd_weighted"] = kd, scale * kd
            loss = loss + out["kd_weighted"]
        out["loss"] = loss
        return {k: v for k, v in out.items() if v is not None or k in ("wer_num", "wer_denom")}

    def training_step(self, batch, batch_nb):
        if AccessMixin.is_access_enabled(self.model_guid):
            AccessMixin.reset_registry(self)
        signal, signal_len, transcript, transcript_len = batch

        trainer = getattr(self, "_trainer", None)
        log_every = trainer.log_every_n_steps if trainer is not None else 1
        sample_id = trainer.global_step if trainer is not None else batch_nb
        compute_wer = (sample_id + 1) % log_every == 0

        # A non-finite loss (a corrupt utterance, an overflow) must not poison the model: NeMo's skip_nan_grad
        # drops its update, NormStatisticsGuardMixin its effect on the BatchNorm statistics.
        norm_stats = self.snapshot_norm_statistics()
        out = self.codert_losses(signal, signal_len, transcript, transcript_len, compute_wer=compute_wer)
        loss = self.add_auxiliary_losses(out["loss"])
        if not torch.isfinite(loss):
            self.restore_norm_statistics_after_backward(norm_stats)
            logging.warning(
                f"CoDERT: non-finite training loss at step {sample_id} "
                + ", ".join(f"{k}={out[k].item():.4g}" for k in _LOSS_TERMS if k in out)
                + "; normalisation statistics restored"
                + (
                    ", gradients will be zeroed (skip_nan_grad)"
                    if getattr(self, "_skip_nan_grad", False)
                    else "; set model.skip_nan_grad=true to drop the update too"
                )
            )
        if AccessMixin.is_access_enabled(self.model_guid):
            AccessMixin.reset_registry(self)

        logs = {f"train_{k}": out[k].detach() for k in _LOSS_TERMS if k in out}
        logs["train_loss"] = loss.detach()
        logs["learning_rate"] = self._optimizer.param_groups[0]["lr"]
        logs["global_step"] = torch.tensor(self.trainer.global_step, dtype=torch.float32)
        if compute_wer:
            logs["training_batch_wer"] = out["wer_num"].float() / out["wer_denom"]
        self.log_dict(logs)

        if self._optim_normalize_joint_txu:
            self._optim_normalize_txu = [out["encoded_len"].max(), transcript_len.max()]
        return {"loss": loss}


# ---------------------------------------------------------------------- helpers


def _build_student_encoder(encoder_cfg: DictConfig, width_only: bool) -> torch.nn.Module:
    """The student encoder; with ``width_only`` built on the meta device (no memory, no init cost) when the
    encoder allows it, since only its ``_feat_out`` is read."""
    if width_only:
        try:
            with torch.device("meta"):
                return EncDecRNNTModel.from_config_dict(encoder_cfg)
        except Exception:  # an encoder that computes with its tensors at construction: build it for real
            pass
    return EncDecRNNTModel.from_config_dict(encoder_cfg)
