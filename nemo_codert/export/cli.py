"""``python -m nemo_codert.export``: a side of a CoDERT ``.nemo`` as a stock NeMo ``.nemo`` (and ONNX)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from nemo_codert.export.onnx import export_onnx_stock
from nemo_codert.export.stock import SIDES, stock_model
from nemo_codert.models import load_codert
from nemo_codert.nemo_file import NemoFileError
from nemo_codert.utils import atomic_path

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_codert.export",
        description="Export the student (or teacher) of a CoDERT .nemo as a stock NeMo .nemo (EncDecRNNTBPEModel, or "
        "EncDecHybridRNNTCTCBPEModel with an aux_ctc head).",
    )
    parser.add_argument("--nemo", required=True, help="the CoDERT .nemo (CodertRNNTBPEModel)")
    parser.add_argument(
        "--which",
        default="student",
        help=f"side to export: {' or '.join(SIDES)} (default: student, the primary student), or student:NAME for a "
        "student of model.student_encoders",
    )
    parser.add_argument("--out", required=True, help="the stock .nemo to write (replaced atomically)")
    parser.add_argument("--onnx", metavar="DIR", help="also write NeMo's ONNX export (encoder + decoder_joint) here")
    args = parser.parse_args(argv)

    try:
        model = load_codert(args.nemo)
        with stock_model(model, args.which) as stock:
            out = Path(args.out).expanduser().resolve()
            with atomic_path(out) as tmp:
                stock.save_to(str(tmp))
            print(f"{args.which} of {args.nemo} -> {out} ({stock.cfg.target})")
            if args.onnx:
                for path in export_onnx_stock(stock, Path(args.onnx).expanduser().resolve(), "model.onnx"):
                    print(f"onnx -> {path}")
    except (NemoFileError, FileNotFoundError, ValueError) as e:  # --which is checked against the model
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
