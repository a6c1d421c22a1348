"""Training step time and memory of the paper-table systems on one CUDA GPU (NeMo's numba-CUDA RNN-T loss).

    python benchmarks/train_step_gpu.py [--steps 30] [--batch-size 8 32] [--out benchmarks/results/train_step_gpu.md]

The systems and their configs are those of ``benchmarks/paper_table.py`` (``conf/codert_small.yaml``); the data a
small clean corpus from the offline synthesiser. Each system: a fresh model, 5 warm-up steps, then ``--steps``
timed Lightning steps (CUDA synchronised at both ends of each step; data loading is outside the timed span), median
reported, and the peak of ``torch.cuda.max_memory_allocated``. The step's RNN-T loss is NeMo's numba-CUDA kernel
(CUDA tensors always go there); the check that it is, and that the loss has a gradient, is part of the run. Needs a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import paper_table as pt  # benchmarks/paper_table.py: systems, configs, the step recorder
from common import git_commit

WARMUP = 5
SYSTEMS = ("student_only", "teacher_only", "tandem_implicit", "codert", "codert_own_decoder")


def time_system(name: str, corpus_dir: Path, steps: int, batch_size: int) -> dict:
    import lightning.pytorch as pl

    from nemo_codert.models import CodertRNNTBPEModel
    from nemo_codert.utils import quiet_trainer

    settings = pt.replace(
        pt.PRESETS["quick"],
        steps=WARMUP + steps,
        val_every=WARMUP + steps,
        overrides=[f"model.train_ds.batch_size={batch_size}"],
    )
    cfg = pt.system_config(settings, pt.BY_NAME[name], 0, corpus_dir, None)
    pl.seed_everything(0)
    recorder = pt._Recorder()
    trainer = quiet_trainer(
        accelerator="gpu",
        max_steps=WARMUP + steps,
        limit_val_batches=0,
        callbacks=[recorder.hooks()],
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )
    model = CodertRNNTBPEModel(cfg=cfg.model, trainer=trainer)
    torch.cuda.reset_peak_memory_stats()
    trainer.fit(model)
    return {
        "system": name,
        "batch": batch_size,
        "step_s": statistics.median(recorder.step_seconds[WARMUP:]),
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def check_cuda_loss(corpus_dir: Path) -> str:
    """One CoDERT loss on the GPU: finite, with gradients in both encoders, computed by NeMo's numba-CUDA kernel."""
    from nemo_codert.losses.rnnt_cpu import RNNTLossNumba  # NeMo's numba kernel module, as our loss imports it
    from nemo_codert.models import CodertRNNTBPEModel

    settings = pt.PRESETS["quick"]
    cfg = pt.system_config(settings, pt.BY_NAME["codert"], 0, corpus_dir, None)
    model = CodertRNNTBPEModel(cfg=cfg.model).cuda().train()
    called = []
    original = RNNTLossNumba.forward
    RNNTLossNumba.forward = lambda self, acts, *a: called.append(acts.is_cuda) or original(self, acts, *a)
    try:
        batch = [x.cuda() for x in next(iter(model._train_dl))]
        out = model.codert_losses(*batch)
        out["loss"].backward()
    finally:
        RNNTLossNumba.forward = original
    grads = {
        n: p.grad is not None and bool(torch.isfinite(p.grad).all())
        for n, p in model.named_parameters()
        if n.startswith(("encoder.", "student_encoder.")) and p.requires_grad
    }
    assert called and all(called), f"NeMo's numba RNN-T kernel was not called on CUDA tensors: {called}"
    assert torch.isfinite(out["loss"]) and all(grads.values()), "non-finite loss or missing encoder gradients"
    return (
        f"loss {out['loss'].item():.3f} (rnnt student {out['rnnt_student'].item():.3f}, teacher "
        f"{out['rnnt_teacher'].item():.3f}, kd {out['kd'].item():.4f}); NeMo's RNNTLossNumba ran {len(called)}x on "
        f"CUDA tensors; {len(grads)} encoder parameters with finite gradients"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--work-dir", type=Path, default=Path("data/train_step_gpu"))
    parser.add_argument("--out", type=Path, default=pt.REPO / "benchmarks" / "results" / "train_step_gpu.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("train_step_gpu.py needs a CUDA GPU")
    from nemo_codert.data.synth import build_corpus

    corpus = build_corpus(
        args.work_dir / "corpus",
        hours=0.2,
        dev_hours=0.01,
        test_hours=0.01,
        seed=0,
        vocab_size=128,
        num_workers=os.cpu_count() or 1,
    )
    check = check_cuda_loss(corpus.root)
    rows = [time_system(n, corpus.root, args.steps, b) for b in args.batch_size for n in SYSTEMS]
    by = {(r["system"], r["batch"]): r for r in rows}
    lines = [
        "# Training step on one GPU (codert_small systems)",
        "",
        f"- command: `python benchmarks/train_step_gpu.py --steps {args.steps} --batch-size "
        f"{' '.join(map(str, args.batch_size))}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {git_commit()}",
        f"- machine: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{os.cpu_count()} CPUs",
        f"- CUDA loss check: {check}",
        f"- {WARMUP} warm-up steps, median of {args.steps} timed steps, fp32, clean 0.2 h corpus",
        "",
        "| system | batch | median step (ms) | peak GPU memory (MiB) |",
        "|---|---:|---:|---:|",
        *[f"| {r['system']} | {r['batch']} | {1000 * r['step_s']:.1f} | {r['peak_mib']:.0f} |" for r in rows],
        "",
    ]
    for b in args.batch_size:
        alone = by[("student_only", b)]["step_s"] + by[("teacher_only", b)]["step_s"]
        lines.append(
            f"- batch {b}: CoDERT step / (student-only + teacher-only) = " f"{by[('codert', b)]['step_s'] / alone:.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"total {time.time() - started:.0f} s")
