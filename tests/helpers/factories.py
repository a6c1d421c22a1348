"""Plain helpers and constants shared by the tests (the fixtures are in tests/conftest.py): tiny versions of the
shipped configs, so real NeMo models train in seconds on 2 CPU cores, a quiet CPU trainer, and manifest I/O."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]

#: Mode offline_teacher over a shipped config: the training set's speed perturbation off, as a user must turn it off
#: (the mode refuses a retiming augmentor: the cache holds the frames of the audio on disk).
OFFLINE_TEACHER = {"codert.mode": "offline_teacher", "train_ds.augmentor": None}


def tiny_config(corpus, config_name: str = "codert_small", **overrides: Any) -> DictConfig:
    """`conf/<config_name>.yaml` (composed as hydra composes it), pointed at the test corpus and shrunk;
    `overrides` are dotted model keys."""
    cfg = compose_config(config_name)
    cfg.data.dir = str(corpus.root)
    shrink = {
        "model.train_ds.batch_size": 4,
        "model.validation_ds.batch_size": 4,
        "model.test_ds.batch_size": 4,
        "model.model_defaults.pred_hidden": 32,
        "model.model_defaults.joint_hidden": 32,
        "model.optim.sched.warmup_steps": 2,
        # A test's few steps are the students' (codert_small ships a 450-step teacher lead); tests of the lead set it.
        "model.codert.teacher_lead_steps": 0,
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


def logits_ctc(weight: float) -> dict:
    """``tiny_config`` overrides for the other auxiliary CTC shape: CTC on the encoder logits at ``weight`` (0: no CTC
    term at all), NeMo's aux_ctc heads (the shipped default) removed."""
    return {"aux_ctc": None, "codert.ctc_weight": weight}


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/<name>.yaml` with hydra `overrides`, composed as hydra composes it for `examples/train_codert.py`: the
    benchmarks' composer (`benchmarks/common.compose`; not in struct mode, so tests may add keys)."""
    return benchmark_module("common").compose(name, overrides)


def lhotse_train_ds(cuts_path) -> dict:
    """``tiny_config`` overrides that train from a CutSet through NeMo's lhotse dataloader: duration batches (12 s of
    audio), 2 buckets."""
    lhotse = {
        "use_lhotse": True,
        "cuts_path": str(cuts_path),
        "manifest_filepath": None,
        "batch_duration": 12.0,
        "batch_size": None,
        "use_bucketing": True,
        "num_buckets": 2,
        "bucket_buffer_size": 100,
        "shuffle_buffer_size": 100,
        "seed": 0,
        "shuffle": True,
    }
    return {f"train_ds.{k}": v for k, v in lhotse.items()}


def make_trainer(max_steps: int = 1, **kwargs: Any):
    from nemo_codert.utils import quiet_trainer

    return quiet_trainer(max_steps=max_steps, **kwargs)


def first_batch(model):
    """The first validation batch: real audio through NeMo's own dataloader, in a fixed order."""
    return next(iter(model._validation_dl))


def copy_cfg(cfg: DictConfig) -> DictConfig:
    return copy.deepcopy(cfg)


def manifest_lines(manifest: Path):
    """The items of a NeMo manifest (one JSON object a line; blank lines ignored)."""
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def write_manifest(path: Path, items) -> Path:
    """Writes `items` to `path`, one a line: dicts as JSON, strings as they are (to write broken lines)."""
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


def benchmark_module(name: str):
    """A benchmark script as a module; its directory goes on sys.path, as it is for ``python benchmarks/x.py``, so
    its imports of sibling scripts (``common``, ``paper_table``) resolve."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return sys.modules[name]


def script_config(corpus, tmp_path: Path, max_steps: int):
    """The shipped default config, shrunk (tiny_config) and pointed at the test corpus, for the real training script."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "codert_small.yaml")
    cfg.model = tiny_config(corpus)
    cfg.data = None  # the corpus exists already
    cfg.trainer.max_steps = max_steps
    cfg.trainer.val_check_interval = 2
    cfg.trainer.log_every_n_steps = 1
    cfg.trainer.enable_progress_bar = False
    cfg.exp_manager.exp_dir = str(tmp_path / "exp")
    cfg.exp_manager.create_tensorboard_logger = False
    cfg.exp_manager.resume_if_exists = True
    cfg.exp_manager.resume_ignore_no_checkpoint = True
    cfg.exp_manager.checkpoint_callback_params.save_last = True
    cfg.exp_manager.checkpoint_callback_params.always_save_nemo = False
    cfg.exp_manager.checkpoint_callback_params.save_nemo_on_train_end = False
    cfg.model.validation_ds.manifest_filepath = str(corpus.dev_manifest)
    cfg.model.test_ds.manifest_filepath = None
    (tmp_path / "conf").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, tmp_path / "conf" / "run.yaml")
    return tmp_path / "conf"
