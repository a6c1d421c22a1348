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

Per evaluated model it reports the WER, the parameters of the deployable transducer and the CPU real-time factor
(how each is measured: ``nemo_codert.evaluation``). Everything runs on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from nemo_codert.evaluation import evaluate, write_json_atomic

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
    print(f"{'':10s} {'WER':>8s} {'CER':>8s} {'params':>12s} {'RTF':>8s}")
    for name, r in report["results"].items():
        print(f"{name:10s} {100 * r['wer']:7.2f}% {100 * r['cer']:7.2f}% {r['params']:12,d} {r['rtf']:8.4f}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
