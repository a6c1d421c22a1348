"""The one loader of transducer ``.nemo`` files: a CoDERT model (its student and teacher) or any stock NeMo RNN-T.

``load_transducer(path) -> (model, sides)`` answers "CoDERT model or stock transducer?" once, for the export, the
evaluation and the benchmarks: ``sides`` maps a side name ('student', 'teacher' for CoDERT; 'model' for a stock
transducer) to its :class:`TransducerSide`; :func:`side_transcriber` gives the ``transcribe`` of a side.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict, Tuple, Union

import torch

from nemo.collections.asr.models import ASRModel, EncDecRNNTModel

from nemo_codert.models.codert import CodertRNNTBPEModel
from nemo_codert.models.side import TransducerSide
from nemo_codert.nemo_file import CODERT_TARGET, NemoFileError, read_nemo_config
from nemo_codert.utils import restore_nemo

__all__ = ["load_codert", "load_stock_transducer", "load_transducer", "side_transcriber"]

PathLike = Union[str, os.PathLike]


def load_stock_transducer(path: PathLike) -> EncDecRNNTModel:
    """A stock NeMo RNN-T ``.nemo`` (any ``EncDecRNNTModel``), restored on the CPU in eval mode; a file that is not
    one is a :class:`NemoFileError` naming it."""
    target = read_nemo_config(path).get("target", None)
    try:
        model = restore_nemo(ASRModel, path, map_location="cpu")
    except Exception as e:
        raise NemoFileError(f"{path}: could not be restored: {type(e).__name__}: {e}") from e
    if not isinstance(model, EncDecRNNTModel):
        raise NemoFileError(f"{path}: target {target} is not a NeMo RNN-T (transducer) model")
    return model.eval()


def load_codert(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> CodertRNNTBPEModel:
    """Restore a CoDERT ``.nemo`` after checking it (see ``read_nemo_config``); errors name the file."""
    target = read_nemo_config(path).get("target", None)
    if target != CODERT_TARGET:
        if isinstance(target, str) and target.startswith("nemo.collections.asr.models."):
            raise NemoFileError(
                f"{path}: target {target} is a stock NeMo model, not a CoDERT model ({CODERT_TARGET}): it is already "
                "deployable as it is and has no student/teacher to export"
            )
        raise NemoFileError(f"{path}: target {target!r} is not a CoDERT model ({CODERT_TARGET})")
    try:
        return restore_nemo(CodertRNNTBPEModel, path, map_location=map_location)
    except Exception as e:
        raise NemoFileError(f"{path}: the CoDERT model could not be restored: {type(e).__name__}: {e}") from e


def load_transducer(path: PathLike) -> Tuple[EncDecRNNTModel, Dict[str, TransducerSide]]:
    """A CoDERT or stock NeMo transducer ``.nemo``, on the CPU in eval mode, with its sides by name."""
    if read_nemo_config(path).get("target", None) == CODERT_TARGET:
        model = load_codert(path).eval()
        sides = {"student": model.student}
        if model.has_teacher:
            sides["teacher"] = model.teacher
        return model, sides
    model = load_stock_transducer(path)
    ctc_head = getattr(model, "ctc_decoder", None)  # a hybrid RNN-T/CTC model's head
    return model, {
        "model": TransducerSide(model.encoder, model.decoder, model.joint, model.decoding, model.wer, ctc_head)
    }


def side_transcriber(model: EncDecRNNTModel, side: str) -> Callable:
    """``transcribe`` of side ``side`` of a model from :func:`load_transducer`."""
    if isinstance(model, CodertRNNTBPEModel):
        return functools.partial(model.transcribe, use_teacher=side == "teacher")
    return model.transcribe
