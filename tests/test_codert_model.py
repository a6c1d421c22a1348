"""CoDERT model behaviour on real NeMo modules, real eSpeak audio and NeMo's own dataloaders."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel

from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, make_trainer, tiny_config


def _teacher_only_params(model):
    """Parameters only the teacher uses: its encoder and its projection into the joint."""
    return {f"encoder.{n}": p for n, p in model.encoder.named_parameters()} | {
        f"joint.enc.{n}": p for n, p in model.joint.enc.named_parameters()
    }


def _save_teacher(cfg, path, seed=0, cls=EncDecRNNTBPEModel):
    """A stock NeMo transducer (NeMo's class, not ours) standing in for a user's pre-trained teacher."""
    torch.manual_seed(seed)
    teacher = cls(cfg=cfg)
    teacher.save_to(str(path))
    return teacher


# NeMo's hybrid models need the aux_ctc head written out (NeMo fills in its sizes).
_HYBRID = {
    "aux_ctc.ctc_loss_weight": 0.3,
    "aux_ctc.decoder": {
        "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
        "feat_in": None,
        "num_classes": -1,
        "vocabulary": [],
    },
}


def test_kd_is_zero_with_zero_gradient_when_student_copies_teacher(corpus):
    cfg = tiny_config(corpus)
    with open_dict(cfg):
        cfg.student_encoder = cfg.encoder
    model = CodertRNNTBPEModel(cfg=cfg)
    model.student_encoder.load_state_dict(model.encoder.state_dict())
    model.student_joint.enc.load_state_dict(model.joint.enc.state_dict())
    model.eval()

    signal, signal_len, transcript, transcript_len = first_batch(model)
    out = model.codert_losses(signal, signal_len, transcript, transcript_len)
    assert out["kd"].abs().item() < 1e-6
    out["kd"].backward()
    for name, p in model.student_encoder.named_parameters():
        assert p.grad is None or p.grad.abs().max().item() < 1e-6, name


def test_tandem_kd_puts_no_gradient_on_teacher(corpus):
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    model.train()
    batch = first_batch(model)

    out = model.codert_losses(*batch)
    out["kd"].backward(retain_graph=True)
    for name, p in _teacher_only_params(model).items():
        assert p.grad is None or not p.grad.any(), f"KD reached teacher parameter {name}"
    student_grads = [p.grad for p in model.student_encoder.parameters() if p.grad is not None]
    assert student_grads and any(g.abs().sum() > 0 for g in student_grads), "KD must train the student"
    assert any(p.grad is not None and p.grad.any() for p in model.student_joint.enc.parameters())
    # Nor the shared joint_net / prediction network: a KL through a shared joint_net can be minimised by making
    # it ignore its input (both sides equal, KL 0), a collapse measured at λ=1 (encoder_kd.py).
    for name, p in [*model.joint.joint_net.named_parameters(), *model.decoder.named_parameters()]:
        assert p.grad is None or not p.grad.any(), f"KD reached shared parameter {name}"

    # The same check would catch a leak: the teacher's own RNN-T loss does reach those parameters.
    out["rnnt_teacher"].backward()
    assert any(p.grad is not None and p.grad.any() for p in _teacher_only_params(model).values())


@pytest.mark.parametrize(
    "teacher_cls, teacher_overrides",
    [(EncDecRNNTBPEModel, {"aux_ctc": None}), (EncDecHybridRNNTCTCBPEModel, _HYBRID)],
    ids=["rnnt_teacher", "hybrid_rnnt_ctc_teacher"],
)
def test_static_teacher_stays_bit_identical(corpus, tmp_path, teacher_cls, teacher_overrides):
    base = tiny_config(corpus, **teacher_overrides)
    teacher = _save_teacher(base, tmp_path / "teacher.nemo", cls=teacher_cls)
    cfg = tiny_config(
        corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    )
    trainer = make_trainer(max_steps=3)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    # A hybrid teacher's CTC head is not used: the KD target is its transducer's encoder logits, as for any teacher.
    assert not hasattr(model, "ctc_decoder")

    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in ("encoder", "decoder", "joint")
    }
    for k, v in teacher.encoder.state_dict().items():
        assert torch.equal(frozen[f"encoder.{k}"], v), f"teacher weight {k} not loaded from the .nemo"
    student_before = {k: v.clone() for k, v in model.student_encoder.state_dict().items()}

    trainer.fit(model)

    after = model.state_dict()
    for k, v in frozen.items():  # parameters and batch-norm statistics alike
        assert torch.equal(after[k], v), f"static teacher tensor {k} changed during training"
    assert any(not torch.equal(v, model.student_encoder.state_dict()[k]) for k, v in student_before.items())
    assert "train_rnnt_teacher" not in trainer.callback_metrics


def test_tandem_with_a_teacher_file_starts_from_it_and_trains_it_on(corpus, tmp_path):
    """mode tandem + teacher_nemo: a warm start. Every teacher tensor (aux CTC head included) is the file's at step 0,
    and unlike the static teacher it is trained: parameters require gradients and change."""
    path = tmp_path / "teacher.nemo"
    teacher = _save_teacher(tiny_config(corpus, **_HYBRID), path, seed=3, cls=EncDecHybridRNNTCTCBPEModel)
    trainer = make_trainer(max_steps=3)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_nemo": str(path)}), trainer=trainer)

    def teacher_state(m):
        return {
            f"{name}.{k}": v.clone()
            for name in ("encoder", "decoder", "joint", "ctc_decoder")
            for k, v in getattr(m, name).state_dict().items()
            if not k.startswith("_loss.")
        }

    before = teacher_state(model)
    for k, v in teacher_state(teacher).items():
        assert torch.equal(before[k], v), f"teacher tensor {k} not loaded from the .nemo"
    assert all(p.requires_grad for p in model.encoder.parameters())

    trainer.fit(model)

    after = teacher_state(model)
    for name in ("encoder", "decoder", "ctc_decoder"):
        assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(name)), f"{name} frozen"
    assert "train_rnnt_teacher" in trainer.callback_metrics


def test_student_only_builds_no_teacher(corpus):
    cfg = tiny_config(corpus, **{"codert.mode": "student_only"})
    model = CodertRNNTBPEModel(cfg=cfg)

    assert not hasattr(model, "student_encoder") and not hasattr(model, "student_joint")
    assert model.encoder._feat_out == cfg.student_encoder.d_model
    with pytest.raises(ValueError, match="no teacher"):
        model.teacher
    # Exactly the parameters of a stock NeMo hybrid transducer (codert_small ships the aux_ctc head) whose encoder is
    # the student.
    stock_cfg = tiny_config(corpus, **_HYBRID)
    with open_dict(stock_cfg):
        stock_cfg.encoder = stock_cfg.student_encoder
        stock_cfg.model_defaults.enc_hidden = stock_cfg.student_encoder.d_model
    stock = EncDecHybridRNNTCTCBPEModel(cfg=stock_cfg)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in stock.parameters())

    out = model.codert_losses(*first_batch(model))
    assert set(k for k in out if out[k] is not None) == {"loss", "rnnt_student", "ctc_student", "encoded_len"}


@pytest.mark.parametrize("mode", ["tandem", "student_only"])
def test_fused_and_unfused_joint_give_the_same_losses(corpus, mode):
    torch.manual_seed(0)
    unfused = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": mode, "joint.fuse_loss_wer": False}))
    fused = CodertRNNTBPEModel(
        cfg=tiny_config(corpus, **{"codert.mode": mode, "joint.fuse_loss_wer": True, "joint.fused_batch_size": 3})
    )
    fused.load_state_dict(unfused.state_dict())
    batch = first_batch(unfused)
    results = []
    for model in (unfused, fused):
        model.eval()
        out = model.codert_losses(*batch)
        out["loss"].backward()
        grad = torch.cat([p.grad.flatten() for p in model.student.encoder.parameters() if p.grad is not None])
        results.append((out, grad))
    (a, grad_a), (b, grad_b) = results
    for key in ("loss", "rnnt_student", "rnnt_teacher", "ctc_student", "ctc_teacher", "kd"):
        if key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_subsampling_mismatch_is_a_clear_error(corpus):
    cfg = tiny_config(corpus, **{"student_encoder.subsampling_factor": 8})
    with pytest.raises(ValueError, match=r"model.student_encoder: subsampling factor 8 differs .* teacher .*'s 4"):
        CodertRNNTBPEModel(cfg=cfg)


def test_a_static_teacher_of_another_frame_rate_is_a_clear_error(corpus, tmp_path):
    """The teacher's architecture comes from its .nemo: the error must name its factor, not the config's."""
    _save_teacher(tiny_config(corpus, **{"encoder.subsampling_factor": 8}), tmp_path / "teacher.nemo")
    cfg = tiny_config(
        corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    )
    assert cfg.encoder.subsampling_factor == cfg.student_encoder.subsampling_factor == 4
    with pytest.raises(ValueError, match=r"model.student_encoder: subsampling factor 4 differs .* teacher .*'s 8"):
        CodertRNNTBPEModel(cfg=cfg)


def test_tokenizer_mismatch_is_a_clear_error(corpus, other_tokenizer, tmp_path):
    # A teacher trained with another vocabulary: same text, different BPE size.
    teacher_cfg = tiny_config(corpus, **{"tokenizer.dir": str(other_tokenizer)})
    _save_teacher(teacher_cfg, tmp_path / "teacher.nemo")

    cfg = tiny_config(
        corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    )
    with pytest.raises(
        ValueError, match=r"model.codert.teacher_nemo: the tokenizer of .* differs from model.tokenizer"
    ):
        CodertRNNTBPEModel(cfg=cfg)


def test_nemo_round_trip_gives_identical_outputs(corpus, tmp_path):
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    model.eval()
    path = tmp_path / "codert.nemo"
    model.save_to(str(path))
    restored = CodertRNNTBPEModel.restore_from(str(path), map_location="cpu")
    restored.eval()
    assert type(restored) is CodertRNNTBPEModel

    signal, signal_len, _, _ = first_batch(model)
    with torch.no_grad():
        for side in ("student", "teacher"):
            with model.use_side(side), restored.use_side(side):
                a, a_len = model(input_signal=signal, input_signal_length=signal_len)
                b, b_len = restored(input_signal=signal, input_signal_length=signal_len)
            assert torch.equal(a, b) and torch.equal(a_len, b_len), side
    audio = [json_line["audio_filepath"] for json_line in _manifest(corpus.dev_manifest)[:3]]
    for use_teacher in (False, True):
        assert [h.text for h in model.transcribe(audio, use_teacher=use_teacher, verbose=False)] == [
            h.text for h in restored.transcribe(audio, use_teacher=use_teacher, verbose=False)
        ]


def _manifest(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_training_run_lowers_student_loss(corpus):
    torch.manual_seed(0)
    trainer = make_trainer(max_steps=12)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus), trainer=trainer)
    batch = first_batch(model)

    def student_loss():
        model.eval()
        with torch.no_grad():
            return model.codert_losses(*batch)["rnnt_student"].item()

    before = student_loss()
    trainer.fit(model)
    after = student_loss()
    assert after < 0.8 * before, (before, after)
    logged = {"train_loss", "train_rnnt_student", "train_rnnt_teacher", "train_ctc_student", "train_ctc_teacher"}
    assert logged | {"train_kd", "train_kd_weighted"} <= set(trainer.callback_metrics)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"codert.mode": "tandom"}, r"model.codert.mode: 'tandom' is not one of"),
        ({"codert.kd_weight": -1.0}, r"model.codert.kd_weight: must be >= 0"),
        ({"codert.kd_temperature": 0.0}, r"model.codert.kd_temperature: must be > 0"),
        ({"codert.mode": "static_teacher"}, r"model.codert.teacher_nemo: mode 'static_teacher' needs"),
        ({"codert.kd_wieght": 1.0}, r"model.codert: .*kd_wieght"),
        ({"codert.ctc_weight": 1.5}, r"model.codert.ctc_weight: must be in \[0, 1\]"),
        ({"codert.kd_target": "lattice"}, r"model.codert.kd_target: 'lattice' is not one of encoder_logits, joint_"),
        ({"codert.ctc_weight": 0.0, "aux_ctc.ctc_loss_weight": -0.1}, r"model.aux_ctc.ctc_loss_weight: must be in"),
        ({"codert.ctc_weight": 0.3, "aux_ctc.ctc_loss_weight": 0.3}, r"model.codert.ctc_weight and model.aux_ctc: "),
        ({"codert.kd_warmup_steps": -1}, r"model.codert.kd_warmup_steps: must be >= 0"),
        ({"codert.kd_start": "later"}, r"model.codert.kd_start: 'later' is not one of always, teacher_leads"),
        ({"rnnt_reduction": "mean_volume"}, r"model.rnnt_reduction: 'mean_volume' is not supported by CoDERT"),
    ],
)
def test_bad_codert_config_is_a_clear_error(corpus, override, message):
    with pytest.raises(ValueError, match=message):
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **override))


def test_missing_student_encoder_is_a_clear_error(corpus):
    cfg = tiny_config(corpus)
    with open_dict(cfg):
        del cfg["student_encoder"]
    with pytest.raises(ValueError, match="model.student_encoder: missing"):
        CodertRNNTBPEModel(cfg=cfg)
