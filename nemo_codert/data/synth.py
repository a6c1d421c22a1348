"""An offline speech corpus: eSpeak NG audio, NeMo manifests, lhotse CutSets and a BPE tokenizer.

This module plans and assembles the corpus (splits, voices, sentences, the atomic build, the CLI); one utterance is
rendered by ``nemo_codert.data.render``, a split's CutSet written by ``nemo_codert.data.cuts`` and the tokenizer
trained by ``nemo_codert.data.tokenizer``.

Nothing is downloaded: the speech comes from libespeak-ng and its voice data as shipped in the ``espeakng-loader``
wheel (``nemo_codert.data.espeak``, one engine per worker process). Each utterance gets a voice variant
(``en-us+f3``...), a speaking rate and a pitch. The text comes from ``nemo_codert.data.text``. Optionally
(``augment``, ``nemo_codert.data.augment``) each utterance is also reverberated and/or mixed with noise, drawn from
the same seed; the manifests record what each got.

Splits: **test** uses voice variants and sentences that train never saw (the held-out condition CoDERT results are
reported on); **dev** uses unseen sentences but train's voices, so it tracks learning without the voice shift, unless
``dev_voices`` (``--dev-voices N``) holds N more of eSpeak's variants out of train for dev alone: then dev measures
what test measures (unseen voices and sentences), so settings can be chosen for it, at the cost of N training voices.
``derived_voices`` (``--derived-voices K``) adds K new speakers per training variant to train (and to dev when it
shares train's voices), each a training variant with its vocal tract and pitch warped (``nemo_codert.data.voices``);
test keeps eSpeak's held-out variants.

    python -m nemo_codert.data.synth --hours 5 --out DIR
    python -m nemo_codert.data.synth --hours 3 --out DIR --reverb-prob 0.5 --noise-prob 0.8   # a harder corpus

The build is atomic: everything is written to a temporary sibling directory that is renamed into place at the
end, so a crash never leaves a corpus that looks complete. A complete corpus with the same parameters is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from nemo_codert.data.augment import Augmentation
from nemo_codert.data.cuts import write_cuts
from nemo_codert.data.espeak import SAMPLE_RATE, voice_variants
from nemo_codert.data.render import RenderJob, render
from nemo_codert.data.tokenizer import train_tokenizer
from nemo_codert.data.voices import derive_voices, write_overlay

__all__ = ["Corpus", "build_corpus", "build_corpus_from_config", "split_voices", "voice_variants"]

_SPLITS = ("train", "dev", "test")
_TEST_VOICE_FRACTION = 0.2
_RATE_WPM = (140, 200)
_PITCH = (30, 70)
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Corpus:
    """Paths of a built corpus."""

    root: Path
    train_manifest: Path
    dev_manifest: Path
    test_manifest: Path
    train_cuts: Path
    dev_cuts: Path
    test_cuts: Path
    tokenizer_dir: Path

    @classmethod
    def at(cls, root: Path) -> "Corpus":
        root = Path(root).resolve()
        return cls(
            root=root,
            **{f"{s}_manifest": root / f"{s}_manifest.json" for s in _SPLITS},
            **{f"{s}_cuts": root / f"{s}_cuts.jsonl.gz" for s in _SPLITS},
            tokenizer_dir=root / "tokenizer",
        )


@dataclass(frozen=True)
class _SplitPlan:
    """What one split is drawn from: its sentence pool, its voice variants, and its length in hours."""

    name: str
    texts: Sequence[str]
    voices: Sequence[str]
    hours: float


# ---------------------------------------------------------------------------- corpus


def build_corpus(
    out_dir: str | Path,
    hours: float = 1.0,
    dev_hours: float = 0.1,
    test_hours: float = 0.1,
    seed: int = 0,
    vocab_size: int = 128,
    num_workers: int = 2,
    augment: Optional[Augmentation] = None,
    derived_voices: int = 0,
    dev_voices: int = 0,
) -> Corpus:
    """Build (or reuse) a corpus in ``out_dir``; ``hours`` is the train split's length; ``augment`` degrades audio;
    ``derived_voices`` new speakers per training voice variant join train (``nemo_codert.data.voices``);
    ``dev_voices`` > 0 gives dev that many eSpeak variants of its own, unseen in train (0: train's voices)."""
    out = Path(out_dir).resolve()
    params = {
        "format": _FORMAT_VERSION,
        "hours": float(hours),
        "dev_hours": float(dev_hours),
        "test_hours": float(test_hours),
        "seed": int(seed),
        "vocab_size": int(vocab_size),
        # JSON's view of the dataclass (lists, not tuples), so it compares equal to what corpus.json holds.
        "augment": json.loads(json.dumps(asdict(augment))) if augment is not None else None,
        "derived_voices": int(derived_voices),
        "dev_voices": int(dev_voices),
    }
    existing = _existing_params(out)
    if existing is not None:
        differing = sorted(k for k in params if existing.get(k) != params[k])
        if differing:
            raise ValueError(
                f"{out} holds a corpus built with other parameters ("
                + ", ".join(f"{k}: {existing.get(k)} there, {params[k]} asked" for k in differing)
                + "); remove it or choose another directory"
            )
        return Corpus.at(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and holds no complete corpus (no corpus.json)")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _build_into(tmp, out, params, num_workers)
        (tmp / "corpus.json").write_text(json.dumps({**params, **summary}, indent=2))  # written last: completeness
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if _existing_params(out) == params:  # a concurrent builder finished the same corpus first
            return Corpus.at(out)
        raise
    return Corpus.at(out)


def build_corpus_from_config(
    data: Any,
    out_dir: str | Path | None = None,
    num_workers: Optional[int] = None,
    augment: Optional[Augmentation] = None,
) -> Corpus:
    """``build_corpus`` from a config's ``data`` section (``dir, hours, dev_hours, test_hours, seed, vocab_size,
    num_workers, derived_voices, dev_voices``): the one place that spells the section out. ``out_dir`` and
    ``num_workers`` override it; ``augment`` (no config key: the benchmarks' degraded corpora) is passed on."""
    return build_corpus(
        out_dir if out_dir is not None else data.dir,
        hours=data.hours,
        dev_hours=data.dev_hours,
        test_hours=data.test_hours,
        seed=data.seed,
        vocab_size=data.vocab_size,
        num_workers=num_workers if num_workers is not None else data.get("num_workers", 2),
        augment=augment,
        derived_voices=data.get("derived_voices", 0),
        dev_voices=data.get("dev_voices", 0),
    )


def _existing_params(out: Path) -> Optional[Dict]:
    meta = out / "corpus.json"
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    keys = ("format", "hours", "dev_hours", "test_hours", "seed", "vocab_size", "augment")
    # A corpus built before derived or dev voices existed has none: it stays reusable as what it is.
    return {**{k: data.get(k) for k in keys}, **{k: data.get(k, 0) for k in ("derived_voices", "dev_voices")}}


def split_voices(rng: random.Random, dev_voices: int = 0) -> Dict[str, List[str]]:
    """eSpeak's voice variants per split, shuffled by ``rng``: test's share first, then ``dev_voices`` for dev (an
    empty list when 0: dev then shares train's), the rest train's."""
    variants = voice_variants()
    rng.shuffle(variants)
    n_test = max(1, round(_TEST_VOICE_FRACTION * len(variants)))
    if not 0 <= dev_voices <= len(variants) - n_test - 1:
        raise ValueError(
            f"dev_voices: {dev_voices} asked, but of eSpeak's {len(variants)} variants {n_test} are test's and train "
            f"needs one: choose 0-{len(variants) - n_test - 1}"
        )
    # Test's voices come first from the same shuffle: whatever dev_voices is, test holds the same speakers.
    return {
        "test": variants[:n_test],
        "dev": variants[n_test : n_test + dev_voices],
        "train": variants[n_test + dev_voices :],
    }


def _build_into(tmp: Path, final: Path, params: Dict, num_workers: int) -> Dict:
    """Synthesise all splits into ``tmp``; every path written into a manifest is already the final one."""
    from nemo_codert.data.text import sentences

    rng = random.Random(params["seed"])
    voices = split_voices(rng, params["dev_voices"])
    espeak_root = None
    if params["derived_voices"]:
        # New speakers from the training variants only: the test split's voices stay unseen. Their variant files
        # are kept with the corpus (voices/) as a record; the eSpeak overlay that renders them is removed after.
        derived = derive_voices(voices["train"], params["derived_voices"], params["seed"])
        (tmp / "voices").mkdir(parents=True)
        for name, text in derived.items():
            (tmp / "voices" / name).write_text(text)
        espeak_root = str(write_overlay(derived, voices["train"], tmp / ".espeak"))
        voices["train"] = voices["train"] + sorted(derived)
    if not params["dev_voices"]:
        voices["dev"] = voices["train"]

    # Disjoint sentence pools: ~3.2 s per sentence, with a margin so no split runs dry.
    targets = {"train": params["hours"], "dev": params["dev_hours"], "test": params["test_hours"]}
    pool_sizes = {s: int(targets[s] * 3600 / 2.0) + 50 for s in _SPLITS}
    pool = sentences(sum(pool_sizes.values()), seed=params["seed"])
    pools, start = {}, 0
    for split in _SPLITS:
        pools[split] = pool[start : start + pool_sizes[split]]
        start += pool_sizes[split]

    (tmp / "audio").mkdir(parents=True)
    summary: Dict = {"splits": {}}
    started = time.time()
    ctx = get_context("fork")
    augmentation = _augmentation(params["augment"])
    train_texts: List[str] = []
    with ctx.Pool(max(1, num_workers)) as workers:
        for split in _SPLITS:
            plan = _SplitPlan(split, pools[split], voices[split], targets[split])
            augment_rng = random.Random(f"{params['seed']}-augment-{split}")
            # The overlay holds train's voices only (held-out voices render from eSpeak's own data directory).
            root = espeak_root if voices[split] is voices["train"] else None
            entries = _synthesize_split(plan, rng, augmentation, augment_rng, tmp, final, workers, root)
            _write_split(split, entries, tmp)
            if split == "train":
                train_texts = [e["text"] for e in entries]
            summary["splits"][split] = {
                "utterances": len(entries),
                "hours": round(sum(e["duration"] for e in entries) / 3600, 4),
                "voices": sorted({e["voice"] for e in entries}),
                "distinct_words": len({w for e in entries for w in e["text"].split()}),
            }
    if espeak_root:
        shutil.rmtree(espeak_root)
    summary["build_seconds"] = round(time.time() - started, 1)
    train_tokenizer(train_texts, tmp / "tokenizer", params["vocab_size"])
    return summary


def _augmentation(augment: Optional[Dict]) -> Optional[Augmentation]:
    """The ``Augmentation`` whose JSON view corpus.json holds (lists back to tuples), or None for a clean corpus."""
    if not augment:
        return None
    return Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()})


