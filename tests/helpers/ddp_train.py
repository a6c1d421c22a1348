"""Worker for tests/test_distributed_and_lhotse.py::test_ddp_two_cpu_processes_keep_identical_weights: a few CoDERT
training steps under Lightning DDP.

    python tests/helpers/ddp_train.py MODEL_CFG.yaml OUT_DIR

Lightning's DDP launcher re-runs this script for rank 1; every rank writes its final state dict and its last
per-rank losses to OUT_DIR, so the test can compare the ranks.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from nemo_codert.models import CodertRNNTBPEModel
from nemo_codert.utils import quiet_trainer


class Record(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def main(cfg_path: str, out: str) -> None:
    torch.manual_seed(0)
    record = Record()
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp",  # gloo on CPU
        max_steps=3,
        limit_val_batches=2,
        val_check_interval=3,
        callbacks=[record],
    )
    model = CodertRNNTBPEModel(cfg=OmegaConf.load(cfg_path), trainer=trainer)
    trainer.fit(model)
    rank = trainer.global_rank
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    torch.save(
        {"state": model.state_dict(), "losses": record.losses, "metrics": metrics, "world": trainer.world_size},
        Path(out) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
