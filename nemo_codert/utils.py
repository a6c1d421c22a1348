"""Small helpers shared by the model, the export and the data checks."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

__all__ = [
    "atomic_dir",
    "atomic_path",
    "flush_denormals",
    "quiet_trainer",
    "restore_nemo",
    "set_aside_superseded_last_checkpoints",
    "vocabulary_difference",
    "write_json_atomic",
]


def _temporary_sibling(out: Path, suffix: str = "") -> Path:
    """A hidden, unique name beside ``out`` (its directory created): same file system, so renaming it over ``out`` is
    atomic; process id and a random part keep concurrent writers apart."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}"


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out``, renamed over ``out`` when the block succeeds and removed when it fails.

    Same directory, so the rename is atomic: readers see the old file or the complete new one, never a part.
    """
    out = Path(out)
    # The whole suffix (``.jsonl.gz``, not ``.gz``): writers such as lhotse's pick the format from it.
    tmp = _temporary_sibling(out, "".join(out.suffixes))
    try:
        yield tmp
        if not tmp.is_file():
            raise RuntimeError(f"nothing was written for {out}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling directory path (not yet created) to build ``out`` in; renamed to ``out`` when the block
    succeeds, unless ``out`` exists by then (a complete earlier or concurrent build: it is kept), and removed in any
    case. Readers see no ``out`` or a complete one."""
    import shutil

    out = Path(out)
    tmp = _temporary_sibling(out)
    try:
        yield tmp
        if not out.exists():
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def vocabulary_difference(mine: Sequence[str], theirs: Sequence[str]) -> Optional[str]:
    """None when two tokenizers' vocabularies are equal, else where they part: a class index of one means nothing
    in the other, so a teacher and its student must share one."""
    mine, theirs = list(mine), list(theirs)
    if mine == theirs:
        return None
    first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    return (
        f"the teacher's {len(theirs)} tokens against model.tokenizer's {len(mine)}, first difference at index {first}"
    )


def flush_denormals() -> bool:
    """Have this process's CPU arithmetic flush denormal floats to zero; True when every intra-op thread does.

    Why: the softmaxes and exps of a transducer's joint, RNN-T loss and KD term produce floats below ~1.2e-38
    (denormals), the more so as the model grows confident, and x86 CPUs compute those in slow microcode: a
    codert_small step on 2 cores takes 0.79 s trained and 0.73 s fresh, 0.60 s either way with denormals flushed
    (``benchmarks/results/denormals.md``), and the default run went from 18.7 to 14.3 min. Values that small carry
    nothing in losses computed in log space. The flag is a per-thread register that torch's intra-op threads copy
    when they are created: call this before the first parallel torch op (the training entry points do it first
    thing). Called later, the threads that already exist keep computing denormals, and the return value says so.
    GPU arithmetic is not affected.
    """
    import numpy as np
    import torch

    # The probe: the smallest denormal (bit pattern 1), made by numpy so that no torch thread starts before the flag
    # is set. Multiplied across every intra-op thread, it gives zeros exactly where the thread flushes.
    probe = torch.from_numpy(np.ones(1 << 20, dtype=np.int32).view(np.float32))
    torch.set_flush_denormal(True)
    return bool((probe * 1.0).count_nonzero() == 0)


def write_json_atomic(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``obj`` as indented JSON at ``path``, through :func:`atomic_path`: the file is complete or absent."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def quiet_trainer(**kwargs: Any):
    """A Lightning ``Trainer`` for programmatic runs (tests, benchmarks): no logger, checkpoints, progress bar,
    model summary or sanity validation, since the caller reads what it needs itself; ``kwargs`` add or override."""
    import lightning.pytorch as pl

    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **kwargs})


def set_aside_superseded_last_checkpoints(checkpoint_dir: Path) -> List[Path]:
    """Leave one ``*last.ckpt`` in ``checkpoint_dir`` (searched as exp_manager searches it): the newest.

    Lightning writes the new ``...-last.ckpt`` (its name carries the monitored metric, so it is a new file) before
    it deletes the previous one. A run killed between the two leaves two, and NeMo's exp_manager then refuses to
    resume ("Multiple checkpoints ... that matches *last.ckpt"). Both files are complete (each is written
    atomically), so the newest is the one to resume from; the older is renamed to ``*.superseded``, not deleted.
    A checkpoint NeMo marks unfinished (its ``-unfinished`` marker still there) is left alone and not counted: NeMo
    skips it when it resumes, so the newest *finished* one is kept. Every rank may call this (each must see one
    last checkpoint before its exp_manager looks): a file another rank set aside first is not an error.
    Returns the files this call renamed.
    """
    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    def finished_mtime(path: Path) -> Optional[int]:
        try:
            return None if NeMoModelCheckpoint.is_checkpoint_unfinished(path) else path.stat().st_mtime_ns
        except FileNotFoundError:  # set aside by another rank meanwhile
            return None

    found = [(finished_mtime(p), p) for p in Path(checkpoint_dir).rglob("*last.ckpt")]
    lasts = [p for mtime, p in sorted((m, p) for m, p in found if m is not None)]
    moved: List[Path] = []
    for old in lasts[:-1]:
        target = old.with_name(old.name + ".superseded")
        try:
            os.replace(old, target)
        except FileNotFoundError:  # another rank renamed it first
            continue
        moved.append(target)
    return moved


def restore_nemo(cls: Any, path: Union[str, os.PathLike], **kwargs: Any) -> Any:
    """``cls.restore_from(path, **kwargs)`` that leaves NeMo's global state clean when it fails.

    NeMo sets ``AppState().is_model_being_restored`` before it builds the restored model and clears it only after
    a successful load. A restore that raises (a refused target, a corrupt archive) leaves it set, and every model
    built later in the process then skips its dataloader setup as if it were being restored.
    """
    from nemo.core.classes.modelPT import ModelPT

    try:
        return cls.restore_from(str(path), **kwargs)
    except BaseException:
        ModelPT._set_model_restore_state(is_being_restored=False)
        raise
