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
the previous diagonal, so each of the ``T + U - 1`` steps is two tensor ops (an add and a ``logaddexp``)
over a ``(2, U, 2B)`` slice, for the whole batch at once. Alphas and betas run in the *same* loop: betas
are the alphas of each utterance's reversed lattice (one index gather flips each utterance at its own
``(T_b, U_b)``, so ragged lengths need no masking inside the loop). The recursions run in float64 (they
only hold ``B*T*U`` values, so this costs nothing measurable) which makes them more accurate than NeMo's,
which run in the input dtype.

* forward: one ``softmax`` pass over the ``B*T*U*V`` joint; the lattice needs only the log of the 2 used
  probabilities per cell (cells where such a probability underflows are recomputed exactly with
  ``log_softmax`` in float64); the softmax is kept for backward instead of the log-softmax, which saves
  a full ``exp`` pass;
* backward: the gradient ``softmax * sum(occ) - occ`` is written in place into that softmax buffer (one
  multiply pass plus a 2-per-cell ``scatter_add_``), so the gradient is allocated once, in forward;
* time: ``O(B*T*U*V)`` memory-bound work as above plus ``O(B*T*U)`` index/recursion work in about
  ``2*(T+U)`` small torch calls -- no per-cell Python work. The joint-sized passes use all torch threads;
  the ``O(B*T*U)`` part runs on the calling thread only (see :func:`_single_threaded`), which keeps it fast
  on a loaded machine;
* memory: one ``B*T*U*V`` buffer held from forward to backward, plus a reference to the activations (kept
  for a repeated backward, e.g. gradcheck) and ``O(B*T*U)``. NeMo's CPU path holds its log-softmax output
  and a gradient tensor of that size.

