"""CpuRNNTLoss against NeMo's own CPU RNN-T loss (``warprnnt_numba``), which is the reference throughout.

Tolerances. "1e-5 relative" means: costs element-wise ``rtol=1e-5``; gradients ``max|ours - ref| <=
1e-5 * max|ref|`` (element-wise relative error is meaningless where blank/label terms cancel to ~0).
NeMo runs its alpha/beta recursions in the input dtype, so its fp32 gradient carries ~1e-5 relative
error of its own on longer lattices (ours runs them in float64); fp32 comparisons with NeMo therefore use
small lattices, and a float64 NeMo run is used as the tight reference for our fp32 result.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nemo.collections.asr.losses.rnnt import RNNTLoss
from nemo.collections.asr.losses.rnnt_pytorch import RNNTLossPytorch
from nemo.collections.asr.parts.numba.rnnt_loss.rnnt_pytorch import RNNTLossNumba

from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss, DispatchingRNNTLossNumba, rnnt_loss_cpu_vectorized

REDUCTIONS = ["mean_batch", "mean_volume", "sum", "mean", None]


def make_problem(b, t, u, v, seed, dtype=torch.float32, pad_t=0, pad_u=0, zero_target=False):
    """Random joint (b, t+pad_t, u, v) and targets (b, u-1+pad_u) with ragged lengths; lattice U = u, blank = v-1.

    NeMo's RNNTLoss trims extra time padding and extra target padding, but not a U axis of the joint
    longer than max(target_lengths)+1 (its kernel raises), so only T and the targets get extra padding.
    """
    g = torch.Generator().manual_seed(seed)
    acts = (2.0 * torch.randn(b, t + pad_t, u, v, generator=g)).to(dtype)
    act_lens = torch.randint(1, t + 1, (b,), generator=g)
    act_lens[0] = t
    label_lens = torch.randint(0, u, (b,), generator=g)
    label_lens[-1] = u - 1
    if zero_target and b > 1:
        label_lens[0] = 0
    targets = torch.randint(0, v - 1, (b, u - 1 + pad_u), generator=g)
    # Padding of the targets must never be read: fill it with an invalid id.
    targets[torch.arange(u - 1 + pad_u).unsqueeze(0) >= label_lens.unsqueeze(1)] = -1
    return acts, targets, act_lens, label_lens


def loss_and_grad(loss_mod, acts, targets, act_lens, label_lens, upstream=None):
    x = acts.clone().requires_grad_(True)
    loss = loss_mod(log_probs=x, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
    (loss * (1.0 if upstream is None else upstream)).sum().backward()
    return loss.detach(), x.grad


def kernel_loss_and_grad(kernel, acts, targets, act_lens, label_lens, upstream):
    x = acts.clone().requires_grad_(True)
    costs = kernel(x, targets, act_lens, label_lens)
    (costs * upstream).sum().backward()
    return costs.detach(), x.grad


def assert_grad_close(ours, ref, rel):
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale + 1e-30, f"max|diff|={err:.3g} vs {rel:g} * max|ref|={scale:.3g}"


def nemo_pair(v, reduction="mean_batch", **kwargs):
    ref = RNNTLoss(num_classes=v - 1, reduction=reduction, loss_name="warprnnt_numba", loss_kwargs=dict(kwargs))
    ours = CpuRNNTLoss(num_classes=v - 1, reduction=reduction, loss_name="default", loss_kwargs=dict(kwargs))
    return ref, ours


# --------------------------------------------------------------------------------------------------------
# Full RNNTLoss (NeMo's forward: int casts, fp32 upcast, trimming to max lengths, reductions)
# --------------------------------------------------------------------------------------------------------

SHAPES = [
    # b, t, u, v, pad_t, pad_u, zero_target
    (1, 1, 1, 2, 0, 0, False),  # smallest lattice: one cell, empty target
    (1, 6, 4, 5, 0, 0, False),  # B=1
    (3, 5, 1, 6, 0, 0, False),  # U=1: every target empty
    (4, 7, 5, 9, 2, 3, True),  # ragged, extra padding beyond the max lengths, one empty target
    (5, 8, 3, 7, 0, 0, True),
    (2, 3, 6, 11, 1, 0, False),  # U > T
    (6, 6, 4, 4, 0, 1, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])))
def test_matches_nemo_loss_and_grad(shape, dtype):
    b, t, u, v, pad_t, pad_u, zero_target = shape
    problem = make_problem(
        b, t, u, v, seed=hash(shape) % 1000, dtype=dtype, pad_t=pad_t, pad_u=pad_u, zero_target=zero_target
    )
    ref, ours = nemo_pair(v, reduction=None)
    upstream = torch.rand(b, generator=torch.Generator().manual_seed(1)) + 0.1
    ref_loss, ref_grad = loss_and_grad(ref, *problem, upstream=upstream)
    our_loss, our_grad = loss_and_grad(ours, *problem, upstream=upstream)
    # NeMo's RNNTLoss computes fp64 inputs in fp32 (force_float32) and returns float32 costs; so do we.
    assert our_loss.dtype == ref_loss.dtype == torch.float32
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_grad_close(our_grad, ref_grad, 1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_reduction(reduction):
    # No empty target here: 'mean' divides by the target lengths (NaN for both implementations).
    problem = make_problem(4, 6, 4, 8, seed=3, pad_t=1)
    problem[3].clamp_(min=1)
    ref, ours = nemo_pair(8, reduction=reduction)
    ref_loss, ref_grad = loss_and_grad(ref, *problem)
    our_loss, our_grad = loss_and_grad(ours, *problem)
    assert our_loss.shape == ref_loss.shape
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_grad_close(our_grad, ref_grad, 1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"clamp": 0.05}, {"clamp": 0.002}, {"fastemit_lambda": 0.01}, {"fastemit_lambda": 0.5, "clamp": 0.01}],
    ids=str,
)
@pytest.mark.parametrize("reduction", ["mean_batch", None])
def test_clamp_and_fastemit(kwargs, reduction):
    problem = make_problem(3, 6, 5, 7, seed=4, zero_target=True)
    ref, ours = nemo_pair(7, reduction=reduction, **kwargs)
    ref_loss, ref_grad = loss_and_grad(ref, *problem)
    our_loss, our_grad = loss_and_grad(ours, *problem)
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_grad_close(our_grad, ref_grad, 1e-5)
    if "clamp" in kwargs:
        assert our_grad.abs().max() <= kwargs["clamp"] * (1 + 1e-6)


def test_padding_gets_zero_grad():
    acts, targets, act_lens, label_lens = make_problem(5, 7, 5, 6, seed=5, pad_t=3, pad_u=2, zero_target=True)
    _, ours = nemo_pair(6, reduction="mean_batch")
    _, grad = loss_and_grad(ours, acts, targets, act_lens, label_lens)
    for i in range(acts.shape[0]):
        assert torch.count_nonzero(grad[i, act_lens[i] :]) == 0
        assert torch.count_nonzero(grad[i, :, label_lens[i] + 1 :]) == 0
        assert torch.count_nonzero(grad[i, : act_lens[i], : label_lens[i] + 1]) > 0


def test_fp16_input_is_upcast_like_nemo():
    acts, targets, act_lens, label_lens = make_problem(3, 5, 4, 6, seed=6)
    ref, ours = nemo_pair(6, reduction="sum")
    ref_loss, ref_grad = loss_and_grad(ref, acts.half(), targets, act_lens, label_lens)
    our_loss, our_grad = loss_and_grad(ours, acts.half(), targets, act_lens, label_lens)
    assert our_grad.dtype == torch.float16
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(our_grad, ref_grad)


def test_no_grad_forward_and_longer_lattice():
    """Eval path (alphas only) and a longer lattice, where NeMo's own fp32 recursion is the limiting error."""
    acts, targets, act_lens, label_lens = make_problem(4, 30, 10, 20, seed=7, zero_target=True)
    ref, ours = nemo_pair(20, reduction=None)
    with torch.no_grad():
        our_loss = ours(log_probs=acts, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
        ref_loss = ref(log_probs=acts, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    # Our fp32 gradient against NeMo's kernel run in float64 (its fp32 run is ~1e-5 off on this lattice).
    ref64 = RNNTLossNumba(blank=19, reduction=None)
    _, ref_grad = kernel_loss_and_grad(ref64, acts.double(), targets, act_lens, label_lens, 1.0)
    _, our_grad = loss_and_grad(ours, acts, targets, act_lens, label_lens)
    assert_grad_close(our_grad.double(), ref_grad, 2e-6)


# --------------------------------------------------------------------------------------------------------
# The swapped kernel alone (float64 end to end, arbitrary blank index, autograd properties)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank_last", [True, False], ids=["blank_last", "blank_0"])
@pytest.mark.parametrize(
    "kwargs", [{}, {"fastemit_lambda": 0.3}, {"clamp": 0.02}, {"fastemit_lambda": 0.1, "clamp": 0.5}], ids=str
)
def test_kernel_float64_matches_nemo_kernel(kwargs, blank_last):
    acts, targets, act_lens, label_lens = make_problem(4, 6, 5, 7, seed=8, dtype=torch.float64, zero_target=True)
    blank = 6 if blank_last else 0
    targets = targets.clamp(min=0)
    if not blank_last:
        targets = targets + 1  # labels must differ from blank
    upstream = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64)
    ref = RNNTLossNumba(blank=blank, reduction=None, **kwargs)
    ours = DispatchingRNNTLossNumba(blank=blank, reduction=None, **kwargs)
    ref_cost, ref_grad = kernel_loss_and_grad(ref, acts, targets, act_lens, label_lens, upstream)
    our_cost, our_grad = kernel_loss_and_grad(ours, acts, targets, act_lens, label_lens, upstream)
    assert our_cost.dtype == ref_cost.dtype == torch.float32  # NeMo's costs buffer is float32
    torch.testing.assert_close(our_cost, ref_cost, rtol=1e-6, atol=0)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kernel_internal_reductions(reduction):
    acts, targets, act_lens, label_lens = make_problem(3, 5, 4, 6, seed=9, dtype=torch.float64)
    ref = RNNTLossNumba(blank=5, reduction=reduction)
    ours = DispatchingRNNTLossNumba(blank=5, reduction=reduction)
    ref_cost, ref_grad = kernel_loss_and_grad(ref, acts, targets, act_lens, label_lens, 1.0)
    our_cost, our_grad = kernel_loss_and_grad(ours, acts, targets, act_lens, label_lens, 1.0)
    assert our_cost.shape == ref_cost.shape == (1,)
    torch.testing.assert_close(our_cost, ref_cost, rtol=1e-6, atol=0)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_underflowing_probabilities_stay_exact():
    """Logit spreads beyond exp's range: the softmax-based log-probs fall back to exact log_softmax."""
    acts, targets, act_lens, label_lens = make_problem(3, 6, 4, 8, seed=10, dtype=torch.float64)
    acts = acts * 200.0
    ref_cost, ref_grad = kernel_loss_and_grad(
        RNNTLossNumba(blank=7, reduction=None), acts, targets, act_lens, label_lens, 1.0
    )
    x32 = acts.float()
    our_cost, our_grad = kernel_loss_and_grad(
        DispatchingRNNTLossNumba(blank=7, reduction=None), x32, targets, act_lens, label_lens, 1.0
    )
    assert torch.isfinite(our_cost).all()
    torch.testing.assert_close(our_cost.double(), ref_cost.double(), rtol=1e-6, atol=0)
    assert_grad_close(our_grad.double(), ref_grad, 1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 1, 3), (3, 4, 3, 4), (2, 2, 4, 5)], ids=str)
