"""A teacher's encoder logits, computed once and stored per utterance (``model.codert.mode: offline_teacher``).

For teachers too large to train beside their student (NeMo issue #14567): ``write_teacher_cache`` runs a NeMo
transducer over a manifest once, in eval mode, and keeps each frame's ``k`` largest encoder logits (float16) with
their class indices (int16), or the full rows where ``k`` >= V+1. The store is lhotse's: one CutSet
(``cuts.jsonl.gz``) whose cuts carry the two arrays as ``TemporalArray`` custom fields, the arrays in lhotse's
``NumpyHdf5Writer`` files, one per shard of utterances. ``TeacherCache`` reads it back for a training batch.

What differs from a static teacher: the logits are computed without spec-augment (the student's features are still
augmented, so the pair no longer sees one input: the teacher's targets are those of the clean utterance) and, below
V+1 classes, truncated to the top k and renormalised over them (``nemo_codert.losses.topk_kd``). Dropout is off in
both (a static teacher is frozen in eval mode too).

Resumable and atomic like the rest of the package: a shard is done when its CutSet file exists (written atomically
after its arrays are closed); a rerun with the same arguments redoes only the shards without one; the final
``cuts.jsonl.gz`` and ``teacher_cache.json`` (``complete: true``) are written last, so a reader never sees a part.
Utterances are matched to a training manifest by their audio file and offset, never by position: a cache that lacks
an utterance, or holds another frame count or vocabulary, is one clear error, not a silent misalignment.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from nemo.utils import logging

from nemo_codert.data.manifest import read_manifest
from nemo_codert.losses.encoder_kd import encoder_logit_classes, encoder_logits
from nemo_codert.losses.topk_kd import topk_logits
from nemo_codert.utils import atomic_path, vocabulary_difference, write_json_atomic

__all__ = ["CACHE_FORMAT", "TeacherCache", "TeacherCacheError", "utterance_key", "write_teacher_cache"]

CACHE_FORMAT = 1
_META = "teacher_cache.json"
_CUTS = "cuts.jsonl.gz"
_VALUES, _INDICES = "teacher_logits", "teacher_classes"


class TeacherCacheError(ValueError):
    """A teacher cache that cannot serve this training run; the message names the cache and what is wrong."""


def utterance_key(audio_filepath: str, offset: Optional[float] = None) -> str:
    """How a cached utterance is found again: its canonical audio path and its offset in that file. Canonical
    (symlinks resolved): the cache script, NeMo's dataset (relative paths joined to the manifest path as written) and
    a filtered manifest copy (resolved paths) may each spell one file differently."""
    return f"{os.path.realpath(audio_filepath)}@{float(offset or 0.0):.3f}"


def _meta_path(directory: Path) -> Path:
    return Path(directory) / _META


def _shard_cuts(directory: Path, shard: int) -> Path:
    return Path(directory) / f"shard-{shard:05d}.jsonl.gz"


def _shard_arrays(directory: Path, shard: int) -> Path:
    return Path(directory) / f"shard-{shard:05d}.h5"


def _relative(array: Any, directory: Path) -> Any:
    """A lhotse (Temporal)Array whose storage path is relative to the cache directory, so a cache can be moved."""
    inner = array.array if hasattr(array, "array") else array
    inner = dataclasses.replace(inner, storage_path=os.path.relpath(inner.storage_path, directory))
    return dataclasses.replace(array, array=inner) if hasattr(array, "array") else inner


@torch.no_grad()
def _teacher_rows(teacher: Any, entries: Sequence[Dict[str, Any]], k: int) -> List[Tuple[Any, Any]]:
    """(values T x k, indices T x k or None) per entry: the teacher in eval mode on the clean utterances."""
    from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

    sample_rate = int(teacher.cfg.preprocessor.get("sample_rate", teacher.cfg.get("sample_rate", 16000)))
    signals = [
        torch.as_tensor(
            AudioSegment.from_file(
                e["audio_filepath"], target_sr=sample_rate, offset=e.get("offset", 0) or 0, duration=e["duration"]
            ).samples,
            dtype=torch.float32,
        )
        for e in entries
    ]
    lengths = torch.tensor([len(s) for s in signals])
    batch = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True).to(teacher.device)
    features, feature_len = teacher.preprocessor(input_signal=batch, length=lengths.to(teacher.device))
    encoded, encoded_len = teacher.encoder(audio_signal=features, length=feature_len)
    logits = encoder_logits(teacher.joint, encoded)
    full = k >= logits.shape[-1]
    values, indices = topk_logits(logits, k)
    rows = []
    for b, frames in enumerate(encoded_len.tolist()):
        v = values[b, :frames].to(torch.float16).cpu().numpy()
        i = None if full else indices[b, :frames].to(torch.int16).cpu().numpy()
        rows.append((v, i))
    return rows


def write_teacher_cache(
    teacher: Any,
    manifest: os.PathLike,
    out: os.PathLike,
    k: int = 8,
    batch_size: int = 16,
    shard_size: int = 512,
    teacher_name: str = "",
) -> Path:
    """Cache ``teacher``'s encoder logits for every utterance of ``manifest`` in ``out``; returns ``out``.

    Args:
        teacher: a NeMo transducer (anything with ``preprocessor``, ``encoder``, ``joint``, ``tokenizer``).
        k: logits kept per frame (float16, with int16 class indices); k >= V+1 keeps full rows and no indices.
        shard_size: utterances per shard, the unit of resumption.
        teacher_name: what the cache records as its teacher (e.g. the .nemo path).
    """
    from lhotse import CutSet, MonoCut
    from lhotse.features.io import NumpyHdf5Writer

    out = Path(out)
    entries = read_manifest(manifest)
    # Token and blank logits only: a TDT teacher's duration outputs are not distilled (encoder_logits drops them).
    classes = encoder_logit_classes(teacher.joint)
    if classes > 32767:
        raise TeacherCacheError(f"teacher has {classes} classes: more than the cache's int16 indices hold")
    preprocessor = teacher.cfg.preprocessor
    frame_shift = float(preprocessor.get("window_stride", 0.01)) * int(
        teacher.cfg.encoder.get("subsampling_factor", 1)
    )
    meta = {
        "format": CACHE_FORMAT,
        "teacher": teacher_name,
        "manifest": str(Path(manifest).resolve()),
        "k": int(min(k, classes)),
        "classes": classes,
        "vocabulary": list(teacher.tokenizer.vocab),
        "frame_shift": frame_shift,
        "shard_size": int(shard_size),
        "utterances": len(entries),
    }
    existing = _read_meta(out) if _meta_path(out).is_file() else None
    if existing is not None:
        differing = [key for key in meta if existing.get(key) != meta[key]]
        if differing:
            raise TeacherCacheError(
                f"teacher cache {out}: holds a cache made with other settings ({', '.join(differing)} differ); "
                "choose another out= or delete it"
            )
        if existing.get("complete"):
            logging.info(f"teacher cache {out}: complete already, nothing to do")
            return out
    write_json_atomic({**meta, "complete": False}, _meta_path(out))

    teacher.eval()  # no dropout; NeMo applies spec-augment only in training mode
    shards = range(0, len(entries), shard_size)
    for shard, start in enumerate(shards):
        if _shard_cuts(out, shard).is_file():
            continue
        arrays = _shard_arrays(out, shard)
        arrays.unlink(missing_ok=True)  # a crashed run's arrays without their CutSet: redone
        cuts = []
        with NumpyHdf5Writer(arrays, mode="w") as writer:
            part = entries[start : start + shard_size]
            for first in range(0, len(part), batch_size):
                chunk = part[first : first + batch_size]
                for offset, (entry, (values, indices)) in enumerate(zip(chunk, _teacher_rows(teacher, chunk, k))):
                    cut_id = f"{start + first + offset:08d}"
                    custom = {
                        "audio_key": utterance_key(entry["audio_filepath"], entry.get("offset")),
                        _VALUES: _relative(writer.store_array(cut_id, values, frame_shift, temporal_dim=0), out),
                    }
                    if indices is not None:
                        stored = writer.store_array(f"{cut_id}-classes", indices, frame_shift, temporal_dim=0)
                        custom[_INDICES] = _relative(stored, out)
                    start_s = float(entry.get("offset", 0) or 0)
                    cuts.append(MonoCut(cut_id, start_s, entry["duration"], channel=0, custom=custom))
        with atomic_path(_shard_cuts(out, shard)) as tmp:
            CutSet.from_cuts(cuts).to_file(tmp)
        logging.info(f"teacher cache {out}: shard {shard + 1} of {len(shards)} written")

    with atomic_path(out / _CUTS) as tmp:
        CutSet.from_cuts(c for shard in range(len(shards)) for c in CutSet.from_file(_shard_cuts(out, shard))).to_file(
            tmp
        )
    write_json_atomic({**meta, "complete": True}, _meta_path(out))
    return out


def _read_meta(directory: Path) -> Dict[str, Any]:
    import json

    meta = json.loads(_meta_path(directory).read_text(encoding="utf-8"))
    if meta.get("format") != CACHE_FORMAT:
        raise TeacherCacheError(
            f"teacher cache {directory}: format {meta.get('format')}, this package reads {CACHE_FORMAT}"
        )
    return meta


class TeacherCache:
    """A complete teacher cache, read for training batches.

    ``rows`` maps a training dataset's utterances to cached cuts once, before training (a missing utterance is an
    error then, not hours in); ``batch`` loads a batch's arrays, padded, and checks their frame counts.
    """

    def __init__(self, directory: os.PathLike):
        from lhotse import CutSet

        self.directory = Path(directory)
        if not _meta_path(self.directory).is_file():
            raise TeacherCacheError(
                f"model.codert.teacher_cache: {self.directory} holds no teacher cache ({_META} missing); make one "
                "with python examples/cache_teacher_logits.py model=TEACHER.nemo manifest=TRAIN_MANIFEST out=DIR"
            )
        self.meta = _read_meta(self.directory)
        if not self.meta.get("complete"):
            raise TeacherCacheError(
                f"model.codert.teacher_cache: {self.directory} is incomplete (an interrupted run): rerun "
                "examples/cache_teacher_logits.py with the same arguments to finish it"
            )
        self.k: int = int(self.meta["k"])
        self.classes: int = int(self.meta["classes"])
        self._cuts = {c.custom["audio_key"]: c for c in CutSet.from_file(self.directory / _CUTS)}

    def cuts(self) -> List[Any]:
        """Every cached utterance's cut, in the cache's order."""
        return list(self._cuts.values())

    @staticmethod
    def frames(cut: Any) -> int:
        """The teacher frame count cached for ``cut`` (read from the array's manifest, not its data)."""
        return int(cut.custom[_VALUES].shape[0])

    def check_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """The model's tokenizer must be the teacher's: a class index means nothing across vocabularies."""
        difference = vocabulary_difference(vocabulary, self.meta["vocabulary"])
        if difference:
            raise TeacherCacheError(
                f"model.codert.teacher_cache: {self.directory} was made by a teacher with another vocabulary "
                f"({difference}); teacher and student must share one tokenizer"
            )

    def rows(self, keys: Sequence[str], source: str) -> List[Any]:
        """The cached cut of each ``utterance_key`` in ``keys`` (the utterances of ``source``, a manifest)."""
        missing = [key for key in keys if key not in self._cuts]
        if missing:
            raise TeacherCacheError(
                f"model.codert.teacher_cache: {len(missing)} of {len(keys)} utterances of {source} are not in "
                f"{self.directory} (first: {missing[0].rsplit('@', 1)[0]}); the cache was made from "
                f"{self.meta['manifest']}: cache the training manifest"
            )
        return [self._cuts[key] for key in keys]

    def batch(
        self, cuts: Sequence[Any], frames: torch.Tensor, width: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The cached logits (float32) and class indices (int64) of ``cuts``, B x width x k, zero-padded (width:
        the student's padded frame count, at least max(frames)). ``frames`` are the student's encoder lengths: each
        must equal its utterance's cached frame count."""
        frames_list = frames.tolist()
        width = max([width or 0, *frames_list])
        values = torch.zeros(len(cuts), width, self.k)
        indices = torch.zeros(len(cuts), width, self.k, dtype=torch.long)
        for b, (cut, n) in enumerate(zip(cuts, frames_list)):
            # Checked from the manifest before loading: a frame-rate mismatch fails before any array is read.
            cached = self.frames(cut)
            if cached != n:
                raise TeacherCacheError(
                    f"model.codert.teacher_cache: {cut.custom['audio_key'].rsplit('@', 1)[0]} has {cached} "
                    f"cached teacher frames but the student emits {n}: teacher and student must share one frame rate "
                    f"(the cache's frame shift is {self.meta['frame_shift']} s)"
                )
            values[b, :n] = torch.from_numpy(self._load(cut, _VALUES)).float()
            if _INDICES in cut.custom:
                indices[b, :n] = torch.from_numpy(self._load(cut, _INDICES)).long()
            else:
                indices[b, :n] = torch.arange(self.k)
        return values, indices

    def _load(self, cut: Any, name: str):
        return cut.custom[name].with_path_prefix(str(self.directory)).load()
