"""The CPU TDT loss against NeMo's own TDT reference (``TDTLossPytorch``), and the TDT path of ``CpuRNNTLoss``."""

from __future__ import annotations

import pytest
import torch

from nemo.collections.asr.losses.rnnt import RNNTLoss
from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss, DispatchingTDTLossNumba, rnnt_loss_cpu_vectorized
from nemo_codert.losses.tdt_cpu import tdt_loss_cpu

DURATIONS = [0, 1, 2, 3, 4]


def _inputs(seed=0, batch=3, max_t=7, max_u=3, vocab=5, durations=DURATIONS):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(batch, max_t, max_u + 1, vocab + 1 + len(durations), generator=g, dtype=torch.float64)
    labels = torch.randint(0, vocab, (batch, max_u), generator=g)
    act_lens = torch.tensor([max_t, max_t - 2, 3])[:batch]
    label_lens = torch.tensor([max_u, 1, 2])[:batch]
    return acts.requires_grad_(), labels, act_lens, label_lens


def _nemo_reference(monkeypatch, acts, labels, act_lens, label_lens, blank, durations, sigma):
    """NeMo's TDTLossPytorch per utterance. It moves its lattice to CUDA unconditionally (``.cuda()``); on this CPU
    machine that move is made the identity, which changes nothing else in NeMo's computation."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    loss = TDTLossPytorch(blank=blank, durations=durations, reduction="none", sigma=sigma)
    return loss(acts=acts, labels=labels, act_lens=act_lens, label_lens=label_lens)


@pytest.mark.parametrize("durations, sigma", [(DURATIONS, 0.05), ([0, 1, 2], 0.0), ([1, 2, 4], 0.02)])
def test_tdt_loss_matches_nemos_reference_with_gradients(monkeypatch, durations, sigma):
    acts, labels, act_lens, label_lens = _inputs(durations=durations)
    blank = 5
    ours = tdt_loss_cpu(acts, labels, act_lens, label_lens, blank, durations, sigma)
    (grad_ours,) = torch.autograd.grad(ours.sum(), acts)
    ref = _nemo_reference(monkeypatch, acts, labels, act_lens, label_lens, blank, durations, sigma)
    (grad_ref,) = torch.autograd.grad(ref.sum(), acts)
    torch.testing.assert_close(ours.double(), ref.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-6, atol=1e-6)
    # Padding (frames past an utterance's end, label positions past its length) gets no gradient.
    assert not grad_ours[1, act_lens[1] :].any() and not grad_ours[2, :, label_lens[2] + 1 :].any()


def test_cpu_rnnt_loss_trains_tdt_on_cpu_where_nemo_cannot():
    kwargs = {"durations": DURATIONS, "sigma": 0.05, "omega": 0.0}
    acts, labels, act_lens, label_lens = _inputs(seed=1)
    acts = acts.detach().float().requires_grad_()
    with pytest.raises(ValueError, match="TDT is not yet implemented for non CUDA computation"):
        RNNTLoss(num_classes=5, loss_name="tdt", loss_kwargs=dict(kwargs))(
            log_probs=acts, targets=labels, input_lengths=act_lens, target_lengths=label_lens
        )
    loss = CpuRNNTLoss(num_classes=5, loss_name="tdt", loss_kwargs=dict(kwargs), reduction="mean_batch")
    assert isinstance(loss._loss, DispatchingTDTLossNumba) and loss.uses_vectorized_cpu_kernel
    value = loss(log_probs=acts, targets=labels, input_lengths=act_lens, target_lengths=label_lens)
    expected = tdt_loss_cpu(acts, labels, act_lens, label_lens, 5, DURATIONS, 0.05).mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert acts.grad[..., -len(DURATIONS) :].abs().sum() > 0  # the duration logits learn


def test_omega_samples_the_plain_rnnt_loss_and_unsupported_kwargs_are_errors():
    acts, labels, act_lens, label_lens = _inputs(seed=2)
    acts = acts.detach().float()
    always_rnnt = DispatchingTDTLossNumba(blank=5, durations=DURATIONS, reduction=None, omega=1.0)
    plain = rnnt_loss_cpu_vectorized(acts[..., :-5], labels, act_lens, label_lens, 5, 0.0, 0.0)
    torch.testing.assert_close(always_rnnt(acts, labels, act_lens, label_lens), plain)
    with pytest.raises(ValueError, match="fastemit_lambda=0.001, clamp=0.0 are gradient changes"):
        DispatchingTDTLossNumba(blank=5, durations=DURATIONS, reduction=None, fastemit_lambda=0.001)(
            acts, labels, act_lens, label_lens
        )
