"""Restoring `.nemo` files safely: a foreign target class is refused, not imported, and a bad teacher `.nemo`
(missing, truncated, not a `.nemo`, not an RNN-T model) is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_codert.utils import restore_nemo

from helpers.factories import tiny_config


@pytest.mark.parametrize("target", ["codert_evil.Model", "nemo_codert_evil.Model"])
def test_nemo_with_a_foreign_target_is_refused_not_imported(corpus, tmp_path, monkeypatch, target):
    """NeMo 3.0 restores only approved prefixes; importing nemo_codert widens them by exactly `nemo_codert.`."""
    import io
    import tarfile

    from omegaconf import OmegaConf

    from nemo.collections.asr.models import ASRModel

    import nemo_codert.models  # noqa: F401  (registers the prefix: it must not let these through)
    from nemo_codert.export import read_nemo_config

    model = nemo_codert.models.CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    good = tmp_path / "good.nemo"
    model.save_to(str(good))

    marker = tmp_path / "imported"
    module = target.split(".")[0]
    (tmp_path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom nemo_codert.models import CodertRNNTBPEModel as Model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = read_nemo_config(good)
    cfg.target = target
    evil = tmp_path / "evil.nemo"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("model_config.yaml"):
                raw = OmegaConf.to_yaml(cfg).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            dst.addfile(member, data)
    with pytest.raises(Exception, match=rf"unsafe target '{target}' is blocked"):
        restore_nemo(ASRModel, evil, map_location="cpu")
    assert not marker.exists(), f"{module} was imported"
    # NeMo leaves its "model being restored" flag set after a failed restore (later models would skip their
    # dataloaders); restore_nemo, which the package uses everywhere, clears it.
    from nemo.core.classes.modelPT import ModelPT

    assert not ModelPT._is_model_being_restored()


def _ctc_nemo(corpus, path: Path) -> Path:
    """A real stock NeMo CTC model (not a transducer), saved as `.nemo`."""
    from omegaconf import OmegaConf

    from nemo.collections.asr.models import EncDecCTCModelBPE

    rnnt = tiny_config(corpus)
    cfg = OmegaConf.create(
        {
            "tokenizer": {"dir": str(corpus.tokenizer_dir), "type": "bpe"},
            "preprocessor": OmegaConf.to_container(rnnt.preprocessor),
            "encoder": OmegaConf.to_container(rnnt.student_encoder),
            "decoder": {
                "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
                "feat_in": rnnt.student_encoder.d_model,
                "num_classes": -1,
                "vocabulary": [],
            },
        }
    )
    EncDecCTCModelBPE(cfg=cfg).save_to(str(path))
    return path


@pytest.mark.parametrize("problem", ["missing", "truncated", "not_a_nemo", "ctc"])
def test_bad_teacher_nemo_is_one_clear_error(corpus, tmp_path, problem):
    from nemo_codert.models import CodertRNNTBPEModel

    path = tmp_path / "teacher.nemo"
    if problem == "truncated":
        good = tmp_path / "good.nemo"
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"})).save_to(str(good))
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif problem == "not_a_nemo":
        path.write_text("model: not really\n")
    elif problem == "ctc":
        _ctc_nemo(corpus, path)
    expected = {
        "missing": r"does not exist",
        "truncated": r"is not a readable \.nemo",
        "not_a_nemo": r"is not a readable \.nemo",
        "ctc": r"is not a NeMo RNN-T model",
    }[problem]
    cfg = tiny_config(corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(path)})
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=rf"model.codert.teacher_nemo: .*{expected}"):
        CodertRNNTBPEModel(cfg=cfg)
