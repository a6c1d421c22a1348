"""Reading a ``.nemo`` file without building a model: one clear error for a file that is not a usable archive.

The bottom layer of the package (next to ``utils``): the loaders (``nemo_codert.models.loading``), the export and
the evaluation all check a file through :func:`read_nemo_config` first.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf

from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel

__all__ = ["CODERT_TARGET", "HYBRID_TARGET", "NemoFileError", "STOCK_TARGET", "read_nemo_config"]

#: The ``target`` a CoDERT ``.nemo`` carries, and the ones an exported ``.nemo`` carries (NeMo's own classes): a
#: transducer, or a hybrid RNN-T/CTC model for a side with an ``aux_ctc`` head.
CODERT_TARGET = "nemo_codert.models.codert.CodertRNNTBPEModel"
STOCK_TARGET = f"{EncDecRNNTBPEModel.__module__}.{EncDecRNNTBPEModel.__name__}"
HYBRID_TARGET = f"{EncDecHybridRNNTCTCBPEModel.__module__}.{EncDecHybridRNNTCTCBPEModel.__name__}"

_CONFIG_MEMBER = "model_config.yaml"
_WEIGHTS_MEMBER = "model_weights.ckpt"


class NemoFileError(ValueError):
    """A ``.nemo`` file that cannot be used: missing, not a tar archive, truncated, or not the expected model."""


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
