"""A paper-scale config at full size: median step time, peak memory and a falling loss for tandem, teacher-only and
student-only training, on the LibriSpeech path end to end.

    python benchmarks/scale_check.py --accelerator gpu --steps 200            # the GPU check (bf16, fused joint)
    python benchmarks/scale_check.py --steps 3 --batch-duration 20            # the same on the CPU (fp32), slowly
    python benchmarks/scale_check.py --shrink --steps 2 --hours 0.02          # a smoke run (encoders shrunk)

Data: the embedded corpus (built once in ``--work-dir``), written as a LibriSpeech-shaped tree
(``nemo_codert.data.librispeech_like``) and prepared as ``examples/prepare_librispeech.py`` prepares LibriSpeech; the
config (default ``codert_fastconformer``) reads it through NeMo's lhotse dataloader, ``--batch-duration`` seconds of
audio per batch. Systems: ``tandem`` (the config as it is), ``teacher_only`` (the teacher architecture alone: what
a user trains today) and ``student_only``. Each runs in a process of its own, one at a time, so its peak is its own:
``torch.cuda.max_memory_allocated`` on a GPU, the process's peak resident set (VmHWM, reset when training starts) on
the CPU. The step time is the median after ``WARMUP`` steps; "loss falls" compares the mean training loss of the last
quarter of the steps with the first quarter's. Writes ``scale_check_<accelerator>.{md,json}`` to ``--results-dir``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import paper_table as pt  # benchmarks/paper_table.py: the step recorder
from common import REPO, compose, git_commit, machine_description, typed_command

SYSTEMS = ("tandem", "teacher_only", "student_only")
WARMUP = 3
# Hydra overrides that shrink both encoders and the decoder/joint of the scale configs to test size.
SHRINK = (
    "model.encoder.n_layers=1",
    "model.encoder.d_model=48",
    "model.encoder.n_heads=2",
    "model.encoder.subsampling_conv_channels=16",
    "model.student_encoder.n_layers=1",
    "model.student_encoder.d_model=24",
    "model.student_encoder.n_heads=2",
    "model.student_encoder.subsampling_conv_channels=8",
    "model.model_defaults.pred_hidden=32",
    "model.model_defaults.joint_hidden=32",
)


def system_model_config(config: str, system: str, overrides: Sequence[str]):
    """The model config of one system: the config's tandem pair, or one of its encoders trained alone."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose(config, overrides)
    with open_dict(cfg):
        if system != "tandem":
            cfg.model.codert.mode = "student_only"
        if system == "teacher_only":
            cfg.model.student_encoder = cfg.model.encoder
    OmegaConf.resolve(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ worker (one process)


def run_worker(spec_path: Path) -> None:
    import lightning.pytorch as pl
    import torch

    from nemo_codert.models import CodertRNNTBPEModel
    from nemo_codert.utils import flush_denormals, quiet_trainer, write_json_atomic

    flush_denormals()
    spec = json.loads(spec_path.read_text())
    gpu = spec["accelerator"] == "gpu"
    cfg = system_model_config(spec["config"], spec["system"], spec["overrides"])
    pl.seed_everything(0)
    recorder, losses = pt._Recorder(), []

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = quiet_trainer(
        accelerator=spec["accelerator"],
        precision=cfg.trainer.precision if gpu else 32,
        max_steps=spec["steps"],
        limit_val_batches=0,
        callbacks=[recorder.hooks(), Losses()],
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )
    model = CodertRNNTBPEModel(cfg=cfg.model, trainer=trainer)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model)
    quarter = max(1, len(losses) // 4)
    first, last = statistics.mean(losses[:quarter]), statistics.mean(losses[-quarter:])
    peak = torch.cuda.max_memory_allocated() if gpu else pt._rss_bytes("VmHWM")
    write_json_atomic(
        {
            "system": spec["system"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "steps": len(recorder.step_seconds),
            "step_seconds": statistics.median(recorder.step_seconds[WARMUP:] or recorder.step_seconds),
            "peak_bytes": peak,
            "peak_kind": "torch.cuda.max_memory_allocated" if gpu else "peak RSS (VmHWM) during training",
            "loss_first_quarter": first,
            "loss_last_quarter": last,
            "loss_falls": last < first,
        },
        spec["out"],
    )


# ------------------------------------------------------------------------------------------ main


def prepare_data(work: Path, hours: float, vocab_size: int) -> Path:
    """The embedded corpus as prepared LibriSpeech; returns the prepared directory (reused when it exists)."""
    from nemo_codert.data.librispeech import prepare_librispeech
    from nemo_codert.data.librispeech_like import write_librispeech_like
    from nemo_codert.data.synth import build_corpus

    corpus = build_corpus(work / "corpus", hours=hours, dev_hours=0.02, test_hours=0.02, vocab_size=vocab_size)
    write_librispeech_like(corpus.root, work / "tree")
    return prepare_librispeech(work / "tree", work / "prepared", vocab_size=vocab_size).out


def _report(summary: Dict, rows: List[Dict]) -> str:
    lines = [
        f"# {summary['config']} at {'test size (--shrink)' if summary['shrink'] else 'full size'}: step time, "
        "peak memory, a falling loss",
        "",
        f"- command: `{summary['command']}`",
        f"- date: {summary['date']}, commit {summary['commit']}",
        f"- machine: {summary['machine']}; accelerator {summary['accelerator']}, precision {summary['precision']}",
        f"- data: the embedded corpus ({summary['hours']} h) as prepared LibriSpeech, lhotse batches of "
        f"{summary['batch_duration']} s of audio; {summary['steps']} steps per system, median step after {WARMUP}",
        "",
        "| system | trained parameters | median step (s) | peak memory (GiB) | loss, first / last quarter | falls |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['parameters']:,} | {r['step_seconds']:.3f} | {r['peak_bytes'] / 2**30:.2f} | "
            f"{r['loss_first_quarter']:.1f} / {r['loss_last_quarter']:.1f} | {'yes' if r['loss_falls'] else 'no'} |"
        )
    lines += ["", f"Peak memory is {rows[0]['peak_kind']}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="codert_fastconformer")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-duration", type=float, default=600.0, help="seconds of audio per batch")
    parser.add_argument("--hours", type=float, default=0.5, help="train hours of the embedded corpus")
    parser.add_argument("--vocab-size", type=int, default=128)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--shrink", action="store_true", help="encoders and decoder/joint at test size")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "scale_check")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0

    from nemo_codert.utils import write_json_atomic

    work = args.work_dir.resolve()
    prepared = prepare_data(work, args.hours, args.vocab_size)
    overrides = [
        f"librispeech.dir={prepared}",
        "librispeech.train_part=train-clean-5",
        "librispeech.dev_part=dev-clean-2",
        "librispeech.test_part=dev-clean-2",
        f"librispeech.vocab_size={args.vocab_size}",
        f"model.train_ds.batch_duration={args.batch_duration}",
        "model.train_ds.num_buckets=4",
        "model.train_ds.bucket_buffer_size=2000",
        "model.train_ds.shuffle_buffer_size=2000",
        "model.train_ds.num_workers=2",
        "model.optim.sched.warmup_steps=" + str(max(1, args.steps // 4)),  # a check of 200 steps, not 15k warm-up
        *(SHRINK if args.shrink else ()),
        *args.overrides,
    ]
    rows = []
    for system in args.systems:
        spec = {
            "config": args.config,
            "system": system,
            "accelerator": args.accelerator,
            "steps": args.steps,
            "overrides": overrides,
            "out": str(work / "results" / f"{system}.json"),
        }
        spec_path = work / "results" / f"{system}.spec.json"
        write_json_atomic(spec, spec_path)
        started = time.time()
        log = work / "results" / f"{system}.log"
        with open(log, "w") as f:
            done = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], stdout=f, stderr=f)
        if done.returncode != 0:
            raise SystemExit(f"{system} failed (exit {done.returncode}); see {log}")
        rows.append(json.loads(Path(spec["out"]).read_text()))
        print(f"{system}: {time.time() - started:.0f} s", flush=True)

    precision = compose(args.config, overrides).trainer.precision if args.accelerator == "gpu" else 32
    summary = {
        "command": typed_command("scale_check.py", argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_description(),
        "config": args.config,
        "shrink": args.shrink,
        "accelerator": args.accelerator,
        "precision": str(precision),
        "hours": args.hours,
        "batch_duration": args.batch_duration,
        "steps": args.steps,
        "rows": rows,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    name = f"scale_check_{args.accelerator}"
    write_json_atomic(summary, args.results_dir / f"{name}.json")
    report = _report(summary, rows)
    (args.results_dir / f"{name}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
