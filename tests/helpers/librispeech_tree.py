"""A LibriSpeech-shaped tree made from the eSpeak test corpus (nothing may be downloaded): FLAC audio, upper-case
transcripts, a speaker per voice with two chapters each, two parts with speakers of their own."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import soundfile as sf

from helpers.factories import manifest_lines

#: LibriSpeech part -> the corpus manifest it is made from (Mini LibriSpeech's part names).
PARTS = {"train-clean-5": "train_manifest", "dev-clean-2": "dev_manifest"}


def write_librispeech_tree(corpus, root: Path, chapters_per_speaker: int = 2) -> dict:
    """``root/LibriSpeech/<part>/<speaker>/<chapter>/...`` from the corpus; returns {utterance id: lower-case text}."""
    texts, speaker = {}, 100
    for part, manifest in PARTS.items():
        by_voice = defaultdict(list)
        for entry in manifest_lines(getattr(corpus, manifest)):
            by_voice[entry["voice"]].append(entry)
        for entries in by_voice.values():
            speaker += 1
            for i, entry in enumerate(entries):
                chapter = 1000 + i % chapters_per_speaker
                folder = root / "LibriSpeech" / part / str(speaker) / str(chapter)
                folder.mkdir(parents=True, exist_ok=True)
                utterance = f"{speaker}-{chapter}-{i:04d}"
                audio, rate = sf.read(entry["audio_filepath"])
                sf.write(folder / f"{utterance}.flac", audio, rate, format="FLAC")
                with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as f:
                    f.write(f"{utterance} {entry['text'].upper()}\n")
                texts[utterance] = entry["text"]
    return texts