Dispatch
--------
:class:`CpuRNNTLoss` is NeMo's :class:`~nemo.collections.asr.losses.rnnt.RNNTLoss` (same constructor,
``forward``, ``reduction`` attribute and ``reduce``); it only swaps the inner kernel ``self._loss``
(a :class:`RNNTLossNumba`) for :class:`DispatchingRNNTLossNumba`, a subclass of it that runs the
vectorised kernel for CPU tensors and NeMo's own numba code for CUDA tensors (nothing changes on GPU).
``loss_name: tdt`` gets :class:`DispatchingTDTLossNumba` likewise (NeMo has no CPU TDT loss at all; the CPU kernel is
``nemo_codert.losses.tdt_cpu``). Other ``loss_name`` values (``pytorch``, ``multiblank_rnnt``, ``graph_rnnt``...) are
left exactly as NeMo resolves them (no vectorised path; NeMo's behaviour, including its errors, is kept).
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Iterator, Optional, Tuple

import torch

from nemo.collections.asr.losses.rnnt import RNNTLoss
from nemo.collections.asr.parts.numba.rnnt_loss.rnnt_pytorch import RNNTLossNumba, TDTLossNumba, certify_inputs

from nemo_codert.losses.tdt_cpu import tdt_loss_cpu

__all__ = ["CpuRNNTLoss", "DispatchingRNNTLossNumba", "DispatchingTDTLossNumba", "rnnt_loss_cpu_vectorized"]

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

    Result shape (N, 2, U, R): N = T+U-1 diagonals n = t+u; R = B alpha rows (+ B beta rows). For the
    recursion state of diagonal n-1 stored in columns 0..U (column c <-> u = c-1, column 0 a -inf dummy so
    that u=0 needs no special case), ``[n, 0, j]`` is the emit log-prob of the transition leaving column j
    and ``[n, 1, j]`` the blank log-prob of the transition arriving at column j+1 of diagonal n.
    """
    batch = act_lens.shape[0]
    n_diag = max_t + max_u - 1
    neg_slot = batch * max_t * max_u * 2
    zero_slot = neg_slot + 1
    rows = 2 * batch if with_betas else batch
    # int32 halves the memory traffic of this index arithmetic; index_select accepts it.
    itype = torch.int32 if neg_slot + 2 < 2**31 else torch.long
    out = torch.empty(n_diag, 2, max_u, rows, dtype=itype)

    n = torch.arange(n_diag, dtype=itype).view(-1, 1, 1)
    j = torch.arange(max_u, dtype=itype).view(1, -1, 1)
    base = torch.arange(batch, dtype=itype).view(1, 1, -1) * (max_t * max_u * 2)
    neg = torch.tensor(neg_slot, dtype=itype)

    # Alphas. Blank arrives at (t, u=j) from (t-1, j), t-1 = n-1-j; emit leaves (t, j-1), t = n-j.
    t = n - 1 - j
    torch.where((t >= 0) & (t < max_t), (t * max_u + j) * 2 + base, neg, out=out[:, 1, :, :batch])
    # alpha(0, 0) = 0: the loop starts from a virtual predecessor holding 0 in column 1, plus 0 here.
    out[0, 1, 0, :batch] = zero_slot
    t = n - j
    torch.where((t >= 0) & (t < max_t) & (j >= 1), (t * max_u + j - 1) * 2 + 1 + base, neg, out=out[:, 0, :, :batch])
    if not with_betas:
        return out

    # Betas = alphas of each utterance's reversed lattice (t', u') = (T_b-1-t, U_b-1-u), so ragged ends need
    # no masking. A transition arriving at reversed (t', u'=j) uses the log-prob of the *original* cell it
    # leaves, which is that same cell (t, u) for both the blank (t'-1 -> t') and the emit (u'-1 -> u').
    t_prime = n - j
    t = act_lens.to(itype).view(1, 1, -1) - 1 - t_prime
    u = label_lens.to(itype).view(1, 1, -1) - j
    valid = (t_prime >= 0) & (t >= 0) & (u >= 0)
    cell = (t * max_u + u) * 2 + base
    torch.where(valid, cell, neg, out=out[:, 1, :, batch:])
    torch.where(valid & (j >= 1), cell + 1, neg, out=out[:, 0, :, batch:])
    return out


def _diagonal_recursion(trans: torch.Tensor) -> torch.Tensor:
    """Run ``S[n, c] = logaddexp(S[n-1, c-1] + trans[n, 0, c-1], S[n-1, c] + trans[n, 1, c-1])``, c = 1..U.

    Returns S of shape (N+1, U+1, R) whose row 0 is the virtual start (0 in column 1, -inf elsewhere) and whose
    column 0 stays -inf. All views are built before the loop so each of the N steps costs two torch calls.
    """
    n_diag, _, max_u, rows = trans.shape
    state = torch.full((n_diag + 1, max_u + 1, rows), _NEG_INF, dtype=trans.dtype)
    state[0, 1] = 0.0
    # pairs[n, 0] = S[n, 0:U] (emit sources), pairs[n, 1] = S[n, 1:U+1] (blank sources): overlapping views.
    pairs = state.as_strided((n_diag + 1, 2, max_u, rows), ((max_u + 1) * rows, rows, rows, 1)).unbind(0)
    targets = state[1:, 1:].unbind(0)
    steps = trans.unbind(0)
    buf = torch.empty(2, max_u, rows, dtype=trans.dtype)
    emit_path, blank_path = buf.unbind(0)
    for n in range(n_diag):
        torch.add(pairs[n], steps[n], out=buf)
        torch.logaddexp(emit_path, blank_path, out=targets[n])
    return state


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run the O(B*T*U) lattice work on the calling thread only.

    That work is ~30 torch calls on 30k-200k elements: too small to gain from more threads, but large enough
    for ATen to open an OpenMP parallel region, which waits for every thread. On a loaded machine (another job,
    data-loader workers) each such region can cost a scheduler time slice: measured 290 ms instead of 7 ms per
    step on 2 busy cores. ``omp_set_num_threads`` (what ``torch.set_num_threads`` calls) is per calling thread,
    so other threads keep their setting; the only leak is that a thread making its *first* ATen call during
    this window initialises itself to 1 thread.
    """
    n_threads = torch.get_num_threads()
    if n_threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def _transition_log_probs(
    probs: torch.Tensor, acts: torch.Tensor, pick: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 log-probs of (blank, label) per cell, (B, T, U, 2), and the mask of transitions that exist."""
    batch, max_t, max_u, vocab = probs.shape
    p2 = probs.gather(-1, pick)
    # float64: the recursions accumulate T+U roundings of numbers ~ T*log(V); these tensors are only B*T*U*2.
    lp2 = p2.double().log_()
    t = torch.arange(max_t).view(1, -1, 1)
    u = torch.arange(max_u).view(1, 1, -1)
    valid = (t < act_lens.view(-1, 1, 1)) & (u <= label_lens.view(-1, 1, 1))
    needed = torch.stack((valid, valid & (u < label_lens.view(-1, 1, 1))), dim=-1)
    # log(p) is as exact as log_softmax while p is a normal float; cells where a used probability underflowed
    # get their log-probs recomputed with log_softmax in float64.
    tiny = torch.finfo(p2.dtype).tiny
    if bool((p2 < tiny).any()):
        cells = (needed & (p2 < tiny)).any(-1).view(-1).nonzero().squeeze(1)
        exact = torch.log_softmax(acts.reshape(-1, vocab).index_select(0, cells).double(), dim=-1)
        lp2.view(-1, 2)[cells] = exact.gather(-1, pick.view(-1, 2)[cells])
    return lp2, needed


def _log_likelihood_and_occupancies(
    lp2: torch.Tensor,
    needed: torch.Tensor,
    act_lens: torch.Tensor,
    label_lens: torch.Tensor,
    fastemit_lambda: float,
    with_occupancies: bool,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log P(y|x) per utterance (from the alphas, as NeMo's cost) and, optionally, the (B, T, U, 2) occupancies."""
    batch, max_t, max_u, _ = lp2.shape
    idx = _lattice_indices(act_lens, label_lens, max_t, max_u, with_betas=with_occupancies)
    src = torch.cat((lp2.view(-1), lp2.new_tensor([_NEG_INF, 0.0])))
    state = _diagonal_recursion(src.index_select(0, idx.view(-1)).view(idx.shape))  # (N+1, U+1, R)
    rows = state.shape[2]
    flat_state = state.view(-1)

    # Cell (t, u) of alpha row b sits at S[t+u+1, u+1, b]; outside an utterance it holds junk that is never
    # read (valid cells only depend on valid cells) and whose occupancy is masked to 0 below.
    t = torch.arange(max_t).view(1, -1, 1)
    u = torch.arange(max_u).view(1, 1, -1)
    bi = torch.arange(batch).view(-1, 1, 1)
    alpha_idx = ((t + u + 1) * (max_u + 1) + u + 1) * rows + bi
    ar = torch.arange(batch)
    t_last, u_last = act_lens - 1, label_lens
    ll_forward = flat_state[alpha_idx[ar, t_last, u_last]] + lp2[ar, t_last, u_last, 0]
    if not with_occupancies:
        return ll_forward, None

    t_len = act_lens.view(-1, 1, 1)
    u_len = (label_lens + 1).view(-1, 1, 1)
    # beta(t+1, u) and beta(t, u+1) both sit on reversed diagonal T_b+U_b-3-t-u (+1 for the start row), in
    # adjacent columns; the final blank's beta(T_b, U_b-1) is the start row's 0 and the lattice edges read
    # -inf, so no boundary case is needed.
    row = (t_len + u_len - 2 - t - u).clamp(0, state.shape[0] - 1)
    col = (u_len - u).clamp(0, max_u)
    beta_t_idx = (row * (max_u + 1) + col) * rows + batch + bi
    gather_idx = torch.stack(
        (alpha_idx.expand_as(beta_t_idx), alpha_idx.expand_as(beta_t_idx), beta_t_idx, beta_t_idx - rows), dim=-1
    ).clamp_(min=0)
    alpha_beta = flat_state.index_select(0, gather_idx.view(-1)).view(*beta_t_idx.shape, 4)
    # beta(0, 0): the end of each reversed lattice, diagonal T_b+U_b-2 (+1), column U_b. NeMo normalises its
    # gradient by this backward log-likelihood (equal to the forward one up to rounding).
    end_idx = ((act_lens + label_lens) * (max_u + 1) + label_lens + 1) * rows + batch + ar
    ll_backward = flat_state[end_idx]

    # NeMo's gradient w.r.t. the log-probs is minus these "occupancies" (alpha + transition + beta - ll); its
    # FastEmit multiplies the label ones by (1 + lambda) (inside the exp, as log1p(lambda)).
    log_occ = alpha_beta[..., :2] + alpha_beta[..., 2:]
    log_occ += lp2
    log_occ -= ll_backward.view(-1, 1, 1, 1)
    if fastemit_lambda != 0.0:
        log_occ[..., 1] += math.log1p(fastemit_lambda)
    return ll_forward, log_occ.masked_fill_(~needed, _NEG_INF).exp_()


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
        grad_enabled: bool,
    ) -> torch.Tensor:
        # softmax, not log_softmax: the backward needs the probabilities (g - softmax * sum(g)), so keeping
        # them saves a full exp pass over B*T*U*V; the lattice only needs log-probs of 2 classes per cell.
        probs = torch.softmax(acts, dim=-1)
        certify_inputs(probs, labels, act_lens, label_lens)
        if bool((act_lens < 1).any()):
            raise ValueError("Every input length must be >= 1 for the RNN-T loss.")
        batch, max_t, max_u, _ = probs.shape
        # Function.forward always runs with grad disabled, so the caller's grad mode arrives as an argument.
        need_grad = grad_enabled and ctx.needs_input_grad[0]

        with _single_threaded():
            lab = _labels_per_row(labels, label_lens, max_u)
            pick = torch.empty(batch, max_t, max_u, 2, dtype=torch.long)
            pick[..., 0] = blank
            pick[..., 1] = lab.unsqueeze(1)
            lp2, needed = _transition_log_probs(probs, acts, pick, act_lens, label_lens)
            ll_forward, occ = _log_likelihood_and_occupancies(
                lp2, needed, act_lens, label_lens, fastemit_lambda, with_occupancies=need_grad
            )
        if need_grad:
            # acts is saved (a reference, no copy) only for a repeated backward (gradcheck, jacobians,
            # retain_graph): the first backward consumes the softmax buffer.
            ctx.save_for_backward(acts, pick, occ)
            ctx.probs = probs  # an intermediate: backward turns it into the gradient in place
            ctx.clamp = clamp
        return (-(1.0 + fastemit_lambda) * ll_forward).to(acts.dtype)

    @staticmethod
    def backward(ctx, grad_costs: torch.Tensor):
        acts, pick, occ = ctx.saved_tensors
        grad = ctx.probs
        ctx.probs = None
        if grad is None:  # a repeated backward: the first one turned the softmax buffer into its gradient
            grad = torch.softmax(acts, dim=-1)

        dtype = grad.dtype
        with _single_threaded():
            occ = occ * grad_costs.to(torch.float64).view(-1, 1, 1, 1)
            occ_sum = (occ[..., 0] + occ[..., 1]).to(dtype).unsqueeze(-1)
            occ = occ.neg_().to(dtype)
        # Through log_softmax: d/dx = g - softmax * sum(g) with g = -occ on {blank, label}, 0 elsewhere.
        grad.mul_(occ_sum)
        grad.scatter_add_(-1, pick, occ)
        if ctx.clamp > 0.0:
            grad.clamp_(-ctx.clamp, ctx.clamp)
        return grad, None, None, None, None, None, None, None


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
    if acts.device.type != "cpu":
        raise ValueError("rnnt_loss_cpu_vectorized is for CPU tensors; use NeMo's RNNTLossNumba on CUDA.")
    if clamp < 0:
        raise ValueError("`clamp` must be 0.0 or positive float value.")
    if acts.dtype in (torch.float16, torch.bfloat16):
        acts = acts.float()
    return _VectorizedRNNTFunction.apply(
        acts, labels, act_lens, label_lens, int(blank), float(fastemit_lambda), float(clamp), torch.is_grad_enabled()
    )


def _reduce_costs(costs: torch.Tensor, reduction: Optional[str], batch: int) -> torch.Tensor:
    """Per-utterance costs reduced as NeMo's numba kernels reduce them (``sum``/``mean`` here; ``none``/``None``
    leaves them to ``RNNTLoss.reduce``)."""
    if reduction in ("sum", "mean"):
        costs = costs.sum().unsqueeze(-1)
        if reduction == "mean":
            # Scaled in the activation dtype: NeMo divides its (float64 for float64 input) grads by B.
            costs = costs / batch
    # NeMo's kernels write costs into a float32 buffer whatever the activation dtype.
    return costs.float()


class DispatchingRNNTLossNumba(RNNTLossNumba):
    """NeMo's ``RNNTLossNumba`` whose CPU branch is :func:`rnnt_loss_cpu_vectorized`.

    CUDA (any non-CPU) tensors go to NeMo's unchanged ``RNNTLossNumba.forward``. ``blank``, ``reduction``,
    ``fastemit_lambda`` and ``clamp`` are NeMo's attributes and are read at call time (NeMo's fused
    and sampled joints overwrite ``reduction`` and ``blank`` around each call).
    """

    @classmethod
    def from_numba_loss(cls, loss: RNNTLossNumba) -> "DispatchingRNNTLossNumba":
        return cls(blank=loss.blank, reduction=loss.reduction, fastemit_lambda=loss.fastemit_lambda, clamp=loss.clamp)

    def forward(
        self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        if acts.device.type != "cpu":
            return super().forward(acts, labels, act_lens, label_lens)
        costs = rnnt_loss_cpu_vectorized(
            acts, labels, act_lens, label_lens, self.blank, self.fastemit_lambda, self.clamp
        )
        return _reduce_costs(costs, self.reduction, acts.shape[0])


class DispatchingTDTLossNumba(TDTLossNumba):
    """NeMo's ``TDTLossNumba`` (same attributes, same CUDA path) whose CPU branch is
    :func:`nemo_codert.losses.tdt_cpu.tdt_loss_cpu` instead of NeMo's error ("TDT is not yet implemented for non CUDA
    computation"); ``CpuRNNTLoss`` swaps it in for ``loss_name: tdt``.

    NeMo's ``omega`` is kept: with that probability a batch's loss is the plain RNN-T loss of the token/blank logits
    (no ``sigma``, no duration gradient), by this module's RNN-T kernel. ``fastemit_lambda`` and ``clamp`` (gradient
    modifications inside NeMo's CUDA kernel) are not implemented on CPU: a non-default value is an error, never a
    silent difference."""

    @classmethod
    def from_numba_loss(cls, loss: TDTLossNumba) -> "DispatchingTDTLossNumba":
        return cls(
            blank=loss.blank,
            durations=list(loss.durations),
            reduction=loss.reduction,
            fastemit_lambda=loss.fastemit_lambda,
            clamp=loss.clamp,
            sigma=loss.sigma,
            omega=loss.omega,
        )

    def forward(
        self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        if acts.device.type != "cpu":
            return super().forward(acts, labels, act_lens, label_lens)
        if self.fastemit_lambda != 0 or self.clamp > 0:
            raise ValueError(
                f"TDT loss on CPU: fastemit_lambda={self.fastemit_lambda}, clamp={self.clamp} are gradient changes of "
                "NeMo's CUDA kernel that the CPU kernel does not implement; set loss.tdt_kwargs.fastemit_lambda=0 "
                "and clamp=-1 for CPU training"
            )
        if self.omega > 0 and random.uniform(0, 1) < self.omega:
            # NeMo's sampled RNN-T loss: the token/blank part as a plain transducer.
            token_acts = acts[..., : acts.shape[-1] - len(self.durations)]
            costs = rnnt_loss_cpu_vectorized(token_acts, labels, act_lens, label_lens, self.blank, 0.0, 0.0)
        else:
            costs = tdt_loss_cpu(acts, labels, act_lens, label_lens, self.blank, self.durations, self.sigma)
        return _reduce_costs(costs, self.reduction, acts.shape[0])


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
    NeMo's numba kernel; ``loss_name: tdt`` likewise gets :class:`DispatchingTDTLossNumba`. Any other ``loss_name``
    keeps NeMo's resolved kernel untouched (no speed-up).
    """

    def __init__(
        self,
        num_classes: int,
        reduction: Optional[str] = "mean_batch",
        loss_name: str = "default",
        loss_kwargs: Optional[dict] = None,
    ) -> None:
        super().__init__(num_classes=num_classes, reduction=reduction, loss_name=loss_name, loss_kwargs=loss_kwargs)
        # Exact types: MultiblankRNNTLossNumba (a subclass of neither) keeps NeMo's kernel.
        if type(self._loss) is RNNTLossNumba:
            self._loss = DispatchingRNNTLossNumba.from_numba_loss(self._loss)
        elif type(self._loss) is TDTLossNumba:
            self._loss = DispatchingTDTLossNumba.from_numba_loss(self._loss)

    @property
    def uses_vectorized_cpu_kernel(self) -> bool:
        """Whether CPU inputs take a vectorised path (False for loss names other than warprnnt_numba and tdt)."""
        return isinstance(self._loss, (DispatchingRNNTLossNumba, DispatchingTDTLossNumba))
