"""What every benchmark report states: the machine and the commit it measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine_description() -> str:
    """CPU model and logical CPU count, from lscpu where it exists."""
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


def git_commit() -> str:
    """Short hash of HEAD, with '+changes' when the tree differs from it (a result of uncommitted code says so)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
