"""The streaming student: a cache-aware streaming student alone against the same student trained with CoDERT.

    python benchmarks/streaming.py --hours 1 --dev-hours 0.1 --test-hours 0.2 --reverb-prob 0 --noise-prob 0 \
        --steps 1200 --val-every 300 --time-steps 10 --seeds 0 1 2 --single-seed teacher_only \
        --work-dir data/streaming

A thin driver over ``paper_table.py`` with ``--config codert_streaming`` (every argument but ``--results-dir`` and
``--work-dir`` is the table's): system 1 is the streaming student alone, 2 the full-context teacher alone, 4 CoDERT
as ``codert_streaming`` ships it (the full-context teacher alone for a quarter of the steps, then the teacher and
the streaming student in tandem, with the config's ``kd_frame_shift: 2``: the student's frame t learns from the
teacher's frame t - 2, as a streaming student cannot see the future the teacher saw) and 4z the same with the frames
paired one to one (``kd_frame_shift: 0``). Tables before c5ca03d (``benchmarks/results/streaming.md``) ran 4 and 4z
tandem from scratch; ``streaming_lead/``'s 4r is today's 4.
Test WER is the exported student's offline decoding, which ``tests/test_streaming.py`` shows equal to its cache-aware
streaming output. The latency columns come from the student's config: a chunk of ``right + 1`` encoder frames is
emitted at once, after its last frame's audio has arrived; the first frame of a chunk sees ``right`` frames ahead.
Writes ``<results-dir>/streaming.{md,json}`` (the table of the same runs under ``<results-dir>/streaming/table``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import paper_table
from common import git_commit, machine_description  # benchmarks/common.py

CONFIG = "codert_streaming"
SYSTEMS = ["student_only", "teacher_only", "codert", "codert_shift0"]
LABELS = {
    "student_only": "1 streaming student alone (baseline)",
    "teacher_only": "2 full-context teacher alone",
    "codert": "4 CoDERT: full-context teacher + streaming student, kd_frame_shift 2",
    "codert_shift0": "4z CoDERT, kd_frame_shift 0",
}


def latency(settings: Dict[str, Any]) -> Dict[str, float]:
    """Chunk, look-ahead and cached left context of the table's student encoder (its config with the table's
    ``--set`` changes, as its runs were trained), in milliseconds."""
    cfg = paper_table.system_config(
        paper_table.Settings(**settings), paper_table.BY_NAME["codert"], 0, Path("."), None
    ).model
    left, right = cfg.student_encoder.att_context_size
    frame_ms = 1000 * cfg.preprocessor.window_stride * cfg.student_encoder.subsampling_factor
    return {"chunk_ms": (right + 1) * frame_ms, "lookahead_ms": right * frame_ms, "left_context_ms": left * frame_ms}


def collect(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per system: the last dev WER and the test WER per seed, and the paired change against system 1."""
    rows = summary["rows"]
    base = rows["student_only"]["test_wer"]
    out = []
    for name in SYSTEMS:
        row = rows[name]
        out.append(
            {
                "system": name,
                "label": LABELS[name],
                "test_wer": row["test_wer"],
                "test_cer": row["test_cer"],
                "dev_wer": {s: d[-1]["student"] for s, d in row["dev_wer"].items() if d},
                "rel_reduction": paper_table.mean_sd(list(row["rel_reduction"].values())),  # the seeds 1 has
                # "every seed below every baseline seed", the test of a separated gain
                "below_every_baseline_seed": max(row["test_wer"].values()) < min(base.values()),
                "params": row["params"],
                "rtf": row["rtf"],
                "step_seconds": row["step_seconds"],
            }
        )
    return out


def write_report(out: Dict[str, Any], path) -> None:
    lat = out["latency"]
    lines = [
        "# A cache-aware streaming student: alone vs distilled from a full-context teacher (CoDERT)",
        "",
        f"- command: `{out['command']}`",
        f"- commit: {out['commit']}",
        f"- machine: {out['machine']}",
        f"- config `{CONFIG}`, {out['settings']['steps']} steps; the table of the same runs (every column, the cost "
        "pass): `streaming/table/paper_table.md`",
        f"- student latency: chunks of {lat['chunk_ms']:.0f} ms, look-ahead up to {lat['lookahead_ms']:.0f} ms, "
        f"{lat['left_context_ms'] / 1000:.2f} s of cached left context",
        "",
        "| system | test WER per seed | mean | test CER | dev WER (last validation) | rel. reduction vs 1 (paired) "
        "| every seed below every baseline seed | step (s) |",
        "|---|---|---:|---:|---|---:|---|---:|",
    ]
    for r in out["rows"]:
        wers = list(r["test_wer"].values())
        cers = [c for c in r["test_cer"].values() if c is not None]
        mean, sd = paper_table.mean_sd(wers)
        sd_text = f" +- {sd:.3f}" if len(wers) > 1 else ""
        dev = " / ".join(f"{w:.3f}" for w in r["dev_wer"].values()) or "-"
        baseline = r["system"] == "student_only"
        rel = "-" if baseline else f"{100 * r['rel_reduction'][0]:+.1f} % +- {100 * r['rel_reduction'][1]:.1f}"
        below = "-" if baseline else ("yes" if r["below_every_baseline_seed"] else "no")
        step = f"{r['step_seconds']:.3f}" if r["step_seconds"] else "-"
        lines.append(
            f"| {r['label']} | {' / '.join(f'{w:.3f}' for w in wers)} | {mean:.3f}{sd_text} | "
            f"{statistics.fmean(cers) if cers else float('nan'):.3f} | {dev} | {rel} | {below} | {step} |"
        )
    lines += [
        "",
        "The teacher (2) is full-context and is not deployed as a streaming model; its row is the reference the KD "
        "term pulls towards. Test WER is each student's offline decoding, equal to its streamed output "
        "(`tests/test_streaming.py`).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    given = any(a == "--config" or a.startswith("--config=") for a in argv)
    table_argv = argv if given else ["--config", CONFIG, *argv]
    summary, results_dir, _, command = paper_table.run_for_driver("streaming", __doc__, table_argv, SYSTEMS)
    out = {
        "command": command,
        "commit": git_commit(),
        "machine": machine_description(),
        "settings": summary["settings"],
        "latency": latency(summary["settings"]),
        "rows": collect(summary),
    }
    (results_dir / "streaming.json").write_text(json.dumps(out, indent=1))
    write_report(out, results_dir / "streaming.md")
    print((results_dir / "streaming.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
