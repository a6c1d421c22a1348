"""The paper's motivating measurement: entropy of the encoder logits against that of the joint logits.

    python benchmarks/entropy.py MODEL.nemo MANIFEST [--max-utterances 200] [--out-dir benchmarks/results]

CoDERT distils the *encoder logits*, ``joint.joint_net(joint.project_encoder(enc))`` (one distribution over the
vocabulary and blank per encoder frame, no prediction network), rather than the joint's output over the full
T x (U+1) lattice. The paper motivates this by comparing how peaked the two are. For each side of MODEL (a CoDERT
``.nemo``: teacher and student; a stock NeMo RNN-T ``.nemo``: its one model) and each utterance of MANIFEST:

- encoder logits: the softmax entropy at every valid encoder frame;
- joint logits along the best path: the joint over the lattice of the *reference* transcript, its Viterbi
  (maximum-probability) alignment, and the softmax entropy of the joint's output at each of the T+U nodes where that
  path emits (T blanks, U labels), reported together and split into blank and label nodes.

Entropies are in nats; the maximum, a uniform distribution over V+1 classes, is printed for scale. Writes
``<out-dir>/entropy.md`` (numbers, command, machine, date), ``entropy.json`` (per side: count, mean, range and
histogram of each distribution) and ``entropy.png`` (the histograms).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from common import REPO, git_commit, machine_description, typed_command  # benchmarks/common.py


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Softmax entropy (nats) over the last axis; input need not be normalised."""
    log_p = torch.log_softmax(log_probs.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def viterbi_path(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> List[tuple]:
    """Lattice nodes (t, u) at which the best alignment of ``targets`` emits, in order: T blanks and U labels.

    ``log_probs`` is T x (U+1) x (V+1), normalised. A node (t, u) emits a label (moving to u+1) or a blank (moving
    to t+1); the path starts at (0, 0) and ends with the blank at (T-1, U).
    """
    T, U1, _ = log_probs.shape
    U = U1 - 1
    blank_lp = log_probs[:, :, blank]
    label_lp = np.stack([log_probs[:, u, targets[u]] for u in range(U)], axis=1) if U else np.zeros((T, 0))
    alpha = np.full((T, U1), -np.inf)
    came_by_label = np.zeros((T, U1), dtype=bool)
    alpha[0, 0] = 0.0
    for t in range(T):
        for u in range(U1):
            if t == 0 and u == 0:
                continue
            from_blank = alpha[t - 1, u] + blank_lp[t - 1, u] if t > 0 else -np.inf
            from_label = alpha[t, u - 1] + label_lp[t, u - 1] if u > 0 else -np.inf
            came_by_label[t, u] = from_label > from_blank
            alpha[t, u] = max(from_blank, from_label)
    nodes = [(T - 1, U)]  # the final blank
    t, u = T - 1, U
    while (t, u) != (0, 0):
        t, u = (t, u - 1) if came_by_label[t, u] else (t - 1, u)
        nodes.append((t, u))
    return nodes[::-1]


@torch.no_grad()
def measure(model_path: Path, manifest: Path, max_utterances: int) -> Dict[str, Dict]:
    import soundfile

    from nemo_codert.data.manifest import read_manifest
    from nemo_codert.losses.encoder_kd import encoder_logits
    from nemo_codert.models import load_transducer

    model, by_name = load_transducer(model_path)
    sides = sorted(by_name.items(), key=lambda item: item[0] != "teacher")  # teacher first, as the report reads
    blank = model.joint.num_classes_with_blank - 1
    entries = read_manifest(manifest)[:max_utterances]
    found: Dict[str, Dict[str, List[float]]] = {
        n: {"encoder": [], "path": [], "path_blank": [], "path_label": []} for n, _ in sides
    }
    for entry in entries:
        audio, rate = soundfile.read(entry["audio_filepath"], dtype="float32")
        if rate != model.cfg.sample_rate:
            raise ValueError(f"{entry['audio_filepath']}: {rate} Hz, the model expects {model.cfg.sample_rate} Hz")
        signal = torch.from_numpy(audio)[None]
        feats, feat_len = model.preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]]))
        targets = model.tokenizer.text_to_ids(entry["text"])
        target_t = torch.tensor([targets], dtype=torch.long)
        for name, side in sides:
            enc, enc_len = side.encoder(audio_signal=feats, length=feat_len)
            T = int(enc_len[0])
            enc_logits = encoder_logits(side.joint, enc)[0, :T]
            found[name]["encoder"] += _entropy(enc_logits).tolist()
            dec, *_ = side.decoder(targets=target_t, target_length=torch.tensor([len(targets)]))
            lattice = side.joint.joint(enc.transpose(1, 2)[:, :T], dec.transpose(1, 2))[0]  # T x (U+1) x (V+1)
            log_probs = torch.log_softmax(lattice.float(), dim=-1)
            nodes = viterbi_path(log_probs.numpy(), targets, blank)
            node_h = _entropy(log_probs[[t for t, _ in nodes], [u for _, u in nodes]]).tolist()
            found[name]["path"] += node_h
            # On the path, node i emits a label iff the next node has the same t (it moved along u).
            for i, h in enumerate(node_h):
                is_label = i + 1 < len(nodes) and nodes[i + 1][0] == nodes[i][0]
                found[name]["path_label" if is_label else "path_blank"].append(h)
    return {"utterances": len(entries), "classes": blank + 1, "sides": found}


