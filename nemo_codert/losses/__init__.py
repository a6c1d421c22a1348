"""CoDERT's losses: the encoder-logit distillation term, the lattice distillation term it is compared with, and an
exact RNN-T loss for CPU tensors."""

from nemo_codert.losses.encoder_kd import encoder_kd_loss, encoder_logits
from nemo_codert.losses.lattice_kd import joint_lattice, lattice_kd_loss
from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss, rnnt_loss_cpu_vectorized

__all__ = [
    "CpuRNNTLoss",
    "encoder_kd_loss",
    "encoder_logits",
    "joint_lattice",
    "lattice_kd_loss",
    "rnnt_loss_cpu_vectorized",
]
