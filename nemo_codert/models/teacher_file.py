"""A pre-trained teacher from a NeMo transducer ``.nemo`` (``model.codert.teacher_nemo``).

The CoDERT model adopts the teacher's architecture *and its feature extraction* from the file (frame-level KD
compares the two encoders on the same features, so a teacher trained on other mel settings must get its own), then
loads its encoder, prediction network and joint weights: frozen in mode ``static_teacher``, the starting point of a
teacher that trains on in mode ``tandem`` (a warm start).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.asr.models import ASRModel, EncDecRNNTModel
from nemo.utils import logging

from nemo_codert.utils import restore_nemo, vocabulary_difference

__all__ = ["adopt_teacher_config", "load_teacher_weights", "restore_teacher"]

# Config keys whose values do not change the features a preprocessor computes.
_FEATURE_NEUTRAL = {"dither"}


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.codert.teacher_nemo: {path} does not exist or is not a file")


def restore_teacher(path: str) -> EncDecRNNTModel:
    """The teacher ``.nemo`` as a NeMo model; errors name ``model.codert.teacher_nemo`` and the file."""
    _check_file(path)
    try:
        teacher = restore_nemo(ASRModel, path, map_location="cpu")
    except Exception as e:
        raise ValueError(f"model.codert.teacher_nemo: {path} could not be restored as a NeMo model: {e}") from e
    if not isinstance(teacher, EncDecRNNTModel):
        raise TypeError(
            f"model.codert.teacher_nemo: {path} holds a {type(teacher).__name__}, not a NeMo RNN-T (transducer) model"
        )
    return teacher


def _differences(mine: Any, theirs: Any) -> List[str]:
    mine = OmegaConf.to_container(mine, resolve=True) if mine is not None else {}
    theirs = OmegaConf.to_container(theirs, resolve=True) if theirs is not None else {}
    keys = sorted((set(mine) | set(theirs)) - _FEATURE_NEUTRAL)
    return [
        f"{k}: {mine.get(k)!r} in the config, {theirs.get(k)!r} in the teacher"
        for k in keys
        if mine.get(k) != theirs.get(k)
    ]


def adopt_teacher_config(cfg: DictConfig, path: str) -> DictConfig:
    """``cfg`` with the teacher's encoder, decoder, joint and preprocessor from its ``.nemo``.

    The config need not (and cannot) disagree with the file on the teacher. A preprocessor that differs is replaced
    by the teacher's with a warning naming each differing setting, and the student encoder's ``feat_in`` follows the
    teacher's feature count, so that both encoders see the very features the teacher was trained on.
    """
    _check_file(path)
    try:
        teacher_cfg = ASRModel.restore_from(path, return_config=True)
    except Exception as e:
        raise ValueError(f"model.codert.teacher_nemo: {path} is not a readable .nemo: {e}") from e
    if "encoder" not in teacher_cfg or "joint" not in teacher_cfg or "decoder" not in teacher_cfg:
        raise TypeError(f"model.codert.teacher_nemo: {path} is not a NeMo RNN-T model (no encoder/decoder/joint)")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.encoder = teacher_cfg.encoder
        cfg.decoder = teacher_cfg.decoder
        cfg.joint.jointnet = teacher_cfg.joint.jointnet
        _adopt_duration_outputs(cfg, teacher_cfg, path)
        cfg.model_defaults.enc_hidden = teacher_cfg.joint.jointnet.encoder_hidden
        cfg.model_defaults.pred_hidden = teacher_cfg.joint.jointnet.pred_hidden
        if "preprocessor" in teacher_cfg:
            differing = _differences(cfg.get("preprocessor"), teacher_cfg.preprocessor)
            if differing:
                logging.warning(
                    f"model.preprocessor differs from the teacher file's ({path}): "
                    + "; ".join(differing)
                    + ". Using the teacher's: frame-level KD needs the features the teacher was trained on"
                )
            cfg.preprocessor = teacher_cfg.preprocessor
            features = teacher_cfg.preprocessor.get("features", None)
            if features is not None:
                ladder = cfg.get("student_encoders", None)
                students = [cfg.student_encoder, *(ladder.values() if ladder is not None else ())]
                for student in students:
                    if "feat_in" in student:
                        student.feat_in = features
    return cfg


def _adopt_duration_outputs(cfg: DictConfig, teacher_cfg: DictConfig, path: str) -> None:
    """A TDT teacher's joint has duration outputs after blank; the shared joint keeps them, so the student is a TDT
    transducer too and takes the teacher's TDT loss and TDT decoding. Any other teacher leaves the config's own loss
    and decoding as they are."""
    extra = int(teacher_cfg.joint.get("num_extra_outputs", 0) or 0)
    cfg.joint.num_extra_outputs = extra
    if not extra:
        return
    loss = teacher_cfg.get("loss", None)
    loss_name = loss.get("loss_name", None) if loss is not None else None
    if loss_name != "tdt":
        raise ValueError(
            f"model.codert.teacher_nemo: {path} has a joint with {extra} extra outputs and loss {loss_name!r}; of "
            "NeMo's transducers with extra outputs only TDT (loss_name: tdt) can be a teacher (multi-blank cannot)"
        )
    cfg.loss = OmegaConf.create(OmegaConf.to_container(loss, resolve=True))
    # NeMo's TDT configs name the durations in the decoding section too (NeMo writes them there from the loss).
    cfg.decoding.model_type = "tdt"
    cfg.decoding.durations = list(cfg.loss.get("tdt_kwargs", {}).get("durations", []))
    logging.info(f"CoDERT: the teacher {path} is a TDT model: the student shares its TDT joint and loss")


def load_teacher_weights(model: Any, teacher: EncDecRNNTModel, path: str) -> None:
    """Copy the teacher's encoder/decoder/joint into ``model``'s (strict), after checking the vocabulary."""
    difference = vocabulary_difference(model.tokenizer.vocab, teacher.tokenizer.vocab)
    if difference:
        raise ValueError(
            f"model.codert.teacher_nemo: the tokenizer of {path} differs from model.tokenizer ({difference}); "
            "teacher and student must share one vocabulary"
        )
    for name in ("encoder", "decoder", "joint"):
        state: Dict[str, Any] = {
            k: v for k, v in getattr(teacher, name).state_dict().items() if not k.startswith("_loss.")
        }
        getattr(model, name).load_state_dict(state, strict=True)
    _load_ctc_head(model, teacher, path)
    logging.info(f"CoDERT: teacher loaded from {path}")


def _load_ctc_head(model: Any, teacher: EncDecRNNTModel, path: str) -> None:
    """A teacher that trains on (tandem) has an aux_ctc head of its own: it starts as the file's when the file has
    one of the same shape, since a random head's CTC gradient would first pull a trained encoder off course."""
    head = getattr(model, "ctc_decoder", None)
    if head is None:
        return
    theirs = getattr(teacher, "ctc_decoder", None)

    def shapes(module: torch.nn.Module) -> Dict[str, torch.Size]:
        return {k: v.shape for k, v in module.state_dict().items()}

    if theirs is not None and shapes(theirs) == shapes(head):
        head.load_state_dict(theirs.state_dict(), strict=True)
    else:
        logging.warning(f"CoDERT: {path} has no aux CTC head of this shape; the teacher's head starts from scratch")