def test_gradcheck_float64(shape):
    b, t, u, v = shape
    acts, targets, act_lens, label_lens = make_problem(b, t, u, v, seed=11, dtype=torch.float64, pad_t=1)
    targets = targets.clamp(min=0)
    x = acts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: rnnt_loss_cpu_vectorized(a, targets, act_lens.clone(), label_lens, blank=v - 1),
        (x[:, : int(act_lens.max())],),
        eps=1e-6,
        atol=1e-8,
        rtol=1e-6,
    )


def test_repeated_backward_is_identical():
    acts, targets, act_lens, label_lens = make_problem(3, 5, 4, 6, seed=12)
    x = acts.clone().requires_grad_(True)
    loss = rnnt_loss_cpu_vectorized(x, targets.clamp(min=0), act_lens, label_lens, blank=5).sum()
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-8)


def test_dispatch_and_fallbacks():
    ours = CpuRNNTLoss(num_classes=10)
    assert isinstance(ours._loss, DispatchingRNNTLossNumba) and isinstance(ours._loss, RNNTLossNumba)
    assert ours.uses_vectorized_cpu_kernel
    # Other loss names keep NeMo's resolved kernel untouched.
    other = CpuRNNTLoss(num_classes=10, loss_name="pytorch")
    assert type(other._loss) is RNNTLossPytorch and not other.uses_vectorized_cpu_kernel
    with pytest.raises(ValueError):
        CpuRNNTLoss(num_classes=10, reduction="bogus")
    with pytest.raises(ValueError):
        rnnt_loss_cpu_vectorized(
            torch.zeros(1, 1, 1, 3),
            torch.zeros(1, 0, dtype=torch.long),
            torch.tensor([1]),
            torch.tensor([0]),
            blank=2,
            clamp=-1.0,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_use_nemo_kernel():
    acts, targets, act_lens, label_lens = make_problem(3, 6, 4, 8, seed=13)
    ref, ours = nemo_pair(8, reduction="mean_batch")
    dev = [x.cuda() for x in (acts, targets, act_lens, label_lens)]
    ref_loss, ref_grad = loss_and_grad(ref, *dev)
    our_loss, our_grad = loss_and_grad(ours, *dev)
    torch.testing.assert_close(our_loss, ref_loss, rtol=0, atol=0)
    torch.testing.assert_close(our_grad, ref_grad, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------
# Inside NeMo's fused joint (fuse_loss_wer=True): reduction=None per sub-batch, then loss.reduce(list)
# --------------------------------------------------------------------------------------------------------


def _joint_and_wer(vocab, fuse, fused_batch_size=None):
    from omegaconf import OmegaConf

    from nemo.collections.asr.metrics.wer import WER
    from nemo.collections.asr.modules import RNNTDecoder, RNNTJoint
    from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTDecoding

    torch.manual_seed(0)
    decoder = RNNTDecoder(prednet={"pred_hidden": 16, "pred_rnn_layers": 1}, vocab_size=len(vocab))
    joint = RNNTJoint(
        jointnet={"encoder_hidden": 12, "pred_hidden": 16, "joint_hidden": 20, "activation": "relu"},
        num_classes=len(vocab),
        vocabulary=vocab,
        fuse_loss_wer=fuse,
        fused_batch_size=fused_batch_size,
    )
    decoding = RNNTDecoding(
        decoding_cfg=OmegaConf.create({"strategy": "greedy_batch", "greedy": {"max_symbols": 5}}),
        decoder=decoder,
        joint=joint,
        vocabulary=vocab,
    )
    return decoder, joint, WER(decoding=decoding)


@pytest.mark.parametrize("reduction", ["mean_batch", "mean_volume"])
def test_fused_joint_matches_unfused_nemo(reduction):
    vocab = list("abcdefg")
    v = len(vocab)
    decoder, fused_joint, wer = _joint_and_wer(vocab, fuse=True, fused_batch_size=2)
    _, plain_joint, _ = _joint_and_wer(vocab, fuse=False)
    plain_joint.load_state_dict(fused_joint.state_dict())
    fused_joint.set_loss(CpuRNNTLoss(num_classes=v, reduction=reduction))
    fused_joint.set_wer(wer)
    ref_loss_mod = RNNTLoss(num_classes=v, reduction=reduction, loss_name="warprnnt_numba")

    b, t, max_len = 5, 9, 4
    g = torch.Generator().manual_seed(14)
    enc = torch.randn(b, 12, t, generator=g)
    enc_lens = torch.tensor([9, 4, 7, 9, 2])
    tgt_lens = torch.tensor([4, 0, 2, 3, 1])
    targets = torch.randint(0, v, (b, max_len), generator=g)
    dec_out, _, _ = decoder(targets=targets, target_length=tgt_lens)  # (B, pred_hidden, U+1)

    e1, d1 = enc.clone().requires_grad_(True), dec_out.detach().clone().requires_grad_(True)
    fused_loss, _, _, _ = fused_joint(
        encoder_outputs=e1,
        decoder_outputs=d1,
        encoder_lengths=enc_lens,
        transcripts=targets,
        transcript_lengths=tgt_lens,
        compute_wer=True,
    )
    fused_loss.backward()

    e2, d2 = enc.clone().requires_grad_(True), dec_out.detach().clone().requires_grad_(True)
    logits = plain_joint(encoder_outputs=e2, decoder_outputs=d2)
    ref_loss = ref_loss_mod(log_probs=logits, targets=targets, input_lengths=enc_lens, target_lengths=tgt_lens)
    ref_loss.backward()

    assert fused_joint.loss.reduction == reduction  # restored by the joint after each sub-batch
    torch.testing.assert_close(fused_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_grad_close(e1.grad, e2.grad, 1e-5)
    assert_grad_close(d1.grad, d2.grad, 1e-5)
    for (name, p1), p2 in zip(fused_joint.named_parameters(), plain_joint.parameters()):
        assert_grad_close(p1.grad, p2.grad, 1e-5)


def test_loss_module_is_deepcopyable_and_reduction_settable():
    loss = CpuRNNTLoss(num_classes=5, reduction="mean_batch")
    loss.reduction = None
    clone = copy.deepcopy(loss)
    assert clone.reduction is None and isinstance(clone._loss, DispatchingRNNTLossNumba)
    losses = [torch.tensor([1.0, 3.0]), torch.tensor([2.0])]
    lens = [torch.tensor([1, 3]), torch.tensor([2])]
    clone.reduction = "mean_volume"
    torch.testing.assert_close(clone.reduce(losses, lens), torch.tensor(1.0))
