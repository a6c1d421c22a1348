"""The paper-scale configs (`conf/codert_fastconformer.yaml`, `conf/codert_conformer_librispeech.yaml`): trained on
the CPU from LibriSpeech-shaped data prepared by `examples/prepare_librispeech.py`, with the encoders shrunk by
override so the full configs are exercised without their cost, and counted at full size without training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from nemo.collections.asr.models import EncDecRNNTModel

from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import REPO, benchmark_module, compose_config, make_trainer

# The shrink overrides of the scale check (benchmarks/scale_check.py): one list for both.
SHRINK = list(benchmark_module("scale_check").SHRINK)

# The GPU settings a 2-core CPU test cannot use, and a budget of two steps.
CPU = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32",
    "trainer.sync_batchnorm=false",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "trainer.val_check_interval=2",
    "model.optim.sched.warmup_steps=1",
    "model.train_ds.batch_duration=12",
    "model.train_ds.num_buckets=2",
    "model.train_ds.bucket_buffer_size=100",
    "model.train_ds.shuffle_buffer_size=100",
    *[
        f"model.{ds}.{k}={v}"
        for ds in ("train_ds", "validation_ds", "test_ds")
        for k, v in (("num_workers", 0), ("pin_memory", "false"))
    ],
]


def _data(prepared) -> list:
    return [
        f"librispeech.dir={prepared.out}",
        "librispeech.train_part=train-clean-5",
        "librispeech.dev_part=dev-clean-2",
        "librispeech.test_part=dev-clean-2",
        "librispeech.vocab_size=64",
    ]


def test_fastconformer_config_trains_on_prepared_librispeech_with_the_training_script(prepared_librispeech, tmp_path):
    """The user's command, shrunk: x8 FastConformer pair, lhotse duration buckets, fused joint, validation, test."""
    command = [
        sys.executable,
        str(REPO / "examples" / "train_codert.py"),
        "--config-name=codert_fastconformer",
        *_data(prepared_librispeech),
        *SHRINK,
        *CPU,
        f"exp_manager.exp_dir={tmp_path}",
        "exp_manager.resume_if_exists=false",
        "exp_manager.create_tensorboard_logger=false",
    ]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert list(tmp_path.rglob("checkpoints/*.nemo")), "no .nemo written"


def test_conformer_librispeech_config_trains_a_step(prepared_librispeech):
    cfg = compose_config("codert_conformer_librispeech", [*_data(prepared_librispeech), *SHRINK, *CPU])
    assert cfg.model.encoder.subsampling_factor == cfg.model.student_encoder.subsampling_factor == 4
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg.model, trainer=make_trainer(max_steps=1))
    before = [p.detach().clone() for p in model.student_encoder.parameters()]
    model._trainer.fit(model)
    assert model._trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.student_encoder.parameters()))


def _deployed_parameters(model_cfg, encoder_key: str, vocab_size: int) -> int:
    """Encoder + prediction network + joint (at that encoder's width) of one side, built at full size."""
    encoder = EncDecRNNTModel.from_config_dict(model_cfg[encoder_key])
    decoder = OmegaConf.to_container(model_cfg.decoder, resolve=True) | {"vocab_size": vocab_size}
    joint = OmegaConf.to_container(model_cfg.joint, resolve=True) | {"num_classes": vocab_size}
    joint["jointnet"] |= {"encoder_hidden": encoder._feat_out, "pred_hidden": model_cfg.model_defaults.pred_hidden}
    modules = [encoder, *(EncDecRNNTModel.from_config_dict(OmegaConf.create(c)) for c in (decoder, joint))]
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(
    "name, check",
    [
        ("codert_fastconformer", lambda t, s: t >= 100e6 and s <= 20e6),
        ("codert_conformer_librispeech", lambda t, s: t >= 3 * s),
    ],
)
def test_full_size_parameters(name, check):
    cfg = compose_config(name, ["librispeech.dir=/prepared"])
    vocab = cfg.librispeech.vocab_size
    teacher = _deployed_parameters(cfg.model, "encoder", vocab)
    student = _deployed_parameters(cfg.model, "student_encoder", vocab)
    assert check(teacher, student), (teacher, student)
