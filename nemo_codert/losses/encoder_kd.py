"""Encoder-logit distillation, the KL term of CoDERT (Swaminathan et al., Interspeech 2021, eq. 3).

The transducer's joint network applied to the encoder alone, ``joint_net(project_encoder(enc))``, gives a
distribution over the vocabulary and blank for each acoustic frame (the "encoder logits", B x T x (V+1)). It is
cheap (no U axis) and, the paper argues, carries most of what the teacher knows about the acoustics; the student is
pulled towards the teacher's encoder logits with a temperature-softened KL divergence.

Scale. The KD term is added to NeMo's RNN-T loss, so it is reduced the same way: with NeMo's default
``rnnt_reduction: mean_batch`` the RNN-T loss is -log P(y|x) *summed over an utterance's lattice* and averaged
over utterances, so the KL is *summed over an utterance's valid frames* and averaged over utterances. (A per-frame
average would be ~T times smaller, ~70x on the shipped corpus: λ=1 would switch distillation nearly off.)

Which parameters KD trains. With a shared joint ("implicit distillation") both sides' logits pass through one
``joint_net``; letting the KL update it gives it a degenerate minimum: a ``joint_net`` whose output ignores its input
makes both distributions equal and the KL zero. Measured (``codert_small``, 500 steps, seed 0, λ=1 with this
reduction): student and teacher dev WER 1.0 / 1.0 with KD into the shared ``joint_net``. So the model computes
the student's KD logits with ``train_joint_net=False``: KD trains the student's encoder and its own projection
only, and the shared joint learns from the two RNN-T (and CTC) losses, as a joint should.

Joint dropout. Both sides' KD logits pass through ``joint_net`` as NeMo built it, dropout included in training, each
with its own mask: the KL then also asks the student to be robust to the teacher's dropout noise. Dropout-free KD
logits (an extra ``joint_net`` pass in eval mode per side) were not measured against this; ``jointnet.dropout`` is
0 in ``codert_small`` (no noise to match), 0.1 in ``codert_lstm`` and 0.2 in ``codert_fastconformer``.
(``kd_teacher_input: clean`` makes the teacher's side dropout-free, joint included.)

Both functions are pure: no state, no NeMo model needed, so the loss can be unit-tested and reused as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "KD_REDUCTIONS",
    "check_kd_arguments",
    "encoder_logit_classes",
    "encoder_logits",
    "encoder_kd_loss",
    "valid_frames",
]

#: NeMo ``rnnt_reduction`` values the KD term follows. ``mean`` and ``mean_volume`` divide by target lengths, a
#: per-token normalisation with no frame-level counterpart: they are rejected rather than approximated.
KD_REDUCTIONS = ("mean_batch", "sum")


def encoder_logits(joint: torch.nn.Module, encoder_output: torch.Tensor, train_joint_net: bool = True) -> torch.Tensor:
    """Encoder logits of a NeMo transducer: ``joint.joint_net(joint.project_encoder(enc))``.

    Args:
        joint: a NeMo ``RNNTJoint`` (``project_encoder``, ``joint_net``, ``num_classes_with_blank``).
        encoder_output: NeMo encoder output, B x D x T (NeMo's channel-first layout).
        train_joint_net: False runs ``joint_net`` with its parameters detached: gradient still flows *through* it
            to the projection and the encoder, but no loss on these logits updates ``joint_net`` itself.

    Returns:
        Unnormalised logits, B x T x (V+1), blank last. No log-softmax or joint temperature is applied: the KD
        temperature is the only one that acts here. A TDT joint's duration outputs (``num_extra_outputs``, after
        blank) are dropped: what is distilled is the token/blank distribution, which a plain RNN-T student has too;
        a duration distribution given no token emission has no encoder-only meaning to compare.
    """
    projected = joint.project_encoder(encoder_output.transpose(1, 2))
    if train_joint_net:
        logits = joint.joint_net(projected)
    else:
        frozen = {name: p.detach() for name, p in joint.joint_net.named_parameters()}
        logits = torch.func.functional_call(joint.joint_net, frozen, (projected,))
    classes = encoder_logit_classes(joint)
    return logits if logits.shape[-1] == classes else logits[..., :classes]


def encoder_logit_classes(joint: torch.nn.Module) -> int:
    """V+1: the width of :func:`encoder_logits` for a NeMo ``RNNTJoint``, the tokens and blank without a TDT joint's
    duration outputs (``num_extra_outputs``)."""
    return int(joint.num_classes_with_blank) - int(getattr(joint, "num_extra_outputs", 0) or 0)


def valid_frames(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """B x T boolean mask: True where frame t < lengths[b]."""
    frames = torch.arange(max_frames, device=lengths.device)
    return frames.unsqueeze(0) < lengths.unsqueeze(1)


def check_kd_arguments(
    loss: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float, reduction: str, same: str
) -> None:
    """The checks every KD term makes: equal shapes (``same`` says what must match), τ > 0, a reduction it follows;
    errors name ``loss``."""
    if student.shape != teacher.shape:
        raise ValueError(f"{loss}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ; {same}")
    if temperature <= 0:
        raise ValueError(f"{loss}: temperature must be > 0, got {temperature}")
    if reduction not in KD_REDUCTIONS:
        raise ValueError(f"{loss}: reduction {reduction!r} is not one of {', '.join(KD_REDUCTIONS)}")


def encoder_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean_batch",
    frame_shift: int = 0,
) -> torch.Tensor:
    """KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) summed over classes and over each utterance's valid frames.

    The teacher side is detached here, not by the caller, so that in tandem training the distillation term can
    never push gradient into the teacher ("in-place distillation"). The τ² factor of Hinton et al. is *not*
    applied: the caller owns the weighting (CoDERT uses λ·τ²·KD).

    Args:
        student_logits: B x T x C.
        teacher_logits: B x T x C (same shape; C = V+1 with blank).
        lengths: B valid frame counts; frames at or past the length are padding and do not count.
        temperature: τ > 0.
        reduction: ``mean_batch`` (per-utterance sums averaged over the batch, like NeMo's RNN-T loss) or ``sum``.
        frame_shift: k >= 0: student frame t is paired with teacher frame t - k (the first k student frames and the
            last k teacher frames of each utterance go unpaired), so a student that sees less of the future (a
            streaming encoder) may emit k frames after a full-context teacher.

    Returns:
        A scalar tensor (0 when there is no valid frame).
    """
    check_kd_arguments(
        "encoder_kd_loss",
        student_logits,
        teacher_logits,
        temperature,
        reduction,
        "the two encoders must emit the same frames and classes",
    )
    if frame_shift < 0:
        raise ValueError(f"encoder_kd_loss: frame_shift must be >= 0, got {frame_shift}")
    if frame_shift:
        frames = student_logits.shape[1]
        # max(): a shift past the padded length leaves no pair (and no frame), not a slice from the end.
        kept = max(frames - frame_shift, 0)
        student_logits, teacher_logits = student_logits[:, frame_shift:], teacher_logits[:, :kept]
        lengths = (lengths - frame_shift).clamp(min=0)
    valid = valid_frames(lengths.to(student_logits.device), student_logits.shape[1]).unsqueeze(-1)
    # Padded frames are zeroed *before* the softmax: they may hold inf/NaN (an overflow, a corrupt utterance), and
    # masking only the KL afterwards keeps the value finite but not the gradient (d/dx of where() still multiplies
    # NaN by 0). Zero logits give a uniform distribution, identical on both sides: KL 0, gradient 0.
    # KL in float32 at least: bf16/fp16 log-softmax differences of near-equal distributions are mostly rounding.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    student = torch.where(valid, student_logits.to(dtype), 0.0)
    teacher = torch.where(valid, teacher_logits.detach().to(dtype), 0.0)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    kl_per_utterance = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=(1, 2))  # B
    if reduction == "sum":
        return kl_per_utterance.sum()
    return kl_per_utterance.mean()
