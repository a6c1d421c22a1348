"""NeMo's inference path (``forward``'s encoder, ``decoding``, ``wer``, ``transcribe``) on a chosen side of a pair."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
from omegaconf import DictConfig

from nemo.collections.asr.metrics.wer import WER
from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTBPEDecoding

__all__ = ["SideInferenceMixin"]


class SideInferenceMixin:
    """Which side NeMo's inference runs on is state, not swapped attributes.

    The host model is a NeMo RNN-T model whose own ``decoder``/``joint``/``decoding``/``wer`` are the teacher's, and
    provides ``has_teacher``, ``side(name)`` (``TransducerSide``; ``StudentLadderMixin``), ``_student_prediction_net``,
    ``student_joint`` and ``_build_ladder_decodings`` (which builds on ``_student_decoding``). It makes two calls:

    1. ``self._infer_side = "student"`` in ``__init__`` before NeMo's decoding is first rebuilt;
    2. its ``forward`` runs ``self.side(self._infer_side).encoder``.

    In return NeMo's ``decoding``/``wer`` always point at the active side's, also after NeMo rebuilds them
    mid-``transcribe`` (``timestamps=True`` does); the (primary) student is active unless inside ``use_side``,
    because the student is what gets deployed.
    """

    _infer_side: str = "student"

    @contextlib.contextmanager
    def use_side(self, side: str) -> Iterator[None]:
        """Run NeMo's inference path (forward + decoding) on side ``side``: 'student' (default, the primary
        student), 'teacher', or a student's name (``model.student_encoders``)."""
        self.side(side)  # raises for an unknown side (and for 'teacher' in student_only)
        if not self.has_teacher:
            yield
            return
        previous, self._infer_side = self._infer_side, side
        self._point_inference_at_active_side()
        try:
            yield
        finally:
            self._infer_side = previous
            self._point_inference_at_active_side()

    def transcribe(self, audio, *args, use_teacher: bool = False, side: str = "student", **kwargs):
        """NeMo's ``transcribe`` on side ``side`` (the primary student by default; ``use_teacher=True`` is
        ``side="teacher"``)."""
        with self.use_side("teacher" if use_teacher else side):
            return super().transcribe(audio, *args, **kwargs)

    def change_decoding_strategy(self, decoding_cfg: Optional[DictConfig] = None, verbose: bool = True) -> None:
        """NeMo's, for both sides: the same decoding config builds the teacher's and the student's decoding/WER;
        NeMo's inference attributes (``decoding``, ``wer``) then point at the side that runs inference now, so a
        rebuild inside ``use_side("teacher")`` (``transcribe(timestamps=True)`` does one) stays on the teacher."""
        # NeMo builds decoding/WER on (decoder, joint): the teacher's here.
        super().change_decoding_strategy(decoding_cfg, verbose=verbose)
        if not self.has_teacher:
            return
        self.teacher_decoding, self.teacher_wer = self.decoding, self.wer
        self.student_decoding, self.student_wer = self._student_decoding(
            self._student_prediction_net, self.student_joint
        )
        self._build_ladder_decodings()
        self._decode_sides_eagerly()
        self._point_inference_at_active_side()

    def _student_decoding(self, decoder: torch.nn.Module, joint: torch.nn.Module) -> Tuple[RNNTBPEDecoding, WER]:
        """A student's decoding and WER on its prediction network and joint, configured as the teacher's (NeMo's);
        a fused joint is handed the loss and that WER, as NeMo hands them to its own."""
        decoding = RNNTBPEDecoding(
            decoding_cfg=self.cfg.decoding, decoder=decoder, joint=joint, tokenizer=self.tokenizer
        )
        wer = WER(
            decoding=decoding,
            batch_dim_index=self.teacher_wer.batch_dim_index,
            use_cer=self.teacher_wer.use_cer,
            log_prediction=self.teacher_wer.log_prediction,
            dist_sync_on_step=True,
        )
        if joint.fuse_loss_wer:
            joint.set_loss(self.loss)
            joint.set_wer(wer)
        joint.temperature = self.joint.temperature
        return decoding, wer

    def _decode_sides_eagerly(self) -> None:
        """Turn off NeMo's CUDA-graph greedy decoding on both sides of a pair.

        NeMo switches CUDA graphs on and off for ``self.decoding`` only, so the other side's decoder kept its graphs
        through training, and in validation both sides replayed graphs over the one shared prediction network: on
        an H200 (NeMo 3.0, label-looping greedy decoding) that ended in "an illegal memory access" in the first
        validation of every tandem run, while a single model validated fine. The pair decodes eagerly instead; the
        config is untouched, so an exported student decodes with CUDA graphs as any stock model does."""
        for decoding in (
            self.teacher_decoding,
            self.student_decoding,
            *(d for d, _ in self._ladder_decodings.values()),
        ):
            greedy = getattr(decoding, "decoding", None)
            if getattr(greedy, "use_cuda_graph_decoder", False):
                greedy.disable_cuda_graphs()
                greedy.use_cuda_graph_decoder = False  # what NeMo sets where graphs are unsupported: stays off

    def _point_inference_at_active_side(self) -> None:
        side = self.side(self._infer_side)
        self.decoding, self.wer = side.decoding, side.wer
