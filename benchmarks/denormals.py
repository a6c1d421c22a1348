"""Denormal floats and the CPU training step: its time with fresh and with trained weights, denormals kept or flushed.

    python benchmarks/denormals.py --trained PAIR.nemo [--data-dir DIR] [--config codert_small] [--steps 12]

``PAIR.nemo`` is a trained CoDERT model of ``conf/<config>.yaml`` (e.g. the ``.nemo`` the default run keeps). Four
cases, each in a process of its own, because the flush flag is per thread and must be set before torch's
intra-op threads start: the pair of the config, freshly initialised or with the trained weights, each with and
without ``nemo_codert.utils.flush_denormals``. Each times ``--steps`` real training steps (features, both
encoders, decoder, joints, RNN-T and CTC losses, KD, backward, AdamW at a negligible learning rate, so that the
weights stay where they are) on the same batches of the config's embedded corpus (``--data-dir``: the one the
trained model was trained on, whose tokenizer it learned), after 2 warm-up steps, and reports the median. Writes
``benchmarks/results/denormals.md``.
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
from typing import Any, Dict, Optional, Sequence

from common import REPO, compose, git_commit, machine_description, typed_command  # benchmarks/common.py


def time_steps(
    config: str, data_dir: Optional[str], trained: Optional[Path], flush: bool, steps: int
) -> Dict[str, Any]:
    """One case, in this process; call it in a fresh interpreter (``--worker``)."""
    from nemo_codert.utils import flush_denormals

    flushed = flush_denormals() if flush else False  # first: before any parallel torch op

    import torch
    from omegaconf import OmegaConf

    from nemo_codert.data.synth import build_corpus_from_config
    from nemo_codert.models import CodertRNNTBPEModel
    from nemo_codert.models.loading import load_codert

    cfg = compose(config)
    cfg.data.dir = str((REPO / (data_dir or cfg.data.dir)).resolve())
    build_corpus_from_config(cfg.data)
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg.model)
    if trained is not None:
        model.load_state_dict(load_codert(trained).state_dict())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-8)
    batches = [b for _, b in zip(range(steps + 2), model._train_dl)]  # the same batches in every case (seeded)
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        out = model.codert_losses(*batch, compute_wer=False)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - started)
    return {"flushed": flushed, "median_step": statistics.median(seconds[2:]), "threads": torch.get_num_threads()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trained", type=Path, required=True, help="a trained CoDERT .nemo of --config")
    parser.add_argument("--config", default="codert_small")
    parser.add_argument("--data-dir", help="the corpus (data.dir) the trained model learned on; default: the config's")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--worker", nargs=2, metavar=("WEIGHTS", "FLUSH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        weights, flush = args.worker
        trained = args.trained if weights == "trained" else None
        result = time_steps(args.config, args.data_dir, trained, flush == "1", args.steps)
        print("RESULT " + json.dumps(result))
        return 0
    if not args.trained.is_file():
        parser.error(f"--trained {args.trained}: no such file")

    rows = []
    for weights in ("fresh", "trained"):
        for flush in ("0", "1"):
            cmd = [sys.executable, __file__, "--trained", str(args.trained), "--config", args.config]
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            cmd += ["--steps", str(args.steps), "--worker", weights, flush]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"case {weights}/flush={flush} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            rows.append({"weights": weights, "flush": flush == "1", **json.loads(line[len("RESULT ") :])})
            print(rows[-1], flush=True)

    step = {(r["weights"], r["flush"]): r["median_step"] for r in rows}
    command = typed_command("denormals.py", argv)
    lines = [
        "# Denormal floats and the CPU training step",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {git_commit()}",
        f"- machine: {machine_description()}, {rows[0]['threads']} torch threads",
        f"- model: `conf/{args.config}.yaml`, fresh or with the weights of `{args.trained}`; median of {args.steps} "
        "training steps after 2 warm-up steps, the same batches in every case, each case in its own process",
        "",
        "| weights | denormals flushed | median step (s) |",
        "|---|---|---:|",
        *(f"| {r['weights']} | {'yes' if r['flush'] else 'no'} | {r['median_step']:.3f} |" for r in rows),
        "",
        f"- trained / fresh step, denormals kept: {step[('trained', False)] / step[('fresh', False)]:.2f} x",
        f"- trained step, flushed / kept: {step[('trained', True)] / step[('trained', False)]:.2f} x",
        f"- every intra-op thread flushed where asked: {all(r['flushed'] for r in rows if r['flush'])}",
        "",
    ]
    out = args.results_dir / "denormals.md"
    out.write_text("\n".join(lines))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