def write_report(result: Dict, model_path: Path, manifest: Path, out_dir: Path, command: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = result["sides"]
    h_max = math.log(result["classes"])
    lines = [
        "# Entropy of encoder logits vs joint logits along the best path",
        "",
        f"- command: `{command}`",
        f"- model: `{model_path}`; manifest: `{manifest}` ({result['utterances']} utterances)",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {git_commit()}",
        f"- machine: {machine_description()}, torch {torch.__version__}",
        f"- entropies in nats; uniform over the {result['classes']} classes (vocabulary + blank) = {h_max:.3f}",
        "- best path: Viterbi alignment of the reference transcript through the joint's T x (U+1) lattice",
        "",
        "| side | encoder frames | mean H, encoder logits | path nodes | mean H, joint on best path | "
        "blank nodes | label nodes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, h in sides.items():
        lines.append(
            f"| {name} | {len(h['encoder'])} | {statistics.fmean(h['encoder']):.3f} | {len(h['path'])} | "
            f"{statistics.fmean(h['path']):.3f} | {statistics.fmean(h['path_blank']):.3f} | "
            + (f"{statistics.fmean(h['path_label']):.3f} |" if h["path_label"] else "n/a |")
        )
    lines.append("")
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(sides), figsize=(6 * len(sides), 4), squeeze=False)
    bins = np.linspace(0, h_max, 40)
    for ax, (name, h) in zip(axes[0], sides.items()):
        ax.hist(h["encoder"], bins=bins, density=True, alpha=0.6, label="encoder logits (every frame)")
        ax.hist(h["path"], bins=bins, density=True, alpha=0.6, label="joint logits (best-path nodes)")
        ax.set_title(name)
        ax.set_xlabel("entropy (nats)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "entropy.png", dpi=110)
    plt.close(fig)
    lines += ["![entropy histograms](entropy.png)", ""]
    # The JSON keeps distributions as summaries and histograms (on the PNG's bins), not every frame's value.
    summary = {
        name: {
            key: {
                "n": len(v),
                "mean": statistics.fmean(v) if v else None,
                "min": min(v, default=None),
                "max": max(v, default=None),
                "histogram": np.histogram(np.clip(v, 0.0, h_max), bins=bins)[0].tolist(),
            }
            for key, v in h.items()
        }
        for name, h in sides.items()
    }
    (out_dir / "entropy.json").write_text(
        json.dumps(
            {
                "command": command,
                "utterances": result["utterances"],
                "classes": result["classes"],
                "bins": bins.tolist(),
                "sides": summary,
            },
            indent=1,
        )
    )
    report = out_dir / "entropy.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a CoDERT .nemo or a stock NeMo RNN-T .nemo")
    parser.add_argument("manifest", type=Path, help="NeMo manifest (audio_filepath, text)")
    parser.add_argument("--max-utterances", type=int, default=200)
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    command = typed_command("entropy.py", argv)
    for path, what in ((args.model, "model"), (args.manifest, "manifest")):
        if not path.is_file():
            parser.error(f"{what} {path}: no such file")
    result = measure(args.model.resolve(), args.manifest.resolve(), args.max_utterances)
    report = write_report(result, args.model, args.manifest, args.out_dir.resolve(), command)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