def _synthesize_split(
    plan: _SplitPlan,
    rng: random.Random,
    augmentation: Optional[Augmentation],
    augment_rng: random.Random,
    tmp: Path,
    final: Path,
    workers,
    espeak_root: Optional[str] = None,
) -> List[Dict]:
    """Render ``plan``'s sentences in order until it has ``plan.hours`` of audio; the manifest entries of those."""
    entries: List[Dict] = []
    total, batch = 0.0, 64
    for begin in range(0, len(plan.texts), batch):
        if total >= plan.hours * 3600:
            break
        jobs, metas = [], []
        for i, text in enumerate(plan.texts[begin : begin + batch], start=begin):
            voice = "en-us+" + rng.choice(plan.voices)
            rate, pitch = rng.randint(*_RATE_WPM), rng.randint(*_PITCH)
            name = f"audio/{plan.name}_{i:06d}.wav"
            meta = {"audio_filepath": str(final / name), "text": text, "voice": voice, "rate": rate, "pitch": pitch}
            # From a generator of its own: a degraded corpus has the same texts, voices, rates and pitches as the
            # clean corpus of its seed, so the two differ by the degradation alone.
            seed = augment_rng.getrandbits(32) if augmentation else 0
            degrade = augmentation.draw(np.random.default_rng(seed)) if augmentation else None
            if degrade:
                meta.update(degrade)
            jobs.append(RenderJob(str(tmp / name), text, voice, rate, pitch, degrade, seed + 1, espeak_root))
            metas.append(meta)
        for meta, (_, duration) in zip(metas, workers.map(render, jobs)):
            if total >= plan.hours * 3600:
                os.remove(tmp / Path(meta["audio_filepath"]).relative_to(final))
                continue
            entries.append({**meta, "duration": round(duration, 4)})
            total += duration
    if total < plan.hours * 3600:
        raise RuntimeError(f"{plan.name}: sentence pool ran out at {total / 3600:.3f} h of {plan.hours} h")
    return entries


