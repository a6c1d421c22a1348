"""The encoder-logit KL of CoDERT as a pure function."""

import torch
import torch.nn.functional as F

from nemo_codert.losses.encoder_kd import encoder_kd_loss


def _reference(student, teacher, lengths, tau):
    """Per-frame KL written out by hand, averaged over the valid frames only."""
    frames = []
    for b, n in enumerate(lengths.tolist()):
        p_t = F.softmax(teacher[b, :n] / tau, dim=-1)
        frames.append((p_t * (p_t.log() - F.log_softmax(student[b, :n] / tau, dim=-1))).sum(-1))
    return torch.cat(frames).mean()


def test_matches_the_definition_and_ignores_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 7, 11, dtype=torch.float64), torch.randn(3, 7, 11, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 1])
    for tau in (1.0, 2.5):
        expected = _reference(student, teacher, lengths, tau)
        torch.testing.assert_close(encoder_kd_loss(student, teacher, lengths, tau), expected)
        # Whatever the padded frames hold, the value does not move.
        garbage_s, garbage_t = student.clone(), teacher.clone()
        garbage_s[1, 4:], garbage_t[1, 4:] = 1e4, -1e4
        garbage_s[2, 1:] = torch.randn(6, 11) * 50
        torch.testing.assert_close(encoder_kd_loss(garbage_s, garbage_t, lengths, tau), expected)


def test_padding_gets_no_gradient_and_teacher_none():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 6, requires_grad=True)
    teacher = torch.randn(2, 5, 6, requires_grad=True)
    encoder_kd_loss(student, teacher, torch.tensor([5, 2]), 2.0).backward()
    assert teacher.grad is None, "the teacher side must be detached"
    assert student.grad[1, 2:].abs().max() == 0
    assert student.grad[1, :2].abs().max() > 0


def test_zero_for_identical_logits():
    logits = torch.randn(2, 4, 9)
    assert encoder_kd_loss(logits.clone(), logits, torch.tensor([4, 3]), 1.5).abs() < 1e-7
