"""WER, CER, size and CPU speed of a CoDERT model's student and teacher, or of any stock NeMo transducer.

    python examples/evaluate_codert.py model=codert.nemo manifest=data/synth_small/test_manifest.json
    python examples/evaluate_codert.py model=student.nemo manifest=... batch_size=8 out=student.eval.json
    python examples/evaluate_codert.py model=codert.nemo manifest=... 'sides=[student]' threads=2

The config is :class:`EvaluationConfig` (dataclass + hydra, as NeMo's ``examples/asr/speech_to_text_eval.py``):

    model       a CoDERT .nemo (its student and teacher are evaluated) or a stock NeMo RNN-T .nemo   (required)
    manifest    a NeMo manifest: JSON lines with audio_filepath, text and (optionally) duration      (required)
    batch_size  transcription batch size (default 8)
    sides       for a CoDERT model: [student, teacher] (default: both, teacher only if the model has one)
    out         where the JSON goes (default: next to the model, <model stem>.eval.json); written atomically
    threads     torch CPU threads (default: torch's default)
    num_workers dataloader worker processes of transcribe() (default 0: audio is read in the timed process)

Per evaluated model it reports the WER, the CER, the parameters of the deployable transducer and the CPU real-time
factor (how each is measured: ``nemo_codert.evaluation``). Everything runs on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nemo.core.config import hydra_runner

from nemo_codert.evaluation import evaluate
from nemo_codert.utils import write_json_atomic


@dataclass
class EvaluationConfig:
    model: str = MISSING
    manifest: str = MISSING
    batch_size: int = 8
    sides: Optional[List[str]] = None
    out: Optional[str] = None
    threads: Optional[int] = None
    num_workers: int = 0


def run(cfg: EvaluationConfig) -> Dict[str, Any]:
    """Evaluate, write the JSON report, print the table; returns the report (hypotheses included)."""
    try:
        model_path = Path(cfg.model).expanduser().resolve()
        manifest = Path(cfg.manifest).expanduser().resolve()
    except MissingMandatoryValue as e:
        raise SystemExit(f"error: {e.full_key}=... is required (model=PATH.nemo manifest=MANIFEST)") from None
    out = Path(cfg.out).expanduser().resolve() if cfg.out else model_path.with_suffix(".eval.json")
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    try:
        report = evaluate(
            model_path, manifest, batch_size=cfg.batch_size, sides=cfg.sides, num_workers=cfg.num_workers
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    stored = {
        **report,
        "results": {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in report["results"].items()},
    }
    write_json_atomic(stored, out)

    print(f"{report['model']} [{report['model_class']}] on {report['manifest']}")
    print(
        f"{report['utterances']} utterances, {report['audio_seconds']:.1f} s of audio, CPU, {report['torch_threads']} threads"
    )
    print(f"{'':10s} {'WER':>8s} {'CER':>8s} {'params':>12s} {'RTF':>8s}")
    for name, r in report["results"].items():
        print(f"{name:10s} {100 * r['wer']:7.2f}% {100 * r['cer']:7.2f}% {r['params']:12,d} {r['rtf']:8.4f}")
    print(f"-> {out}")
    return report


@hydra_runner(config_name="EvaluationConfig", schema=EvaluationConfig)
def main(cfg: EvaluationConfig) -> None:
    run(OmegaConf.merge(OmegaConf.structured(EvaluationConfig), cfg))


if __name__ == "__main__":
    main()
