"""WER, size and CPU speed of a CoDERT model's student and teacher, or of any stock NeMo transducer.

    python examples/evaluate_codert.py model=codert.nemo manifest=data/synth_small/test_manifest.json
    python examples/evaluate_codert.py model=student.nemo manifest=... batch_size=8 out=student.eval.json

Arguments are ``key=value`` (hydra-style ``+key=value``/``++key=value`` are accepted too):

    model       a CoDERT .nemo (its student and teacher are evaluated) or a stock NeMo RNN-T .nemo   (required)
    manifest    a NeMo manifest: JSON lines with audio_filepath, text and (optionally) duration      (required)
    batch_size  transcription batch size (default 8)
    sides       for a CoDERT model: student,teacher (default: both, teacher only if the model has one)
    out         where the JSON goes (default: next to the model, <model stem>.eval.json); written atomically
    threads     torch CPU threads (default: torch's default)
    num_workers dataloader worker processes of transcribe() (default 0: audio is read in the timed process)

Per evaluated model it reports the WER (NeMo's ``word_error_rate`` over the manifest), the number of parameters of
the deployable transducer (for a CoDERT side: its encoder, prediction network and joint, each shared tensor counted
once; that is exactly the parameter count of the stock ``.nemo`` that ``python -m nemo_codert.export`` writes for
it) and the CPU real-time factor: wall time of ``transcribe()`` over the manifest divided by its audio duration, after
one untimed warm-up utterance. Everything runs on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

USAGE = "usage: python examples/evaluate_codert.py model=PATH.nemo manifest=MANIFEST [batch_size=8] [sides=..] [out=..]"
KEYS = ("model", "manifest", "batch_size", "sides", "out", "threads", "num_workers")


def parse_args(argv: Sequence[str]) -> Dict[str, str]:
    """``key=value`` arguments (leading ``+``/``++`` stripped); unknown or malformed ones are errors."""
    args: Dict[str, str] = {}
    for item in argv:
        key, sep, value = item.lstrip("+").partition("=")
        if not sep or not key:
            raise ValueError(f"argument {item!r} is not key=value\n{USAGE}")
        if key not in KEYS:
            raise ValueError(f"unknown argument {key!r}; known: {', '.join(KEYS)}\n{USAGE}")
        args[key] = value
    for key in ("model", "manifest"):
        if not args.get(key):
            raise ValueError(f"missing {key}=...\n{USAGE}")
    return args


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


def _evaluate_one(transcribe, entries, batch_size: int, params: int, num_workers: int = 0) -> Dict[str, Any]:
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

            results[side_name] = _evaluate_one(transcribe, entries, batch_size, params, num_workers)
        kind = f"{type(model).__name__} ({model.codert.mode})"
    else:
        model = load_stock_transducer(model_path)
        results["model"] = _evaluate_one(model.transcribe, entries, batch_size, count_parameters(model), num_workers)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        model_path = Path(args["model"]).expanduser().resolve()
        manifest = Path(args["manifest"]).expanduser().resolve()
        batch_size = int(args.get("batch_size", 8))
        sides = [s for s in args.get("sides", "").split(",") if s] or None
        out = Path(args["out"]).expanduser().resolve() if args.get("out") else model_path.with_suffix(".eval.json")
        if args.get("threads"):
            import torch

            torch.set_num_threads(int(args["threads"]))
        num_workers = int(args.get("num_workers", 0))
        report = evaluate(model_path, manifest, batch_size=batch_size, sides=sides, num_workers=num_workers)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stored = {**report, "results": {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in report["results"].items()}}
    write_json_atomic(stored, out)

    print(f"{report['model']} [{report['model_class']}] on {report['manifest']}")
    print(f"{report['utterances']} utterances, {report['audio_seconds']:.1f} s of audio, CPU, {report['torch_threads']} threads")
    print(f"{'':10s} {'WER':>8s} {'params':>12s} {'RTF':>8s}")
    for name, r in report["results"].items():
        print(f"{name:10s} {100 * r['wer']:7.2f}% {r['params']:12,d} {r['rtf']:8.4f}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
