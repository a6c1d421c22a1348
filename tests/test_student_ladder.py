"""Several students against one teacher in one run (``model.student_encoders``): training, metrics, inference and
export of each student, on real NeMo models and real eSpeak audio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from nemo.collections.asr.models import ASRModel

from nemo_codert.export import HYBRID_TARGET, export_side
from nemo_codert.export import main as export_main
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, make_trainer, tiny_config
from helpers.hidden_loader import load_without_codert


def _ladder_config(corpus, **overrides):
    """The tiny tandem config with two students: 'medium' (width 32) and 'small' (the tiny student, width 24)."""
    cfg = tiny_config(corpus, **overrides)
    small = OmegaConf.to_container(cfg.student_encoder)
    medium = {**small, "d_model": 32}
    with open_dict(cfg):
        cfg.student_encoders = {"medium": medium, "small": small}
        del cfg.student_encoder
    return cfg


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_two_students_train_in_one_step_each_from_its_own_losses(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=_ladder_config(corpus))
    assert model.student_names == ["medium", "small"] and model.extra_students == ["small"]
    # The primary student is the model's own student_encoder (the one-student layout), the other a ladder entry.
    assert model.student_encoder.d_model == 32 and model.ladder_encoders["small"].d_model == 24
    # Each student projects into the one shared prediction network and joint.
    small = model.side("small")
    assert small.joint.joint_net is model.joint.joint_net and small.decoder is model.decoder
    assert small.joint.enc is not model.student_joint.enc

    model.train()
    out = model.codert_losses(*first_batch(model))
    for key in ("rnnt_student", "rnnt_student_small", "rnnt_teacher", "kd", "kd_small", "kd_weighted_small"):
        assert torch.isfinite(out[key]), key
    teacher_params = [*model.encoder.parameters(), *model.joint.enc.parameters()]

    # The small student's KD term trains the small student (encoder and projection), nothing else.
    out["kd_small"].backward(retain_graph=True)
    assert _grads(model.ladder_encoders["small"]) and _grads(model.ladder_joints["small"].enc)
    assert not _grads(model.student_encoder) and not any(p.grad is not None and p.grad.any() for p in teacher_params)
    assert not _grads(model.joint.joint_net), "KD must not train the shared joint_net"
    model.zero_grad(set_to_none=True)
    # The whole objective reaches both students, and the teacher only through its own losses.
    out["loss"].backward()
    assert _grads(model.student_encoder) and _grads(model.ladder_encoders["small"]) and _grads(model.encoder)
    model.zero_grad(set_to_none=True)
    out = model.codert_losses(*first_batch(model))
    (out["kd"] + out["kd_small"]).backward()
    assert not any(p.grad is not None and p.grad.any() for p in teacher_params), "KD reached the teacher"

    # Per-student weights: each student's λ and RNN-T weight enter the total as configured.
    cfg = _ladder_config(
        corpus,
        **{"codert.student_weights": {"small": {"kd_weight": 0.5, "rnnt_weight": 2.0}}, "codert.kd_weight": 0.1},
    )
    torch.manual_seed(0)
    weighted = CodertRNNTBPEModel(cfg=cfg)
    weighted.eval()
    o = weighted.codert_losses(*first_batch(weighted))
    assert torch.allclose(o["kd_weighted"], 0.1 * o["kd"]) and torch.allclose(
        o["kd_weighted_small"], 0.5 * o["kd_small"]
    )
    total = (
        (1 - 0.3) * o["rnnt_student"]
        + 0.3 * o["ctc_student"]
        + 2.0 * ((1 - 0.3) * o["rnnt_student_small"] + 0.3 * o["ctc_student_small"])
        + (1 - 0.3) * o["rnnt_teacher"]
        + 0.3 * o["ctc_teacher"]
        + o["kd_weighted"]
        + o["kd_weighted_small"]
    )
    assert torch.allclose(o["loss"], total, rtol=1e-5)


def test_ladder_fits_logs_every_students_metrics_and_restores(corpus, tmp_path):
    torch.manual_seed(1)
    cfg = _ladder_config(corpus, **{"codert.primary_student": "small"})
    trainer = make_trainer(max_steps=2, log_every_n_steps=1)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    # primary_student: the one exp_manager's val_wer is, and the model's student_encoder.
    assert model.student_names == ["small", "medium"] and model.student_encoder.d_model == 24
    before = {k: v.clone() for k, v in model.ladder_encoders["medium"].state_dict().items()}
    trainer.fit(model)
    assert any(not torch.equal(v, model.ladder_encoders["medium"].state_dict()[k]) for k, v in before.items())
    logged = trainer.callback_metrics
    for key in ("train_rnnt_student", "train_rnnt_student_medium", "train_kd_medium", "train_kd_weighted_medium"):
        assert key in logged, key

    (metrics,) = trainer.validate(model, verbose=False)
    for key in ("val_wer", "val_wer_small", "val_wer_medium", "val_wer_teacher", "val_kd", "val_kd_medium"):
        assert key in metrics, (key, sorted(metrics))
    assert metrics["val_wer"] == metrics["val_wer_small"]

    path = tmp_path / "ladder.nemo"
    model.save_to(str(path))
    restored = CodertRNNTBPEModel.restore_from(str(path), map_location="cpu")
    assert restored.student_names == ["small", "medium"]
    for k, v in model.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k


def test_each_student_transcribes_and_exports_as_a_stock_model(corpus, tmp_path):
    torch.manual_seed(2)
    model = CodertRNNTBPEModel(cfg=_ladder_config(corpus))
    model.eval()
    path = tmp_path / "ladder.nemo"
    model.save_to(str(path))
    audio = [json.loads(line)["audio_filepath"] for line in Path(corpus.dev_manifest).read_text().splitlines()[:3]]

    def texts(**kwargs):
        try:
            return [h.text for h in model.transcribe(audio, batch_size=3, num_workers=0, verbose=False, **kwargs)]
        finally:
            model.eval()

    ours = {name: texts(side=name) for name in ("medium", "small")}
    assert ours["medium"] == texts(), "the primary student transcribes by default"

    exported = {}
    for name in ("medium", "small"):
        out = tmp_path / f"{name}.nemo"
        assert export_main(["--nemo", str(path), "--which", f"student:{name}", "--out", str(out)]) == 0
        exported[name] = out
        stock = ASRModel.restore_from(str(out), map_location="cpu")
        assert stock.cfg.target == HYBRID_TARGET and "student_encoders" not in stock.cfg
        side = model.side(name)
        assert stock.encoder.d_model == side.encoder.d_model
        for k, v in side.encoder.state_dict().items():
            assert torch.equal(stock.encoder.state_dict()[k], v), (name, k)
    # 'student' is the primary student's export.
    assert export_side(path, "student", tmp_path / "primary.nemo")
    with pytest.raises(ValueError, match="names no student"):
        export_side(model, "student:large", tmp_path / "large.nemo")
    assert not (tmp_path / "large.nemo").exists()

    result = load_without_codert(exported, audio, path, tmp_path)
    assert result["codert_importable"] is False
    assert result["texts"] == ours


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"codert.mode": "student_only"}, "several students learn from one teacher"),
        ({"codert.primary_student": "large"}, "model.codert.primary_student: 'large' is not one of"),
        ({"codert.student_weights": {"large": {"kd_weight": 1.0}}}, r"student_weights: \['large'\]"),
        ({"codert.student_weights": {"small": {"kd_weight": -1.0}}}, "student_weights.small.kd_weight: must be >= 0"),
    ],
)
def test_bad_ladder_config_is_a_clear_error(corpus, overrides, message):
    with pytest.raises(ValueError, match=message):
        CodertRNNTBPEModel(cfg=_ladder_config(corpus, **overrides))


def test_student_names_the_primary_student_only(corpus):
    """'student' is the primary's name everywhere (side, export --which student): a further student may not take it."""
    cfg = _ladder_config(corpus)
    with open_dict(cfg):
        cfg.student_encoders = {"small": cfg.student_encoders.small, "student": cfg.student_encoders.medium}
    with pytest.raises(ValueError, match="'student' names the primary student \\('small' here\\)"):
        CodertRNNTBPEModel(cfg=cfg)
    with open_dict(cfg):
        cfg.codert.primary_student = "student"
    assert CodertRNNTBPEModel(cfg=cfg).student_names == ["student", "small"]


def test_a_ladder_student_of_another_frame_rate_is_a_clear_error(corpus):
    cfg = _ladder_config(corpus)
    with open_dict(cfg):
        cfg.student_encoders.small.subsampling_factor = 8
    with pytest.raises(ValueError, match="model.student_encoders.small: subsampling factor 8"):
        CodertRNNTBPEModel(cfg=cfg)


def test_a_list_of_students_is_named_by_position(corpus):
    cfg = _ladder_config(corpus)
    with open_dict(cfg):
        cfg.student_encoders = list(cfg.student_encoders.values())
    model = CodertRNNTBPEModel(cfg=cfg)
    assert model.student_names == ["student0", "student1"]
    assert model.cfg.codert.primary_student == "student0"
