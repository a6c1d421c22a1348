"""Exact, vectorised RNN-T loss for CPU tensors (drop-in for NeMo's ``warprnnt_numba`` CPU path).

Why this exists
---------------
NeMo's default RNN-T loss (``loss_name='default'`` -> ``warprnnt_numba``) runs its CPU branch
(``nemo.collections.asr.parts.numba.rnnt_loss.utils.cpu_utils.cpu_rnnt.CPURNNT``) as plain Python
loops over every lattice cell of every utterance, touching 0-d tensors one at a time. A single
forward+backward for B=16, T=75, U=26, V=129 takes seconds, which makes CPU training, CPU CI and
CPU debugging of transducer models (e.g. CoDERT distillation) impractical.

What it computes
----------------
Exactly the function NeMo's CPU path computes (see ``RNNTLossNumba.forward`` and ``CPURNNT``):

* ``log_softmax`` is applied to the activations inside the loss; blank is ``blank`` (NeMo: last index);
* per utterance ``cost = -(1 + fastemit_lambda) * log P(y | x)`` (NeMo scales the log-likelihood by
  ``1 + lambda``), returned as float32 like NeMo's ``costs`` buffer;
* the gradient w.r.t. the log-probs is NeMo's warp-transducer gradient: ``-occupancy`` of every blank
  transition and ``-(1 + lambda) * occupancy`` of every label transition (this is FastEmit as NeMo
  implements it -- note it is *not* the derivative of the scaled cost when ``lambda > 0``);
  it is pushed through ``log_softmax`` in closed form, ``softmax * sum(occ) - occ_blank - occ_label``;
* the incoming gradient (e.g. ``1/B`` from a mean) multiplies it, then ``clamp > 0`` clips it to
  ``[-clamp, clamp]`` (NeMo's ``LogSoftmaxGradModification`` sits before the log_softmax, so it clips
  the gradient w.r.t. the raw activations after the reduction's scaling);
* padding (``t >= T_b`` or ``u > L_b``) gets an exactly zero gradient; ``target_length == 0`` works.

Algorithm and complexity
------------------------
The (t, u) lattice is processed by anti-diagonals ``n = t + u``: all cells of a diagonal depend only on
the previous diagonal, so each of the ``T + U - 1`` steps is two tensor ops over a ``(U+1, 2B)`` slice,
for the whole batch at once. Alphas and betas run in the *same* loop: betas are computed as the alphas of
each utterance's reversed lattice (an index gather flips each utterance at its own ``(T_b, U_b)``, so
ragged lengths need no masking inside the loop). The recursions run in float64 (the tensors are only
``B*T*U`` large, so this is free) which makes them more accurate than NeMo's fp32 recursion.

* time: ``O(B*T*U*V)`` memory-bound work (one ``log_softmax`` in forward, one ``exp`` + one ``mul`` in
  backward, done in place on the saved log-softmax buffer, so the gradient is allocated once) plus
  ``O(B*T*U)`` index/recursion work in ``2*(T+U)`` small torch ops -- no per-cell Python work;
* memory: one ``B*T*U*V`` buffer (the same as NeMo, which stores its gradient from forward to backward).

Dispatch
--------
:class:`CpuRNNTLoss` is NeMo's :class:`~nemo.collections.asr.losses.rnnt.RNNTLoss` (same constructor,
``forward``, ``reduction`` attribute and ``reduce``); it only swaps the inner kernel ``self._loss``
(a :class:`RNNTLossNumba`) for :class:`DispatchingRNNTLossNumba`, a subclass of it that runs the
vectorised kernel for CPU tensors and NeMo's own numba code for CUDA tensors (nothing changes on GPU).
Other ``loss_name`` values (``pytorch``, ``tdt``, ``multiblank_rnnt``, ``graph_rnnt``...) are left
exactly as NeMo resolves them (no vectorised path; NeMo's behaviour, including its errors, is kept).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss
from nemo.collections.asr.parts.numba.rnnt_loss.rnnt_pytorch import RNNTLossNumba, certify_inputs

__all__ = ["CpuRNNTLoss", "DispatchingRNNTLossNumba", "rnnt_loss_cpu_vectorized"]

_NEG_INF = float("-inf")


def _labels_per_row(labels: torch.Tensor, label_lens: torch.Tensor, max_u: int) -> torch.Tensor:
    """Label emitted from lattice row u, shape (B, U); rows without a label point at class 0.

    The padding of ``labels`` may hold anything (-1, blank, ...); it must never reach ``gather``.
    """
    batch = labels.shape[0]
    lab = torch.zeros(batch, max_u, dtype=torch.long)
    lab[:, : max_u - 1] = labels[:, : max_u - 1]
    has_label = torch.arange(max_u).unsqueeze(0) < label_lens.unsqueeze(1)
    return lab.masked_fill_(~has_label, 0)


def _lattice_indices(
    act_lens: torch.Tensor, label_lens: torch.Tensor, max_t: int, max_u: int, with_betas: bool
) -> torch.Tensor:
    """Flat indices into ``cat(lp2.flatten(), [-inf, 0])`` laying the transition log-probs out by diagonal.

    Result shape (N, U+1, R, 2), N = T+U-1 diagonals, column c <-> u = c-1 (column 0 is a -inf dummy so the
    "emit" neighbour of u=0 needs no special case), R = B alpha rows (+ B reversed-lattice beta rows).
    ``[..., 0]``: blank log-prob of the transition arriving at (n, c); ``[..., 1]``: emit log-prob of the
    transition leaving column c of diagonal n-1 (it lands on column c+1 of diagonal n).
    """
    batch = act_lens.shape[0]
    n_diag = max_t + max_u - 1
    cells = batch * max_t * max_u * 2
    neg_slot, zero_slot = cells, cells + 1

    n = torch.arange(n_diag).view(-1, 1, 1)
    c = torch.arange(max_u + 1).view(1, -1, 1)
    b = torch.arange(batch).view(1, 1, -1)
    base = b * (max_t * max_u)

    def flat(t: torch.Tensor, u: torch.Tensor, valid: torch.Tensor, slot: int) -> torch.Tensor:
        idx = (base + t.clamp(0, max_t - 1) * max_u + u.clamp(0, max_u - 1)) * 2 + slot
        return torch.where(valid, idx, neg_slot)

    # Alphas: blank arrives at (t, u) from (t-1, u) = (n-c, c-1); emit leaves (t, u) = (n-c, c-1) on diagonal n-1.
    t = n - c
    u = c - 1
    in_t = (t >= 0) & (t < max_t)
    a_blank = flat(t, u, in_t & (c >= 1), 0)
    # (0, 0) has alpha 0: the loop starts from a virtual predecessor holding 0 in column 1, added to 0 here.
    a_blank[0, 1, :] = zero_slot
    a_emit = flat(t, u, in_t & (c >= 1) & (u <= max_u - 2), 1)
    alpha_idx = torch.stack((a_blank, a_emit), dim=-1)
    if not with_betas:
        return alpha_idx

    # Betas = alphas of each utterance's reversed lattice (t', u') = (T_b-1-t, U_b-1-u). Both log-probs are
    # those of the *arriving* reversed cell, i.e. of the original cell the transition leaves.
    t_len = act_lens.view(1, 1, -1)
    u_len = (label_lens + 1).view(1, 1, -1)
    tr = n - c + 1  # t' of the blank target (n, c)
    b_blank = flat(t_len - 1 - tr, u_len - c, (c >= 1) & (c <= u_len) & (tr >= 0) & (tr < t_len), 0)
    tr = n - c  # t' of the emit target (n, c+1), u' = c
    b_emit = flat(t_len - 1 - tr, u_len - 1 - c, (c >= 1) & (c <= u_len - 1) & (tr >= 0) & (tr < t_len), 1)
    beta_idx = torch.stack((b_blank, b_emit), dim=-1)
    return torch.cat((alpha_idx, beta_idx), dim=2)


def _diagonal_recursion(trans: torch.Tensor) -> torch.Tensor:
    """Run ``S[n, c] = logaddexp(S[n-1, c] + trans[n, c, :, 0], S[n-1, c-1] + trans[n, c-1, :, 1])``.

    Returns S of shape (N+1, U+1, R) whose row 0 is the virtual start (0 in column 1, -inf elsewhere).
    """
    n_diag, cols, rows, _ = trans.shape
    state = torch.full((n_diag + 1, cols, rows), _NEG_INF, dtype=trans.dtype)
    state[0, 1] = 0.0
    for n in range(n_diag):
        s = state[n].unsqueeze(-1) + trans[n]
        torch.logaddexp(s[1:, :, 0], s[:-1, :, 1], out=state[n + 1, 1:])
    return state


class _VectorizedRNNTFunction(torch.autograd.Function):
    """Costs in forward (alphas only, or alphas+betas when a gradient is needed); gradient in closed form."""

    @staticmethod
    def forward(
        ctx,
        acts: torch.Tensor,
        labels: torch.Tensor,
        act_lens: torch.Tensor,
        label_lens: torch.Tensor,
        blank: int,
        fastemit_lambda: float,
        clamp: float,
    ) -> torch.Tensor:
        lp = torch.log_softmax(acts, dim=-1)
        certify_inputs(lp, labels, act_lens, label_lens)
        if bool((act_lens < 1).any()):
            raise ValueError("Every input length must be >= 1 for the RNN-T loss.")
        batch, max_t, max_u, _ = lp.shape
        need_grad = ctx.needs_input_grad[0]

        lab = _labels_per_row(labels, label_lens, max_u)
        pick = torch.empty(batch, max_t, max_u, 2, dtype=torch.long)
        pick[..., 0] = blank
        pick[..., 1] = lab.unsqueeze(1)
        # float64 recursions: only B*T*U values, and they accumulate T+U roundings of numbers ~ T*log(V).
        lp2 = lp.gather(-1, pick).double()

        idx = _lattice_indices(act_lens, label_lens, max_t, max_u, with_betas=need_grad)
        src = torch.cat((lp2.reshape(-1), lp2.new_tensor([_NEG_INF, 0.0])))
        state = _diagonal_recursion(src[idx])  # (N+1, U+1, R)

        t = torch.arange(max_t).view(1, -1, 1)
        u = torch.arange(max_u).view(1, 1, -1)
        bi = torch.arange(batch).view(-1, 1, 1)
        alpha = state[t + u + 1, u + 1, bi]  # (B, T, U); junk outside each utterance, never read there
        ar = torch.arange(batch)
        t_last, u_last = act_lens - 1, label_lens
        ll_forward = alpha[ar, t_last, u_last] + lp2[ar, t_last, u_last, 0]
        costs = (-(1.0 + fastemit_lambda) * ll_forward).to(acts.dtype)

        if need_grad:
            t_len = act_lens.view(-1, 1, 1)
            u_len = (label_lens + 1).view(-1, 1, 1)
            valid = (t < t_len) & (u < u_len)
            # beta(t+1, u) and beta(t, u+1) both sit on reversed diagonal T_b+U_b-3-t-u (+1 for the start row);
            # the final blank's beta(T_b, U_b-1) is that start row's 0, and the lattice edges read -inf.
            row = (t_len + u_len - 2 - t - u).clamp(0, state.shape[0] - 1)
            col = (u_len - u).clamp(0, max_u)
            beta_rows = bi + batch
            beta_next_t = state[row, col, beta_rows]
            beta_next_u = state[row, (col - 1).clamp(min=0), beta_rows]
            ll_backward = state[act_lens + label_lens, label_lens + 1, ar + batch].view(-1, 1, 1)

            base = alpha - ll_backward
            zero = base.new_zeros(())
            occ_blank = torch.where(valid, (base + lp2[..., 0] + beta_next_t).exp_(), zero)
            occ_emit = torch.where(valid, (base + lp2[..., 1] + beta_next_u + math.log1p(fastemit_lambda)).exp_(), zero)
            ctx.save_for_backward(acts, lab, occ_blank, occ_emit)
            ctx.lp = lp  # an intermediate: backward turns it into the gradient in place
            ctx.blank = blank
            ctx.clamp = clamp
        return costs

    @staticmethod
    def backward(ctx, grad_costs: torch.Tensor):
        acts, lab, occ_blank, occ_emit = ctx.saved_tensors
        grad = ctx.lp
        ctx.lp = None
        if grad is None:  # a second backward (retain_graph=True): the first one consumed the buffer
            grad = torch.log_softmax(acts, dim=-1)

        scale = grad_costs.to(torch.float64).reshape(-1, 1, 1)
        occ_blank = occ_blank * scale
        occ_emit = occ_emit * scale
        dtype = grad.dtype
        # d/d acts of log_softmax: softmax * (sum of the -occupancies' magnitudes) - the occupancies themselves.
        grad.exp_().mul_((occ_blank + occ_emit).to(dtype).unsqueeze(-1))
        grad.select(-1, ctx.blank).sub_(occ_blank.to(dtype))
        label_idx = lab.unsqueeze(1).unsqueeze(-1).expand(*occ_emit.shape, 1)
        grad.scatter_add_(-1, label_idx, occ_emit.to(dtype).neg_().unsqueeze(-1))
        if ctx.clamp > 0.0:
            grad.clamp_(-ctx.clamp, ctx.clamp)
        return grad, None, None, None, None, None, None


def rnnt_loss_cpu_vectorized(
    acts: torch.Tensor,
    labels: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int,
    fastemit_lambda: float = 0.0,
    clamp: float = 0.0,
) -> torch.Tensor:
    """Per-utterance RNN-T costs of NeMo's ``warprnnt_numba`` CPU path, in ``acts.dtype``, shape (B,).

    Args:
        acts: un-normalised joint activations (B, T, U, V), T == max(act_lens), U == max(label_lens) + 1;
            ``log_softmax`` is applied here, as NeMo's CPU path does. float16/bfloat16 are computed in float32.
        labels: (B, U-1) int64 targets (padding values are ignored).
        act_lens, label_lens: (B,) int64 lengths; act_lens >= 1, label_lens >= 0.
        blank: index of the blank class.
        fastemit_lambda: FastEmit lambda, applied exactly as NeMo's CPU kernel applies it.
        clamp: if > 0, the gradient w.r.t. ``acts`` is clipped to [-clamp, clamp] (after upstream scaling).
    """
    if acts.is_cuda:
        raise ValueError("rnnt_loss_cpu_vectorized is for CPU tensors; use NeMo's RNNTLossNumba on CUDA.")
    if clamp < 0:
        raise ValueError("`clamp` must be 0.0 or positive float value.")
    if acts.dtype in (torch.float16, torch.bfloat16):
        acts = acts.float()
    return _VectorizedRNNTFunction.apply(
        acts, labels, act_lens, label_lens, int(blank), float(fastemit_lambda), float(clamp)
    )


class DispatchingRNNTLossNumba(RNNTLossNumba):
    """NeMo's ``RNNTLossNumba`` whose CPU branch is :func:`rnnt_loss_cpu_vectorized`.

    CUDA tensors go to NeMo's unchanged ``RNNTLossNumba.forward``. ``blank``, ``reduction``,
    ``fastemit_lambda`` and ``clamp`` are NeMo's attributes and are read at call time (NeMo's fused
    and sampled joints overwrite ``reduction`` and ``blank`` around each call).
    """

    @classmethod
    def from_numba_loss(cls, loss: RNNTLossNumba) -> "DispatchingRNNTLossNumba":
        return cls(blank=loss.blank, reduction=loss.reduction, fastemit_lambda=loss.fastemit_lambda, clamp=loss.clamp)

    def forward(
        self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        if acts.is_cuda:
            return super().forward(acts, labels, act_lens, label_lens)
        costs = rnnt_loss_cpu_vectorized(
            acts, labels, act_lens, label_lens, self.blank, self.fastemit_lambda, self.clamp
        )
        # NeMo's kernel writes costs into a float32 buffer whatever the activation dtype.
        costs = costs.float()
        if self.reduction in ("sum", "mean"):
            costs = costs.sum().unsqueeze(-1)
            if self.reduction == "mean":
                costs = costs / acts.shape[0]
        return costs


class CpuRNNTLoss(RNNTLoss):
    """NeMo's ``RNNTLoss`` with a vectorised CPU kernel for ``loss_name`` ``'default'``/``'warprnnt_numba'``.

    Construct and call it exactly like :class:`nemo.collections.asr.losses.rnnt.RNNTLoss`::

        loss = CpuRNNTLoss(num_classes=V, reduction='mean_batch', loss_name='default',
                           loss_kwargs={'fastemit_lambda': 0.0, 'clamp': -1.0})
        value = loss(log_probs=joint, targets=y, input_lengths=t_len, target_lengths=y_len)

    Everything except the inner kernel is NeMo's: the constructor (kwargs resolution), ``forward``
    (int64 casts, fp32 upcast, trimming to the max lengths), ``reduction`` (settable) and ``reduce``,
    so it works inside ``RNNTJoint.set_loss`` with ``fuse_loss_wer=True``. The kernel ``self._loss``
    becomes a :class:`DispatchingRNNTLossNumba`: CPU tensors -> vectorised exact kernel, CUDA tensors ->
    NeMo's numba kernel. Any other ``loss_name`` keeps NeMo's resolved kernel untouched (no speed-up).
    """

    def __init__(
        self,
        num_classes: int,
        reduction: Optional[str] = "mean_batch",
        loss_name: str = "default",
        loss_kwargs: Optional[dict] = None,
    ) -> None:
        super().__init__(num_classes=num_classes, reduction=reduction, loss_name=loss_name, loss_kwargs=loss_kwargs)
        # Exact type: MultiblankRNNTLossNumba/TDTLossNumba are different functions and keep NeMo's kernel.
        if type(self._loss) is RNNTLossNumba:
            self._loss = DispatchingRNNTLossNumba.from_numba_loss(self._loss)

    @property
    def uses_vectorized_cpu_kernel(self) -> bool:
        """Whether CPU inputs take the vectorised path (False for loss names other than warprnnt_numba)."""
        return isinstance(self._loss, DispatchingRNNTLossNumba)
