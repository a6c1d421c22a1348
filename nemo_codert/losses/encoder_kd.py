"""Encoder-logit distillation, the KL term of CoDERT (Swaminathan et al., Interspeech 2021, eq. 3).

The transducer's joint network applied to the encoder alone, ``joint_net(project_encoder(enc))``, gives a
distribution over the vocabulary and blank for each acoustic frame (the "encoder logits", B x T x (V+1)). It is
cheap (no U axis) and, the paper argues, carries most of what the teacher knows about the acoustics; the student is
pulled towards the teacher's encoder logits with a temperature-softened KL divergence.

Both functions are pure: no state, no NeMo model needed, so the loss can be unit-tested and reused as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["encoder_logits", "encoder_kd_loss"]


def encoder_logits(joint: torch.nn.Module, encoder_output: torch.Tensor) -> torch.Tensor:
    """Encoder logits of a NeMo transducer: ``joint.joint_net(joint.project_encoder(enc))``.

    Args:
        joint: a NeMo ``RNNTJoint`` (anything with ``project_encoder`` and ``joint_net``).
        encoder_output: NeMo encoder output, B x D x T (NeMo's channel-first layout).

    Returns:
        Unnormalised logits, B x T x (V+1). No log-softmax or joint temperature is applied: the KD temperature is
        the only one that acts here.
    """
    return joint.joint_net(joint.project_encoder(encoder_output.transpose(1, 2)))


def encoder_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) summed over classes, averaged over the valid frames of the batch.

    The teacher side is detached here, not by the caller, so that in tandem training the distillation term can
    never push gradient into the teacher ("in-place distillation"). The τ² factor of Hinton et al. is *not*
    applied: the caller owns the weighting (CoDERT uses λ·τ²·KD).

    Args:
        student_logits: B x T x C.
        teacher_logits: B x T x C (same shape; C = V+1 with blank).
        lengths: B valid frame counts; frames at or past the length are padding and do not count.
        temperature: τ > 0.

    Returns:
        A scalar tensor (0 when there is no valid frame).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"encoder_kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the two encoders must emit the same frames and classes"
        )
    if temperature <= 0:
        raise ValueError(f"encoder_kd_loss: temperature must be > 0, got {temperature}")
    # KL in float32 at least: bf16/fp16 log-softmax differences of near-equal distributions are mostly rounding.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_p_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    kl_per_frame = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)  # B x T
    frames = torch.arange(kl_per_frame.shape[1], device=kl_per_frame.device)
    valid = frames.unsqueeze(0) < lengths.to(kl_per_frame.device).unsqueeze(1)
    # where() rather than multiply: padded frames may hold inf/NaN logits, and 0*inf would poison the sum.
    total = torch.where(valid, kl_per_frame, torch.zeros_like(kl_per_frame)).sum()
    return total / valid.sum().clamp(min=1)
