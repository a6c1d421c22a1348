"""Run a teacher once over a manifest and store its encoder logits, for ``model.codert.mode=offline_teacher``.

    python examples/cache_teacher_logits.py model=teacher.nemo manifest=data/synth_small/train_manifest.json \
        out=data/teacher_cache k=8
    python examples/train_codert.py --config-name=codert_small model.codert.mode=offline_teacher \
        model.codert.teacher_cache=data/teacher_cache model.train_ds.augmentor=null

The config is :class:`CacheConfig` (dataclass + hydra, as NeMo's ``examples/asr/speech_to_text_eval.py``):

    model       a stock NeMo transducer .nemo, or a CoDERT .nemo (its teacher is cached)        (required)
    manifest    the NeMo manifest the student will train on                                     (required)
    out         the cache directory (a lhotse CutSet with arrays; nemo_codert.data.teacher_cache) (required)
    k           logits kept per frame, float16 with int16 class indices; >= V+1 keeps full rows (default 8)
    batch_size  utterances per teacher forward (default 16)
    shard_size  utterances per shard, the unit an interrupted run resumes from (default 512)
    device      cpu or cuda (default cpu)

Rerunning the same command after an interruption finishes the cache; a finished cache is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nemo.core.config import hydra_runner

from nemo_codert.data.teacher_cache import write_teacher_cache
from nemo_codert.models.loading import load_transducer


@dataclass
class CacheConfig:
    model: str = MISSING
    manifest: str = MISSING
    out: str = MISSING
    k: int = 8
    batch_size: int = 16
    shard_size: int = 512
    device: str = "cpu"


def run(cfg: CacheConfig) -> Path:
    """Write (or finish) the cache; returns its directory."""
    try:
        model_path, manifest, out = (Path(p).expanduser().resolve() for p in (cfg.model, cfg.manifest, cfg.out))
    except MissingMandatoryValue as e:
        raise SystemExit(
            f"error: {e.full_key}=... is required (model=TEACHER.nemo manifest=MANIFEST out=DIR)"
        ) from None
    try:
        model, sides = load_transducer(model_path)
        if "student" in sides and "teacher" not in sides:
            raise ValueError(
                f"{model_path}: a CoDERT model without a teacher (mode {model.codert.mode}): nothing to cache"
            )
        # A CoDERT model's `encoder` and `joint` are its teacher's: the cache is the teacher's either way.
        written = write_teacher_cache(
            model.to(cfg.device),
            manifest,
            out,
            k=cfg.k,
            batch_size=cfg.batch_size,
            shard_size=cfg.shard_size,
            teacher_name=str(model_path),
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"teacher cache of {model_path} on {manifest} -> {written}")
    return written


@hydra_runner(config_name="CacheConfig", schema=CacheConfig)
def main(cfg: CacheConfig) -> None:
    run(OmegaConf.merge(OmegaConf.structured(CacheConfig), cfg))


if __name__ == "__main__":
    main()
