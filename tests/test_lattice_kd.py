"""The lattice KD term (Panchapagesan et al. 2021), the comparison to CoDERT's encoder-logit KD: the loss against a
brute-force computation over a small ragged lattice, and its wiring into real NeMo models (tandem and static)."""

import itertools

import pytest
import torch

from nemo.collections.asr.models import EncDecRNNTBPEModel

from nemo_codert.losses.lattice_kd import joint_lattice, lattice_kd_loss
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, make_trainer, tiny_config


def _brute_force(student, teacher, targets, frames, labels, temperature):
    """Per-utterance sum over nodes t < T_b, u <= U_b of KL over (next label, blank, rest), one node at a time."""
    total = []
    blank = student.shape[-1] - 1
    for b in range(student.shape[0]):
        kl = 0.0
        for t, u in itertools.product(range(int(frames[b])), range(int(labels[b]) + 1)):
            p_s = torch.softmax(student[b, t, u].double() / temperature, -1)
            p_t = torch.softmax(teacher[b, t, u].double() / temperature, -1)
            if u < labels[b]:
                y = int(targets[b, u])
                q_s = [p_s[y], p_s[blank], 1 - p_s[y] - p_s[blank]]
                q_t = [p_t[y], p_t[blank], 1 - p_t[y] - p_t[blank]]
            else:  # all labels emitted: blank or anything else
                q_s, q_t = [p_s[blank], 1 - p_s[blank]], [p_t[blank], 1 - p_t[blank]]
            kl += sum(float(pt * torch.log(pt / ps)) for pt, ps in zip(q_t, q_s))
        total.append(kl)
    return torch.tensor(total, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_lattice_kd_matches_a_brute_force_computation_on_a_ragged_lattice(temperature):
    torch.manual_seed(0)
    batch, frames, max_labels, classes = 3, 5, 3, 6
    student = torch.randn(batch, frames, max_labels + 1, classes)
    teacher = torch.randn(batch, frames, max_labels + 1, classes)
    targets = torch.randint(0, classes - 1, (batch, max_labels))
    frame_len, label_len = torch.tensor([5, 3, 4]), torch.tensor([3, 1, 0])  # ragged, one empty transcript
    expected = _brute_force(student, teacher, targets, frame_len, label_len, temperature)

    got = lattice_kd_loss(student, teacher, targets, frame_len, label_len, temperature=temperature)
    torch.testing.assert_close(got.double(), expected.mean(), rtol=1e-5, atol=1e-6)
    summed = lattice_kd_loss(student, teacher, targets, frame_len, label_len, temperature, reduction="sum")
    torch.testing.assert_close(summed.double(), expected.sum(), rtol=1e-5, atol=1e-6)
    assert lattice_kd_loss(teacher, teacher, targets, frame_len, label_len) == 0


def test_lattice_kd_ignores_padding_and_keeps_gradients_finite():
    torch.manual_seed(1)
    student = torch.randn(2, 4, 3, 5, requires_grad=True)
    teacher = torch.randn(2, 4, 3, 5)
    targets, frame_len, label_len = torch.tensor([[1, 2], [3, 0]]), torch.tensor([4, 2]), torch.tensor([2, 1])
    reference = lattice_kd_loss(student, teacher, targets, frame_len, label_len)
    noisy_s, noisy_t = student.detach().clone(), teacher.clone()
    noisy_s[1, 2:], noisy_t[1, 2:] = float("nan"), float("inf")  # frames past the second utterance's end
    noisy_s[1, :, 2:], noisy_t[1, :, 2:] = 1e4, float("nan")  # nodes past its last label
    noisy_s.requires_grad_(True)
    value = lattice_kd_loss(noisy_s, noisy_t, targets, frame_len, label_len)
    torch.testing.assert_close(value, reference)
    value.backward()
    assert torch.isfinite(noisy_s.grad).all() and noisy_s.grad[1, 2:].abs().sum() == 0


def test_lattice_kd_rejects_mismatched_lattices_and_bad_settings():
    a, b = torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 3, 4)
    ok = (torch.tensor([[1]]), torch.tensor([2]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"lattice_kd_loss: student \(1, 2, 2, 4\) and teacher \(1, 2, 3, 4\) differ"):
        lattice_kd_loss(a, b, *ok)
    with pytest.raises(ValueError, match="temperature"):
        lattice_kd_loss(a, a, *ok, temperature=0.0)
    with pytest.raises(ValueError, match="reduction 'mean'"):
        lattice_kd_loss(a, a, *ok, reduction="mean")


def test_joint_lattice_is_nemos_joint_before_its_softmax(corpus):
    """Composed from NeMo's joint parts: equal (after a log-softmax) to what NeMo's own joint computes."""
    torch.manual_seed(2)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    model.eval()
    signal, signal_len, transcript, transcript_len = first_batch(model)
    with torch.no_grad():
        features, feature_len = model._features(input_signal=signal, input_signal_length=signal_len)
        enc, _ = model.encoder(audio_signal=features, length=feature_len)
        dec, _, _ = model.decoder(targets=transcript, target_length=transcript_len)
        ours = joint_lattice(model.joint, enc, dec).log_softmax(-1)
        nemo = model.joint(encoder_outputs=enc, decoder_outputs=dec).log_softmax(-1)
    torch.testing.assert_close(ours, nemo)


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_tandem_lattice_kd_trains_the_student_encoder_only(corpus):
    torch.manual_seed(3)
    model = CodertRNNTBPEModel(
        cfg=tiny_config(corpus, **{"codert.kd_target": "joint_lattice", "codert.kd_weight": 1.0})
    )
    model.train()
    out = model.codert_losses(*first_batch(model))
    assert torch.isfinite(out["kd"]) and out["kd"] > 0
    out["kd_weighted"].backward()
    assert _grads(model.student_encoder) and _grads(model.student_joint.enc)
    assert not _grads(model.encoder), "KD must not reach the teacher (in-place distillation)"
    # The prediction network and joint_net are shared with the teacher: KD into them would have a collapse as minimum.
    assert not _grads(model.decoder) and not _grads(model.joint.pred) and not _grads(model.joint.joint_net)


def test_static_teacher_lattice_kd_runs_the_teachers_prediction_network(corpus, tmp_path):
    torch.manual_seed(4)
    EncDecRNNTBPEModel(cfg=tiny_config(corpus, **{"aux_ctc": None})).save_to(str(tmp_path / "teacher.nemo"))
    overrides = {
        "codert.mode": "static_teacher",
        "codert.teacher_nemo": str(tmp_path / "teacher.nemo"),
        "codert.kd_target": "joint_lattice",
    }
    trainer = make_trainer(max_steps=2)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **overrides), trainer=trainer)
    teacher = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    out = model.codert_losses(*first_batch(model))
    assert torch.isfinite(out["kd"]) and out["kd"] > 0 and "rnnt_teacher" not in out
    trainer.fit(model)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in teacher.items())
    # Validation reports the same KD term (the lattice needs the prediction networks there too).
    metrics = trainer.validate(model, verbose=False)[0]
    assert metrics["val_kd"] > 0 and metrics["val_kd_weighted"] == pytest.approx(model.kd_scale() * metrics["val_kd"])
