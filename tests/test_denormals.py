"""``flush_denormals``: denormal floats become zeros in every intra-op thread when it is called first, and a late call
(after torch's threads exist) is reported, not silently half-done. Each case runs in a fresh interpreter, because
the flag is per thread and lives as long as the process."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import torch
from nemo_codert.utils import flush_denormals
torch.set_num_threads(2)
{before}
ok = flush_denormals()
x = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)  # the smallest denormal, 1 << 20 times
print(ok, int((x * 3.0).count_nonzero()), int((x + x).count_nonzero()))
"""


def _run(before: str = "") -> list:
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_called_first_every_thread_flushes_denormals():
    assert _run() == ["True", "0", "0"]


def test_called_after_the_threads_exist_it_says_so():
    # A parallel op first: torch's intra-op threads start without the flag and keep computing denormals.
    ok, nonzero, _ = _run("torch.full((1 << 20,), 1e-39).mul(2.0)")
    assert ok == "False" and int(nonzero) > 0


def test_without_it_denormals_survive():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; print(int(torch.ones(4, dtype=torch.int32).view(torch.float32).mul(3.0).count_nonzero()))",
        ],
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "4"
