"""A ladder of students in one tandem run against each student's own single-student CoDERT run.

    python benchmarks/multi_student.py --hours 1 --dev-hours 0.1 --test-hours 0.2 --reverb-prob 0 --noise-prob 0 \
        --steps 1200 --val-every 300 --time-steps 10 --seeds 0 1 2 --work-dir data/paper_table_b

A thin driver over ``paper_table.py`` (the same harness, corpus, seeds and cost pass; every argument but
``--results-dir`` is the table's): it trains system 4m (CoDERT with a medium student, ``MEDIUM_STUDENT``, alone) and
system 4l (the teacher with the small and the medium student in one run, ``model.student_encoders``), reusing the
table's runs of 1 (the small student alone), 2 and 4 (CoDERT with the small student alone). Every student is scored
on dev (the last validation of its run) and test, and compared with its own single-student run, paired by seed: does
a middle-sized student beside the smallest help it (a teacher-assistant effect, here through the shared prediction
network and joint only: every student distils the teacher), or hurt? The cost pass (one process at a time, all
cores) gives the step time and peak memory of teacher + 2 students against teacher + 1 and against the two separate
runs. Writes ``<results-dir>/multi_student.{md,json}`` (default ``benchmarks/results``; the table of the same runs
under ``<results-dir>/multi_student/table``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import paper_table
from common import git_commit, machine_description  # benchmarks/common.py

SYSTEMS = ["codert_medium", "codert_ladder"]
REQUIRED = ["student_only", "teacher_only", "codert"]  # the table's own; reused when already trained
#: (row label, system, the student's side in that run's scores, its single-student run)
STUDENTS = [
    ("small student, alone with the teacher (4)", "codert", "student", None),
    ("medium student, alone with the teacher (4m)", "codert_medium", "student", None),
    ("small student, in the ladder (4l)", "codert_ladder", "student", "codert"),
    ("medium student, in the ladder (4l)", "codert_ladder", "student:medium", "codert_medium"),
]


def collect(work: Path, summary: Dict[str, Any]) -> Dict[str, Any]:
    """Per student row: dev WER at the last validation and test WER per seed, paired change vs its single run."""
    seeds = summary["settings"]["seeds"]
    rows: List[Dict[str, Any]] = []
    per_seed: Dict[tuple, Dict[int, Dict[str, float]]] = {}
    for label, system, side, single in STUDENTS:
        scores = {}
        for seed in seeds:
            run = json.loads((work / "train" / f"{system}-seed{seed}.json").read_text())
            score = json.loads((work / "eval" / f"{system}-seed{seed}.json").read_text())
            scores[seed] = {
                "dev_wer": run["dev_wer"][-1][side],
                "test_wer": score[side]["wer"],
                "test_cer": score[side]["cer"],
                "params": score[side]["params"],
            }
        per_seed[(system, side)] = scores
        row: Dict[str, Any] = {"label": label, "system": system, "side": side, "seeds": scores}
        for key in ("dev_wer", "test_wer", "test_cer"):
            row[key] = paper_table.mean_sd([scores[s][key] for s in seeds])
        row["params"] = scores[seeds[0]]["params"]
        if single is not None:
            alone = per_seed[(single, "student")]
            row["vs_alone"] = paper_table.mean_sd([1 - scores[s]["test_wer"] / alone[s]["test_wer"] for s in seeds])
            row["dev_vs_alone"] = paper_table.mean_sd([1 - scores[s]["dev_wer"] / alone[s]["dev_wer"] for s in seeds])
            row["better_than_alone_on_test"] = sum(scores[s]["test_wer"] < alone[s]["test_wer"] for s in seeds)
        rows.append(row)
    cost = {
        name: {k: summary["rows"][name][k] for k in ("step_seconds", "peak_rss", "train_rss_growth")}
        for name in ("student_only", "codert", "codert_medium", "codert_ladder")
    }
    return {"rows": rows, "cost": cost, "baseline_test_wer": summary["rows"]["student_only"]["test_wer"]}


def write_report(out: Dict[str, Any], path: Path) -> Path:
    seeds = out["settings"]["seeds"]
    lines = [
        "# A ladder of students: teacher + medium + small student in one tandem run vs each student's own run",
        "",
        f"- command: `{out['command']}`",
        f"- commit: {out['commit']}",
        f"- machine: {out['machine']}",
        f"- {out['settings']['steps']} steps, seeds {', '.join(map(str, seeds))}; the table of the same runs (every "
        "system, the cost pass): `multi_student/table/paper_table.md`",
        "",
        "| student | params | dev WER | test WER | test CER | test vs its own run (paired) | seeds better on test |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        change = f"{100 * r['vs_alone'][0]:+.1f} % +- {100 * r['vs_alone'][1]:.1f}" if "vs_alone" in r else "-"
        better = f"{r['better_than_alone_on_test']} of {len(seeds)}" if "vs_alone" in r else "-"
        lines.append(
            f"| {r['label']} | {r['params'] / 1e6:.2f} M | {r['dev_wer'][0]:.3f} | {r['test_wer'][0]:.3f} +- "
            f"{r['test_wer'][1]:.3f} | {r['test_cer'][0]:.3f} | {change} | {better} |"
        )
    lines += [
        "",
        "Positive change: lower WER than the same student trained with the teacher alone (same steps and seeds)."
        + (
            f" Only {len(seeds)} seed(s): the seed-to-seed spread of these runs is about 0.01-0.02 WER, so differences"
            " of that size are not a result."
            if len(seeds) < 3
            else ""
        ),
        "",
        "Cost (the table's cost pass: each system alone on the machine, median step after warm-up; memory: peak RSS of"
        " the process, and its growth during training):",
        "",
        "| run | step (s) | peak memory (MiB) | growth in training (MiB) |",
        "|---|---:|---:|---:|",
    ]
    cost = out["cost"]
    names = {
        "student_only": "small student alone, no teacher (1)",
        "codert": "teacher + small student (4)",
        "codert_medium": "teacher + medium student (4m)",
        "codert_ladder": "teacher + small + medium students (4l)",
    }

    def mib(value: Optional[float]) -> str:
        return f"{value / 2**20:.0f}" if value else "-"

    for name, label in names.items():
        c = cost[name]
        step = f"{c['step_seconds']:.3f}" if c["step_seconds"] else "-"
        lines.append(f"| {label} | {step} | {mib(c['peak_rss'])} | {mib(c['train_rss_growth'])} |")
    if all(cost[n]["step_seconds"] for n in ("codert", "codert_medium", "codert_ladder")):
        separate = cost["codert"]["step_seconds"] + cost["codert_medium"]["step_seconds"]
        lines += [
            "",
            f"One ladder step costs {cost['codert_ladder']['step_seconds'] / cost['codert']['step_seconds']:.2f} x a "
            f"teacher + small step, and {cost['codert_ladder']['step_seconds'] / separate:.2f} x the two separate "
            "runs' steps together (the teacher, preprocessor and spec-augment run once for both students).",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    summary, results_dir, work, command = paper_table.run_for_driver(
        "multi_student", __doc__, argv, REQUIRED + SYSTEMS
    )
    out = {
        "command": command,
        "commit": git_commit(),
        "machine": machine_description(),
        "settings": summary["settings"],
        **collect(work, summary),
    }
    (results_dir / "multi_student.json").write_text(json.dumps(out, indent=1))
    print(write_report(out, results_dir / "multi_student.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
