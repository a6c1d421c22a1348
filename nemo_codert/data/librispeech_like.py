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
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from nemo_codert.data.manifest import read_manifest
from nemo_codert.data.synth import Corpus
from nemo_codert.utils import atomic_dir

__all__ = ["PARTS", "write_librispeech_like"]

#: LibriSpeech part -> the corpus split it is made from.
PARTS = {"train-clean-5": "train", "dev-clean-2": "dev"}


def _plan(corpus: Corpus, chapters_per_speaker: int) -> List[Tuple[Path, Dict]]:
    """(``<part>/<speaker>/<chapter>/<utterance id>``, corpus entry) of every utterance of the tree."""
    plan, speaker = [], 100
    for part, split in PARTS.items():
        by_voice = defaultdict(list)
        for entry in read_manifest(getattr(corpus, f"{split}_manifest")):
            by_voice[entry.get("voice", "")].append(entry)
        for entries in by_voice.values():
            speaker += 1
            for i, entry in enumerate(entries):
                chapter = 1000 + i % chapters_per_speaker
                plan.append((Path(part, str(speaker), str(chapter), f"{speaker}-{chapter}-{i:04d}"), entry))
    return plan


def write_librispeech_like(
    corpus_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], chapters_per_speaker: int = 2
) -> Dict[str, str]:
    """Write the tree under ``out`` (built aside, renamed into place; an existing tree is kept, not rebuilt); returns
    {utterance id: the corpus's (lower-case) text}."""
    import soundfile as sf

    plan = _plan(Corpus.at(Path(corpus_dir)), chapters_per_speaker)
    final = Path(out) / "LibriSpeech"
    if not final.exists():
        with atomic_dir(final) as tmp:
            for utterance, entry in plan:
                folder = tmp / utterance.parent
                folder.mkdir(parents=True, exist_ok=True)
                audio, rate = sf.read(entry["audio_filepath"])
                sf.write(folder / f"{utterance.name}.flac", audio, rate, format="FLAC")
                speaker, chapter = utterance.parts[1:3]
                with open(folder / f"{speaker}-{chapter}.trans.txt", "a", encoding="utf-8") as f:
                    f.write(f"{utterance.name} {entry['text'].upper()}\n")
    return {utterance.name: entry["text"] for utterance, entry in plan}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="an embedded corpus (python -m nemo_codert.data.synth)")
    parser.add_argument("--out", required=True, help="the tree goes to OUT/LibriSpeech")
    args = parser.parse_args(argv)
    texts = write_librispeech_like(args.corpus, args.out)
    print(f"{len(texts)} utterances -> {Path(args.out) / 'LibriSpeech'} ({', '.join(PARTS)})")


if __name__ == "__main__":
    main()
