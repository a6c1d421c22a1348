"""CoDERT: a teacher and a student transducer encoder trained in tandem (Swaminathan et al., Interspeech 2021).

``CodertRNNTBPEModel`` is NeMo's ``EncDecRNNTBPEModel`` whose ``encoder`` is the teacher, plus a
``student_encoder`` with its own projection into the joint. Per batch, one preprocessor and one spec-augment pass
feed both encoders; the loss is

    teacher_rnnt_weight · L(teacher) + student_rnnt_weight · L(student) + λ·τ²·KL(z_T/τ ‖ z_S/τ),
    L = (1 - w) · RNNT + w · CTC

with z the encoder logits (``nemo_codert.losses.encoder_kd``), the CTC term on z (``model.codert.ctc_weight``) or
on a CTC head of the side's own (NeMo's ``model.aux_ctc``, ``AuxCtcHeadsMixin``), the teacher side of the KL
detached, and the KL never training a joint_net the two sides share. With
``share_decoder`` both encoders use one prediction network and joint ("implicit distillation"); the student's
joint is a second ``RNNTJoint`` whose ``pred`` and ``joint_net`` *are* the teacher joint's modules and whose
``enc`` is the student's own projection, so every NeMo component (decoding, WER, fused joint, export) works on the
student unchanged.

Several students (``model.student_encoders``, a ladder of sizes) train against the one teacher in the same step,
each with its own projection into the shared joint, RNN-T loss and KD term (``StudentLadderMixin``); the primary one
(``model.codert.primary_student``) is ``student_encoder``/``student_joint`` as a single student is.

Inference (``forward``, ``decoding``, ``wer``, ``transcribe``) is the (primary) student's by default, because the
student is what gets deployed; ``transcribe(..., use_teacher=True)``, ``transcribe(..., side=NAME)`` or ``with
model.use_side("teacher"):`` give another side. The side is state (``_infer_side``): NeMo's ``decoding``/``wer``
attributes always point at the active side's, also after NeMo rebuilds them mid-``transcribe``.

This module holds the pair's structure. Its training objective and the concerns around it live in
``nemo_codert.models.mixins`` (the pair's losses and training step, inference on a chosen side, validation/test
metrics of both sides, the auxiliary CTC heads, atomic ``.nemo`` writes, the BatchNorm guard for non-finite
batches, the resumable shuffle); a teacher from a ``.nemo`` (frozen, or warm-started) is loaded by
``nemo_codert.models.teacher_file``.

Layout per mode:
    tandem / static_teacher: teacher = (encoder, decoder, joint[, ctc_decoder in tandem]); student =
        (student_encoder, decoder or student_decoder, student_joint[, student_ctc_decoder]); a further student NAME =
        (ladder_encoders.NAME, decoder or ladder_decoders.NAME, ladder_joints.NAME[, ladder_ctc_decoders.NAME]).
    student_only: a stock NeMo transducer (with ``aux_ctc``: NeMo's hybrid layout) whose ``encoder`` is built from
        ``model.student_encoder``: no teacher module exists, so its cost and WER are an honest baseline.
    offline_teacher: the same layout, plus a KD term from the teacher's cached encoder logits
        (``OfflineTeacherMixin``): the student's own prediction network and joint learn from scratch.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Union

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, open_dict

from nemo.collections.asr.losses.ctc import CTCLoss
from nemo.collections.asr.models import EncDecRNNTBPEModel, EncDecRNNTModel
from nemo.core.classes.common import typecheck
from nemo.utils import model_utils

from nemo_codert.losses.encoder_kd import encoder_logit_classes
from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss
from nemo_codert.models.config import TEACHERLESS_MODES, CodertConfig, parse_codert_config, resolve_students
from nemo_codert.models.frame_rate import check_same_frame_rate
from nemo_codert.models.mixins import (
    AtomicSaveMixin,
    AuxCtcHeadsMixin,
    KdGateMixin,
    NormStatisticsGuardMixin,
    OfflineTeacherMixin,
    PairLossesMixin,
    ResumableShuffleMixin,
    SideInferenceMixin,
    SideMetricsMixin,
    StudentLadderMixin,
    TeacherLeadMixin,
)
from nemo_codert.models.side import TransducerSide
from nemo_codert.models.teacher_file import adopt_teacher_config, load_teacher_weights, restore_teacher

__all__ = ["CodertRNNTBPEModel"]


class CodertRNNTBPEModel(
    AtomicSaveMixin,
    AuxCtcHeadsMixin,
    TeacherLeadMixin,
    KdGateMixin,
    NormStatisticsGuardMixin,
    OfflineTeacherMixin,
    ResumableShuffleMixin,
    PairLossesMixin,
    SideInferenceMixin,
    SideMetricsMixin,
    StudentLadderMixin,
    EncDecRNNTBPEModel,
):
    """NeMo BPE transducer with a CoDERT student encoder trained by in-place encoder-logit distillation."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = model_utils.convert_model_config_to_dict_config(cfg)
        cfg = model_utils.maybe_update_config_version(cfg)
        codert = parse_codert_config(cfg)
        if (cfg.get("codert") or {}).get("teacher_lead_steps", 0) != codert.teacher_lead_steps:
            # A lead skipped (logged by parse_codert_config): the saved config (hparams.yaml, checkpoints, the .nemo)
            # says what ran, not the shipped 450 this run never trained.
            cfg = copy.deepcopy(cfg)
            with open_dict(cfg):
                cfg.codert.teacher_lead_steps = codert.teacher_lead_steps
        cfg, student_names = resolve_students(cfg, codert)

        restoring = self._is_model_being_restored()
        # A teacher from a .nemo: frozen in static_teacher; in tandem a warm start that trains on. Restored models
        # carry the teacher in their own weights and config.
        teacher_file = codert.teacher_nemo if codert.mode not in TEACHERLESS_MODES and not restoring else None
        if teacher_file:
            cfg = adopt_teacher_config(cfg, teacher_file)
        # The student's joint projection (and, in student_only, the joint itself) is sized by the student encoder's
        # output width, whatever kind of NeMo encoder the user chose: build it to learn it (only its width is
        # needed without a teacher, where NeMo builds the encoder itself from cfg.encoder).
        teacherless = codert.mode in TEACHERLESS_MODES
        student_encoder = _build_student_encoder(cfg.student_encoder, width_only=teacherless)
        student_hidden = student_encoder._feat_out
        if teacherless:
            cfg = copy.deepcopy(cfg)
            with open_dict(cfg):
                cfg.encoder = copy.deepcopy(cfg.student_encoder)
                cfg.model_defaults.enc_hidden = student_hidden

        # Set before NeMo's constructor, which sets up the data: the offline teacher's cache is opened there.
        self.codert: CodertConfig = codert
        self.student_names = student_names
        super().__init__(cfg=cfg, trainer=trainer)
        self._infer_side = "student"  # the side NeMo's inference runs (SideInferenceMixin.use_side)
        self._student_hidden = student_hidden
        self._build_ctc_heads()
        self._setup_losses()

        if codert.kd_target == "joint_lattice" and self.joint.num_extra_outputs:
            raise ValueError(
                "model.codert.kd_target: joint_lattice collapses the joint's token/blank posteriors; a joint with "
                f"{self.joint.num_extra_outputs} extra (TDT duration) outputs has no such lattice: use encoder_logits"
            )
        if self.has_teacher:
            self.student_encoder = student_encoder
            check_same_frame_rate(self.encoder, self.student_encoder, self.cfg.encoder.feat_in)
            self.student_decoder, self.student_joint = self._student_decoder_and_joint(student_hidden)
            self._build_ladder_encoders()
            self._build_ladder_heads()
            if teacher_file:
                load_teacher_weights(self, restore_teacher(teacher_file), teacher_file)
            if codert.mode == "static_teacher":
                for module in self._frozen_teacher_modules():
                    module.requires_grad_(False)
                    module.eval()
        # Builds the student's decoding and WER next to the teacher's, and hands both joints the loss.
        self.change_decoding_strategy(self.cfg.decoding, verbose=False)

    def _setup_losses(self) -> None:
        """The RNN-T loss (vectorised on CPU tensors if asked) and the auxiliary CTC loss at the current vocabulary."""
        # Tokens, without blank and without a TDT joint's duration outputs.
        tokens = encoder_logit_classes(self.joint) - 1
        reduction = self.cfg.get("rnnt_reduction", "mean_batch")
        if self.codert.cpu_rnnt_loss == "vectorised":
            # Same constructor arguments NeMo uses (NeMo counts other extra outputs, multi-blank's, as classes); CUDA
            # tensors still reach NeMo's numba kernel through it, CPU tensors a vectorised RNN-T or TDT kernel.
            loss_name, loss_kwargs = self.extract_rnnt_loss_cfg(self.cfg.get("loss", None))
            self.loss = CpuRNNTLoss(
                num_classes=tokens if loss_name == "tdt" else tokens + self.joint.num_extra_outputs,
                loss_name=loss_name,
                loss_kwargs=loss_kwargs,
                reduction=reduction,
            )
        if self.ctc_weight > 0:
            # NeMo's CTC loss over the encoder logits or the aux_ctc heads; blank is the last class in both.
            self.ctc_loss = CTCLoss(
                num_classes=tokens,
                zero_infinity=True,  # a too-short utterance for its transcript gives 0, not inf
                reduction=self.ctc_reduction,
            )

    # ------------------------------------------------------------------ structure

    @property
    def has_teacher(self) -> bool:
        return self.codert.mode not in TEACHERLESS_MODES

    @property
    def teacher_is_frozen(self) -> bool:
        return self.codert.mode == "static_teacher"

    @property
    def student(self) -> TransducerSide:
        """The student transducer (what gets deployed)."""
        if not self.has_teacher:
            return TransducerSide(
                self.encoder, self.decoder, self.joint, self.decoding, self.wer, getattr(self, "ctc_decoder", None)
            )
        return TransducerSide(
            self.student_encoder,
            self._student_prediction_net,
            self.student_joint,
            self.student_decoding,
            self.student_wer,
            getattr(self, "student_ctc_decoder", None),
        )

    @property
    def _student_prediction_net(self) -> torch.nn.Module:
        """The student's own decoder, or the teacher's when shared (``student_decoder`` is None then)."""
        return self.decoder if self.student_decoder is None else self.student_decoder

    @property
    def teacher(self) -> TransducerSide:
        if not self.has_teacher:
            raise ValueError(f"model.codert.mode is {self.codert.mode!r}: this model has no teacher")
        return TransducerSide(
            self.encoder,
            self.decoder,
            self.joint,
            self.teacher_decoding,
            self.teacher_wer,
            getattr(self, "ctc_decoder", None),
        )

    def _student_decoder_and_joint(self, width: int) -> tuple:
        """(prediction network, joint) of a student whose encoder emits ``width``: its own prediction network only
        with ``share_decoder: false`` (else None), and a joint whose ``enc`` projection is its own and whose
        ``pred``/``joint_net`` are the teacher joint's modules when shared."""
        share = self.codert.share_decoder
        decoder = None if share else EncDecRNNTModel.from_config_dict(self.cfg.decoder)
        joint_cfg = copy.deepcopy(self.cfg.joint)
        with open_dict(joint_cfg):
            joint_cfg.jointnet.encoder_hidden = width
        joint = EncDecRNNTModel.from_config_dict(joint_cfg)
        if share:
            # Implicit distillation: the same module objects, so one set of weights learns from both encoders.
            joint.pred = self.joint.pred
            joint.joint_net = self.joint.joint_net
        return decoder, joint

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
        """NeMo's ``change_vocabulary`` for the pair: new teacher decoder and joint (NeMo), then the aux_ctc heads
        and the student's joint rebuilt (re-shared), the losses rebuilt at the new vocabulary, both decodings
        rebuilt."""
        if self.codert.mode == "static_teacher":
            raise ValueError(
                "change_vocabulary: model.codert.mode is 'static_teacher', whose prediction network and joint are the "
                "frozen teacher's: its vocabulary is that of model.codert.teacher_nemo. Change the teacher's "
                "vocabulary (and fine-tune it) first, or train in tandem"
            )
        super().change_vocabulary(new_tokenizer_dir, new_tokenizer_type, decoding_cfg)
        self._build_ctc_heads()  # NeMo's RNN-T model knows nothing of aux_ctc heads
        self._setup_losses()  # NeMo's rebuild drops the configured loss (and knows nothing of the CTC term)
        if self.has_teacher:
            self.student_decoder, self.student_joint = self._student_decoder_and_joint(self._student_hidden)
            self._build_ladder_heads()
        self.change_decoding_strategy(self.cfg.decoding, verbose=False)

    # ------------------------------------------------------------------ forward

    def _features(
        self,
        input_signal=None,
        input_signal_length=None,
        processed_signal=None,
        processed_signal_length=None,
        augment: bool = True,
    ):
        """One preprocessor and (``augment``, in training) one spec-augment pass: both encoders must see exactly the
        same features."""
        if processed_signal is None:
            if input_signal is None or input_signal_length is None:
                raise ValueError("pass either input_signal and input_signal_length, or processed_signal and length")
            processed_signal, processed_signal_length = self.preprocessor(
                input_signal=input_signal, length=input_signal_length
            )
        if augment:
            processed_signal = self._augment(processed_signal, processed_signal_length)
        return processed_signal, processed_signal_length

    def _augment(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Spec-augment in training (a new tensor: the clean features stay as they were), the identity otherwise."""
        if self.spec_augmentation is not None and self.training:
            # A copy first: NeMo's SpecCutout (rect_masks) and its GPU SpecAugment kernel mask their input in place,
            # which would reach the clean features too (kd_teacher_input: clean).
            return self.spec_augmentation(input_spec=features.clone(), length=lengths)
        return features

    @typecheck()
    def forward(
        self, input_signal=None, input_signal_length=None, processed_signal=None, processed_signal_length=None
    ):
        """Acoustic forward of the side selected for inference (the student unless inside ``use_side``)."""
        features, lengths = self._features(
            input_signal, input_signal_length, processed_signal, processed_signal_length
        )
        return self.side(self._infer_side).encoder(audio_signal=features, length=lengths)


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
