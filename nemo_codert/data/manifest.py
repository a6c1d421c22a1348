"""Check NeMo manifests before training, so one bad utterance never kills a run hours in.

NeMo's dataloaders read audio lazily: a missing or corrupt file surfaces as an exception in a worker mid-epoch, an
empty transcript or one the tokenizer cannot encode trains silently on garbage (``<unk>`` targets). This module
reads every manifest line once, up front, and sorts problems into two kinds:

- **errors** (the manifest itself is broken; training would be meaningless): the file does not exist, a line is not
  JSON or not an object, a required field (``audio_filepath``, the text field, ``duration``) is missing or of the
  wrong type, or too many utterances are bad. One ``ManifestError`` names the file, the line and the field.
- **skips** (one utterance is bad; training should go on without it): audio missing, unreadable or corrupt, audio
  of 0 s, an empty transcript, a transcript with characters the tokenizer maps to ``<unk>``. Each is logged with
  file, line and reason; a filtered copy of the manifest (absolute audio paths) is written and used instead.

Only the audio header is read (``soundfile.info``), so checking costs a stat and a few bytes per utterance.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nemo.utils import logging

from nemo_codert.utils import atomic_path

__all__ = [
    "ManifestError",
    "ManifestReport",
    "check_dataset_config",
    "check_manifest",
    "check_model_data",
    "read_manifest",
]

# Beyond this fraction of bad utterances the data preparation is broken, not the odd file: stop rather than skip.
DEFAULT_MAX_SKIPPED_FRACTION = 0.1
_LOGGED_SKIPS = 20  # per manifest; the rest are counted


class ManifestError(ValueError):
    """A manifest (or a dataset config pointing at one) that training cannot use."""


@dataclass
class ManifestReport:
    """What ``check_manifest`` found; ``path`` is the manifest to train on (the original when nothing was skipped)."""

    source: Path
    path: Path
    kept: int = 0
    skipped: List[Tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def read_manifest(path: os.PathLike, resolve_audio: bool = True) -> List[Dict[str, Any]]:
    """The entries of a NeMo manifest, the one reader of the package.

    With ``resolve_audio``, ``audio_filepath`` is made absolute (relative to the manifest, as NeMo resolves it) and
    a missing ``duration`` is read from the audio header. A line that is not JSON or lacks ``audio_filepath`` or
    ``text`` is a ``ManifestError`` naming the file and line; an empty manifest too.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path}: no such file")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio, _ = entry["audio_filepath"], entry["text"]  # both required: a KeyError names the missing one
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ManifestError(f"manifest {path}, line {number}: not a NeMo manifest line ({e!r})") from None
        if resolve_audio:
            audio = Path(os.path.expanduser(audio))
            entry["audio_filepath"] = str(audio if audio.is_absolute() else path.parent / audio)
            if entry.get("duration") is None:
                import soundfile

                entry["duration"] = soundfile.info(entry["audio_filepath"]).duration
            entry["duration"] = float(entry["duration"])
        entries.append(entry)
    if not entries:
        raise ManifestError(f"manifest {path}: no utterances")
    return entries


def _encoder(tokenizer_dir: Optional[os.PathLike]):
    """A function text -> True if the sentencepiece tokenizer in ``tokenizer_dir`` encodes it without ``<unk>``."""
    if tokenizer_dir is None:
        return None
    model = Path(tokenizer_dir) / "tokenizer.model"
    if not model.is_file():
        return None  # not a sentencepiece tokenizer (e.g. WPE): NeMo checks it, we do not guess
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    unk = sp.unk_id()
    return lambda text: unk not in sp.encode(text)


def _audio_problem(path: Path) -> Optional[str]:
    import soundfile

    if not path.is_file():
        return f"audio file {path} does not exist"
    try:
        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises its own LibsndfileError / RuntimeError flavours
        return f"audio file {path} cannot be read ({type(e).__name__}: {str(e).strip()})"
    if info.frames == 0 or info.samplerate <= 0:
        return f"audio file {path} has no samples (0 s)"
    return None


