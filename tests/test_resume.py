"""Interrupted runs: a SIGKILLed training run resumes from its last checkpoint, a resumed run continues at the same
data position, and `.nemo` / checkpoint writes are atomic."""

from __future__ import annotations

import pytest
import torch

from helpers.factories import make_trainer, script_config, tiny_config


@pytest.mark.slow
def test_sigkilled_run_resumes_from_its_last_checkpoint(corpus, tmp_path):
    """A real training process, SIGKILLed mid-epoch, resumes with its step count, optimiser state and batch counter
    (the exact data position is checked in-process by test_resumed_run_continues_at_the_same_data_position)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers.factories import REPO

    max_steps = 10  # the corpus has ~9 batches per epoch: both the kill and the end fall mid-epoch
    conf = script_config(corpus, tmp_path, max_steps)
    command = [
        sys.executable,
        str(REPO / "examples" / "train_codert.py"),
        f"--config-path={conf}",
        "--config-name=run",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

    def last_checkpoint():
        """The run's `*-last.ckpt` (its name carries the metric, so it changes) and its content, or (None, None)."""
        newest_first = sorted(
            (tmp_path / "exp").glob("**/checkpoints/*last.ckpt"), key=lambda p: -p.stat().st_mtime_ns
        )
        for path in newest_first:
            try:
                return path, torch.load(path, map_location="cpu", weights_only=False)
            except (FileNotFoundError, EOFError, RuntimeError):  # replaced while we looked: look again
                pass
        return None, None

    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        _, ckpt = last_checkpoint()
        if ckpt is not None and ckpt["global_step"] >= 2:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait()
    log.close()
    assert (
        killed
    ), f"no checkpoint to resume from before the run ended:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    newest, killed_at = last_checkpoint()
    assert 2 <= killed_at["global_step"] < max_steps
    # The kill may land between Lightning writing the new `-last.ckpt` and deleting the old one (NeMo then refuses
    # to resume): make that happen, with an older second last checkpoint, to check the script resumes anyway.
    stale = newest.with_name("CoDERT-small--val_wer=99.0000-epoch=0-last.ckpt")
    stale.write_bytes(newest.read_bytes())
    os.utime(stale, ns=(newest.stat().st_mtime_ns - 10**9,) * 2)

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "Resuming training from checkpoint" in done.stdout + done.stderr
        or "Restoring states" in done.stdout + done.stderr
    )
    _, final = last_checkpoint()
    assert final["global_step"] == max_steps
    assert stale.with_name(stale.name + ".superseded").exists(), "the stale last checkpoint was not set aside"
    # AdamW's own step counter continues from the checkpoint: a re-initialised optimiser would count fewer steps.
    adam_steps = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(max_steps)}
    batches = final["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert batches == max_steps


def test_only_finished_last_checkpoints_compete_and_a_second_rank_finds_nothing_to_do(tmp_path):
    """NeMo skips a last checkpoint whose ``-unfinished`` marker is still there: the newest *finished* one is kept.
    Every rank sets aside before its exp_manager looks; the second finds the work done, without an error."""
    import os
    import time

    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    from nemo_codert.utils import set_aside_superseded_last_checkpoints

    paths = [tmp_path / f"run--val_wer={w}-last.ckpt" for w in ("0.9", "0.8", "0.7")]  # oldest first
    for age, path in zip((30, 20, 10), paths):
        path.write_bytes(b"checkpoint")
        os.utime(path, ns=(time.time_ns() - age * 10**9,) * 2)
    NeMoModelCheckpoint.format_checkpoint_unfinished_marker_path(paths[2]).touch()  # the newest: killed mid-save
    assert set_aside_superseded_last_checkpoints(tmp_path) == [paths[0].with_name(paths[0].name + ".superseded")]
    assert paths[1].exists() and paths[2].exists()  # the newest finished, and the unfinished one NeMo skips
    assert set_aside_superseded_last_checkpoints(tmp_path) == []


def test_model_nemo_and_checkpoint_writes_are_atomic(corpus, tmp_path, monkeypatch):
    """A crash mid-write (disk full) leaves the previous `.nemo` / checkpoint intact and no partial file beside it."""
    import fsspec.implementations.local

    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    from nemo_codert.models import CodertRNNTBPEModel

    model = CodertRNNTBPEModel(cfg=tiny_config(corpus), trainer=make_trainer(max_steps=1))
    nemo = tmp_path / "nemo" / "codert.nemo"
    model.save_to(str(nemo))  # what exp_manager's always_save_nemo calls
    previous = nemo.read_bytes()

    def crash_mid_write(filename, source_dir):
        with open(filename, "wb") as f:
            f.write(previous[: len(previous) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(SaveRestoreConnector, "_make_nemo_file_from_folder", staticmethod(crash_mid_write))
        with pytest.raises(OSError, match="No space left"):
            model.save_to(str(nemo))
    assert nemo.read_bytes() == previous and list(nemo.parent.iterdir()) == [nemo]
    assert type(CodertRNNTBPEModel.restore_from(str(nemo), map_location="cpu")) is CodertRNNTBPEModel

    # Lightning checkpoints (exp_manager's ModelCheckpoint -> TorchCheckpointIO): serialised in memory, then written
    # inside an fsspec transaction (a temporary file moved into place on commit).
    trainer = model._trainer
    trainer.strategy.connect(model)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    previous = ckpt.read_bytes()
    real_write = fsspec.implementations.local.LocalFileOpener.write

    def half_write(self, data):
        real_write(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(fsspec.implementations.local.LocalFileOpener, "write", half_write)
        with pytest.raises(OSError, match="No space left"):
            trainer.save_checkpoint(ckpt)
    assert ckpt.read_bytes() == previous
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]


def test_resumed_run_continues_at_the_same_data_position(corpus, tmp_path):
    """Stopped mid-epoch and resumed from its checkpoint, training sees exactly the batches an uninterrupted run
    sees next (the shuffle is a function of (seed, epoch); the consumed part of the epoch is skipped)."""
    import lightning.pytorch as pl

    from nemo_codert.data.resumable import EpochSeededSampler
    from nemo_codert.models import CodertRNNTBPEModel

    # Speed perturbation off: its rates come from python's `random`, whose state a checkpoint does not hold (as in
    # NeMo), so a resumed run sees the same utterances in the same order, each at another rate (another length).
    cfg = tiny_config(corpus, **{"train_ds.augmentor": None})
    assert cfg.train_ds.shuffle

    class Fingerprints(pl.Callback):
        """Records each batch (audio and transcript lengths); writes a checkpoint after batch `save_after`, as
        ModelCheckpoint does mid-epoch."""

        def __init__(self, save_after=None):
            self.seen, self.save_after = [], save_after

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((batch[1].tolist(), batch[3].tolist()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.save_after:
                trainer.save_checkpoint(tmp_path / "mid_epoch.ckpt")

    def run(max_steps, ckpt_path=None, save_after=None):
        torch.manual_seed(0)
        record = Fingerprints(save_after)
        model = CodertRNNTBPEModel(
            cfg=cfg, trainer=make_trainer(max_steps=max_steps, callbacks=[record], limit_val_batches=0)
        )
        assert isinstance(model._train_dl.sampler, EpochSeededSampler)
        model._trainer.fit(model, ckpt_path=ckpt_path)
        return model, record.seen

    batches_per_epoch = len(run(0)[0]._train_dl)
    total, stop = batches_per_epoch + 4, batches_per_epoch // 2  # resume mid-epoch, then cross into the next epoch
    _, uninterrupted = run(total, save_after=stop)
    assert uninterrupted[:4] != uninterrupted[batches_per_epoch : batches_per_epoch + 4], "each epoch is shuffled anew"
    ckpt = torch.load(tmp_path / "mid_epoch.ckpt", map_location="cpu", weights_only=False)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, stop)
    _, seen_after = run(total, ckpt_path=str(tmp_path / "mid_epoch.ckpt"))
    assert seen_after == uninterrupted[stop:], "the resumed run did not continue at the same data position"
