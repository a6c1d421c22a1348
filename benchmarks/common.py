"""What every benchmark report states: the command, the machine and the commit it measured."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def typed_command(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command line as a user would retype it: ``python benchmarks/<script>`` and its arguments, shell-quoted
    (``argv``: those given to ``main``; none: the process's own)."""
    return f"python benchmarks/{script} " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))


def machine_description() -> str:
    """CPU model and logical CPU count, from lscpu where it exists, and the NVIDIA GPUs nvidia-smi lists, if any."""
    return _cpu_description() + "".join(f"; GPU: {gpu}" for gpu in _nvidia_gpus())


def _cpu_description() -> str:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cpus = fields.get("CPU(s)", "?").strip()
        threads_per_core = fields.get("Thread(s) per core", "?").strip()
        return f"{model}, {cpus} logical CPUs ({threads_per_core} thread(s) per core), {os.cpu_count()} visible"
    except (OSError, subprocess.CalledProcessError, ValueError):
        return f"{model}, {os.cpu_count()} logical CPUs"


def _nvidia_gpus() -> List[str]:
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []  # no NVIDIA driver here: a CPU machine
    return [
        f"{name.strip()} ({mem.strip()}, driver {drv.strip()})"
        for name, mem, drv in (line.split(",") for line in out.strip().splitlines() if line.count(",") == 2)
    ]


def git_commit() -> str:
    """Short hash of HEAD, with '+changes' when the tree differs from it (a result of uncommitted code says so)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    # A copy of the tree on another machine may carry no .git, or a stale one (the device tool's did): the caller who
    # copied it names the commit it copied, and that name wins.
    named = os.environ.get("NEMO_CODERT_COMMIT")
    if named:
        return named
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    # Result files a benchmark has just written are not code changes: a report must not call its own output "+changes".
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    return commit + ("+changes" if changed else "")


def compose(config: str, overrides: Sequence[str] = ()):
    """``conf/<config>.yaml`` composed by hydra with ``overrides`` (hydra syntax), as ``examples/train_codert.py``
    composes it: a config's ``defaults`` list (e.g. codert_streaming on codert_small) is followed. Not in struct mode,
    like a loaded YAML, so callers may add keys."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = hydra_compose(config_name=config, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg
