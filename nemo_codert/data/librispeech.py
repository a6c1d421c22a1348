"""An already downloaded LibriSpeech tree as NeMo manifests, lhotse CutSets and a BPE tokenizer.

The tree is read by lhotse's own recipe (``lhotse.recipes.prepare_librispeech``, text lower-cased as NeMo's
LibriSpeech configs expect); this module adds what the recipe does not do: a check of the tree first (the recipe
skips a missing audio file with a warning and never sees a chapter without a transcript: training on a silently
smaller corpus is worse than one clear error), the per-part outputs a NeMo config points at, and the tokenizer.

    python examples/prepare_librispeech.py --corpus-dir /data/LibriSpeech --out /data/librispeech_prepared

Layout of ``out`` (each file of ours written atomically; a file that exists is reused, so an interrupted run
continues):

    lhotse/librispeech_{recordings,supervisions}_<part>.jsonl.gz   the recipe's own manifests (its cache; the
                                    recipe writes them in place, so one a killed run left truncated is found
                                    unreadable here and made again)
    cuts/<part>.jsonl.gz            a CutSet per part (read lazily: ``model.train_ds.cuts_path`` with ``use_lhotse``)
    manifests/<part>.json           NeMo's manifest per part (audio_filepath, duration, text)
    shar/<part>/                    with ``shar_shard_size``, the train-* parts as lhotse Shar shards
                                    (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar of FLAC): sequential reads for a
                                    large corpus on network storage, ``model.train_ds.shar_path``; NeMo shuffles the
                                    shards and repeats them (an infinite train set: training ends at max_steps)
    tokenizer_spe_bpe_v<N>/         sentencepiece BPE on the train-* parts' text, laid out as NeMo's
                                    ``process_asr_text_tokenizer.py`` lays it out (``model.tokenizer.dir``)
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from nemo.utils import logging

from nemo_codert.data.tokenizer import train_tokenizer
from nemo_codert.utils import atomic_dir, atomic_path

__all__ = ["LIBRISPEECH_PARTS", "LibriSpeechError", "PreparedLibriSpeech", "check_part", "prepare_librispeech"]

#: The part names lhotse's recipe knows (full LibriSpeech, then Mini LibriSpeech).
LIBRISPEECH_PARTS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean-2",
    "train-clean-5",
)
_LAYOUT = "<dir>/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac plus <speaker>-<chapter>.trans.txt"


class LibriSpeechError(ValueError):
    """A directory that is not a usable LibriSpeech tree; the message names the file or directory."""


@dataclass
class PreparedLibriSpeech:
    """What :func:`prepare_librispeech` wrote, by part."""

    out: Path
    cuts: Dict[str, Path]
    manifests: Dict[str, Path]
    tokenizer_dir: Path
    shar: Dict[str, Path] = field(default_factory=dict)


def _root(corpus_dir: Path) -> Path:
    """The directory that holds the parts: ``corpus_dir`` itself, or its ``LibriSpeech`` (the archives' top level)."""
    if not corpus_dir.is_dir():
        raise LibriSpeechError(f"--corpus-dir {corpus_dir}: not a directory")
    nested = corpus_dir / "LibriSpeech"
    if not any((corpus_dir / p).is_dir() for p in LIBRISPEECH_PARTS) and nested.is_dir():
        return nested
    return corpus_dir


def _parts(root: Path, parts: Optional[Sequence[str]]) -> List[str]:
    present = [p for p in LIBRISPEECH_PARTS if (root / p).is_dir()]
    if not present:
        entries = ", ".join(sorted(e.name for e in root.iterdir())[:8]) or "nothing"
        raise LibriSpeechError(
            f"{root}: not a LibriSpeech tree: none of its entries ({entries}) is a LibriSpeech part "
            f"({', '.join(LIBRISPEECH_PARTS)}); expected {_LAYOUT}"
        )
    if not parts:
        return present
    unknown = [p for p in parts if p not in LIBRISPEECH_PARTS]
    if unknown:
        raise LibriSpeechError(
            f"--parts: {', '.join(unknown)} not LibriSpeech part names ({', '.join(LIBRISPEECH_PARTS)})"
        )
    missing = [p for p in parts if p not in present]
    if missing:
        raise LibriSpeechError(f"{root}: part(s) {', '.join(missing)} not found (present: {', '.join(present)})")
    return list(parts)


def check_part(part_dir: Path) -> int:
    """Check one part's tree; returns its utterance count. Every chapter needs its transcript file, every
    transcript line an id of that chapter, a text and the audio file it names."""
    chapters = sorted(c for s in part_dir.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir())
    if not chapters:
        raise LibriSpeechError(f"{part_dir}: no <speaker>/<chapter> directories; expected {_LAYOUT}")
    count = 0
    for chapter in chapters:
        prefix = f"{chapter.parent.name}-{chapter.name}"
        transcript = chapter / f"{prefix}.trans.txt"
        if not transcript.is_file():
            flacs = len(list(chapter.glob("*.flac")))
            raise LibriSpeechError(f"{transcript}: missing transcript file of chapter {chapter} ({flacs} .flac files)")
        for number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utterance, _, text = line.strip().partition(" ")
            where = f"{transcript}:{number}"
            if not utterance.startswith(prefix + "-"):
                raise LibriSpeechError(f"{where}: utterance id {utterance!r} is not of chapter {prefix}")
            if not text.strip():
                raise LibriSpeechError(f"{where}: utterance {utterance} has no text")
            if not (chapter / f"{utterance}.flac").is_file():
                raise LibriSpeechError(
                    f"{where}: names {utterance}, but {chapter / f'{utterance}.flac'} does not exist"
                )
            count += 1
    return count


def _write_part(cuts, cuts_path: Path, manifest_path: Path) -> None:
    """A part's CutSet and the NeMo manifest of the same utterances."""
    if not cuts_path.is_file():
        with atomic_path(cuts_path) as tmp:
            cuts.to_file(tmp)
    if not manifest_path.is_file():
        with atomic_path(manifest_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for cut in cuts:
                entry = {
                    "audio_filepath": str(Path(cut.recording.sources[0].source).resolve()),
                    "duration": cut.duration,
                    "text": " ".join(s.text for s in cut.supervisions),
                }
                f.write(json.dumps(entry) + "\n")


def _write_shar(cuts, shar_dir: Path, shard_size: int) -> None:
    """A part as lhotse Shar: ``shard_size`` cuts a shard, their audio re-encoded as FLAC inside the shards' tars."""
    if not shar_dir.is_dir():
        with atomic_dir(shar_dir) as tmp:
            tmp.mkdir(parents=True)  # lhotse's shard writers expect the directory
            cuts.to_shar(tmp, fields={"recording": "flac"}, shard_size=shard_size)


def _tokenizer(out: Path, texts: Sequence[str], vocab_size: int) -> Path:
    """NeMo's tokenizer directory name for a BPE model of ``vocab_size``; trained aside and renamed into place."""
    final = out / f"tokenizer_spe_bpe_v{vocab_size}"
    if not final.is_dir():
        with atomic_dir(final) as tmp:
            train_tokenizer(texts, tmp, vocab_size)
    return final


def prepare_librispeech(
    corpus_dir: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    parts: Optional[Sequence[str]] = None,
    vocab_size: int = 1024,
    num_jobs: int = 1,
    shar_shard_size: Optional[int] = None,
) -> PreparedLibriSpeech:
    """Prepare the LibriSpeech ``parts`` (default: every part present) under ``corpus_dir`` into ``out``.

    The tree is checked first (:class:`LibriSpeechError` naming the file at the first problem), then read by lhotse's
    recipe; the tokenizer is trained on the ``train-*`` parts among ``parts`` (one is needed). With
    ``shar_shard_size`` the train-* parts are also written as lhotse Shar shards of that many cuts.
    """
    if shar_shard_size is not None and shar_shard_size < 1:
        raise LibriSpeechError(f"--shar-shard-size {shar_shard_size}: a shard needs at least one utterance")
    from lhotse import CutSet
    from lhotse.recipes import prepare_librispeech as lhotse_recipe

    root = _root(Path(corpus_dir))
    parts = _parts(root, parts)
    train_parts = [p for p in parts if p.startswith("train")]
    if not train_parts:
        raise LibriSpeechError(f"--parts {' '.join(parts)}: no train-* part to train the tokenizer on")
    for part in parts:
        check_part(root / part)

    out = Path(out)
    _drop_unreadable_recipe_files(out / "lhotse")
    recipe = lhotse_recipe(
        root, dataset_parts=parts, output_dir=out / "lhotse", normalize_text="lower", num_jobs=num_jobs
    )
    prepared = PreparedLibriSpeech(out=out, cuts={}, manifests={}, tokenizer_dir=out)
    texts: List[str] = []
    for part in parts:
        cuts = CutSet.from_manifests(
            recordings=recipe[part]["recordings"], supervisions=recipe[part]["supervisions"]
        ).sort_by_recording_id()
        prepared.cuts[part] = out / "cuts" / f"{part}.jsonl.gz"
        prepared.manifests[part] = out / "manifests" / f"{part}.json"
        _write_part(cuts, prepared.cuts[part], prepared.manifests[part])
        if part in train_parts:
            texts.extend(s.text for cut in cuts for s in cut.supervisions)
            if shar_shard_size:
                prepared.shar[part] = out / "shar" / part
                _write_shar(cuts, prepared.shar[part], shar_shard_size)
    prepared.tokenizer_dir = _tokenizer(out, texts, vocab_size)
    return prepared


def _drop_unreadable_recipe_files(directory: Path) -> List[Path]:
    """Delete the recipe's cached ``*.jsonl.gz`` that do not read to their end (lhotse writes them in place: a run
    killed meanwhile leaves a truncated file, which the recipe would take as done and fail on with a bare EOFError);
    the recipe then makes them again. Returns the deleted files."""
    dropped = []
    for path in sorted(directory.glob("*.jsonl.gz")):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except (EOFError, OSError, zlib.error) as e:
            logging.warning(f"{path}: unreadable ({e}), left by an interrupted run: the recipe makes it again")
            path.unlink()
            dropped.append(path)
    return dropped
