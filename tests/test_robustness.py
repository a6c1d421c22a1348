"""Bad input and faults: manifests checked before training, a NaN batch that does not poison the model."""

from __future__ import annotations

import json
import logging as pylogging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import make_trainer, tiny_config
from nemo_codert.data.manifest import ManifestError, check_dataset_config, check_manifest, check_model_data
from nemo_codert.utils import restore_nemo


def _lines(manifest: Path):
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def _write(path: Path, items) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


@pytest.fixture()
def good(corpus):
    """Ten real utterances of the test corpus, with absolute audio paths."""
    items = _lines(corpus.train_manifest)[:10]
    for item in items:
        audio = Path(item["audio_filepath"])
        item["audio_filepath"] = str(audio if audio.is_absolute() else corpus.train_manifest.parent / audio)
    return items


def test_clean_manifest_is_used_as_it_is(corpus, tmp_path):
    report = check_manifest(corpus.train_manifest, tmp_path, corpus.tokenizer_dir)
    assert report.path == corpus.train_manifest and not report.skipped
    assert report.kept == len(_lines(corpus.train_manifest))
    assert not list(tmp_path.iterdir())


def test_bad_utterances_are_skipped_and_logged(good, corpus, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    bad = [
        {**good[0], "audio_filepath": str(tmp_path / "missing.wav")},
        {**good[1], "audio_filepath": str(corrupt)},
        {**good[2], "audio_filepath": str(empty)},
        {**good[3], "text": "  "},
        {**good[4], "text": "price in € and ¥"},
    ]
    # 5 bad lines in 45: 11 %, so allow up to 20 % here.
    items = bad + good * 4
    manifest = _write(tmp_path / "train_manifest.json", items)
    with caplog.at_level(pylogging.WARNING):
        report = check_manifest(manifest, tmp_path / "out", corpus.tokenizer_dir, max_skipped_fraction=0.2)
    reasons = dict(report.skipped)
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "does not exist" in reasons[1] and "missing.wav" in reasons[1]
    assert "cannot be read" in reasons[2] and "corrupt.wav" in reasons[2]
    assert "0 s" in reasons[3]
    assert reasons[4] == "empty transcript"
    assert "cannot encode" in reasons[5] and "€" in reasons[5]
    assert report.path == tmp_path / "out" / "train_manifest.checked.json"
    kept = _lines(report.path)
    assert [k["audio_filepath"] for k in kept] == [g["audio_filepath"] for g in good * 4]
    assert "line 2: skipping utterance" in caplog.text


def test_too_many_bad_utterances_stop_the_run(good, tmp_path):
    items = [{**g, "audio_filepath": str(tmp_path / f"gone{i}.wav")} for i, g in enumerate(good[:2])] + good[2:]
    manifest = _write(tmp_path / "m.json", items)
    with pytest.raises(ManifestError, match=r"2 of 10 utterances are unusable .*max_skipped_fraction 10%"):
        check_manifest(manifest, tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"audio_filepath": "a.wav", "text": "x", "duration": 1.0', r"line 2: not JSON"),
        ('["a.wav", "x"]', r"line 2: a manifest line must be a JSON object, got list"),
        ('{"text": "x", "duration": 1.0}', r"line 2: missing field 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "duration": 1.0}', r"line 2: missing field 'text'"),
        ('{"audio_filepath": "a.wav", "text": "x"}', r"line 2: missing field 'duration'"),
        ('{"audio_filepath": "a.wav", "text": "x", "duration": "long"}', r"line 2: field 'duration' has the wrong type"),
    ],
)
def test_broken_manifest_line_is_one_clear_error(good, tmp_path, line, message):
    manifest = _write(tmp_path / "m.json", [good[0], line, good[1]])
    with pytest.raises(ManifestError, match=f"manifest {tmp_path / 'm.json'}, {message}"):
        check_manifest(manifest, tmp_path)


def test_dataset_config_errors_name_the_field(corpus, tmp_path):
    from omegaconf import OmegaConf

    with pytest.raises(ManifestError, match=r"model.train_ds.manifest_filepath: manifest .*nope.json: no such file"):
        check_dataset_config(OmegaConf.create({"manifest_filepath": str(tmp_path / "nope.json")}), "model.train_ds", tmp_path)
    lhotse_cfg = OmegaConf.create({"use_lhotse": True, "cuts_path": str(tmp_path / "cuts.jsonl.gz")})
    with pytest.raises(ManifestError, match=r"model.train_ds.cuts_path: .*cuts.jsonl.gz does not exist"):
        check_dataset_config(lhotse_cfg, "model.train_ds", tmp_path)
    # An existing cuts file is lhotse's to read: nothing to rewrite.
    assert check_dataset_config(OmegaConf.create({"cuts_path": str(corpus.train_cuts)}), "model.train_ds", tmp_path) is None


def test_model_config_gets_the_filtered_manifest(good, corpus, tmp_path):
    items = [{**good[0], "audio_filepath": str(tmp_path / "missing.wav")}] + good * 2  # 1 in 21: under 10 %
    cfg = tiny_config(corpus, **{"train_ds.manifest_filepath": str(_write(tmp_path / "train.json", items))})
    assert check_model_data(cfg, tmp_path / "checked") == ["train_ds"]
    assert cfg.train_ds.manifest_filepath == str(tmp_path / "checked" / "train.checked.json")
    assert cfg.validation_ds.manifest_filepath == str(corpus.dev_manifest)  # clean: untouched


def test_nan_batch_does_not_poison_the_model(good, corpus, tmp_path, caplog):
    """A real NaN-filled audio file in training: that batch is dropped, weights and BatchNorm stats stay finite."""
    import lightning.pytorch as pl

    from nemo_codert.models import CodertRNNTBPEModel

    audio, sr = soundfile.read(good[0]["audio_filepath"], dtype="float32")
    audio[len(audio) // 3 :] = np.nan
    poisoned = tmp_path / "nan.wav"
    soundfile.write(poisoned, audio, sr, subtype="FLOAT")
    items = [{**good[0], "audio_filepath": str(poisoned)}] + good[1:8]  # 2 batches of 4, the NaN in the first
    manifest = _write(tmp_path / "train.json", items)
    cfg = tiny_config(
        corpus, **{"train_ds.manifest_filepath": str(manifest), "train_ds.shuffle": False, "skip_nan_grad": True}
    )
    assert check_manifest(manifest, tmp_path).path == manifest  # a NaN sample is not a header problem: it trains

    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=4))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    model._trainer.callbacks.append(Record())
    with caplog.at_level(pylogging.WARNING):
        model._trainer.fit(model)
    assert model._trainer.global_step == 4, "training stopped"
    assert [np.isfinite(x) for x in losses] == [False, True, False, True]  # the NaN batch comes back each epoch
    assert "non-finite training loss" in caplog.text
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{name} was poisoned"
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert any(k.startswith("student_encoder.") for k in moved), "the good batches did not train the student"


