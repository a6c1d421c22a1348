"""Loading exported models the way a user without this package does: a Python where ``nemo_codert`` cannot be
imported restores and transcribes them with stock NeMo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

__all__ = ["load_without_codert"]

_HIDDEN_LOADER = textwrap.dedent("""
    import importlib.abc, json, sys

    class HideCodert(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "nemo_codert" or name.startswith("nemo_codert."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, HideCodert())  # beats the editable install's finder and any sys.path entry
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and "nemo_codert" not in p]
    try:
        import nemo_codert  # noqa: F401
        codert_importable = True
    except ImportError:
        codert_importable = False

    from nemo.collections.asr.models import ASRModel

    args = json.loads(sys.argv[1])
    out = {"codert_importable": codert_importable, "texts": {}, "classes": {}}
    for which, path in args["models"].items():
        model = ASRModel.restore_from(path, map_location="cpu")
        model.eval()
        out["classes"][which] = f"{type(model).__module__}.{type(model).__name__}"
        out["texts"][which] = [h.text for h in model.transcribe(args["audio"], batch_size=len(args["audio"]), num_workers=0, verbose=False)]
    try:
        ASRModel.restore_from(args["codert"], map_location="cpu")
        out["codert_restored"] = True
    except Exception as e:
        out["codert_restored"] = False
        out["codert_error"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(out))
    """)


def load_without_codert(models, audio, codert_path, tmp_path) -> dict:
    """Restore and transcribe each of ``models`` ({name: .nemo}) in a Python where nemo_codert cannot be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    args = {"models": {w: str(p) for w, p in models.items()}, "audio": audio, "codert": str(codert_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _HIDDEN_LOADER, json.dumps(args)],
        cwd=tmp_path,  # not the repository: no implicit import of the working tree
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
