"""The auxiliary CTC term (on encoder logits, or on NeMo's aux_ctc heads), the weighted/warmed-up KD term and per-side
learning rates, on real NeMo models and real audio."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from omegaconf import open_dict

from nemo.collections.asr.losses.ctc import CTCLoss
from nemo.collections.asr.modules import ConvASRDecoder

from nemo_codert.export.stock import stock_config
from nemo_codert.losses.encoder_kd import encoder_logits
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, logits_ctc, make_trainer, tiny_config


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_ctc_term_is_nemo_ctc_on_the_encoder_logits_and_ignores_padding(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **logits_ctc(0.3)))
    model.eval()  # no dropout/spec-augment: the hand computation below sees the same logits
    signal, signal_len, transcript, transcript_len = first_batch(model)
    assert signal_len.min() < signal_len.max(), "the batch must be ragged to test padding"
    out = model.codert_losses(signal, signal_len, transcript, transcript_len)
    assert torch.isfinite(out["ctc_student"]) and torch.isfinite(out["ctc_teacher"])

    with torch.no_grad():
        features, feature_len = model._features(input_signal=signal, input_signal_length=signal_len)
        enc, enc_len = model.student_encoder(audio_signal=features, length=feature_len)
        logits = encoder_logits(model.student_joint, enc)
    vocab = model.tokenizer.vocab_size
    reference = CTCLoss(num_classes=vocab, zero_infinity=True, reduction="mean_batch")(
        log_probs=logits.log_softmax(-1), targets=transcript, input_lengths=enc_len, target_lengths=transcript_len
    )
    torch.testing.assert_close(out["ctc_student"], reference)
    # The side loss is NeMo's hybrid convention, (1 - w)·RNNT + w·CTC.
    expected = 0.7 * out["rnnt_student"] + 0.3 * out["ctc_student"] + 0.7 * out["rnnt_teacher"]
    expected = expected + 0.3 * out["ctc_teacher"] + out["kd_weighted"]
    torch.testing.assert_close(out["loss"], expected)

    _assert_padding_is_ignored(model, logits.log_softmax(-1), enc_len, transcript, transcript_len, reference)


def _assert_padding_is_ignored(model, log_probs, lengths, transcript, transcript_len, reference):
    """Whatever the padded frames hold, the CTC value does not move."""
    garbage = log_probs.clone()
    short = int(lengths.argmin())
    garbage[short, int(lengths[short]) :] = 1e4
    _, ctc = model._with_ctc(torch.tensor(0.0), garbage, lengths, transcript, transcript_len)
    torch.testing.assert_close(ctc, reference)


def test_ctc_trains_each_encoder_and_the_joint_but_not_the_prediction_network(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **logits_ctc(0.5)))
    model.train()
    out = model.codert_losses(*first_batch(model))

    out["ctc_student"].backward(retain_graph=True)
    assert _grads(model.student_encoder) and _grads(model.student_joint.enc) and _grads(model.joint.joint_net)
    assert not _grads(model.encoder), "the student's CTC must not reach the teacher encoder"
    assert not _grads(model.decoder), "CTC on encoder logits has no prediction-network path"
    model.zero_grad(set_to_none=True)

    out["ctc_teacher"].backward()
    assert _grads(model.encoder) and _grads(model.joint.enc)
    assert not _grads(model.student_encoder)


def test_aux_ctc_is_nemo_ctc_on_a_head_of_each_encoder_and_ignores_padding(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))  # codert_small ships the aux_ctc heads, at 0.3
    assert model.cfg.aux_ctc.ctc_loss_weight == 0.3 and model.codert.ctc_weight == 0.0 and model.ctc_weight == 0.3
    model.eval()
    vocab = model.tokenizer.vocab_size
    heads = {
        "teacher": (model.ctc_decoder, model.encoder),
        "student": (model.student_ctc_decoder, model.student_encoder),
    }
    for name, (head, encoder) in heads.items():
        assert isinstance(head, ConvASRDecoder), name
        assert head._feat_in == encoder._feat_out and head.num_classes_with_blank == vocab + 1, name
    assert model.encoder._feat_out != model.student_encoder._feat_out
    # The saved config describes the teacher's head, completed as NeMo's hybrid model completes it.
    assert (
        model.cfg.aux_ctc.decoder.feat_in == model.encoder._feat_out and model.cfg.aux_ctc.decoder.num_classes == vocab
    )

    signal, signal_len, transcript, transcript_len = first_batch(model)
    out = model.codert_losses(signal, signal_len, transcript, transcript_len)
    with torch.no_grad():
        features, feature_len = model._features(input_signal=signal, input_signal_length=signal_len)
        enc, enc_len = model.student_encoder(audio_signal=features, length=feature_len)
        log_probs = model.student_ctc_decoder(encoder_output=enc)
    reference = CTCLoss(num_classes=vocab, zero_infinity=True, reduction="mean_batch")(
        log_probs=log_probs, targets=transcript, input_lengths=enc_len, target_lengths=transcript_len
    )
    torch.testing.assert_close(out["ctc_student"], reference)
    expected = 0.7 * out["rnnt_student"] + 0.3 * out["ctc_student"] + 0.7 * out["rnnt_teacher"]
    expected = expected + 0.3 * out["ctc_teacher"] + out["kd_weighted"]
    torch.testing.assert_close(out["loss"], expected)
    _assert_padding_is_ignored(model, log_probs, enc_len, transcript, transcript_len, reference)


def test_aux_ctc_trains_each_encoder_and_its_own_head_only(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"aux_ctc.ctc_loss_weight": 0.5}))
    model.train()
    out = model.codert_losses(*first_batch(model))

    out["ctc_student"].backward(retain_graph=True)
    assert _grads(model.student_encoder) and _grads(model.student_ctc_decoder)
    for other in (model.encoder, model.ctc_decoder, model.joint, model.student_joint, model.decoder):
        assert not _grads(other), "a head's CTC reaches its own encoder and head only (not the joint, unlike (a))"
    model.zero_grad(set_to_none=True)

    out["ctc_teacher"].backward()
    assert _grads(model.encoder) and _grads(model.ctc_decoder)
    for other in (model.student_encoder, model.student_ctc_decoder, model.joint, model.decoder):
        assert not _grads(other)


def test_student_only_with_aux_ctc_is_nemos_hybrid_layout(corpus):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    assert model.ctc_decoder._feat_in == model.encoder._feat_out == 24  # the encoder is the student's
    assert not hasattr(model, "student_ctc_decoder") and model.student.ctc_decoder is model.ctc_decoder
    out = model.codert_losses(*first_batch(model))
    assert torch.isfinite(out["ctc_student"]) and "ctc_teacher" not in out
    torch.testing.assert_close(out["loss"], 0.7 * out["rnnt_student"] + 0.3 * out["ctc_student"])


def test_without_ctc_there_is_no_ctc_term(corpus):
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **logits_ctc(0.0)))
    out = model.codert_losses(*first_batch(model))
    assert "ctc_student" not in out and "ctc_teacher" not in out and not hasattr(model, "ctc_loss")
    torch.testing.assert_close(out["loss"], out["rnnt_student"] + out["rnnt_teacher"] + out["kd_weighted"])


def test_kd_warmup_ramps_lambda_and_the_weighted_term_is_logged(corpus):
    cfg = tiny_config(corpus, **{"codert.kd_weight": 2.0, "codert.kd_temperature": 1.5, "codert.kd_warmup_steps": 4})
    trainer = make_trainer(max_steps=2, log_every_n_steps=1)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    assert model.kd_scale() == 0.0  # step 0: no KD gradient while the teacher is untrained
    trainer.fit(model)
    assert trainer.global_step == 2
    assert model.kd_scale() == 2.0 * 1.5**2 * 2 / 4
    m = trainer.callback_metrics
    # Logged at the last step (global step 1 when it ran): λ·τ² · 1/4.
    torch.testing.assert_close(m["train_kd_weighted"], m["train_kd"] * 2.0 * 1.5**2 / 4)


def _dev_outputs(student_wer: float, teacher_wer: float) -> list:
    """One validation batch's outputs, as ``validation_pass`` returns them, with these WERs over 100 words."""
    hundred = torch.tensor(100)
    return [
        {
            "val_wer_num": torch.tensor(round(100 * student_wer)),
            "val_wer_denom": hundred,
            "val_wer_num_teacher": torch.tensor(round(100 * teacher_wer)),
            "val_wer_denom_teacher": hundred,
        }
    ]


