"""Benchmark: the cost of the TDT loss on CPU (``nemo_codert.losses.tdt_cpu`` through ``CpuRNNTLoss``) next to the
RNN-T loss of the same joint, and NeMo's own TDT reference (``TDTLossPytorch``) where it can be run at all.

NeMo 3.0 has no CPU TDT loss: its numba kernel raises on CPU tensors and its pure-PyTorch reference moves the lattice
to CUDA. The reference is timed here with that move made the identity (the same trick the tests use to compare
against it), on the smallest size only: it loops over every (b, t, u, duration) in Python. One timing is one forward
+ backward of the loss module (``reduction='mean_batch'``) w.r.t. a float32 joint of B x T x U x (V + D), durations
[0, 1, 2, 3, 4] (NeMo's TDT recipe), full lengths; the RNN-T column times the vectorised RNN-T loss of the token/blank
part (B x T x U x V) of the same joint. Medians; each block waits for an idle machine (``rnnt_loss_cpu``'s helpers).

Usage:  python benchmarks/tdt_loss_cpu.py [--sizes 8x75x26x129 ...] [--repeats 11]
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path
from typing import List, Optional

import torch
from rnnt_loss_cpu import loss_step, make_inputs, median_time, wait_until_idle  # benchmarks/rnnt_loss_cpu.py

from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss

from common import machine_description, typed_command  # benchmarks/common.py

DURATIONS = [0, 1, 2, 3, 4]
DEFAULT_SIZES = ["8x75x26x129", "16x75x26x129", "8x150x40x257"]
REFERENCE_SIZE = "2x20x8x33"  # NeMo's Python-loop reference: small enough to finish


def _tdt_loss(v: int) -> CpuRNNTLoss:
    kwargs = {"durations": DURATIONS, "sigma": 0.02, "omega": 0.0, "fastemit_lambda": 0.0, "clamp": -1.0}
    return CpuRNNTLoss(num_classes=v - 1, loss_name="tdt", loss_kwargs=kwargs, reduction="mean_batch")


def _reference_step(acts, targets, act_lens, label_lens, blank: int):
    loss = TDTLossPytorch(blank=blank, durations=DURATIONS, reduction="mean_batch", sigma=0.02)

    def step() -> float:
        cuda, torch.Tensor.cuda = torch.Tensor.cuda, lambda self, *a, **k: self
        try:
            x = acts.detach().requires_grad_(True)
            value = loss(acts=x, labels=targets, act_lens=act_lens, label_lens=label_lens)
            value.backward()
        finally:
            torch.Tensor.cuda = cuda
        return float(value.detach())

    return step


def _time_size(size: str, repeats: int, reference: bool) -> str:
    b, t, u, v = map(int, size.split("x"))
    acts, targets, act_lens, label_lens = make_inputs(b, t, u, v + len(DURATIONS))
    targets = targets.clamp(max=v - 2)  # token ids of the V - 1 tokens (the joint's last D outputs are durations)
    idle = wait_until_idle()
    tdt_t, tdt_val = median_time(loss_step(_tdt_loss(v), acts, targets, act_lens, label_lens), repeats, warmup=2)
    rnnt_acts = acts[..., :v].contiguous()
    rnnt = CpuRNNTLoss(num_classes=v - 1, reduction="mean_batch")
    rnnt_t, _ = median_time(loss_step(rnnt, rnnt_acts, targets, act_lens, label_lens), repeats, warmup=2)
    ref_cell = diff_cell = "-"
    if reference:
        ref_t, ref_val = median_time(_reference_step(acts, targets, act_lens, label_lens, v - 1), 1, warmup=0)
        ref_cell = f"{ref_t:.2f}"
        diff_cell = f"{abs(tdt_val - ref_val) / abs(ref_val):.1e}"
    flag = "" if idle else " (busy machine)"
    return (
        f"| {size.replace('x', ' x ')} + {len(DURATIONS)}{flag} | {tdt_t:.4f} | {rnnt_t:.4f} | {tdt_t / rnnt_t:.1f}x "
        f"| {ref_cell} | {diff_cell} |"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="BxTxUxV, V = tokens + blank")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().parent / "results" / "tdt_loss_cpu.md"), help="markdown file"
    )
    args = parser.parse_args(argv)
    header = (
        "| B x T x U x V + D | TDT, ours (s) | RNN-T of V, ours (s) | TDT / RNN-T | NeMo reference (s) | rel. diff |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|"]
    print(header)
    for size, reference in [(REFERENCE_SIZE, True)] + [(s, False) for s in args.sizes]:
        rows.append(_time_size(size, args.repeats, reference))
        print(rows[-1], flush=True)

    import nemo

    text = [
        "# TDT loss on CPU: cost next to the RNN-T loss, and NeMo's reference",
        "",
        f"- command: `{typed_command('tdt_loss_cpu.py', argv)}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine_description()}",
        f"- torch {torch.__version__} (threads: {torch.get_num_threads()}), NeMo {nemo.__version__}, "
        f"Python {platform.python_version()}",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        *rows,
        "",
    ]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
