"""One side of a CoDERT model as a stock NeMo ``EncDecRNNTBPEModel`` (or, for a side with an ``aux_ctc`` head,
NeMo's hybrid ``EncDecHybridRNNTCTCBPEModel``): the one place that knows how a side becomes a stock config, state
dict and tokenizer.

The stock model's config is the CoDERT config with the chosen side's encoder, decoder and joint (the joint at that
side's width), its CTC head as ``aux_ctc.decoder`` where it has one, and NeMo's ``target``; its weights are the
side's, loaded with ``strict=True``: every tensor of the stock model comes from the side and every tensor of the side
lands in it. The tokenizer files travel inside the
written ``.nemo`` as NeMo artifacts. Writes are atomic (``nemo_codert.utils.atomic_path``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.asr.models import EncDecRNNTBPEModel
from nemo.utils import model_utils
from nemo.utils.app_state import AppState

from nemo_codert.models import CodertRNNTBPEModel, load_codert
from nemo_codert.nemo_file import HYBRID_TARGET, STOCK_TARGET, NemoFileError
from nemo_codert.utils import atomic_path

__all__ = ["SIDES", "export_side", "stock_config", "stock_model"]

#: The sides any CoDERT model has; a student of several (``model.student_encoders``) is also ``student:NAME``.
SIDES = ("student", "teacher")
_STUDENT_PREFIX = "student:"
# Dataset sections are kept in the exported config (as in any NeMo .nemo) but are not set up while exporting: the
# training data need not exist where a model is exported.
_DATA_SECTIONS = ("train_ds", "validation_ds", "test_ds")
_HASHED_ARTIFACT = re.compile(r"^[0-9a-f]{32}_(.+)$")

ModelOrPath = Union[CodertRNNTBPEModel, str, os.PathLike]


def _as_codert(model_or_path: ModelOrPath) -> CodertRNNTBPEModel:
    if isinstance(model_or_path, CodertRNNTBPEModel):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load_codert(model_or_path)
    raise TypeError(f"expected a CodertRNNTBPEModel or the path of its .nemo, got {type(model_or_path).__name__}")


def _side_name(model, which: str) -> str:
    """The model's name of side ``which`` ('student', 'teacher' or 'student:NAME'), checked."""
    if which.startswith(_STUDENT_PREFIX):
        name = which[len(_STUDENT_PREFIX) :]
        if name not in model.student_names:
            raise ValueError(f"which: {which!r} names no student of this model (its students: {model.student_names})")
        return name
    if which not in SIDES:
        raise ValueError(f"which must be one of {', '.join(SIDES)} or student:NAME, got {which!r}")
    return which


# ---------------------------------------------------------------------------------------------------- config


def stock_config(model, which: str = "student") -> DictConfig:
    """The config of a stock NeMo model equal to side ``which`` of a CoDERT ``model``.

    The CoDERT config without ``codert``, ``student_encoder(s)`` and ``optim_param_groups``; ``encoder``,
    ``decoder`` and ``joint`` are the side's (each module's own config, as NeMo built it),
    ``model_defaults.enc_hidden`` the side's encoder width and ``target`` NeMo's class: ``EncDecRNNTBPEModel``, or
    ``EncDecHybridRNNTCTCBPEModel`` with ``aux_ctc.decoder`` the side's CTC head where it has one (a side without one
    drops the section). The tokenizer section is the model's, to be pointed at readable files by the caller.
    """
    name = _side_name(model, which)
    side = model.side(name)  # .teacher raises for student_only
    cfg = OmegaConf.to_container(model.cfg, resolve=True)
    # optim_param_groups too: its groups name CoDERT's modules (student_encoder, the teacher's encoder), which a
    # stock model fine-tuned from this file would not have, or would read as another module.
    for key in ("codert", "student_encoder", "student_encoders", "target", "optim_param_groups"):
        cfg.pop(key, None)
    aux_ctc = cfg.pop("aux_ctc", None)
    if side.ctc_decoder is not None:
        cfg["aux_ctc"] = {
            **aux_ctc,
            "decoder": OmegaConf.to_container(side.ctc_decoder.to_config_dict(), resolve=True),
        }
    cfg["encoder"] = OmegaConf.to_container(model.encoder_config(name), resolve=True)
    cfg["decoder"] = OmegaConf.to_container(side.decoder.to_config_dict(), resolve=True)
    cfg["joint"] = OmegaConf.to_container(side.joint.to_config_dict(), resolve=True)
    width = int(side.encoder._feat_out)
    if cfg["joint"]["jointnet"].get("encoder_hidden") != width:
        raise RuntimeError(
            f"{which} joint expects encoder width {cfg['joint']['jointnet'].get('encoder_hidden')}, its encoder "
            f"emits {width}"
        )
    cfg.setdefault("model_defaults", {})
    cfg["model_defaults"]["enc_hidden"] = width
    cfg["model_defaults"]["pred_hidden"] = cfg["joint"]["jointnet"]["pred_hidden"]
    cfg["target"] = STOCK_TARGET if side.ctc_decoder is None else HYBRID_TARGET
    return OmegaConf.create(cfg)


def _restoration_path(model) -> Optional[str]:
    return AppState().get_model_metadata_from_guid(model.model_guid).restoration_path