@pytest.mark.parametrize("target", ["codert_evil.Model", "nemo_codert_evil.Model"])
def test_nemo_with_a_foreign_target_is_refused_not_imported(corpus, tmp_path, monkeypatch, target):
    """NeMo 3.0 restores only approved prefixes; importing nemo_codert widens them by exactly `nemo_codert.`."""
    import io
    import tarfile

    from omegaconf import OmegaConf

    import nemo_codert.models  # noqa: F401  (registers the prefix: it must not let these through)
    from nemo.collections.asr.models import ASRModel
    from nemo_codert.export import read_nemo_config

    model = nemo_codert.models.CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    good = tmp_path / "good.nemo"
    model.save_to(str(good))

    marker = tmp_path / "imported"
    module = target.split(".")[0]
    (tmp_path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom nemo_codert.models import CodertRNNTBPEModel as Model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = read_nemo_config(good)
    cfg.target = target
    evil = tmp_path / "evil.nemo"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("model_config.yaml"):
                raw = OmegaConf.to_yaml(cfg).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            dst.addfile(member, data)
    with pytest.raises(Exception, match=rf"unsafe target '{target}' is blocked"):
        restore_nemo(ASRModel, evil, map_location="cpu")
    assert not marker.exists(), f"{module} was imported"
    # NeMo leaves its "model being restored" flag set after a failed restore (later models would skip their
    # dataloaders); restore_nemo, which the package uses everywhere, clears it.
    from nemo.core.classes.modelPT import ModelPT

    assert not ModelPT._is_model_being_restored()


def _script_config(corpus, tmp_path: Path, max_steps: int):
    """The shipped default config, shrunk (tiny_config) and pointed at the test corpus, for the real training script."""
    from omegaconf import OmegaConf

    from conftest import REPO

    cfg = OmegaConf.load(REPO / "conf" / "codert_small.yaml")
    cfg.model = tiny_config(corpus)
    cfg.data = None  # the corpus exists already
    cfg.trainer.max_steps = max_steps
    cfg.trainer.val_check_interval = 2
    cfg.trainer.log_every_n_steps = 1
    cfg.trainer.enable_progress_bar = False
    cfg.exp_manager.exp_dir = str(tmp_path / "exp")
    cfg.exp_manager.create_tensorboard_logger = False
    cfg.exp_manager.resume_if_exists = True
    cfg.exp_manager.resume_ignore_no_checkpoint = True
    cfg.exp_manager.checkpoint_callback_params.save_last = True
    cfg.exp_manager.checkpoint_callback_params.always_save_nemo = False
    cfg.exp_manager.checkpoint_callback_params.save_nemo_on_train_end = False
    cfg.model.validation_ds.manifest_filepath = str(corpus.dev_manifest)
    cfg.model.test_ds.manifest_filepath = None
    (tmp_path / "conf").mkdir(exist_ok=True)
    OmegaConf.save(cfg, tmp_path / "conf" / "run.yaml")
    return tmp_path / "conf"


@pytest.mark.slow
def test_sigkilled_run_resumes_from_its_last_checkpoint(corpus, tmp_path):
    """A real training process, SIGKILLed mid-epoch, resumes with its step count, optimiser state and batch counter
    (the exact data position is checked in-process by test_resumed_run_continues_at_the_same_data_position)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    max_steps = 10  # the corpus has ~9 batches per epoch: both the kill and the end fall mid-epoch
    conf = _script_config(corpus, tmp_path, max_steps)
    command = [sys.executable, str(REPO / "examples" / "train_codert.py"), f"--config-path={conf}", "--config-name=run"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    def last_checkpoint():
        """The run's `*-last.ckpt` (its name carries the metric, so it changes) and its content, or (None, None)."""
        newest_first = sorted((tmp_path / "exp").glob("**/checkpoints/*last.ckpt"), key=lambda p: -p.stat().st_mtime_ns)
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
    assert killed, f"no checkpoint to resume from before the run ended:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    newest, killed_at = last_checkpoint()
    assert 2 <= killed_at["global_step"] < max_steps
    # The kill may land between Lightning writing the new `-last.ckpt` and deleting the old one (NeMo then refuses
    # to resume): make that happen, with an older second last checkpoint, to check the script resumes anyway.
    stale = newest.with_name("CoDERT-small--val_wer=99.0000-epoch=0-last.ckpt")
    stale.write_bytes(newest.read_bytes())
    os.utime(stale, ns=(newest.stat().st_mtime_ns - 10**9,) * 2)

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Resuming training from checkpoint" in done.stdout + done.stderr or "Restoring states" in done.stdout + done.stderr
    _, final = last_checkpoint()
    assert final["global_step"] == max_steps
    assert stale.with_name(stale.name + ".superseded").exists(), "the stale last checkpoint was not set aside"
    # AdamW's own step counter continues from the checkpoint: a re-initialised optimiser would count fewer steps.
    adam_steps = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(max_steps)}
    batches = final["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert batches == max_steps


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(corpus, tmp_path):
    """Lightning DDP, 2 CPU processes (gloo): gradients of both RNN-T losses and KD are all-reduced, so after a few
    steps on different data both ranks hold the same weights; validation metrics are reduced over both ranks."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from conftest import REPO

    cfg = tiny_config(corpus)
    OmegaConf.save(cfg, tmp_path / "model.yaml")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "ddp_train.py"), str(tmp_path / "model.yaml"), str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", map_location="cpu", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # Each rank saw its own shard: the per-rank losses differ...
    assert ranks[0]["losses"] != ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    # ...yet every parameter is identical afterwards (teacher, student, shared decoder and joint alike).
    for name, value in ranks[0]["state"].items():
        other = ranks[1]["state"][name]
        if "running_" in name or "num_batches_tracked" in name:
            continue  # BatchNorm statistics are per rank by design (no SyncBatchNorm): they are not parameters
        assert torch.equal(value, other), f"{name} differs between ranks"
    assert any(k.startswith("student_encoder.") for k in ranks[0]["state"])
    # Validation metrics are synchronised (NeMo logs them with sync_dist): both ranks report the same values,
    # though each validated its own shard (the losses are continuous: unsynchronised, they would differ).
    for key in ("val_wer", "val_wer_teacher", "val_loss", "val_loss_teacher", "val_kd"):
        assert ranks[0]["metrics"][key] == ranks[1]["metrics"][key]


def test_lhotse_dataloader_with_duration_batching_and_buckets_trains(corpus):
    """`use_lhotse: true` (NeMo's lhotse dataloader): the corpus's CutSet, duration-based batches, 2 buckets."""
    from nemo_codert.models import CodertRNNTBPEModel

    lhotse = {
        "use_lhotse": True,
        "cuts_path": str(corpus.train_cuts),
        "manifest_filepath": None,
        "batch_duration": 12.0,
        "batch_size": None,
        "use_bucketing": True,
        "num_buckets": 2,
        "bucket_buffer_size": 100,
        "shuffle_buffer_size": 100,
        "seed": 0,
        "shuffle": True,
    }
    cfg = tiny_config(corpus, **{f"train_ds.{k}": v for k, v in lhotse.items()})
    assert check_model_data(cfg, corpus.root / "unused") == []  # lhotse data is lhotse's to read
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=3, limit_val_batches=0))
    batch = next(iter(model._train_dl))
    signal, signal_len, transcript, transcript_len = batch
    assert signal_len.float().sum() / 16000 <= 12.0 + 1e-6  # a duration budget, not a count
    student_before = [p.detach().clone() for p in model.student_encoder.parameters()]
    model._trainer.fit(model)
    assert model._trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.student_encoder.parameters()))


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


def _ctc_nemo(corpus, path: Path) -> Path:
    """A real stock NeMo CTC model (not a transducer), saved as `.nemo`."""
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecCTCModelBPE

    rnnt = tiny_config(corpus)
    cfg = OmegaConf.create(
        {
            "tokenizer": {"dir": str(corpus.tokenizer_dir), "type": "bpe"},
            "preprocessor": OmegaConf.to_container(rnnt.preprocessor),
            "encoder": OmegaConf.to_container(rnnt.student_encoder),
            "decoder": {
                "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
                "feat_in": rnnt.student_encoder.d_model,
                "num_classes": -1,
                "vocabulary": [],
            },
        }
    )
    EncDecCTCModelBPE(cfg=cfg).save_to(str(path))
    return path


@pytest.mark.parametrize("problem", ["missing", "truncated", "not_a_nemo", "ctc"])
def test_bad_teacher_nemo_is_one_clear_error(corpus, tmp_path, problem):
    from nemo_codert.models import CodertRNNTBPEModel

    path = tmp_path / "teacher.nemo"
    if problem == "truncated":
        good = tmp_path / "good.nemo"
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"})).save_to(str(good))
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif problem == "not_a_nemo":
        path.write_text("model: not really\n")
    elif problem == "ctc":
        _ctc_nemo(corpus, path)
    expected = {
        "missing": r"does not exist",
        "truncated": r"is not a readable \.nemo",
        "not_a_nemo": r"is not a readable \.nemo",
        "ctc": r"is not a NeMo RNN-T model",
    }[problem]
    cfg = tiny_config(corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(path)})
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=rf"model.codert.teacher_nemo: .*{expected}"):
        CodertRNNTBPEModel(cfg=cfg)


def test_resumed_run_continues_at_the_same_data_position(corpus, tmp_path):
    """Stopped mid-epoch and resumed from its checkpoint, training sees exactly the batches an uninterrupted run
    sees next (the shuffle is a function of (seed, epoch); the consumed part of the epoch is skipped)."""
    import lightning.pytorch as pl

    from nemo_codert.data.resumable import EpochSeededSampler
    from nemo_codert.models import CodertRNNTBPEModel

    cfg = tiny_config(corpus)
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
        model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=max_steps, callbacks=[record], limit_val_batches=0))
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
