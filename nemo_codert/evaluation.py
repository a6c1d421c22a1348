"""Evaluation of transducers: WER, deployable size and CPU real-time factor of a CoDERT model's sides or of any
stock NeMo RNN-T ``.nemo``. The CLI is ``examples/evaluate_codert.py``; benchmarks call :func:`evaluate` and
:func:`measure_transcription` directly.

The WER (and CER) is NeMo's ``word_error_rate`` over the manifest; the parameter count is that of the deployable transducer
(for a CoDERT side: its encoder, prediction network and joint, each shared tensor counted once: exactly the
parameter count of the stock ``.nemo`` that ``python -m nemo_codert.export`` writes for it); the real-time factor is
the wall time of ``transcribe()`` over the manifest divided by its audio duration, after one untimed warm-up batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from nemo_codert.data.manifest import read_manifest

__all__ = ["count_parameters", "evaluate", "measure_transcription"]


def count_parameters(*modules) -> int:
    """Parameters of ``modules`` together, each tensor once (CoDERT's shared joint/prediction net included)."""
    seen = {}
    for module in modules:
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def _texts(hypotheses) -> List[str]:
    if isinstance(hypotheses, tuple):  # (best, all) in some NeMo versions
        hypotheses = hypotheses[0]
    return [h.text if hasattr(h, "text") else str(h) for h in hypotheses]


def measure_transcription(
    transcribe: Callable, entries: Sequence[Dict[str, Any]], batch_size: int, params: int, num_workers: int = 0
) -> Dict[str, Any]:
    """WER, CER, RTF and hypotheses of ``transcribe`` (a model's ``transcribe``) over manifest ``entries``."""
    from nemo.collections.asr.metrics.wer import word_error_rate

    files = [e["audio_filepath"] for e in entries]
    options = {"batch_size": batch_size, "num_workers": num_workers, "verbose": False}
    transcribe(files[:batch_size], **options)  # untimed warm-up: allocator, kernels, lazy imports
    start = time.perf_counter()
    hypotheses = _texts(transcribe(files, **options))
    wall = time.perf_counter() - start
    audio_seconds = sum(e["duration"] for e in entries)
    references = [e["text"] for e in entries]
    return {
        "wer": word_error_rate(hypotheses=hypotheses, references=references),
        "cer": word_error_rate(hypotheses=hypotheses, references=references, use_cer=True),
        "params": params,
        "rtf": wall / audio_seconds,
        "wall_seconds": wall,
        "hypotheses": hypotheses,
    }


def evaluate(
    model_path: Path,
    manifest: Path,
    batch_size: int = 8,
    sides: Optional[Sequence[str]] = None,
    num_workers: int = 0,
) -> Dict[str, Any]:
    """Evaluate a CoDERT ``.nemo`` (each side) or a stock NeMo RNN-T ``.nemo``; returns the report as a dict."""
    import torch

    from nemo_codert.models import CodertRNNTBPEModel, load_transducer, side_transcriber

    entries = read_manifest(manifest)
    segments = [n for n, e in enumerate(entries, 1) if e.get("offset")]
    if segments:
        # transcribe() reads whole files: a segment's hypothesis would be the whole file's, scored against the
        # segment's text (and its RTF against the segment's seconds).
        raise ValueError(
            f"manifest {manifest}: {len(segments)} entries are segments of longer files (offset > 0; the first is "
            f"entry {segments[0]}); evaluation transcribes whole audio files: cut the segments into files first"
        )
    model, available = load_transducer(model_path)
    results: Dict[str, Dict[str, Any]] = {}
    for name in sides or available:
        if name not in available:
            raise ValueError(f"sides: {name!r} is not one of this model's sides ({', '.join(available)})")
        side = available[name]
        # What the side's exported .nemo holds: with an aux_ctc head, the head too (NeMo's hybrid model keeps it).
        modules = [model.preprocessor, side.encoder, side.decoder, side.joint, side.ctc_decoder]
        params = count_parameters(*[m for m in modules if m is not None])
        results[name] = measure_transcription(side_transcriber(model, name), entries, batch_size, params, num_workers)
    kind = type(model).__name__
    if isinstance(model, CodertRNNTBPEModel):
        kind += f" ({model.codert.mode})"
    return {
        "model": str(model_path),
        "model_class": kind,
        "manifest": str(manifest),
        "utterances": len(entries),
        "audio_seconds": sum(e["duration"] for e in entries),
        "batch_size": batch_size,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