def _write_split(split: str, entries: Sequence[Dict], tmp: Path) -> None:
    """The split's NeMo manifest and lhotse CutSet (audio paths already final)."""
    with open(tmp / f"{split}_manifest.json", "w") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    write_cuts(entries, tmp / f"{split}_cuts.jsonl.gz", SAMPLE_RATE)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="corpus directory (created)")
    parser.add_argument("--hours", type=float, default=1.0, help="hours of train audio")
    parser.add_argument("--dev-hours", type=float, default=0.1)
    parser.add_argument("--test-hours", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--derived-voices", type=int, default=0, help="new speakers per training voice variant (0: eSpeak's own only)"
    )
    parser.add_argument(
        "--dev-voices",
        type=int,
        default=0,
        help="eSpeak voice variants held out of train for dev (0: dev uses train's voices)",
    )
    degrade = parser.add_argument_group("degradation (nemo_codert.data.augment; off unless a probability is > 0)")
    degrade.add_argument("--reverb-prob", type=float, default=0.0, help="fraction of utterances reverberated")
    degrade.add_argument("--rt60", type=float, nargs=2, default=(0.2, 0.8), metavar=("LO", "HI"), help="seconds")
    degrade.add_argument("--noise-prob", type=float, default=0.0, help="fraction of utterances with added noise")
    degrade.add_argument("--snr-db", type=float, nargs=2, default=(5.0, 25.0), metavar=("LO", "HI"))
    args = parser.parse_args(argv)
    augment = None
    if args.reverb_prob > 0 or args.noise_prob > 0:
        augment = Augmentation(args.reverb_prob, tuple(args.rt60), args.noise_prob, tuple(args.snr_db))
    started = time.time()
    corpus = build_corpus(
        args.out,
        args.hours,
        args.dev_hours,
        args.test_hours,
        args.seed,
        args.vocab_size,
        args.num_workers,
        augment,
        args.derived_voices,
        args.dev_voices,
    )
    meta = json.loads((corpus.root / "corpus.json").read_text())
    print(f"corpus in {corpus.root} ({time.time() - started:.1f} s)")
    for split, info in meta["splits"].items():
        print(
            f"  {split:5s} {info['utterances']:6d} utterances  {info['hours']:.3f} h  "
            f"{len(info['voices']):3d} voices  {info['distinct_words']:5d} distinct words"
        )


if __name__ == "__main__":
    main()