def test_kd_waits_until_the_teacher_leads_on_dev_then_stays_on(corpus):
    cfg = tiny_config(corpus, **{"codert.kd_weight": 2.0, "codert.kd_start": "teacher_leads"})
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer())
    assert model.kd_scale() == 0.0 and model.kd_start_step() is None
    # Lightning's sanity check and a trainer.validate() do not judge: no training step made those dev WERs.
    state = model.trainer.state
    for state.stage, state.fn in ((RunningStage.SANITY_CHECKING, TrainerFn.FITTING), (None, TrainerFn.VALIDATING)):
        model.multi_validation_epoch_end(_dev_outputs(student_wer=0.7, teacher_wer=0.6))
        assert model.kd_start_step() is None
    state.stage, state.fn = None, None
    logs = model.multi_validation_epoch_end(_dev_outputs(student_wer=0.7, teacher_wer=0.8))["log"]
    assert model.kd_scale() == 0.0 and logs["val_kd_started"] == 0.0  # the teacher trails: no KD
    logs = model.multi_validation_epoch_end(_dev_outputs(student_wer=0.7, teacher_wer=0.6))["log"]
    assert model.kd_scale() == 2.0 and model.kd_start_step() == 0 and logs["val_kd_started"] == 1.0
    model.multi_validation_epoch_end(_dev_outputs(student_wer=0.5, teacher_wer=0.9))
    assert model.kd_scale() == 2.0  # a latch: one noisy dev point does not switch the target off again

    # A resumed run keeps its gate.
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    resumed = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer())
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.kd_start_step() == 0 and resumed.kd_scale() == 2.0

    # The default starts KD at step 0, whatever the dev WERs.
    always = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.kd_weight": 2.0}), trainer=make_trainer())
    always.multi_validation_epoch_end(_dev_outputs(student_wer=0.7, teacher_wer=0.8))
    assert always.kd_start_step() == 0 and always.kd_scale() == 2.0


