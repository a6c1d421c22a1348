"""Lattice distillation, the comparison KD loss: Panchapagesan et al., "Efficient knowledge distillation for RNN-
Transducer models" (ICASSP 2021, arXiv 2011.06110).

CoDERT distils the *encoder logits* (the joint applied to the encoder alone: B x T x (V+1), no U axis). The
alternative distils the full joint: at every node (t, u) of the T x (U+1) lattice the joint gives a distribution over
V+1 classes; matching it in full costs O(T·U·V) per side and mostly matches classes the loss never uses. Panchapagesan
et al. collapse each node's distribution to the three outcomes the RNN-T loss can take there, the correct next label
y_{u+1}, blank, and everything else (the remaining mass), and take the KL between the teacher's and the student's
collapsed distributions, summed over the lattice:

    KD = sum_{t<T, u<=U} sum_{l in (y, blank, rest)} P_T(l|t,u) log(P_T(l|t,u) / P_S(l|t,u))

At u = U (all labels emitted) there is no next label: the node's outcomes are blank and rest (two classes).

Scale. Like ``encoder_kd_loss``, the term is reduced as NeMo's RNN-T loss is (``mean_batch``: summed over an
utterance's valid nodes, averaged over utterances; ``sum``): the caller weights it with λ·τ². A lattice has ~U+1
times the nodes an utterance has frames, so the same λ means a larger term than encoder-logit KD.

Which parameters KD trains. As for the encoder logits (``nemo_codert.losses.encoder_kd``): with a prediction network
and joint shared by the two sides, a KL into them has a degenerate minimum (a joint that ignores its inputs makes both
sides equal), so ``joint_lattice(..., train_shared=False)`` lets KD train only the student's encoder and its own
encoder projection; the shared parts learn from the RNN-T losses.

Both functions are pure (no state, no NeMo model needed beyond a joint), so the loss is unit-tested on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nemo_codert.losses.encoder_kd import check_kd_arguments, valid_frames

__all__ = ["collapsed_log_probs", "joint_lattice", "lattice_kd_loss"]


def joint_lattice(
    joint: torch.nn.Module,
    encoder_output: torch.Tensor,
    decoder_output: torch.Tensor,
    train_shared: bool = True,
) -> torch.Tensor:
    """Unnormalised joint logits over the whole lattice, B x T x (U+1) x (V+1), blank last.

    Composed from NeMo's ``RNNTJoint`` parts (``project_encoder``, ``project_prednet``, ``joint_net``) rather than
    ``joint.joint``, which log-softmaxes on CPU only: the KD term applies its own temperature and softmax on every
    device alike.

    Args:
        joint: a NeMo ``RNNTJoint``.
        encoder_output: B x D x T (NeMo's encoder layout).
        decoder_output: B x H x (U+1) (NeMo's prediction-network layout).
        train_shared: False: no gradient reaches the prediction network, its projection or ``joint_net`` (the
            parts a student shares with its teacher); the encoder and its projection still get theirs.
    """
    f = joint.project_encoder(encoder_output.transpose(1, 2)).unsqueeze(2)  # B x T x 1 x H
    g = joint.project_prednet(decoder_output.transpose(1, 2)).unsqueeze(1)  # B x 1 x (U+1) x H
    if train_shared:
        return joint.joint_net(f + g)
    frozen = {name: p.detach() for name, p in joint.joint_net.named_parameters()}
    return torch.func.functional_call(joint.joint_net, frozen, (f + g.detach(),))


def collapsed_log_probs(
    logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor, temperature: float = 1.0
) -> tuple:
    """Per-node log-probabilities of (next label, blank, rest) under softmax(logits/τ).

    Args:
        logits: B x T x (U+1) x (V+1), blank last.
        targets: B x U' label ids (U' >= U; padded).
        target_lengths: B.

    Returns:
        (log_y, log_blank, log_rest, has_label), each B x T x (U+1) but ``has_label`` (B x (U+1): u < U_b). Where a
        node has no next label ``log_y`` is meaningless (mask it with ``has_label``) and ``log_rest`` is the mass of
        every non-blank class.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32 at least, as the encoder-logit KD
    log_p = F.log_softmax(logits.to(dtype) / temperature, dim=-1)
    batch, frames, nodes, classes = log_p.shape
    blank = classes - 1
    has_label = torch.arange(nodes, device=logits.device).unsqueeze(0) < target_lengths.to(logits.device).unsqueeze(1)
    labels = torch.zeros(batch, nodes, dtype=torch.long, device=logits.device)
    width = min(nodes - 1, targets.shape[1])
    labels[:, :width] = targets[:, :width].long()
    labels = torch.where(has_label, labels, 0)
    log_y = log_p.gather(-1, labels[:, None, :, None].expand(batch, frames, nodes, 1)).squeeze(-1)
    # rest = every class but blank and (where there is one) the next label; a mask, not 1 - p_y - p_b, whose
    # cancellation would lose the small masses that matter most to a KL.
    excluded = F.one_hot(labels, classes).bool() & has_label.unsqueeze(-1)
    excluded[..., blank] = True
    log_rest = log_p.masked_fill(excluded.unsqueeze(1), float("-inf")).logsumexp(-1)
    return log_y, log_p[..., blank], log_rest, has_label


def lattice_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean_batch",
) -> torch.Tensor:
    """KL of the teacher's collapsed (label, blank, rest) distributions to the student's, summed over each
    utterance's valid lattice nodes (t < T_b, u <= U_b); the teacher side is detached here, as in
    ``encoder_kd_loss``, and the τ² factor is the caller's.

    Args:
        student_logits, teacher_logits: B x T x (U+1) x (V+1) joint logits (``joint_lattice``), same shape.
        targets: B x U label ids; frame_lengths, target_lengths: B.
        reduction: ``mean_batch`` (per-utterance sums averaged over the batch, like NeMo's RNN-T loss) or ``sum``.
    """
    check_kd_arguments(
        "lattice_kd_loss",
        student_logits,
        teacher_logits,
        temperature,
        reduction,
        "both sides must score the same frames, labels and classes",
    )
    frames, nodes = student_logits.shape[1], student_logits.shape[2]
    valid = valid_frames(frame_lengths.to(student_logits.device), frames).unsqueeze(2) & valid_frames(
        target_lengths.to(student_logits.device) + 1, nodes
    ).unsqueeze(1)
    # Invalid nodes are zeroed before the softmax (they may hold inf/NaN; see encoder_kd_loss): equal on both sides.
    student = torch.where(valid.unsqueeze(-1), student_logits, 0.0)
    teacher = torch.where(valid.unsqueeze(-1), teacher_logits.detach(), 0.0)
    *log_s, has_label = collapsed_log_probs(student, targets, target_lengths, temperature)
    *log_t, _ = collapsed_log_probs(teacher, targets, target_lengths, temperature)
    kl = sum(F.kl_div(s, t, reduction="none", log_target=True) for s, t in zip(log_s[1:], log_t[1:]))
    kl = kl + torch.where(has_label.unsqueeze(1), F.kl_div(log_s[0], log_t[0], reduction="none", log_target=True), 0.0)
    per_utterance = torch.where(valid, kl, 0.0).sum(dim=(1, 2))
    return per_utterance.sum() if reduction == "sum" else per_utterance.mean()
