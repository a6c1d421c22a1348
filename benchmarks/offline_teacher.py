"""Offline distillation from cached teacher logits against the static teacher it replaces.

    python benchmarks/offline_teacher.py --hours 1 --dev-hours 0.1 --test-hours 0.2 --reverb-prob 0 \
        --noise-prob 0 --steps 1200 --val-every 300 --time-steps 10 --seeds 0 --work-dir data/paper_table_b

A thin driver over ``paper_table.py`` (the same harness, corpus, teachers and cost pass; every argument but
``--results-dir`` is the table's): it trains system 5 (static teacher: system 2's exported model, frozen, run at
every step) and system 9 at k = 4, 8, 16 (the same teacher's encoder logits cached once, top k per frame; no teacher
in training), reusing the table's runs of 1, 2 and 4. Then it scores every student on the dev split too (k is chosen on
dev) and writes ``<results-dir>/offline_teacher.{md,json}`` (the table itself in ``<results-dir>/offline_teacher/table``;
default ``benchmarks/results``): dev and test WER, step time and peak memory from the table's cost pass
(one process at a time), the cache's disk bytes per hour of audio and its build time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import paper_table
from common import git_commit, machine_description  # benchmarks/common.py

SYSTEMS = ["static_teacher", "offline_teacher_k4", "offline_teacher", "offline_teacher_k16"]
REQUIRED = ["student_only", "teacher_only", "codert"]  # the table's own; reused when already trained


def _batch_read_seconds(cache_dir: str, batch_size: int, batches: int = 50) -> float:
    """Median wall time to read one training batch's cached logits (``TeacherCache.batch``, what the offline
    teacher adds to a student's step besides the KL), over ``batches`` random batches."""
    import random
    import statistics
    import time

    import torch

    from nemo_codert.data.teacher_cache import TeacherCache

    cache = TeacherCache(cache_dir)
    cuts = cache.cuts()
    rng, seconds = random.Random(0), []
    for _ in range(batches):
        batch = rng.sample(cuts, batch_size)
        frames = torch.tensor([cache.frames(c) for c in batch])
        started = time.perf_counter()
        cache.batch(batch, frames)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def _dev_wer(student_nemo: str, dev_manifest: Path) -> float:
    from nemo_codert.evaluation import evaluate

    return float(evaluate(Path(student_nemo), dev_manifest, batch_size=32)["results"]["model"]["wer"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    summary, results_dir, work, command = paper_table.run_for_driver(
        "offline_teacher", __doc__, argv, REQUIRED + SYSTEMS
    )
    settings = paper_table.Settings(**summary["settings"])
    dev_manifest = paper_table.benchmark_corpus_dir(work, settings) / "dev_manifest.json"

    rows: List[Dict[str, Any]] = []
    for name in ["student_only", "teacher_only", *SYSTEMS]:
        row = summary["rows"][name]
        seed = row["seeds"][0]
        run = json.loads((work / "train" / f"{name}-seed{seed}.json").read_text())
        rows.append(
            {
                "system": name,
                "label": row["label"],
                "seed": seed,
                "dev_wer": _dev_wer(run["student_nemo"], dev_manifest),
                "test_wer": row["test_wer"][str(seed)],  # JSON keys are strings
                "step_seconds": row["step_seconds"],
                "train_rss_growth": row["train_rss_growth"],
                "cache": run.get("teacher_cache"),
            }
        )
        if rows[-1]["cache"]:
            batch_size = int(
                paper_table.system_config(
                    settings, paper_table.BY_NAME[name], seed, Path(), None
                ).model.train_ds.batch_size
            )
            rows[-1]["cache"]["batch_read_seconds"] = _batch_read_seconds(rows[-1]["cache"]["dir"], batch_size)
    out = {"command": command, "commit": git_commit(), "machine": machine_description(), "rows": rows}
    (results_dir / "offline_teacher.json").write_text(json.dumps(out, indent=1))
    report = write_report(out, results_dir / "offline_teacher.md")
    print(report.read_text())
    return 0


def write_report(out: Dict[str, Any], path: Path) -> Path:
    static = next(r for r in out["rows"] if r["system"] == "static_teacher")
    lines = [
        "# Offline teacher (cached top-k encoder logits) vs the static teacher it replaces",
        "",
        f"- command: `{out['command']}`",
        f"- commit: {out['commit']}",
        f"- machine: {out['machine']}",
        "- the table of the same runs (all systems, test WER, the cost pass): `offline_teacher/table/paper_table.md`",
        "",
        "| system | dev WER | test WER | step (s) | vs static | train memory growth (MiB) | cache k | cache MB per h"
        " of audio | cache build (s) | cache read per batch (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        cache = r["cache"] or {}
        step = r["step_seconds"]
        ratio = f"{step / static['step_seconds']:.2f} x" if step and static["step_seconds"] else "-"
        growth = f"{r['train_rss_growth'] / 2**20:.0f}" if r["train_rss_growth"] else "-"
        lines.append(
            f"| {r['label']} | {r['dev_wer']:.3f} | {r['test_wer']:.3f} | "
            + (f"{step:.3f}" if step else "-")
            + f" | {ratio} | {growth} | {cache.get('k', '-')} | "
            + (f"{cache['bytes_per_hour'] / 1e6:.2f}" if cache else "-")
            + " | "
            + (f"{cache['build_seconds']:.0f}" if cache else "-")
            + " | "
            + (f"{1000 * cache['batch_read_seconds']:.1f}" if cache else "-")
            + " |"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
