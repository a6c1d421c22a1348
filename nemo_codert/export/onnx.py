"""NeMo's own ONNX export of a stock transducer (``encoder-*.onnx``, ``decoder_joint-*.onnx``), of a CoDERT side
through :func:`nemo_codert.export.stock.stock_model`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Union

from nemo.collections.asr.models import EncDecRNNTBPEModel

from nemo_codert.export.stock import ModelOrPath, stock_model
from nemo_codert.models import CodertRNNTBPEModel, load_stock_transducer
from nemo_codert.nemo_file import CODERT_TARGET, read_nemo_config

__all__ = ["export_onnx", "export_onnx_stock"]


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
    if isinstance(model_or_path, EncDecRNNTBPEModel) and not isinstance(model_or_path, CodertRNNTBPEModel):
        return export_onnx_stock(model_or_path, out, name)
    if isinstance(model_or_path, (str, os.PathLike)):
        if read_nemo_config(model_or_path).get("target", None) != CODERT_TARGET:
            return export_onnx_stock(load_stock_transducer(model_or_path), out, name)
    with stock_model(model_or_path, which) as stock:
        return export_onnx_stock(stock, out, name)


def export_onnx_stock(stock, out: Path, name: str) -> List[Path]:
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
