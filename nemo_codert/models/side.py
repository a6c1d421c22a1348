"""One complete transducer inside a CoDERT model (teacher or student): what decoding, export and the losses need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nemo.collections.asr.metrics.wer import WER
from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTBPEDecoding

__all__ = ["TransducerSide"]


@dataclass
class TransducerSide:
    """Encoder, prediction network, joint, the decoding/WER built on that decoder and joint, and the side's
    auxiliary CTC head (``model.aux_ctc``; None without one)."""

    encoder: torch.nn.Module
    decoder: torch.nn.Module
    joint: torch.nn.Module
    decoding: RNNTBPEDecoding
    wer: WER
    ctc_decoder: Optional[torch.nn.Module] = None
