"""The training script's own settings: its `seed` makes the same command train the same model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from helpers.factories import REPO, script_config


def _train_one_step(corpus, run_dir, seed):
    """The real script on the shrunk default config for one step (validated, so exp_manager keeps a checkpoint);
    the weights it ends with."""
    conf = script_config(corpus, run_dir, max_steps=1)
    cfg = OmegaConf.load(conf / "run.yaml")
    cfg.seed = seed
    cfg.trainer.val_check_interval = 1
    OmegaConf.save(cfg, conf / "run.yaml")
    command = [
        sys.executable,
        str(REPO / "examples" / "train_codert.py"),
        f"--config-path={conf}",
        "--config-name=run",
    ]
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (last,) = (run_dir / "exp").glob("**/checkpoints/*last.ckpt")
    return torch.load(last, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_the_same_seed_trains_the_same_model_and_another_seed_another(corpus, tmp_path):
    first, again, other = (
        _train_one_step(corpus, tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))
    )
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)  # the initial weights differ
