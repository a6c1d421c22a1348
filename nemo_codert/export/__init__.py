"""Export one side of a CoDERT model as a stock NeMo transducer (``.nemo``), optionally as ONNX too.

    python -m nemo_codert.export --nemo CODERT.nemo --which student --out student.nemo [--onnx DIR]

The written ``.nemo`` is NeMo's own ``EncDecRNNTBPEModel`` (``EncDecHybridRNNTCTCBPEModel`` for a side trained with
an ``aux_ctc`` head, which it keeps: NeMo's hybrid model decodes with the transducer by default and with the head
after ``change_decoding_strategy(decoder_type="ctc")``): its config ``target`` is NeMo's class and it holds no
CoDERT keys, so ``nemo.collections.asr.models.ASRModel.restore_from(out)`` loads it wherever NeMo is installed,
without this package. Its config is the CoDERT config with the chosen side's encoder, decoder and joint (the joint
at that side's width), and its weights are that side's, loaded with ``strict=True``: every tensor of the stock model
comes from the side and every tensor of the side lands in it. The tokenizer files travel inside the file as NeMo
artifacts.

Writes are atomic: the ``.nemo`` is saved to a temporary file in the destination directory and renamed over ``out``
when complete, so an interrupted export leaves no partial file and never touches an existing ``out``. ONNX files
are written the same way, one by one.

Python API: :func:`export_side`, :func:`export_onnx`, :func:`stock_model` (the in-memory stock model). Modules:
``stock`` (side -> stock config, weights, tokenizer), ``onnx``, ``cli``. Loading and checking ``.nemo`` files is
``nemo_codert.models.loading`` and ``nemo_codert.nemo_file``, re-exported here for convenience.
"""

from nemo_codert.export.cli import main
from nemo_codert.export.onnx import export_onnx
from nemo_codert.export.stock import SIDES, export_side, stock_config, stock_model
from nemo_codert.models import load_codert, load_stock_transducer
from nemo_codert.nemo_file import CODERT_TARGET, HYBRID_TARGET, STOCK_TARGET, NemoFileError, read_nemo_config

__all__ = [
    "CODERT_TARGET",
    "HYBRID_TARGET",
    "NemoFileError",
    "SIDES",
    "STOCK_TARGET",
    "export_onnx",
    "export_side",
    "load_codert",
    "load_stock_transducer",
    "main",
    "read_nemo_config",
    "stock_config",
    "stock_model",
]
