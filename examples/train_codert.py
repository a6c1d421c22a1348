"""Train a CoDERT teacher/student pair (or the student-only baseline) with NeMo.

    python examples/train_codert.py --config-name=codert_small
    python examples/train_codert.py --config-name=codert_small model.codert.mode=student_only
    python examples/train_codert.py --config-name=codert_lstm trainer.max_steps=2000

The script follows NeMo's `examples/asr/asr_transducer/speech_to_text_rnnt_bpe.py`: hydra config from `conf/`,
Lightning trainer, exp_manager (checkpoints, `.nemo` of the best student WER, resume), then a test pass. Two
additions: when the config has a `data` section, the offline corpus it names is built first (once; later runs
reuse it), so the default command needs no download and no prepared data; and every manifest is checked before the
model is built (`nemo_codert.data.manifest`): a broken manifest stops the run with one error naming file, line and
field, a bad utterance (missing/corrupt/empty audio, empty or unencodable transcript) is logged and skipped.
"""

from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from nemo.core.config import hydra_runner
from nemo.utils import logging
from nemo.utils.exp_manager import exp_manager, get_log_dir
from nemo.utils.trainer_utils import resolve_trainer_cfg

from nemo_codert.data.manifest import DEFAULT_MAX_SKIPPED_FRACTION, check_model_data
from nemo_codert.models import CodertRNNTBPEModel
from nemo_codert.utils import flush_denormals, set_aside_superseded_last_checkpoints


def _resume_checkpoint_dir(trainer: pl.Trainer, exp: DictConfig) -> Path:
    """The directory exp_manager resumes from: its checkpoint `dirpath`, else NeMo's own log dir + checkpoints."""
    dirpath = (exp.get("checkpoint_callback_params") or {}).get("dirpath")
    if dirpath:
        return Path(dirpath)
    log_dir, *_ = get_log_dir(
        trainer,
        exp_dir=exp.get("exp_dir"),
        name=exp.get("name"),
        version=exp.get("version"),
        explicit_log_dir=exp.get("explicit_log_dir"),
        use_datetime_version=exp.get("use_datetime_version", True),
        resume_if_exists=True,
    )
    return Path(log_dir) / "checkpoints"


@hydra_runner(config_path="../conf", config_name="codert_small")
def main(cfg: DictConfig) -> None:
    # First, before any parallel torch op: denormal floats slow a transducer's CPU training step by ~1.3x.
    if not flush_denormals():
        logging.warning("Denormal floats are flushed in some CPU threads only: CPU training may run slower")
    if cfg.get("data") is not None:
        from nemo_codert.data.synth import build_corpus_from_config

        corpus = build_corpus_from_config(cfg.data)
        logging.info(f"Corpus ready in {corpus.root}")
    logging.info(f"Hydra config:\n{OmegaConf.to_yaml(cfg)}")

    if cfg.get("seed") is not None:
        # Before the model is made: its initial weights, spec-augment's masks, dropout and NeMo's speed perturbation
        # (python's `random`) draw from these generators, so the same config and seed train the same model (the data
        # order has its own seed, model.train_ds.seed).
        pl.seed_everything(cfg.seed, workers=True)
    trainer = pl.Trainer(**resolve_trainer_cfg(cfg.trainer))
    exp = cfg.get("exp_manager") or {}
    if exp.get("resume_if_exists"):  # every rank: each one's exp_manager must find a single last checkpoint
        for path in set_aside_superseded_last_checkpoints(_resume_checkpoint_dir(trainer, exp)):
            logging.warning(f"A killed run left two last checkpoints: resuming from the newer, {path} set aside")
    log_dir = exp_manager(trainer, cfg.get("exp_manager", None))
    check = cfg.get("manifest_check") or {}
    changed = check_model_data(
        cfg.model,
        Path(log_dir or ".") / "checked_manifests",
        max_skipped_fraction=check.get("max_skipped_fraction", DEFAULT_MAX_SKIPPED_FRACTION),
        allow_eval_skips=check.get("allow_eval_skips", False),
    )
    if changed:
        logging.warning(f"Training on filtered manifests for {', '.join(changed)} (bad utterances skipped, see above)")
    model = CodertRNNTBPEModel(cfg=cfg.model, trainer=trainer)
    model.maybe_init_from_pretrained_checkpoint(cfg)

    trainer.fit(model)

    if cfg.model.get("test_ds") is not None and cfg.model.test_ds.get("manifest_filepath") is not None:
        if model.prepare_test(trainer):
            trainer.test(model)


if __name__ == "__main__":
    main()