def test_the_kd_gate_reads_a_real_validation_and_needs_a_dev_set(corpus):
    cfg = tiny_config(corpus, **{"codert.kd_start": "teacher_leads"})
    trainer = make_trainer(max_steps=2, val_check_interval=2, check_val_every_n_epoch=None)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    trainer.fit(model)
    m = trainer.callback_metrics
    leads = bool(m["val_wer_teacher"] < m["val_wer"])
    assert m["val_kd_started"] == float(leads) and (model.kd_start_step() is not None) == leads

    with open_dict(cfg):
        cfg.validation_ds.manifest_filepath = None
    trainer = make_trainer(max_steps=1)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    with pytest.raises(ValueError, match="model.codert.kd_start: 'teacher_leads'.*no model.validation_ds"):
        trainer.fit(model)


def test_per_side_learning_rates_through_nemo_optim_param_groups(corpus):
    cfg = tiny_config(corpus, **{"codert.teacher_lr_scale": 1.0})  # the two ways are exclusive
    with open_dict(cfg):
        cfg.optim_param_groups = {"encoder": {"lr": 1e-4}}  # NeMo's own per-module setting: the teacher encoder
    trainer = make_trainer(max_steps=1)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    model.setup_optimization(cfg.optim)
    groups = model._optimizer.param_groups
    teacher = {id(p) for p in model.encoder.parameters()}
    by_group = [(g["lr"], {id(p) for p in g["params"]}) for g in groups]
    assert any(ids == teacher for _, ids in by_group)
    teacher_lr = next(
        g["initial_lr"] if "initial_lr" in g else g["lr"] for g in groups if {id(p) for p in g["params"]} == teacher
    )
    other = next(g for g in groups if {id(p) for p in g["params"]} != teacher)
    assert teacher_lr == 1e-4 and other.get("initial_lr", other["lr"]) == cfg.optim.lr
    assert {id(p) for p in model.student_encoder.parameters()} <= {id(p) for p in other["params"]}
    # The exported student leaves the groups behind: they name CoDERT's modules (here the teacher's encoder), which a
    # stock model fine-tuned from the file would read as its own encoder.
    assert "optim_param_groups" not in stock_config(model, "student")


def test_teacher_lr_scale_puts_the_teacher_encoder_in_a_group_of_its_own(corpus):
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_lr_scale": 0.5}))
    model.setup_optimization(model.cfg.optim)
    groups = {frozenset(id(p) for p in g["params"]): g["lr"] for g in model._optimizer.param_groups}
    teacher = frozenset(id(p) for p in model.encoder.parameters())
    assert groups.pop(teacher) == 0.5 * model.cfg.optim.lr
    ((rest, lr),) = groups.items()
    assert lr == model.cfg.optim.lr and {id(p) for p in model.student_encoder.parameters()} <= rest
    assert {id(p) for p in model.joint.parameters()} <= rest  # the shared joint learns at the base rate

    # student_only has no teacher: one group, the base rate.
    alone = CodertRNNTBPEModel(
        cfg=tiny_config(corpus, **{"codert.mode": "student_only", "codert.teacher_lr_scale": 0.5})
    )
    alone.setup_optimization(alone.cfg.optim)
    assert [g["lr"] for g in alone._optimizer.param_groups] == [alone.cfg.optim.lr]
    with pytest.raises(ValueError, match="teacher_lr_scale: set either it or model.optim_param_groups"):
        CodertRNNTBPEModel(
            cfg=tiny_config(
                corpus, **{"codert.teacher_lr_scale": 0.5, "optim_param_groups": {"encoder": {"lr": 1e-4}}}
            )
        )
