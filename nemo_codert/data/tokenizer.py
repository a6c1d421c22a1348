"""The corpus's BPE tokenizer, laid out as NeMo's ``scripts/tokenizers/process_asr_text_tokenizer.py``
(``--spe_type=bpe``) lays it out, so a config's ``tokenizer.dir`` can point at it as at any NeMo tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["train_tokenizer"]


def train_tokenizer(texts: Iterable[str], out: Path, vocab_size: int) -> None:
    """Train a sentencepiece BPE model of ``vocab_size`` pieces on ``texts`` into the new directory ``out``."""
    import sentencepiece as spm

    out.mkdir(parents=True)
    text_file = out / "text.txt"
    text_file.write_text("\n".join(texts) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(out / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,  # NeMo's transducers use neither BOS nor EOS
        eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    pieces = [line.split("\t")[0] for line in (out / "tokenizer.vocab").read_text().splitlines()]
    (out / "vocab.txt").write_text("\n".join(pieces) + "\n")
