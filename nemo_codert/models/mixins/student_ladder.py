"""Several students against one teacher in one run: a ladder of sizes, each a deployable transducer of its own."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from omegaconf import DictConfig

from nemo.collections.asr.metrics.wer import WER
from nemo.collections.asr.models import EncDecRNNTModel
from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTBPEDecoding

from nemo_codert.models.config import SINGLE_STUDENT
from nemo_codert.models.frame_rate import check_same_frame_rate
from nemo_codert.models.side import TransducerSide

__all__ = ["StudentLadderMixin"]


class StudentLadderMixin:
    """The students beyond the first, and every side by name (``side``).

    One student is a ladder of one: the primary student (``model.codert.primary_student``) is the model's own
    ``student_encoder``/``student_joint`` whatever the ladder holds, so a one-student model and its files are what
    they always were. Every further student NAME of ``model.student_encoders`` has ``ladder_encoders[NAME]``, its
    joint ``ladder_joints[NAME]`` (its own projection into the shared prediction network and joint, as the primary
    student's; with ``share_decoder: false`` its own joint and ``ladder_decoders[NAME]``), with ``model.aux_ctc``
    its CTC head ``ladder_ctc_decoders[NAME]``, and a decoding/WER of its own. All students see the teacher's
    features, learn from their own RNN-T loss and their own KD term (``PairLossesMixin``), and export as stock
    models (``nemo_codert.export``, ``--which student:NAME``).

    The host model sets ``student_names`` (primary first, ``nemo_codert.models.config.resolve_students``) before
    the calls below, and provides ``cfg``, ``encoder`` (the teacher's), ``student``, ``teacher``, ``decoder``,
    ``has_teacher``, ``tokenizer``, ``_student_decoder_and_joint(width)``, ``_ctc_head_config(width)`` and
    ``_student_decoding(decoder, joint)`` (``SideInferenceMixin``). It calls ``_build_ladder_encoders`` once,
    ``_build_ladder_heads`` whenever the vocabulary changes, and ``_build_ladder_decodings`` whenever the decoding
    strategy does.
    """

    student_names: List[str] = [SINGLE_STUDENT]

    @property
    def extra_students(self) -> List[str]:
        """The students beyond the primary one, in config order (empty for one student)."""
        return self.student_names[1:]

    def _build_ladder_encoders(self) -> None:
        self.ladder_encoders = torch.nn.ModuleDict()
        for name in self.extra_students:
            encoder = EncDecRNNTModel.from_config_dict(self.cfg.student_encoders[name])
            check_same_frame_rate(
                self.encoder, encoder, self.cfg.encoder.feat_in, student_field=f"model.student_encoders.{name}"
            )
            self.ladder_encoders[name] = encoder

    def _build_ladder_heads(self) -> None:
        """Each further student's joint (and own decoder, CTC head) at the current vocabulary."""
        self.ladder_joints = torch.nn.ModuleDict()
        self.ladder_decoders = torch.nn.ModuleDict()
        self.ladder_ctc_decoders = torch.nn.ModuleDict()
        for name, encoder in self.ladder_encoders.items():
            width = int(encoder._feat_out)
            decoder, self.ladder_joints[name] = self._student_decoder_and_joint(width)
            if decoder is not None:
                self.ladder_decoders[name] = decoder
            if self.cfg.get("aux_ctc", None) is not None:
                self.ladder_ctc_decoders[name] = EncDecRNNTModel.from_config_dict(self._ctc_head_config(width))

    def _build_ladder_decodings(self) -> None:
        """Each further student's decoding and WER, built as the primary student's (``_student_decoding``)."""
        self._ladder_decodings: Dict[str, Tuple[RNNTBPEDecoding, WER]] = {
            name: self._student_decoding(self._ladder_prediction_net(name), self.ladder_joints[name])
            for name in self.extra_students
        }

    def _ladder_prediction_net(self, name: str) -> torch.nn.Module:
        """A further student's own prediction network, or the shared one (the teacher's ``decoder``)."""
        return self.ladder_decoders[name] if name in self.ladder_decoders else self.decoder

    def metric_suffix(self, name: str) -> str:
        """The suffix of a student's loss terms and metrics: none for the primary student (NeMo's plain names, what
        exp_manager monitors), ``_NAME`` for a further one."""
        return "" if name == self.student_names[0] else f"_{name}"

    def side(self, name: str) -> TransducerSide:
        """The side called ``name``: 'teacher', 'student' (the primary student) or a student's own name."""
        if name == "teacher":
            return self.teacher
        if name in (SINGLE_STUDENT, self.student_names[0]):
            return self.student
        if name not in self.extra_students:
            known = ", ".join(dict.fromkeys(["teacher", SINGLE_STUDENT, *self.student_names]))
            raise ValueError(f"no side {name!r} in this model: one of {known}")
        decoding, wer = self._ladder_decodings[name]
        return TransducerSide(
            self.ladder_encoders[name],
            self._ladder_prediction_net(name),
            self.ladder_joints[name],
            decoding,
            wer,
            self.ladder_ctc_decoders[name] if name in self.ladder_ctc_decoders else None,
        )

    def encoder_config(self, name: str) -> DictConfig:
        """The config the encoder of side ``name`` was built from (as ``side``, the name is checked)."""
        self.side(name)
        if name in self.extra_students:
            return self.cfg.student_encoders[name]
        if name != "teacher" and self.has_teacher:
            return self.cfg.student_encoder  # the primary student's
        return self.cfg.encoder  # the teacher's, or a student_only model's student

    def students(self) -> Dict[str, TransducerSide]:
        """Every student by name, the primary first."""
        return {name: self.side(name) for name in self.student_names}
