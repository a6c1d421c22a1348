"""Where the default CPU training step of codert_small spends its time: the share of the RNN-T loss.

    python benchmarks/train_step_profile.py [--steps 20] [--config codert_small] [--nemo-steps 2]

Builds the model of `conf/<config>.yaml` on its embedded corpus (built if missing), runs real training steps
(features, both encoders, decoder, joints, both RNN-T losses, KD, backward, AdamW step) on real batches, and times
the loss module with forward hooks. The loss computes its gradient inside forward (as NeMo's numba loss does), so
the hooks see all of its work; its backward is one multiply by the incoming gradient. Run with
`cpu_rnnt_loss=vectorised` (ours) and `nemo` (NeMo's CPU path, few steps: it is slow). Writes
`benchmarks/results/train_step_profile.md`.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from common import REPO, compose, git_commit, machine_description  # benchmarks/common.py, beside this script


def profile(config: str, cpu_rnnt_loss: str, steps: int) -> dict:
    from nemo_codert.data.synth import build_corpus_from_config
    from nemo_codert.models import CodertRNNTBPEModel

    cfg = compose(config)
    cfg.data.dir = str((REPO / cfg.data.dir).resolve())
    build_corpus_from_config(cfg.data)
    with open_dict(cfg):
        cfg.model.codert.cpu_rnnt_loss = cpu_rnnt_loss
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg.model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    loss_time = [0.0]
    started = {}
    model.loss.register_forward_pre_hook(lambda m, a, k=None: started.__setitem__("t", time.perf_counter()))
    model.loss.register_forward_hook(
        lambda m, a, o: loss_time.__setitem__(0, loss_time[0] + time.perf_counter() - started["t"])
    )

    step_times, loss_times = [], []
    batches = iter(model._train_dl)
    for i in range(steps + 1):  # the first step warms up allocators and is not counted
        batch = next(batches)
        loss_time[0] = 0.0
        t0 = time.perf_counter()
        optimizer.zero_grad()
        out = model.codert_losses(*batch)
        out["loss"].backward()
        optimizer.step()
        if i:
            step_times.append(time.perf_counter() - t0)
            loss_times.append(loss_time[0])
    return {
        "loss": cpu_rnnt_loss,
        "steps": steps,
        "step_s": statistics.median(step_times),
        "loss_s": statistics.median(loss_times),
        "share": sum(loss_times) / sum(step_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="codert_small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nemo-steps", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_step_profile.md"))
    args = parser.parse_args()

    rows = [profile(args.config, "vectorised", args.steps)]
    if args.nemo_steps > 0:
        rows.append(profile(args.config, "nemo", args.nemo_steps))
    table = [
        "| CPU RNN-T loss | steps timed | median step (s) | median loss fwd+grad per step (s) | loss share of step time |",
        "|---|---:|---:|---:|---:|",
    ] + [
        f"| {r['loss']} | {r['steps']} | {r['step_s']:.3f} | {r['loss_s']:.3f} | {100 * r['share']:.1f} % |"
        for r in rows
    ]
    command = "python benchmarks/train_step_profile.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
    )
    commit = git_commit()
    text = "\n".join(
        [
            f"# Training-step profile of `{args.config}` on CPU",
            "",
            f"- command: `{command}`",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {commit}",
            f"- machine: {machine_description()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}",
            "- a step = features + both encoders + decoder + joints + both RNN-T losses + KD + backward + AdamW, "
            "real batches of the embedded corpus (batch size from the config); loss time measured with forward "
            "hooks on the loss module, summed over the teacher's and the student's loss.",
            "",
            *table,
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
