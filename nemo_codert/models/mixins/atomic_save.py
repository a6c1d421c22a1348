"""``save_to`` that never leaves a half-written ``.nemo``."""

from __future__ import annotations

from pathlib import Path

from nemo.utils.app_state import AppState
from nemo.utils.get_rank import is_global_rank_zero

from nemo_codert.utils import atomic_path

__all__ = ["AtomicSaveMixin"]


class AtomicSaveMixin:
    """NeMo's ``save_to``, made atomic. NeMo writes the tar straight into ``save_path``, so a crash mid-write
    leaves a partial file that looks like a model (and exp_manager's ``always_save_nemo`` rewrites it at every
    checkpoint). Here it is written to a sibling and renamed when complete: the file is the old one or the new one.

    No call from the host model: put the mixin before ``ModelPT`` in the bases.
    """

    def save_to(self, save_path: str) -> None:
        if "://" in str(save_path) or (AppState().model_parallel_size or 1) > 1 or not is_global_rank_zero():
            return super().save_to(save_path)  # remote storage / model parallel / other ranks: NeMo's own path
        with atomic_path(Path(save_path).expanduser().resolve()) as tmp:
            super().save_to(str(tmp))
