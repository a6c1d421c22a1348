"""Evaluation of transducers: WER, deployable size and CPU real-time factor of a CoDERT model's sides or of any
stock NeMo RNN-T ``.nemo``. The CLI is ``examples/evaluate_codert.py``; benchmarks call :func:`evaluate` and
:func:`measure_transcription` directly.

The WER (and CER) is NeMo's ``word_error_rate`` over the manifest; the parameter count is that of the deployable transducer
(for a CoDERT side: its encoder, prediction network and joint, each shared tensor counted once: exactly the
parameter count of the stock ``.nemo`` that ``python -m nemo_codert.export`` writes for it); the real-time factor is
the wall time of ``transcribe()`` over the manifest divided by its audio duration, after one untimed warm-up batch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["count_parameters", "evaluate", "measure_transcription", "read_manifest", "write_json_atomic"]


def read_manifest(path: Path) -> List[Dict[str, Any]]:
    """Manifest entries with absolute ``audio_filepath`` (relative ones are relative to the manifest) and duration."""
    import soundfile

    if not path.is_file():
        raise FileNotFoundError(f"manifest={path}: no such file")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio = Path(entry["audio_filepath"])
            text = entry["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"manifest={path}, line {number}: not a NeMo manifest line ({e})") from e
        audio = audio if audio.is_absolute() else (path.parent / audio)
        duration = entry.get("duration")
        if duration is None:
            duration = soundfile.info(str(audio)).duration
        entries.append({"audio_filepath": str(audio), "text": text, "duration": float(duration)})
    if not entries:
        raise ValueError(f"manifest={path}: no utterances")
    return entries


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

    import nemo_codert.models  # noqa: F401  (lets NeMo restore CoDERT targets)
    from nemo_codert.export import CODERT_TARGET, load_codert, load_stock_transducer, read_nemo_config

    entries = read_manifest(manifest)
    target = read_nemo_config(model_path).get("target", None)
    results: Dict[str, Dict[str, Any]] = {}
    if target == CODERT_TARGET:
        model = load_codert(model_path)
        model.eval()
        available = ["student", "teacher"] if model.has_teacher else ["student"]
        for side_name in sides or available:
            if side_name not in available:
                raise ValueError(f"sides: {side_name!r} is not one of this model's sides ({', '.join(available)})")
            side = getattr(model, side_name)
            params = count_parameters(model.preprocessor, side.encoder, side.decoder, side.joint)

            def transcribe(files, _teacher=side_name == "teacher", **kwargs):
                return model.transcribe(files, use_teacher=_teacher, **kwargs)

            results[side_name] = measure_transcription(transcribe, entries, batch_size, params, num_workers)
        kind = f"{type(model).__name__} ({model.codert.mode})"
    else:
        model = load_stock_transducer(model_path)
        results["model"] = measure_transcription(model.transcribe, entries, batch_size, count_parameters(model), num_workers)
        kind = type(model).__name__
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


def write_json_atomic(report: Dict[str, Any], path: Path) -> None:
    """Write ``report`` to ``path`` through a temporary sibling and a rename: the file is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
