"""Keep a non-finite batch out of the normalisation statistics, where no gradient guard reaches."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

__all__ = ["NormStatisticsGuardMixin"]


class NormStatisticsGuardMixin:
    """Restores BatchNorm running statistics after a batch whose loss is not finite.

    NeMo's ``skip_nan_grad`` zeroes the gradients of such a batch on every rank, but its forward pass has already
    folded the bad activations into every BatchNorm's running mean/variance, and from then on the model evaluates
    on NaN statistics. The host model makes three calls:

    1. ``saved = self.snapshot_norm_statistics()`` before the training forward pass;
    2. ``self.restore_norm_statistics_after_backward(saved)`` when that pass's loss is not finite;
    3. its ``on_after_backward`` runs this mixin's (put it before ``ModelPT`` in the bases): the buffers are put
       back there, once backward no longer needs the tensors.

    The snapshot clones only the buffers of normalisation layers in training mode (a few KB for the shipped
    configs); a frozen static teacher is in eval mode and costs nothing.
    """

    _norm_statistics_to_restore: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None

    def snapshot_norm_statistics(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(buffer, copy) for every running statistic of a normalisation layer in training mode."""
        return [
            (b, b.detach().clone())
            for m in self.modules()
            if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.training
            for b in m.buffers(recurse=False)
        ]

    def restore_norm_statistics_after_backward(self, saved: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._norm_statistics_to_restore = saved

    def on_after_backward(self) -> None:
        pending, self._norm_statistics_to_restore = self._norm_statistics_to_restore, None
        if pending:
            with torch.no_grad():
                for buffer, saved in pending:
                    buffer.copy_(saved)
        super().on_after_backward()