def _copy_tokenizer_files(model, directory: Path) -> Dict[str, str]:
    """Write the model's tokenizer artifacts into ``directory``; returns ``{tokenizer cfg key: file path}``.

    A freshly built model's artifacts are local files; a restored model's live inside the ``.nemo`` it came from
    (NeMo deletes its extraction directory after restoring), so they are read from that archive.
    (NeMo's ``save_tokenizers`` would do this but fails when ``tokenizer.dir`` exists: it copies the directory.)
    """
    artifacts = {k: v for k, v in (getattr(model, "artifacts", None) or {}).items() if k.startswith("tokenizer.")}
    if model.cfg.tokenizer.get("type", "").lower() == "agg":
        raise NotImplementedError("aggregate (multi-language) tokenizers are not supported by the CoDERT export")
    if not artifacts:
        raise RuntimeError("the model has no registered tokenizer artifacts to export")
    out: Dict[str, str] = {}
    archived: Dict[str, str] = {}  # cfg key -> member basename in the restoration .nemo
    for key, item in artifacts.items():
        cfg_key = key[len("tokenizer.") :]
        if item.path_type == model_utils.ArtifactPathType.LOCAL_PATH:
            if not os.path.isfile(item.path):
                raise FileNotFoundError(f"tokenizer artifact {key}: {item.path} does not exist")
            dst = directory / os.path.basename(item.path)
            shutil.copyfile(item.path, dst)
            out[cfg_key] = str(dst)
        else:
            archived[cfg_key] = item.path.split("nemo:", 1)[1]
    if archived:
        source = _restoration_path(model)
        if source is None or not os.path.isfile(source):
            raise FileNotFoundError(
                f"the model's tokenizer files live in the .nemo it was restored from ({source}), which is not readable"
            )
        with tarfile.open(source, "r:*") as tar:
            by_name = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for cfg_key, name in archived.items():
                if name not in by_name:
                    raise NemoFileError(f"{source}: tokenizer artifact {name} is missing from the archive")
                match = _HASHED_ARTIFACT.match(name)
                dst = directory / (match.group(1) if match else name)
                with tar.extractfile(by_name[name]) as src, open(dst, "wb") as f:
                    shutil.copyfileobj(src, f)
                out[cfg_key] = str(dst)
    return out


# ---------------------------------------------------------------------------------------------------- model


def _side_state_dict(model, which: str, stock: EncDecRNNTBPEModel) -> Dict[str, torch.Tensor]:
    """The side's tensors under the stock model's names: encoder, decoder, joint (and CTC head) of the side, the rest
    shared."""
    side = model.side(_side_name(model, which))
    sources = {"encoder": side.encoder, "decoder": side.decoder, "joint": side.joint, "ctc_decoder": side.ctc_decoder}
    state: Dict[str, torch.Tensor] = {}
    for name, _ in stock.named_children():
        source = sources.get(name, getattr(model, name, None))
        if source is None:
            continue
        for key, value in source.state_dict().items():
            # NeMo hands the joint its loss and WER modules when fusing; they are not weights of the transducer.
            if name == "joint" and key.startswith(("_loss.", "_wer.")):
                continue
            state[f"{name}.{key}"] = value
    return state


@contextlib.contextmanager
def stock_model(model_or_path: ModelOrPath, which: str = "student") -> Iterator[EncDecRNNTBPEModel]:
    """A stock NeMo ``EncDecRNNTBPEModel`` (hybrid for a side with a CTC head: a subclass) holding side ``which`` of
    a CoDERT model (or ``.nemo`` path), in eval mode.

    A context manager: the stock model's tokenizer artifacts are files in a temporary directory that exists until
    the ``with`` block ends, so save it (``save_to``) inside the block.
    """
    model = _as_codert(model_or_path)
    cfg = stock_config(model, which)  # validates `which` before any work
    data = {k: cfg.pop(k) for k in _DATA_SECTIONS if k in cfg}
    with tempfile.TemporaryDirectory(prefix="codert-export-tokenizer-") as tmp:
        files = _copy_tokenizer_files(model, Path(tmp))
        original_dir = cfg.tokenizer.get("dir", None)
        tokenizer = OmegaConf.to_container(cfg.tokenizer, resolve=True)
        tokenizer.update(files)
        tokenizer["dir"] = tmp
        cfg.tokenizer = tokenizer
        stock = model_utils.import_class_by_path(cfg.target)(cfg=cfg)
        stock.load_state_dict(_side_state_dict(model, which, stock), strict=True)
        # The config read back from the .nemo: the original tokenizer dir (informational; the files are
        # artifacts) and the dataset sections, as any NeMo model keeps them.
        with open_dict(stock.cfg):
            stock.cfg.tokenizer.dir = original_dir
            for key, value in data.items():
                stock.cfg[key] = value
        stock.to(next(model.parameters()).device)
        stock.eval()
        yield stock


def export_side(
    model_or_path: ModelOrPath,
    which: str = "student",
    out_path: Union[str, os.PathLike] = "student.nemo",
) -> Path:
    """Write side ``which`` ('student', 'teacher' or 'student:NAME') of a CoDERT model as a stock NeMo ``.nemo`` at
    ``out_path``.

    ``model_or_path`` is a ``CodertRNNTBPEModel`` or the path of its ``.nemo`` (checked first; a bad file is one
    :class:`NemoFileError` naming it). A ``student_only`` model exports its (only) side as 'student'. The file is
    complete or absent: an existing ``out_path`` is replaced only by a complete new file. Returns ``out_path``.
    """
    out = Path(out_path).expanduser().resolve()
    with stock_model(model_or_path, which) as stock, atomic_path(out) as tmp:
        stock.save_to(str(tmp))
    return out
