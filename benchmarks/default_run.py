"""What a new user's first command gives: ``python examples/train_codert.py --config-name=codert_small``, timed.

    python benchmarks/default_run.py                      # writes benchmarks/results/default_run.{md,json}
    python benchmarks/default_run.py --set trainer.max_steps=600 --work-dir /tmp/x   # a variant, same report

The command runs exactly as the README gives it, in a scratch directory that holds only the repository's ``conf/``
and ``examples/`` (the package is the installed one), so the corpus is built from nothing and the wall time includes
it, as it does for a new user. Then the run's ``.nemo`` (the best student dev WER, as exp_manager keeps it) is
scored on the test split by ``nemo_codert.evaluation`` (student and teacher WER, CER, parameters, CPU RTF), and the
logged training terms are read back from its TensorBoard file: the ratio of the weighted KD term to the student's
RNN-T term at chosen steps shows whether distillation is at the scale of the loss it joins.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common import REPO, compose, git_commit, machine_description  # benchmarks/common.py

CONFIG = "codert_small"
COMMAND = ["examples/train_codert.py", f"--config-name={CONFIG}"]


def logged_scalars(log_dir: Path, tags: Sequence[str]) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files exp_manager wrote under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Dict[str, Dict[int, float]] = {tag: {} for tag in tags}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in set(tags) & set(acc.Tags()["scalars"]):
            out[tag].update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def nearest(series: Dict[int, float], step: int) -> Optional[tuple]:
    if not series:
        return None
    at = min(series, key=lambda s: abs(s - step))
    return at, series[at]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from nemo_codert.evaluation import evaluate
    from nemo_codert.models.config import parse_codert_config
    from nemo_codert.utils import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hydra overrides appended to the command (the report says so)",
    )
    parser.add_argument(
        "--ratio-steps",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="the students' steps at which to read the KD / RNN-T ratio (after the teacher's lead, if any)",
    )
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "default_run")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)  # from nothing: no corpus, no experiment left from an earlier run
    work.mkdir(parents=True)
    for folder in ("conf", "examples"):
        shutil.copytree(REPO / folder, work / folder)
    command: List[str] = [*COMMAND, *args.overrides]
    commit = git_commit()  # the code the run starts with (commits made while it runs are not in it)
    started = time.time()
    with open(work / "train.log", "w") as log:
        done = subprocess.run([sys.executable, *command], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed (exit {done.returncode}); see {work / 'train.log'}")

    nemo = sorted((work / "nemo_experiments").rglob("checkpoints/*.nemo"))
    if not nemo:
        raise SystemExit(f"no .nemo under {work / 'nemo_experiments'}")
    report = evaluate(nemo[-1], work / "data" / "synth_small" / "test_manifest.json")
    tags = ["train_kd_weighted", "train_rnnt_student", "train_kd", "val_wer", "val_wer_teacher"]
    scalars = logged_scalars(work / "nemo_experiments", tags)
    # The students start after the teacher's lead: their step s is the run's step lead + s.
    lead = parse_codert_config(compose(CONFIG, args.overrides).model).teacher_lead_steps
    ratios = {}
    for step in args.ratio_steps:
        kd, rnnt = (nearest(scalars[tag], lead + step) for tag in ("train_kd_weighted", "train_rnnt_student"))
        if kd and rnnt:
            ratios[step] = {
                "logged_at": kd[0],
                "kd_weighted": kd[1],
                "rnnt_student": rnnt[1],
                "ratio": kd[1] / rnnt[1],
            }

    results = {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in report["results"].items()}
    summary = {
        "command": "python " + " ".join(command),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": machine_description(),
        "wall_seconds": wall,
        "model": str(nemo[-1].relative_to(work)),
        "test": results,
        "kd_to_rnnt": ratios,
        "dev_wer": {tag: scalars[tag] for tag in ("val_wer", "val_wer_teacher")},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(summary, args.results_dir / "default_run.json")

    s, t = results["student"], results.get("teacher")
    lines = [
        "# The default run, as a new user types it",
        "",
        f"- command: `{summary['command']}` (from nothing: the corpus is built inside the timed run), measured by "
        f"`{' '.join(['python benchmarks/default_run.py', *(sys.argv[1:] if argv is None else argv)])}`",
        f"- date: {summary['date']}, commit {summary['commit']}",
        f"- machine: {summary['machine']}",
        f"- wall time: **{wall / 60:.1f} min** (corpus build, training, validation, test pass, .nemo writes)",
        f"- model scored: `{summary['model']}` (best student dev WER), test split, stock NeMo transcribe",
        "",
        "| side | test WER | test CER | deployable params | CPU RTF |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wer']:.3f} | {r['cer']:.3f} | {r['params']:,} | {r['rtf']:.4f} |")
    if t:
        lines += ["", f"Teacher / student test WER: {t['wer'] / s['wer']:.3f}"]
    lines += ["", "Dev WER at each validation (student / teacher):", ""]
    for step, wer in sorted(scalars["val_wer"].items()):
        teacher = scalars["val_wer_teacher"].get(step)
        lines.append(f"- step {step}: {wer:.3f}" + (f" / {teacher:.3f}" if teacher is not None else ""))
    if ratios:
        lines += [
            "",
            "Weighted KD term (λ·τ²·KL) against the student's RNN-T term, as logged:",
            "",
            "| students' step | logged at (run's step) | λ·τ²·KL | RNN-T (student) | ratio |",
            "|---:|---:|---:|---:|---:|",
        ]
        for step, r in ratios.items():
            lines.append(
                f"| {step} | {r['logged_at']} | {r['kd_weighted']:.3f} | {r['rnnt_student']:.3f} | "
                f"{r['ratio']:.3f} |"
            )
    out = args.results_dir / "default_run.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
