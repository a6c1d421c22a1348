"""Offline distillation from cached teacher logits: the top-k KD term, the lhotse cache (round trip, resume,
mismatch errors) and training in mode offline_teacher, on a real NeMo teacher, real audio and NeMo's dataloaders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from nemo.collections.asr.models import ASRModel, EncDecRNNTBPEModel

from nemo_codert.data.manifest import read_manifest
from nemo_codert.data.teacher_cache import TeacherCache, TeacherCacheError, utterance_key, write_teacher_cache
from nemo_codert.export import export_side
from nemo_codert.losses.encoder_kd import encoder_kd_loss, encoder_logits
from nemo_codert.losses.topk_kd import topk_kd_loss, topk_logits
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import OFFLINE_TEACHER, make_trainer, manifest_lines, tiny_config, write_manifest

_LENGTHS = torch.tensor([7, 3, 0])


def _logits(seed: int, classes: int = 11) -> torch.Tensor:
    return torch.randn(3, 7, classes, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["mean_batch", "sum"])
def test_topk_kd_with_every_class_is_the_encoder_kd(temperature, reduction):
    student, teacher = _logits(0), _logits(1)
    values, indices = topk_logits(teacher, 11)
    expected = encoder_kd_loss(student, teacher, _LENGTHS, temperature=temperature, reduction=reduction)
    got = topk_kd_loss(student, values, indices, _LENGTHS, temperature=temperature, reduction=reduction)
    torch.testing.assert_close(got, expected)


def test_topk_kd_matches_a_hand_computation_on_ragged_lengths():
    student, teacher = _logits(2), _logits(3)
    values, indices = topk_logits(teacher, 3)
    total = torch.zeros(())
    for b, frames in enumerate(_LENGTHS.tolist()):
        for t in range(frames):
            p = torch.softmax(values[b, t] / 2.0, -1)  # the truncated teacher, renormalised over its 3 classes
            log_q = torch.log_softmax(student[b, t] / 2.0, -1)[indices[b, t]]
            total = total + (p * (p.log() - log_q)).sum()
    got = topk_kd_loss(student, values, indices, _LENGTHS, temperature=2.0)
    torch.testing.assert_close(got, total / 3)


def test_topk_kd_ignores_padding_and_trains_only_the_student():
    student, teacher = _logits(4).requires_grad_(), _logits(5).requires_grad_()
    values, indices = topk_logits(teacher, 4)
    clean = topk_kd_loss(student, values, indices, _LENGTHS)
    garbage_s, garbage_v, garbage_i = student.detach().clone(), values.detach().clone(), indices.clone()
    garbage_s[1, 3:], garbage_v[1, 3:], garbage_i[1, 3:] = float("nan"), float("inf"), 10**6
    garbage_s.requires_grad_()
    dirty = topk_kd_loss(garbage_s, garbage_v, garbage_i, _LENGTHS)
    torch.testing.assert_close(dirty, clean.detach())
    dirty.backward()
    assert torch.isfinite(garbage_s.grad).all() and not garbage_s.grad[1, 3:].any() and garbage_s.grad[0].any()
    clean.backward()
    assert teacher.grad is None, "the cached teacher side must be detached"
    with pytest.raises(ValueError, match="frames the student emits"):
        topk_kd_loss(student[:, :5], values, indices, _LENGTHS)


@pytest.fixture(scope="module")
def teacher_nemo(corpus, tmp_path_factory):
    """A stock NeMo transducer (NeMo's class, not ours) standing in for a user's pre-trained teacher."""
    torch.manual_seed(0)
    teacher = EncDecRNNTBPEModel(cfg=tiny_config(corpus, aux_ctc=None))
    path = tmp_path_factory.mktemp("teacher") / "teacher.nemo"
    teacher.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def train_cache(corpus, teacher_nemo, tmp_path_factory):
    """The teacher's cache of the whole training manifest, k = 4."""
    teacher = ASRModel.restore_from(str(teacher_nemo), map_location="cpu")
    out = tmp_path_factory.mktemp("cache") / "train"
    return write_teacher_cache(teacher, corpus.train_manifest, out, k=4, batch_size=8, shard_size=16)


def test_the_cache_holds_the_teachers_top_logits_and_resumes(corpus, teacher_nemo, tmp_path, good):
    teacher = ASRModel.restore_from(str(teacher_nemo), map_location="cpu")
    teacher.eval()
    manifest = write_manifest(tmp_path / "m.json", good)
    out = write_teacher_cache(teacher, manifest, tmp_path / "cache", k=4, batch_size=3, shard_size=4)
    cache = TeacherCache(out)
    cuts = cache.rows([utterance_key(e["audio_filepath"]) for e in good], source="m.json")
    assert {c.id for c in cache.cuts()} == {c.id for c in cuts}  # every utterance cached once, nothing else

    for entry, cut in zip(read_manifest(manifest), cuts):  # one utterance at a time: no padding involved
        from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

        audio = torch.tensor(AudioSegment.from_file(entry["audio_filepath"], target_sr=16000).samples)[None]
        with torch.no_grad():
            feats, feat_len = teacher.preprocessor(input_signal=audio, length=torch.tensor([audio.shape[1]]))
            enc, enc_len = teacher.encoder(audio_signal=feats, length=feat_len)
            logits = encoder_logits(teacher.joint, enc)[0, : enc_len[0]]
        values, indices = cache.batch([cut], enc_len)
        assert values.shape == (1, enc_len[0], 4)
        # float16 values of the teacher's own logits at the cached classes, and those classes are its top 4
        torch.testing.assert_close(values[0], logits.gather(-1, indices[0]), atol=2e-2, rtol=2e-3)
        fourth = logits.topk(4, dim=-1).values[:, -1:]
        assert (logits.gather(-1, indices[0]) >= fourth - 1e-3).all()

    # Resume: an interrupted run (second shard's CutSet and the final files missing) redoes only that shard.
    keys = [utterance_key(e["audio_filepath"]) for e in good]
    frames = torch.tensor([TeacherCache.frames(c) for c in cuts[4:8]])
    first_arrays = out / "shard-00000.h5"
    stamp = first_arrays.stat().st_mtime_ns
    before = cache.batch(cuts[4:8], frames)
    (out / "shard-00001.jsonl.gz").unlink()
    (out / "cuts.jsonl.gz").unlink()
    meta = json.loads((out / "teacher_cache.json").read_text())
    (out / "teacher_cache.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(TeacherCacheError, match="incomplete"):
        TeacherCache(out)
    write_teacher_cache(teacher, manifest, out, k=4, batch_size=3, shard_size=4)
    assert first_arrays.stat().st_mtime_ns == stamp, "a finished shard was recomputed"
    # The same directory with other settings is refused, not mixed.
    with pytest.raises(TeacherCacheError, match="other settings.*k"):
        write_teacher_cache(teacher, manifest, out, k=8, batch_size=3, shard_size=4)
    # Read back after the resume, and after moving the cache: its arrays are found relative to it.
    moved = tmp_path / "moved"
    os.replace(out, moved)
    again = TeacherCache(moved)
    for x, y in zip(before, again.batch(again.rows(keys, source="m.json")[4:8], frames)):
        assert torch.equal(x, y)


def test_offline_teacher_trains_the_student_from_the_cache_alone(corpus, train_cache, tmp_path):
    cfg = tiny_config(corpus, **{**OFFLINE_TEACHER, "codert.teacher_cache": str(train_cache)})
    trainer = make_trainer(max_steps=3, log_every_n_steps=1)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    # No teacher module: the model is a stock (hybrid) transducer whose encoder is the student.
    assert not model.has_teacher and not hasattr(model, "student_encoder")
    assert model.encoder._feat_out == cfg.student_encoder.d_model

    batch = next(iter(model._train_dl))
    assert len(batch) == 5, "NeMo's dataset must hand over each utterance's index"
    model.train()
    out = model.codert_losses(*batch[:4], sample_ids=batch[4])
    assert out["kd"] > 0 and torch.isfinite(out["kd"])
    out["kd"].backward()
    assert any(p.grad is not None and p.grad.any() for p in model.encoder.parameters()), "KD must train the student"
    assert any(p.grad is not None and p.grad.any() for p in model.joint.joint_net.parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.decoder.parameters())

    trainer.fit(model)
    assert "train_kd" in trainer.callback_metrics and "train_kd_weighted" in trainer.callback_metrics
    # The export is a stock NeMo model whose config asks its dataset for nothing extra.
    exported = export_side(model, "student", tmp_path / "student.nemo")
    stock = ASRModel.restore_from(str(exported), map_location="cpu")
    assert not stock.cfg.train_ds.get("return_sample_id", False)
    assert type(stock).__module__.startswith("nemo.")


def test_a_cache_that_does_not_match_the_training_data_is_a_clear_error(
    corpus, teacher_nemo, train_cache, other_tokenizer, tmp_path, good
):
    teacher = ASRModel.restore_from(str(teacher_nemo), map_location="cpu")
    partial = write_teacher_cache(teacher, write_manifest(tmp_path / "m.json", good), tmp_path / "partial", k=4)
    missing = tiny_config(corpus, **{**OFFLINE_TEACHER, "codert.teacher_cache": str(partial)})
    with pytest.raises(TeacherCacheError, match=r"utterances of model.train_ds.manifest_filepath .* are not in"):
        CodertRNNTBPEModel(cfg=missing)

    other_vocab = tiny_config(corpus, **{**OFFLINE_TEACHER, "codert.teacher_cache": str(train_cache)})
    with open_dict(other_vocab):
        other_vocab.tokenizer.dir = str(other_tokenizer)
    with pytest.raises(TeacherCacheError, match="another vocabulary"):
        CodertRNNTBPEModel(cfg=other_vocab)

    # Speed perturbation resamples each utterance: its frames would no longer be the cached ones. The shipped
    # config has it on, so switching the mode alone must say what to turn off.
    resampled = tiny_config(corpus, **{"codert.mode": "offline_teacher", "codert.teacher_cache": str(train_cache)})
    assert resampled.train_ds.augmentor.speed.prob > 0
    with pytest.raises(ValueError, match="model.train_ds.augmentor: speed changes an utterance's length"):
        CodertRNNTBPEModel(cfg=resampled)

    cache = TeacherCache(train_cache)
    entry = manifest_lines(corpus.train_manifest)[0]
    audio = entry["audio_filepath"]
    audio = audio if os.path.isabs(audio) else str(corpus.train_manifest.parent / audio)
    cut = cache.rows([utterance_key(audio)], source="train")[0]
    frames = TeacherCache.frames(cut)
    with pytest.raises(TeacherCacheError, match=f"has {frames} cached teacher frames but the student emits"):
        cache.batch([cut], torch.tensor([frames + 1]))
    with pytest.raises(TeacherCacheError, match="holds no teacher cache"):
        TeacherCache(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "model.codert.teacher_cache: mode 'offline_teacher' needs"),
        (
            {"codert.teacher_cache": "x", "codert.kd_target": "joint_lattice"},
            "model.codert.kd_target: 'joint_lattice'",
        ),
        ({"codert.teacher_cache": "x", "codert.kd_start": "teacher_leads"}, "model.codert.kd_start"),
    ],
)
def test_offline_teacher_config_errors(corpus, overrides, message):
    with pytest.raises(ValueError, match=message):
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **{**OFFLINE_TEACHER, **overrides}))


def test_an_utterance_has_one_key_however_its_path_is_spelt(good, tmp_path):
    """Through a symlinked folder, relative or resolved: one file, one key (else a cached utterance goes missing)."""
    audio = Path(good[0]["audio_filepath"]).resolve()
    (tmp_path / "link").symlink_to(audio.parent, target_is_directory=True)
    linked = tmp_path / "link" / audio.name
    spellings = [str(audio), str(linked), os.path.relpath(linked), str(tmp_path / "." / "link" / audio.name)]
    assert len({utterance_key(p, 1.0) for p in spellings}) == 1
    assert utterance_key(str(audio), 1.0) != utterance_key(str(audio), 2.0)
