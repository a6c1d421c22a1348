"""Prepare an already downloaded LibriSpeech tree for CoDERT training: NeMo manifests, lhotse CutSets, a BPE tokenizer.

    python examples/prepare_librispeech.py --corpus-dir /data/LibriSpeech --out /data/librispeech_prepared
    python examples/prepare_librispeech.py --corpus-dir DIR --out OUT --parts train-clean-100 dev-clean test-clean

``--corpus-dir`` holds the parts (``train-clean-100/``, ``dev-clean/``, ...) or a ``LibriSpeech/`` directory that
does. Nothing is downloaded. What is written, and the checks made first: ``nemo_codert.data.librispeech``. The
overrides that point a training config at the result are printed at the end.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from nemo_codert.data.librispeech import LIBRISPEECH_PARTS, LibriSpeechError, prepare_librispeech


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-dir", required=True, help="the LibriSpeech tree (parts, or LibriSpeech/ with parts)")
    parser.add_argument("--out", required=True, help="where manifests, cuts and the tokenizer go (created)")
    parser.add_argument(
        "--parts", nargs="+", choices=LIBRISPEECH_PARTS, metavar="PART", help="parts to prepare (default: all present)"
    )
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE pieces of the tokenizer (default 1024)")
    parser.add_argument("--num-jobs", type=int, default=1, help="threads of lhotse's recipe")
    parser.add_argument(
        "--shar-shard-size",
        type=int,
        metavar="N",
        help="also write the train parts as lhotse Shar shards of N utterances (audio inside; train from shar_path)",
    )
    args = parser.parse_args(argv)
    try:
        prepared = prepare_librispeech(
            args.corpus_dir, args.out, args.parts, args.vocab_size, args.num_jobs, args.shar_shard_size
        )
    except LibriSpeechError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for part in prepared.cuts:
        print(f"{part}: {prepared.cuts[part]}  {prepared.manifests[part]}")
    print(f"tokenizer: {prepared.tokenizer_dir}")
    train = next(p for p in prepared.cuts if p.startswith("train"))
    # `++` adds or overrides: any CoDERT config; `data=null`: no embedded corpus is built.
    if train in prepared.shar:
        # From Shar, NeMo's reader takes shar_path (and would ignore a cuts_path with a warning). It repeats Shar
        # shards without end: an epoch is then this many batches (NeMo's lhotse convention). And lhotse's concurrent
        # bucketing thread (non-daemon) keeps refilling its buckets from the endless stream after training: where it
        # runs in the main process (num_workers=0) the process never exits. Bucketing in the loader's own thread costs
        # nothing measurable with workers and avoids that.
        source = [
            f"++model.train_ds.shar_path={prepared.shar[train]}",
            "++trainer.limit_train_batches=1000",
            "++model.train_ds.concurrent_bucketing=false",
        ]
    else:
        source = [f"++model.train_ds.cuts_path={prepared.cuts[train]}"]
    overrides = [
        "data=null",
        "++model.train_ds.use_lhotse=true",
        *source,
        "++model.train_ds.manifest_filepath=null",
        f"++model.tokenizer.dir={prepared.tokenizer_dir}",
    ]
    for section, kind in (("validation_ds", "dev"), ("test_ds", "test")):
        part = next((p for p in prepared.manifests if p.startswith(kind)), None)
        # A part not prepared: null, since the config's own path is relative to data.dir, which data=null removed.
        value = prepared.manifests[part] if part else "null"
        overrides.append(f"++model.{section}.manifest_filepath={value}")
    print("train on it with:\n  python examples/train_codert.py --config-name=CONFIG " + " ".join(overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
