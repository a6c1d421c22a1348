"""The encoder-logit KL of CoDERT as a pure function."""

import pytest
import torch
import torch.nn.functional as F

from nemo_codert.losses.encoder_kd import encoder_kd_loss


def _per_utterance(student, teacher, lengths, tau):
    """KL written out by hand: per frame over classes, summed over each utterance's valid frames only."""
    sums = []
    for b, n in enumerate(lengths.tolist()):
        p_t = F.softmax(teacher[b, :n] / tau, dim=-1)
        sums.append((p_t * (p_t.log() - F.log_softmax(student[b, :n] / tau, dim=-1))).sum())
    return torch.stack(sums)


def test_matches_the_definition_on_ragged_lengths_and_ignores_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 7, 11, dtype=torch.float64), torch.randn(3, 7, 11, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 1])
    for tau in (1.0, 2.5):
        per_utt = _per_utterance(student, teacher, lengths, tau)
        # mean_batch, like NeMo's RNN-T loss: per-utterance sums averaged over utterances (not over frames).
        torch.testing.assert_close(encoder_kd_loss(student, teacher, lengths, tau), per_utt.mean())
        torch.testing.assert_close(encoder_kd_loss(student, teacher, lengths, tau, reduction="sum"), per_utt.sum())
        # Whatever the padded frames hold, the value does not move.
        garbage_s, garbage_t = student.clone(), teacher.clone()
        garbage_s[1, 4:], garbage_t[1, 4:] = 1e4, -1e4
        garbage_s[2, 1:] = torch.randn(6, 11) * 50
        torch.testing.assert_close(encoder_kd_loss(garbage_s, garbage_t, lengths, tau), per_utt.mean())


def test_scale_follows_utterance_length():
    """Twice the frames of the same content give twice the KD, as they give (about) twice the RNN-T loss."""
    torch.manual_seed(0)
    s, t = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    once = encoder_kd_loss(s, t, torch.tensor([5]))
    twice = encoder_kd_loss(torch.cat([s, s], 1), torch.cat([t, t], 1), torch.tensor([10]))
    torch.testing.assert_close(twice, 2 * once)


def test_padding_gets_no_gradient_and_teacher_none():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 6, requires_grad=True)
    teacher = torch.randn(2, 5, 6, requires_grad=True)
    encoder_kd_loss(student, teacher, torch.tensor([5, 2]), 2.0).backward()
    assert teacher.grad is None, "the teacher side must be detached"
    assert student.grad[1, 2:].abs().max() == 0
    assert student.grad[1, :2].abs().max() > 0


def test_non_finite_padding_leaves_value_and_gradient_finite():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 6)
    student[1, 3], student[1, 4, 0] = float("nan"), float("inf")
    student.requires_grad_(True)
    teacher = torch.randn(2, 5, 6)
    teacher[1, 4] = float("-inf")
    loss = encoder_kd_loss(student, teacher, torch.tensor([5, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(student.grad).all(), "NaN/inf in padded frames must not reach the gradient"
    assert student.grad[1, 3:].abs().max() == 0


def test_zero_for_identical_logits():
    logits = torch.randn(2, 4, 9)
    assert encoder_kd_loss(logits.clone(), logits, torch.tensor([4, 3]), 1.5).abs() < 1e-6


def test_rejects_reductions_it_cannot_follow():
    logits = torch.randn(2, 4, 9)
    with pytest.raises(ValueError, match="reduction 'mean_volume'"):
        encoder_kd_loss(logits, logits, torch.tensor([4, 3]), reduction="mean_volume")


def test_kd_is_computed_in_float32_from_bf16_logits_and_under_autocast():
    """Under bf16 mixed precision (the GPU configs) the KL of near-equal distributions would be mostly rounding."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 9).bfloat16(), torch.randn(2, 6, 9).bfloat16()
    lengths = torch.tensor([6, 4])
    reference = encoder_kd_loss(student.float(), teacher.float(), lengths)
    kd = encoder_kd_loss(student, teacher, lengths)
    assert kd.dtype == torch.float32
    torch.testing.assert_close(kd, reference)  # the same bf16 values, computed in float32: no rounding of the KL
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kd = encoder_kd_loss(student, teacher, lengths)
    assert kd.dtype == torch.float32
    torch.testing.assert_close(kd, reference)


def test_frame_shift_pairs_student_frame_t_with_teacher_frame_t_minus_k():
    torch.manual_seed(3)
    student, teacher = torch.randn(3, 7, 5, dtype=torch.float64), torch.randn(3, 7, 5, dtype=torch.float64)
    lengths, k = torch.tensor([7, 4, 2]), 2
    by_hand = []
    for b, n in enumerate(lengths.tolist()):
        pairs = [(t, t - k) for t in range(k, n)]  # student frame, teacher frame; none where n <= k
        kl = sum(
            (
                F.softmax(teacher[b, j], -1) * (F.log_softmax(teacher[b, j], -1) - F.log_softmax(student[b, t], -1))
            ).sum()
            for t, j in pairs
        )
        by_hand.append(torch.as_tensor(kl, dtype=torch.float64))
    got = encoder_kd_loss(student, teacher, lengths, frame_shift=k)
    torch.testing.assert_close(got, torch.stack(by_hand).mean())
    assert encoder_kd_loss(student, teacher, lengths, frame_shift=0) == encoder_kd_loss(student, teacher, lengths)
    with pytest.raises(ValueError, match="frame_shift must be >= 0"):
        encoder_kd_loss(student, teacher, lengths, frame_shift=-1)
    # A shift past the batch's padded length pairs nothing: no frame, no KL (not a slice from the end).
    beyond = student.clone().requires_grad_()
    loss = encoder_kd_loss(beyond, teacher, lengths, frame_shift=9)
    loss.backward()
    assert loss == 0 and not beyond.grad.any()
