"""Sweep CoDERT's KD weight λ and temperature τ on **dev** WER; the shipped defaults come from it.

    python benchmarks/kd_sweep.py                                    # λ ∈ {0.1, 0.3, 1, 3} × τ ∈ {1, 2}
    python benchmarks/kd_sweep.py --steps 1000 --seeds 0 1 --lambdas 0.3 1 --taus 1

Every point is a tandem CoDERT run (system 4 of ``paper_table.py``) on the default config's corpus
(``conf/<config>.yaml``'s ``data`` section, built if absent), varied only in ``model.codert.kd_weight`` and
``kd_temperature``; the student alone (system 1) and tandem with λ=0 (system 3) are run alongside as references.
With ``--teacher-nemo T.nemo`` every point is a static-teacher run (system 5) from that frozen teacher instead, and
the reference beside the student alone is the same teacher with λ=0 (system 5b):

    python benchmarks/kd_sweep.py --teacher-nemo data/paper_table/runs/teacher_source-steps1500/student.nemo \
        --lambdas 0.1 0.3 1 3 --taus 1 --results-dir benchmarks/results/kd_sweep_static

Runs go through ``paper_table.py``'s worker, so an interrupted sweep continues where it stopped. Writes
``<results-dir>/kd_sweep.{md,json,png}``: final dev WER of student and teacher per point, mean over seeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from common import REPO, compose, git_commit, machine_description, typed_command  # benchmarks/common.py
from paper_table import BY_NAME, Job, Settings, _run_jobs, run_spec


def _point_name(lam: Optional[float], tau: Optional[float], system: str) -> str:
    return system if lam is None else f"{system}-l{lam:g}-t{tau:g}"


def _systems(args) -> tuple:
    """(the swept system, the λ=0 reference beside the student alone)."""
    return ("static_teacher", "static_teacher_kd0") if args.teacher_nemo else ("codert", "tandem_implicit")


def plan(args, settings: Settings, corpus_dir: Path, work: Path) -> List[Dict[str, Any]]:
    swept, reference = _systems(args)
    points = [(None, None, "student_only"), (None, None, reference)]
    points += [(lam, tau, swept) for lam in args.lambdas for tau in args.taus]
    threads = max(1, (os.cpu_count() or 1) // settings.jobs)
    out = []
    for lam, tau, system in points:
        name = _point_name(lam, tau, system)
        overrides = [] if lam is None else [f"model.codert.kd_weight={lam}", f"model.codert.kd_temperature={tau}"]
        for seed in settings.seeds:
            spec = run_spec(
                settings,
                BY_NAME[system],
                seed,
                corpus_dir,
                work,
                kind="train",
                threads=threads,
                stem=f"{name}-seed{seed}",
                teacher_nemo=None if system == "student_only" else args.teacher_nemo,
            )
            spec["overrides"] = overrides
            if not BY_NAME[system].curve:
                spec["curve"] = True  # every point needs its dev WER; systems that already validate keep their spec
            out.append({"name": name, "lam": lam, "tau": tau, "seed": seed, "job": Job(spec)})
    return out


def summarise(points: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for p in points:
        run = json.loads(p["job"].result.read_text())
        last = run["dev_wer"][-1]
        row = rows.setdefault(p["name"], {"lam": p["lam"], "tau": p["tau"], "student": {}, "teacher": {}, "curve": {}})
        row["student"][p["seed"]] = last["student"]
        if "teacher" in last:
            row["teacher"][p["seed"]] = last["teacher"]
        row["curve"][p["seed"]] = run["dev_wer"]
    for row in rows.values():
        row["student_mean"] = statistics.fmean(row["student"].values())
        row["teacher_mean"] = statistics.fmean(row["teacher"].values()) if row["teacher"] else None
    return rows


def write_report(rows, settings: Settings, results: Path, command: str, wall: float, config: str) -> Path:
    sweep = {n: r for n, r in rows.items() if r["lam"] is not None}
    best = min(sweep, key=lambda n: sweep[n]["student_mean"])
    base = rows["student_only"]["student_mean"]
    lines = [
        "# KD weight λ and temperature τ: dev WER sweep",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {git_commit()}",
        f"- machine: {machine_description()}; {settings.jobs} runs at a time, "
        f"{max(1, (os.cpu_count() or 1) // settings.jobs)} torch thread(s) each; wall {wall / 60:.1f} min",
        f"- training: `conf/{config}.yaml`"
        + (f" with {' '.join(settings.overrides)}" if settings.overrides else "")
        + f", {settings.steps} steps, seeds {', '.join(map(str, settings.seeds))}; WER on the **dev** split "
        "(test is kept for the paper table)",
        "",
        "| point | λ | τ | student dev WER | vs student alone | teacher dev WER |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lam = "-" if r["lam"] is None else f"{r['lam']:g}"
        tau = "-" if r["tau"] is None else f"{r['tau']:g}"
        teacher = "-" if r["teacher_mean"] is None else f"{r['teacher_mean']:.3f}"
        mark = " **(best)**" if name == best else ""
        lines.append(
            f"| {name}{mark} | {lam} | {tau} | {r['student_mean']:.3f} | {r['student_mean'] / base:.3f} x | {teacher} |"
        )
    lines += [
        "",
        f"Best point on dev: λ={sweep[best]['lam']:g}, τ={sweep[best]['tau']:g}.",
        "",
        "![dev WER per point](kd_sweep.png)",
        "",
    ]
    out = results / "kd_sweep.md"
    out.write_text("\n".join(lines))
    return out


def plot(rows, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept, reference = _systems(args)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for tau, colour in zip(args.taus, ("#27a", "#c72", "#393", "#a3a")):
        xs = [lam for lam in args.lambdas]
        ys = [rows[_point_name(lam, tau, swept)]["student_mean"] for lam in xs]
        ax.plot(xs, ys, marker="o", color=colour, label=f"{swept} student, τ={tau:g}")
    for name, style in (("student_only", "--"), (reference, ":")):
        ax.axhline(rows[name]["student_mean"], color="#555", linestyle=style, label=f"{name} (student)")
    ax.set_xscale("log")
    ax.set_xlabel("λ (KD weight)")
    ax.set_ylabel("dev WER")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from nemo_codert.data.synth import build_corpus_from_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="codert_small")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--taus", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--teacher-nemo", help="sweep the static-teacher mode with this frozen teacher (.nemo)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "kd_sweep")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.teacher_nemo:
        if not Path(args.teacher_nemo).is_file():
            parser.error(f"--teacher-nemo {args.teacher_nemo}: no such file")
        args.teacher_nemo = str(Path(args.teacher_nemo).resolve())  # one file whatever directory a worker runs in

    started = time.time()
    command = typed_command("kd_sweep.py", argv)
    base = compose(args.config)
    corpus = build_corpus_from_config(base.data, out_dir=REPO / base.data.dir)
    settings = Settings(
        hours=base.data.hours,
        dev_hours=base.data.dev_hours,
        test_hours=base.data.test_hours,
        steps=args.steps,
        seeds=args.seeds,
        val_every=args.steps // 2,
        time_steps=0,
        jobs=args.jobs,
        reverb_prob=0.0,
        noise_prob=0.0,
        config=args.config,
        overrides=args.overrides,
    )
    work = args.work_dir.resolve()
    points = plan(args, settings, corpus.root, work)
    _run_jobs([p["job"] for p in points], settings.jobs, work / "logs")
    rows = summarise(points)
    results = args.results_dir.resolve()
    results.mkdir(parents=True, exist_ok=True)
    (results / "kd_sweep.json").write_text(
        json.dumps({"command": command, "settings": asdict(settings), "rows": rows}, indent=1)
    )
    plot(rows, args, results / "kd_sweep.png")
    print(write_report(rows, settings, results, command, time.time() - started, args.config).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
