"""TDT (token-and-duration transducer) loss for CPU tensors, vectorised (``rnnt_cpu.DispatchingTDTLossNumba`` sends
CPU tensors here and CUDA tensors to NeMo's kernel).

Why this exists
---------------
NeMo 3.0 has no CPU TDT loss: ``loss_name: tdt`` resolves to ``TDTLossNumba``, whose CPU branch raises "TDT is not
yet implemented for non CUDA computation", and the pure-PyTorch reference ``TDTLossPytorch`` moves its lattice to
CUDA (``log_alpha.cuda()``) and loops over every (b, t, u, duration) in Python. NVIDIA's current English models are
FastConformer-TDT, so a user's teacher (and a student that shares its joint) is often a TDT model; without this a
TDT student could not be trained, tested or debugged on a CPU at all.

What it computes
----------------
The function of NeMo's reference (``nemo.collections.asr.losses.rnnt_pytorch.TDTLossPytorch``, Equation 7 of Xu et
al. 2023, arXiv 2304.06795), per utterance: the last ``D`` activations of each joint cell are the duration logits
(log-softmax over them), the others the token/blank logits (log-softmax, minus ``sigma``: logit under-normalisation);
blank arcs advance t by a duration d >= 1, label arcs by any d (0 included: several tokens in one frame), and the
utterance ends with a blank arc that lands exactly on its last frame + 1. ``cost = -log P(y | x)``, float32, as
NeMo's kernel writes it. Gradients are autograd's, i.e. the exact derivative of that cost.

NeMo's ``omega`` (with that probability a batch's loss is the plain RNN-T loss of the token/blank logits) is the
dispatcher's (``nemo_codert.losses.rnnt_cpu.DispatchingTDTLossNumba``), which calls this for the TDT batches.

Algorithm
---------
One step per frame t, each over the whole (batch, U+1) slice: the arcs from earlier frames (d >= 1) are a
log-sum-exp over the durations; the d = 0 label arcs chain cells of the same frame, a linear recurrence in log space
solved in closed form with a prefix sum and ``logcumsumexp``. So ``T`` small steps, no per-cell Python work; the
recursion runs in float64 (it holds only B x T x U values). Unreachable cells hold a large finite negative number,
as NeMo's reference does (-inf would give NaN gradients through log-sum-exp).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["tdt_loss_cpu"]

_UNREACHABLE = -1.0e4  # log-probability of an impossible lattice cell (finite: see the module docstring)


def tdt_loss_cpu(
    acts: torch.Tensor,
    labels: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int,
    durations: Sequence[int],
    sigma: float = 0.0,
) -> torch.Tensor:
    """Per-utterance TDT cost -log P(y|x) (B, float32) of raw joint activations ``acts`` (B x T x (U+1) x (V+1+D)),
    blank at index ``blank`` of the token part, the last ``len(durations)`` outputs the duration logits."""
    durations = [int(d) for d in durations]
    if not durations or 1 not in durations or any(d < 0 for d in durations):
        raise ValueError(f"TDT durations {durations}: need non-negative durations that include 1")
    n_dur = len(durations)
    batch, max_t, max_u1, _ = acts.shape
    label_lp = torch.log_softmax(acts[..., :-n_dur], dim=-1) - sigma
    dur_lp = torch.log_softmax(acts[..., -n_dur:], dim=-1).double()  # B x T x U+1 x D
    blank_lp = label_lp[..., blank].double()  # B x T x U+1
    labels = labels[:, : max_u1 - 1].long()
    index = labels.clamp(min=0)[:, None, :, None].expand(batch, max_t, max_u1 - 1, 1)
    emit_lp = label_lp[:, :, :-1, :].gather(-1, index).squeeze(-1).double()  # B x T x U

    # Arc weights from cell (t, u): blank to (t + d, u), label to (t + d, u + 1), one per duration.
    blank_arc = blank_lp.unsqueeze(-1) + dur_lp  # B x T x U+1 x D
    label_arc = emit_lp.unsqueeze(-1) + dur_lp[:, :, :-1, :]  # B x T x U x D
    unreachable = acts.new_full((batch, 1), _UNREACHABLE, dtype=torch.float64)
    zero_dur = durations.index(0) if 0 in durations else None

    alphas = []
    for t in range(max_t):
        terms = []
        for n, d in enumerate(durations):
            if d == 0 or t - d < 0:
                continue
            prev = alphas[t - d]  # B x U+1
            terms.append(prev + blank_arc[:, t - d, :, n])
            terms.append(torch.cat([unreachable, prev[:, :-1] + label_arc[:, t - d, :, n]], dim=1))
        if t == 0:
            start = torch.full_like(blank_lp[:, 0, :], _UNREACHABLE)
            start[:, 0] = 0.0
            terms.append(start)
        base = torch.logsumexp(torch.stack(terms), dim=0) if len(terms) > 1 else terms[0]
        if zero_dur is not None:
            # alpha(u) = logaddexp(base(u), alpha(u - 1) + c(u - 1)), c = the d = 0 label arcs of this frame:
            # alpha(u) = P(u) + logcumsumexp_k(base(k) - P(k)), P the prefix sum of c.
            prefix = torch.cat([torch.zeros_like(unreachable), label_arc[:, t, :, zero_dur].cumsum(dim=1)], dim=1)
            base = prefix + torch.logcumsumexp(base - prefix, dim=1)
        alphas.append(base)
    alpha = torch.stack(alphas, dim=1)  # B x T x U+1

    # The end: a blank arc of duration d >= 1 from (T_b - d, U_b) lands on T_b.
    rows = torch.arange(batch, device=acts.device)
    ends = []
    for n, d in enumerate(durations):
        if d == 0:
            continue
        t = act_lens.long() - d
        ok = t >= 0
        t = t.clamp(min=0)
        u = label_lens.long()
        end = alpha[rows, t, u] + blank_arc[rows, t, u, n]
        ends.append(torch.where(ok, end, torch.full_like(end, _UNREACHABLE)))
    log_likelihood = torch.logsumexp(torch.stack(ends), dim=0)
    return (-log_likelihood).float()
