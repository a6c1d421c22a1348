"""Encoder-logit distillation from a cached, top-k truncated teacher (``model.codert.mode: offline_teacher``).

A teacher's encoder logits are B x T x (V+1); caching every row of a large vocabulary costs more disk than the audio.
The cache keeps the k largest logits of each frame and their class indices (``topk_logits``). The truncated teacher
distribution is *renormalised over its k classes*: p_k = softmax(top-k logits / τ), which is exactly the full
softmax conditioned on the top-k set (the mass outside it, which the cache no longer knows, is dropped and the rest
rescaled). The student keeps its full distribution q = softmax(z_S / τ) over all V+1 classes, so the KL

    KL(p_k ‖ q) = Σ_{i in top-k} p_k[i] · (log p_k[i] - log q[i])

both pulls the student's mass onto the teacher's top-k classes and shapes it among them. With k = V+1 the cache holds
the full rows and this *is* ``encoder_kd_loss`` (tested). Reduced like the RNN-T loss it joins (``mean_batch``: summed
over an utterance's valid frames, averaged over utterances; ``sum``), the τ² factor left to the caller.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from nemo_codert.losses.encoder_kd import check_kd_arguments, valid_frames

__all__ = ["topk_kd_loss", "topk_logits"]


def topk_logits(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits of each row and their class indices, both ... x k (k >= C: every class, in order)."""
    if k <= 0:
        raise ValueError(f"topk_logits: k must be > 0, got {k}")
    classes = logits.shape[-1]
    if k >= classes:
        indices = torch.arange(classes, device=logits.device).expand(logits.shape)
        return logits, indices
    return torch.topk(logits, k, dim=-1)


def topk_kd_loss(
    student_logits: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_indices: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean_batch",
) -> torch.Tensor:
    """KL(softmax(top-k teacher logits / τ) ‖ softmax(z_S / τ) at those classes), summed over each utterance's
    valid frames and reduced over the batch.

    Args:
        student_logits: B x T x C, the student's encoder logits (all classes).
        teacher_values: B x T x k, the teacher's cached top-k logits (any float dtype; detached here).
        teacher_indices: B x T x k, their classes (integers in [0, C)).
        lengths: B valid frame counts; frames at or past them are padding and count for nothing.
        temperature: τ > 0. reduction: ``mean_batch`` or ``sum``.

    Returns:
        A scalar tensor (0 when there is no valid frame).
    """
    if teacher_values.shape != teacher_indices.shape:
        raise ValueError(
            f"topk_kd_loss: cached logits {tuple(teacher_values.shape)} and class indices "
            f"{tuple(teacher_indices.shape)} differ; the cache holds one index per logit"
        )
    # The student's first k classes stand in for its shape: batch and frames must match, k must not exceed V+1.
    check_kd_arguments(
        "topk_kd_loss",
        student_logits[..., : teacher_values.shape[-1]],
        teacher_values,
        temperature,
        reduction,
        "the cache must hold the frames the student emits, and at most its number of classes",
    )
    valid = valid_frames(lengths.to(student_logits.device), student_logits.shape[1]).unsqueeze(-1)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    # Padding zeroed before the softmax (it may hold inf/NaN), as in encoder_kd_loss; its indices may be anything.
    student = torch.where(valid, student_logits.to(dtype), 0.0)
    teacher = torch.where(valid, teacher_values.detach().to(dtype), 0.0)
    indices = torch.where(valid, teacher_indices.long(), 0)
    log_q = F.log_softmax(student / temperature, dim=-1).gather(-1, indices)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl_per_utterance = torch.where(valid, log_p.exp() * (log_p - log_q), 0.0).sum(dim=(1, 2))  # B
    if reduction == "sum":
        return kl_per_utterance.sum()
    return kl_per_utterance.mean()
