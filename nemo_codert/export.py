"""Export one side of a CoDERT model as a stock NeMo transducer (``.nemo``), optionally as ONNX too.

    python -m nemo_codert.export --nemo CODERT.nemo --which student --out student.nemo [--onnx DIR]

The written ``.nemo`` is NeMo's own ``EncDecRNNTBPEModel``: its config ``target`` is NeMo's class and it holds no
CoDERT keys, so ``nemo.collections.asr.models.ASRModel.restore_from(out)`` loads it wherever NeMo is installed,
without this package. Its config is the CoDERT config with the chosen side's encoder, decoder and joint (the joint
at that side's width), and its weights are that side's, loaded with ``strict=True``: every tensor of the stock model
comes from the side and every tensor of the side lands in it. The tokenizer files travel inside the file as NeMo
artifacts.

Writes are atomic: the ``.nemo`` is saved to a temporary file in the destination directory and renamed over ``out``
when complete, so an interrupted export leaves no partial file and never touches an existing ``out``. ONNX files
are written the same way, one by one.

Python API: :func:`export_side`, :func:`export_onnx`, :func:`stock_model` (the in-memory stock model),
:func:`load_codert` and :func:`read_nemo_config` (validation of a ``.nemo`` file with one clear error).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.asr.models import EncDecRNNTBPEModel
from nemo.utils import model_utils
from nemo.utils.app_state import AppState

from nemo_codert.utils import atomic_path, restore_nemo

__all__ = [
    "CODERT_TARGET",
    "NemoFileError",
    "STOCK_TARGET",
    "export_onnx",
    "export_side",
    "load_codert",
    "load_stock_transducer",
    "read_nemo_config",
    "stock_config",
    "stock_model",
]

#: The ``target`` a CoDERT ``.nemo`` carries, and the one an exported ``.nemo`` carries (NeMo's own class).
CODERT_TARGET = "nemo_codert.models.codert.CodertRNNTBPEModel"
STOCK_TARGET = f"{EncDecRNNTBPEModel.__module__}.{EncDecRNNTBPEModel.__name__}"

SIDES = ("student", "teacher")
_CONFIG_MEMBER = "model_config.yaml"
_WEIGHTS_MEMBER = "model_weights.ckpt"
# Dataset sections are kept in the exported config (as in any NeMo .nemo) but are not set up while exporting: the
# training data need not exist where a model is exported.
_DATA_SECTIONS = ("train_ds", "validation_ds", "test_ds")
_HASHED_ARTIFACT = re.compile(r"^[0-9a-f]{32}_(.+)$")

ModelOrPath = Union["CodertRNNTBPEModel", str, os.PathLike]  # noqa: F821 (imported lazily)


class NemoFileError(ValueError):
    """A ``.nemo`` file that cannot be used: missing, not a tar archive, truncated, or not the expected model."""


# ---------------------------------------------------------------------------------------------------- reading


def _member(names: Sequence[str], wanted: str) -> Optional[str]:
    """The archive member ``wanted`` (NeMo writes ``./model_config.yaml``; older files ``model_config.yaml``)."""
    for name in names:
        if name.lstrip("./") == wanted or name == wanted:
            return name
    return None


def read_nemo_config(path: Union[str, os.PathLike]) -> DictConfig:
    """Validate the ``.nemo`` at ``path`` without building a model and return its ``model_config.yaml``.

    Raises :class:`NemoFileError` (a ``ValueError``; ``FileNotFoundError`` for a missing file) with one message
    naming the file and what is wrong: not a file, not a tar archive, truncated, no config, no weights, unreadable
    config.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise NemoFileError(f"{path}: not a .nemo file (it is a directory or a special file)")
    size = path.stat().st_size
    try:
        # NeMo writes uncompressed tars; files from NeMo < 1.7 are gzipped: "r:*" reads both.
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            config_name = _member(names, _CONFIG_MEMBER)
            if config_name is None:
                raise NemoFileError(
                    f"{path}: not a NeMo model archive: it has no {_CONFIG_MEMBER} (members: {', '.join(names[:8])})"
                )
            if _member(names, _WEIGHTS_MEMBER) is None:
                raise NemoFileError(f"{path}: incomplete NeMo model archive: it has no {_WEIGHTS_MEMBER}")
            if not _is_gzip(path):  # a plain tar (NeMo's format): offsets are file offsets
                for m in members:  # a cut at a member boundary still lists; the data must also be there
                    if m.isfile() and m.offset_data + m.size > size:
                        raise NemoFileError(
                            f"{path}: truncated .nemo file: member {m.name} needs {m.offset_data + m.size} bytes, "
                            f"the file has {size}"
                        )
            text = tar.extractfile(config_name).read().decode("utf-8")
    except NemoFileError:
        raise
    except (tarfile.TarError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error) as e:
        if size == 0:
            raise NemoFileError(f"{path}: not a .nemo file: the file is empty") from e
        if not _looks_like_tar(path):
            raise NemoFileError(f"{path}: not a .nemo file: not a tar archive") from e
        raise NemoFileError(
            f"{path}: truncated or corrupted .nemo file: the tar archive cannot be read ({type(e).__name__}: {e})"
        ) from e
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:  # yaml.YAMLError, OmegaConf's errors
        raise NemoFileError(f"{path}: {_CONFIG_MEMBER} is not a valid YAML model config: {e}") from e
    if not isinstance(cfg, DictConfig):
        raise NemoFileError(f"{path}: {_CONFIG_MEMBER} is not a mapping")
    return cfg


