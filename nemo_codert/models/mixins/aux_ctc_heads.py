"""NeMo's auxiliary CTC heads (the ``aux_ctc`` section of ``EncDecHybridRNNTCTCBPEModel``), one per encoder."""

from __future__ import annotations

import copy
from typing import Optional

import torch
from omegaconf import OmegaConf, open_dict

from nemo.collections.asr.models import EncDecRNNTModel

from nemo_codert.models.config import aux_ctc_weight

__all__ = ["AuxCtcHeadsMixin"]

# What NeMo's hybrid configs write under aux_ctc.decoder; the placeholders are filled in from the model, as NeMo does.
_DEFAULT_HEAD = {
    "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
    "feat_in": None,
    "num_classes": -1,
    "vocabulary": [],
}


class AuxCtcHeadsMixin:
    """The auxiliary CTC term of each side, in one of two shapes (``nemo_codert.models.config`` allows one):

    - ``model.codert.ctc_weight``: CTC on the side's *encoder logits* (the joint applied to the encoder alone): no new
      parameters, and the logits the KD term compares are trained to be a recogniser of their own.
    - ``model.aux_ctc`` (NeMo's hybrid section: ``ctc_loss_weight``, ``decoder``, ``ctc_reduction``, ``decoding``):
      a ``ConvASRDecoder`` head per encoder, as ``EncDecHybridRNNTCTCBPEModel`` has one. ``ctc_decoder`` is the head
      of ``encoder`` (the teacher; in student_only the student, which makes that model NeMo's hybrid layout exactly)
      and ``student_ctc_decoder`` the student's. A side with a head exports as a stock hybrid model.

    A static teacher gets no head: it has no loss. The host model provides ``cfg``, ``codert``, ``has_teacher``,
    ``tokenizer``, ``encoder`` and ``_student_hidden`` (the student encoder's width).
    """

    @property
    def ctc_weight(self) -> float:
        """w of the side loss (1 - w)·RNNT + w·CTC, whichever shape carries it (NeMo's default 0.5 for aux_ctc)."""
        weight = aux_ctc_weight(self.cfg)
        return self.codert.ctc_weight if weight is None else weight

    @property
    def ctc_reduction(self) -> str:
        """aux_ctc's own ``ctc_reduction`` (NeMo's key); CTC on encoder logits is reduced like the RNN-T loss."""
        aux = self.cfg.get("aux_ctc", None)
        if aux is not None:
            return aux.get("ctc_reduction", "mean_batch")
        return self.cfg.get("rnnt_reduction", "mean_batch")

    def _ctc_head_config(self, width: int):
        """``aux_ctc.decoder`` at encoder width ``width`` and the tokenizer's current vocabulary."""
        head = copy.deepcopy(self.cfg.aux_ctc.get("decoder", None) or OmegaConf.create(_DEFAULT_HEAD))
        vocabulary = list(self.tokenizer.tokenizer.get_vocab().keys())
        with open_dict(head):
            head.feat_in = width
            head.vocabulary = vocabulary
            head.num_classes = len(vocabulary)
        return head

    def _build_ctc_heads(self) -> None:
        """(Re)build the heads at the current vocabulary; ``cfg.aux_ctc.decoder`` becomes the head of ``encoder``,
        completed as NeMo's hybrid model completes it, so the saved config describes the model."""
        if self.cfg.get("aux_ctc", None) is None:
            return
        head = self._ctc_head_config(int(self.encoder._feat_out))
        with open_dict(self.cfg):
            self.cfg.aux_ctc.decoder = head
        if self.codert.mode != "static_teacher":
            self.ctc_decoder = EncDecRNNTModel.from_config_dict(head)
        if self.has_teacher:
            self.student_ctc_decoder = EncDecRNNTModel.from_config_dict(self._ctc_head_config(self._student_hidden))

    def _ctc_log_probs(
        self, head: Optional[torch.nn.Module], encoded: torch.Tensor, logits: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """B x T x (V+1) log-probabilities the side's CTC term scores: its head on the encoder output (B x D x T),
        else its encoder ``logits``; None without a CTC term."""
        if self.ctc_weight == 0:
            return None
        if head is not None:
            return head(encoder_output=encoded)
        return logits.log_softmax(dim=-1)
