"""A LibriSpeech-shaped tree made from an embedded corpus, so the LibriSpeech path (``prepare_librispeech.py``, the
LibriSpeech configs) can be run and tested where nothing may be downloaded.

    python -m nemo_codert.data.librispeech_like --corpus data/synth_small --out data/librispeech_like

The tree is ``<out>/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`` with
``<speaker>-<chapter>.trans.txt`` upper-case transcripts, as LibriSpeech's archives unpack: the corpus's train
split becomes ``train-clean-5`` and its dev split ``dev-clean-2`` (Mini LibriSpeech's part names), each voice a
speaker of its own part with its utterances spread over chapters.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from nemo_codert.data.manifest import read_manifest
from nemo_codert.data.synth import Corpus

__all__ = ["PARTS", "write_librispeech_like"]

#: LibriSpeech part -> the corpus split it is made from.
PARTS = {"train-clean-5": "train", "dev-clean-2": "dev"}


def write_librispeech_like(
    corpus_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], chapters_per_speaker: int = 2
) -> Dict[str, str]:
    """Write the tree under ``out`` (built aside, renamed into place; an existing tree is kept); returns
    {utterance id: the corpus's (lower-case) text}."""
    import soundfile as sf

    corpus = Corpus.at(Path(corpus_dir))
    final = Path(out) / "LibriSpeech"
    tmp = Path(out) / f".LibriSpeech.{uuid.uuid4().hex[:8]}.tmp"
    texts, speaker = {}, 100
    try:
        for part, split in PARTS.items():
            by_voice = defaultdict(list)
            for entry in read_manifest(getattr(corpus, f"{split}_manifest")):
                by_voice[entry.get("voice", "")].append(entry)
            for entries in by_voice.values():
                speaker += 1
                for i, entry in enumerate(entries):
                    chapter = 1000 + i % chapters_per_speaker
                    folder = tmp / part / str(speaker) / str(chapter)
                    folder.mkdir(parents=True, exist_ok=True)
                    utterance = f"{speaker}-{chapter}-{i:04d}"
                    audio, rate = sf.read(entry["audio_filepath"])
                    sf.write(folder / f"{utterance}.flac", audio, rate, format="FLAC")
                    with open(folder / f"{speaker}-{chapter}.trans.txt", "a", encoding="utf-8") as f:
                        f.write(f"{utterance} {entry['text'].upper()}\n")
                    texts[utterance] = entry["text"]
        if not final.exists():
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return texts


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="an embedded corpus (python -m nemo_codert.data.synth)")
    parser.add_argument("--out", required=True, help="the tree goes to OUT/LibriSpeech")
    args = parser.parse_args(argv)
    texts = write_librispeech_like(args.corpus, args.out)
    print(f"{len(texts)} utterances -> {Path(args.out) / 'LibriSpeech'} ({', '.join(PARTS)})")


if __name__ == "__main__":
    main()