def _looks_like_tar(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return head[:2] == b"\x1f\x8b" or (len(head) >= 262 and head[257:262] == b"ustar")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def load_stock_transducer(path: Union[str, os.PathLike]):
    """A stock NeMo RNN-T ``.nemo`` (any ``EncDecRNNTModel``), restored on the CPU in eval mode; a file that is not
    one is a :class:`NemoFileError` naming it."""
    from nemo.collections.asr.models import ASRModel, EncDecRNNTModel

    target = read_nemo_config(path).get("target", None)
    try:
        model = restore_nemo(ASRModel, path, map_location="cpu")
    except Exception as e:
        raise NemoFileError(f"{path}: could not be restored: {type(e).__name__}: {e}") from e
    if not isinstance(model, EncDecRNNTModel):
        raise NemoFileError(f"{path}: target {target} is not a NeMo RNN-T (transducer) model")
    return model.eval()


def load_codert(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu"):
    """Restore a CoDERT ``.nemo`` after checking it (see :func:`read_nemo_config`); errors name the file."""
    from nemo_codert.models import CodertRNNTBPEModel

    cfg = read_nemo_config(path)
    target = cfg.get("target", None)
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


def _as_codert(model_or_path: ModelOrPath):
    from nemo_codert.models import CodertRNNTBPEModel

    if isinstance(model_or_path, CodertRNNTBPEModel):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load_codert(model_or_path)
    raise TypeError(f"expected a CodertRNNTBPEModel or the path of its .nemo, got {type(model_or_path).__name__}")


def _side(model, which: str):
    if which not in SIDES:
        raise ValueError(f"which must be one of {', '.join(SIDES)}, got {which!r}")
    return model.student if which == "student" else model.teacher  # .teacher raises for student_only


# ---------------------------------------------------------------------------------------------------- config


def stock_config(model, which: str = "student") -> DictConfig:
    """The config of a stock ``EncDecRNNTBPEModel`` equal to side ``which`` of a CoDERT ``model``.

    The CoDERT config without ``codert`` and ``student_encoder``; ``encoder``, ``decoder`` and ``joint`` are the
    side's (each module's own config, as NeMo built it), ``model_defaults.enc_hidden`` the side's encoder width and
    ``target`` NeMo's class. The tokenizer section is the model's, to be pointed at readable files by the caller.
    """
    side = _side(model, which)
    cfg = OmegaConf.to_container(model.cfg, resolve=True)
    for key in ("codert", "student_encoder", "target"):
        cfg.pop(key, None)
    if which == "student" and model.has_teacher:
        encoder_cfg = model.cfg.student_encoder
    else:  # teacher, or a student_only model whose `encoder` is the student
        encoder_cfg = model.cfg.encoder
    cfg["encoder"] = OmegaConf.to_container(encoder_cfg, resolve=True)
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
    cfg["target"] = STOCK_TARGET
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
    """The side's tensors under the stock model's names: encoder, decoder and joint of the side, the rest shared."""
    side = _side(model, which)
    sources = {"encoder": side.encoder, "decoder": side.decoder, "joint": side.joint}
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
    """A stock NeMo ``EncDecRNNTBPEModel`` holding side ``which`` of a CoDERT model (or ``.nemo`` path), in eval mode.

    A context manager: the stock model's tokenizer artifacts are files in a temporary directory that exists until
    the ``with`` block ends, so save it (``save_to``) inside the block.
    """
    model = _as_codert(model_or_path)
    _side(model, which)  # validates `which` before any work
    cfg = stock_config(model, which)
    data = {k: cfg.pop(k) for k in _DATA_SECTIONS if k in cfg}
    with tempfile.TemporaryDirectory(prefix="codert-export-tokenizer-") as tmp:
        files = _copy_tokenizer_files(model, Path(tmp))
        original_dir = cfg.tokenizer.get("dir", None)
        tokenizer = OmegaConf.to_container(cfg.tokenizer, resolve=True)
        tokenizer.update(files)
        tokenizer["dir"] = tmp
        cfg.tokenizer = tokenizer
        stock = EncDecRNNTBPEModel(cfg=cfg)
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
    """Write side ``which`` ('student' or 'teacher') of a CoDERT model as a stock NeMo ``.nemo`` at ``out_path``.

    ``model_or_path`` is a ``CodertRNNTBPEModel`` or the path of its ``.nemo`` (checked first; a bad file is one
    :class:`NemoFileError` naming it). A ``student_only`` model exports its (only) side as 'student'. The file is
    complete or absent: an existing ``out_path`` is replaced only by a complete new file. Returns ``out_path``.
    """
    out = Path(out_path).expanduser().resolve()
    with stock_model(model_or_path, which) as stock, atomic_path(out) as tmp:
        stock.save_to(str(tmp))
    return out


def export_onnx(
    model_or_path: Union[EncDecRNNTBPEModel, ModelOrPath],
    out_dir: Union[str, os.PathLike],
    which: str = "student",
    name: str = "model.onnx",
) -> List[Path]:
    """NeMo's own ONNX export of a stock transducer: ``encoder-<name>`` and ``decoder_joint-<name>`` in ``out_dir``.

    ``model_or_path`` is a stock NeMo RNN-T model, a CoDERT model or ``.nemo`` (side ``which`` is exported, via
    :func:`stock_model`), or the path of a stock NeMo RNN-T ``.nemo``. Each file is written to a temporary name and
    renamed into place. Returns the written paths.
    """
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model_or_path, EncDecRNNTBPEModel) and not _is_codert(model_or_path):
        return _export_onnx_stock(model_or_path, out, name)
    if isinstance(model_or_path, (str, os.PathLike)):
        if read_nemo_config(model_or_path).get("target", None) != CODERT_TARGET:
            return _export_onnx_stock(load_stock_transducer(model_or_path), out, name)
    with stock_model(model_or_path, which) as stock:
        return _export_onnx_stock(stock, out, name)


def _is_codert(model) -> bool:
    return type(model).__module__.startswith("nemo_codert.")


def _export_onnx_stock(stock, out: Path, name: str) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stock.eval()
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=out) as tmp:
        stock.export(os.path.join(tmp, name))
        written = sorted(Path(tmp).glob("*.onnx"))
        if not written:
            raise RuntimeError(f"NeMo's export wrote no .onnx file for {type(stock).__name__}")
        final = []
        for path in written:
            os.replace(path, out / path.name)
            final.append(out / path.name)
    return final


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_codert.export",
        description="Export the student (or teacher) of a CoDERT .nemo as a stock NeMo EncDecRNNTBPEModel .nemo.",
    )
    parser.add_argument("--nemo", required=True, help="the CoDERT .nemo (CodertRNNTBPEModel)")
    parser.add_argument("--which", choices=SIDES, default="student", help="side to export (default: student)")
    parser.add_argument("--out", required=True, help="the stock .nemo to write (replaced atomically)")
    parser.add_argument("--onnx", metavar="DIR", help="also write NeMo's ONNX export (encoder + decoder_joint) here")
    args = parser.parse_args(argv)

    try:
        model = load_codert(args.nemo)
        with stock_model(model, args.which) as stock:
            out = Path(args.out).expanduser().resolve()
            with atomic_path(out) as tmp:
                stock.save_to(str(tmp))
            print(f"{args.which} of {args.nemo} -> {out} ({STOCK_TARGET})")
            if args.onnx:
                for path in _export_onnx_stock(stock, Path(args.onnx).expanduser().resolve(), "model.onnx"):
                    print(f"onnx -> {path}")
    except (NemoFileError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
