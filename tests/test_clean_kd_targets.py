"""``model.codert.kd_teacher_input: clean``: the teacher's KD targets come from the features before spec-augment,
the teacher as at inference, in tandem (one more teacher pass) and with a static teacher (its only pass)."""

from __future__ import annotations

import pytest
import torch

from nemo_codert.losses import encoder_logits
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, tiny_config

# Spec-augment strong enough that augmented and clean features always differ on the test's short utterances.
_STRONG_AUGMENT = {"spec_augment.freq_masks": 2, "spec_augment.time_masks": 4, "spec_augment.time_width": 0.1}


def _kd_teacher_encoding(model, batch):
    """(the teacher encoding the KD term received, the teacher logits it received or None, the out dict) of one
    training-mode ``codert_losses`` call."""
    seen = {}
    kd = model._kd

    def spy(student, enc_s, z_s, enc_t, z_t, *args, **kwargs):  # records the arguments, computes the real term
        seen["enc_t"], seen["z_t"] = enc_t.detach().clone(), None if z_t is None else z_t.detach().clone()
        return kd(student, enc_s, z_s, enc_t, z_t, *args, **kwargs)

    model._kd = spy
    try:
        out = model.codert_losses(*batch)
    finally:
        del model._kd
    return seen["enc_t"], seen["z_t"], out


def _inference_encoding(model, batch):
    """The teacher encoder at inference on the clean features of ``batch`` (no augment, no dropout, no dither)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features, lengths = model.preprocessor(input_signal=batch[0], length=batch[1])
        encoded, _ = model.encoder(audio_signal=features, length=lengths)
    model.train(was_training)
    return encoded


@pytest.mark.parametrize("teacher_input", ["clean", "augmented"])
def test_tandem_kd_targets_are_the_clean_inference_encoding(corpus, teacher_input):
    # The joint's dropout on: clean targets pass the teacher's joint at inference too, not only its encoder.
    overrides = {"codert.kd_teacher_input": teacher_input, "joint.jointnet.dropout": 0.5}
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **_STRONG_AUGMENT, **overrides))
    model.train()
    batch = first_batch(model)
    bn_before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}

    torch.manual_seed(0)
    enc_kd, z_kd, out = _kd_teacher_encoding(model, batch)
    assert model.encoder.training, "the clean pass must hand the teacher back in training mode"
    assert model.teacher.joint.training, "the clean pass must hand the joint back in training mode"
    expected = _inference_encoding(model, batch)
    model.eval()
    with torch.no_grad():
        expected_logits = encoder_logits(model.teacher.joint, expected)
    model.train()
    if teacher_input == "clean":
        torch.testing.assert_close(enc_kd, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z_kd, expected_logits, rtol=1e-5, atol=1e-5)
    else:  # the checks above would fail for the paper's augmented targets
        assert not torch.allclose(enc_kd, expected, atol=1e-3)
    # The teacher still trains on the augmented features: its BatchNorm statistics move once, as without the option.
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in bn_before.items())

    # The clean targets carry no graph: KD trains the student and nothing of the teacher.
    out["kd"].backward(retain_graph=True)
    for name, p in model.encoder.named_parameters():
        assert p.grad is None or not p.grad.any(), f"KD reached teacher parameter encoder.{name}"
    assert any(p.grad is not None and p.grad.any() for p in model.student_encoder.parameters())


def test_outside_training_clean_and_augmented_targets_agree(corpus):
    losses = []
    for teacher_input in ("clean", "augmented"):
        torch.manual_seed(0)
        model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.kd_teacher_input": teacher_input}))
        model.eval()
        with torch.no_grad():
            losses.append(model.codert_losses(*first_batch(model))["kd"])
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_bad_teacher_input_is_a_clear_error(corpus):
    with pytest.raises(ValueError, match=r"model.codert.kd_teacher_input: 'denoised' is not one of augmented, clean"):
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.kd_teacher_input": "denoised"}))


def test_static_teacher_kd_targets_are_the_clean_inference_encoding(corpus, tmp_path):
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    EncDecRNNTBPEModel(cfg=tiny_config(corpus, aux_ctc=None)).save_to(str(tmp_path / "teacher.nemo"))
    static = {"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    model = CodertRNNTBPEModel(
        cfg=tiny_config(corpus, **_STRONG_AUGMENT, **static, **{"codert.kd_teacher_input": "clean"})
    )
    model.train()
    batch = first_batch(model)
    enc_kd, _, _ = _kd_teacher_encoding(model, batch)
    torch.testing.assert_close(enc_kd, _inference_encoding(model, batch), rtol=1e-5, atol=1e-5)


def test_spec_augment_leaves_the_clean_features_as_they_were(corpus):
    """NeMo's SpecCutout masks its input in place: the model hands it a copy, or the clean targets would be cut too."""
    cutout = {"spec_augment.rect_masks": 10, "spec_augment.rect_time": 5, "spec_augment.rect_freq": 5}
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **cutout))
    model.train()
    features = torch.randn(2, model.cfg.preprocessor.features, 40) + 10.0  # no element is 0 before masking
    clean = features.clone()
    augmented = model._augment(features, torch.tensor([40, 40]))
    assert torch.equal(features, clean) and (augmented == 0).any()