def check_manifest(
    manifest: os.PathLike,
    out_dir: Optional[os.PathLike] = None,
    tokenizer_dir: Optional[os.PathLike] = None,
    text_field: str = "text",
    max_skipped_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION,
) -> ManifestReport:
    """Check every line of a NeMo manifest; write a filtered copy to ``out_dir`` when utterances must be skipped.

    Raises ``ManifestError`` for a broken manifest (see the module docstring); returns a report whose ``path`` is
    the manifest to use. Relative audio paths are resolved against the manifest's directory, as NeMo does.
    """
    source = Path(manifest)
    if not source.is_file():
        raise ManifestError(f"manifest {source}: no such file")
    encodes = _encoder(tokenizer_dir)
    report = ManifestReport(source=source, path=source)
    kept_lines: List[Dict[str, Any]] = []
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"manifest {source}, line {number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(item, dict):
                raise ManifestError(f"{where}: a manifest line must be a JSON object, got {type(item).__name__}")
            for key, kind in (("audio_filepath", str), (text_field, str), ("duration", (int, float))):
                if key not in item:
                    raise ManifestError(f"{where}: missing field {key!r}")
                if not isinstance(item[key], kind) or isinstance(item[key], bool):
                    raise ManifestError(f"{where}: field {key!r} has the wrong type ({type(item[key]).__name__})")
            audio = Path(os.path.expanduser(item["audio_filepath"]))
            if not audio.is_absolute():
                audio = source.parent / audio
            reason = _audio_problem(audio)
            if reason is None and not item[text_field].strip():
                reason = "empty transcript"
            if reason is None and encodes is not None and not encodes(item[text_field]):
                reason = f"transcript {item[text_field]!r} has characters the tokenizer cannot encode (<unk>)"
            if reason is not None:
                report.skipped.append((number, reason))
                if len(report.skipped) <= _LOGGED_SKIPS:
                    logging.warning(f"{where}: skipping utterance: {reason}")
                continue
            item["audio_filepath"] = str(audio.resolve())
            kept_lines.append(item)
    report.kept = len(kept_lines)
    total = report.kept + len(report.skipped)
    if total == 0:
        raise ManifestError(f"manifest {source}: no utterances")
    if report.skipped:
        if len(report.skipped) > _LOGGED_SKIPS:
            logging.warning(f"manifest {source}: {len(report.skipped) - _LOGGED_SKIPS} more utterances skipped")
        fraction = len(report.skipped) / total
        if report.kept == 0 or fraction > max_skipped_fraction:
            first = "; ".join(f"line {n}: {r}" for n, r in report.skipped[:3])
            raise ManifestError(
                f"manifest {source}: {len(report.skipped)} of {total} utterances are unusable "
                f"({fraction:.0%} > max_skipped_fraction {max_skipped_fraction:.0%}); first: {first}"
            )
        if out_dir is None:
            raise ManifestError(f"manifest {source}: {len(report.skipped)} utterances must be skipped but no out_dir")
        out = Path(out_dir) / checked_manifest_name(source)
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for item in kept_lines:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        report.path = out
        logging.warning(f"manifest {source}: skipped {len(report.skipped)} of {total} utterances; training on {out}")
    return report


def checked_manifest_name(source: os.PathLike) -> str:
    """The file name of ``source``'s filtered copy: its stem and a digest of its resolved path, since every dataset's
    copy goes to one folder and two manifests may share a stem (``a/manifest.json``, ``b/manifest.json``)."""
    digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
    return f"{Path(source).stem}-{digest}.checked.json"


def _manifest_paths(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(p) for p in value]  # a list (NeMo also accepts lists of manifests)


def check_dataset_config(
    ds_cfg: Any,
    name: str,
    out_dir: os.PathLike,
    tokenizer_dir: Optional[os.PathLike] = None,
    max_skipped_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION,
) -> Optional[List[str]]:
    """Check the data a NeMo dataset config (``model.train_ds`` etc.) points at.

    Returns the manifest paths to put into ``manifest_filepath`` (filtered copies where utterances were skipped),
    or None when there is nothing to check or change (no manifest, tarred or lhotse-shar data, which are checked when
    they are read). A lhotse ``cuts_path`` that does not exist is an error naming the field.
    """
    if ds_cfg is None:
        return None
    for key in ("cuts_path", "shar_path"):
        paths = _manifest_paths(ds_cfg.get(key))
        for p in paths:
            if not Path(p).exists():
                raise ManifestError(f"{name}.{key}: {p} does not exist")
    if ds_cfg.get("is_tarred", False) or ds_cfg.get("cuts_path") or ds_cfg.get("shar_path"):
        return None
    manifests = _manifest_paths(ds_cfg.get("manifest_filepath"))
    if not manifests:
        return None
    checked: List[str] = []
    for m in manifests:
        try:
            report = check_manifest(
                m, out_dir, tokenizer_dir, ds_cfg.get("text_field", "text"), max_skipped_fraction=max_skipped_fraction
            )
        except ManifestError as e:
            raise ManifestError(f"{name}.manifest_filepath: {e}") from None
        checked.append(str(report.path))
    return checked


def check_model_data(
    model_cfg: Any,
    out_dir: os.PathLike,
    max_skipped_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION,
    allow_eval_skips: bool = False,
) -> Sequence[str]:
    """Check ``train_ds``, ``validation_ds`` and ``test_ds`` of a model config in place (paths replaced by filtered
    copies where needed); returns the names of the configs that changed.

    A bad training utterance is skipped; a bad *evaluation* utterance is an error unless ``allow_eval_skips``: a
    WER over a silently filtered dev/test set is not the WER of that set. With the opt-in the skips are logged
    and the filtered copy is evaluated on (the warning says how many utterances it lost).
    """
    from omegaconf import open_dict

    tokenizer = model_cfg.get("tokenizer")
    tokenizer_dir = tokenizer.get("dir") if tokenizer else None
    changed = []
    for name in ("train_ds", "validation_ds", "test_ds"):
        ds = model_cfg.get(name)
        evaluation = name != "train_ds"
        limit = 0.0 if evaluation and not allow_eval_skips else max_skipped_fraction
        try:
            paths = check_dataset_config(ds, f"model.{name}", out_dir, tokenizer_dir, limit)
        except ManifestError as e:
            if evaluation and not allow_eval_skips and "unusable" in str(e):
                raise ManifestError(
                    f"{e}. An evaluation set must be complete (its WER would be that of a subset); fix it, or set "
                    "manifest_check.allow_eval_skips=true to evaluate on its usable utterances"
                ) from None
            raise
        if paths is None or paths == _manifest_paths(ds.get("manifest_filepath")):
            continue
        with open_dict(ds):
            ds.manifest_filepath = paths[0] if len(paths) == 1 else paths
        changed.append(name)
    return changed
