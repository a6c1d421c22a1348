"""Shared fixtures: one tiny real corpus (eSpeak NG audio, NeMo manifests, BPE tokenizer) per test session, and
tiny versions of the shipped configs so real NeMo models train in seconds on 2 CPU cores."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from nemo_codert.data.synth import build_corpus

    root = tmp_path_factory.mktemp("corpus") / "synth"
    return build_corpus(root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=0, vocab_size=64)


def tiny_config(corpus, config_name: str = "codert_small", **overrides: Any) -> DictConfig:
    """`conf/<config_name>.yaml`, pointed at the test corpus and shrunk; `overrides` are dotted model keys."""
    cfg = OmegaConf.load(REPO / "conf" / f"{config_name}.yaml")
    cfg.data.dir = str(corpus.root)
    shrink = {
        "model.train_ds.batch_size": 4,
        "model.validation_ds.batch_size": 4,
        "model.test_ds.batch_size": 4,
        "model.model_defaults.pred_hidden": 32,
        "model.model_defaults.joint_hidden": 32,
        "model.optim.sched.warmup_steps": 2,
    }
    if cfg.model.encoder._target_.endswith("ConformerEncoder"):
        shrink.update(
            {
                "model.encoder.n_layers": 1,
                "model.encoder.d_model": 48,
                "model.encoder.subsampling_conv_channels": 16,
                "model.encoder.n_heads": 2,
                "model.student_encoder.n_layers": 1,
                "model.student_encoder.d_model": 24,
                "model.student_encoder.subsampling_conv_channels": 8,
                "model.student_encoder.n_heads": 2,
            }
        )
    for key, value in {**shrink, **{f"model.{k}": v for k, v in overrides.items()}}.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    return cfg.model


def make_trainer(max_steps: int = 1, **kwargs: Any):
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def first_batch(model):
    """The first validation batch: real audio through NeMo's own dataloader, in a fixed order."""
    return next(iter(model._validation_dl))


def copy_cfg(cfg: DictConfig) -> DictConfig:
    return copy.deepcopy(cfg)
