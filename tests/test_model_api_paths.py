"""The CoDERT model on NeMo's own API paths: decoding rebuilt mid-transcribe, a new vocabulary, a static teacher
with other features, the fused joint in training, evaluation sets that must be complete. Each test failed on
077c0d5 (issue 11)."""

from __future__ import annotations

import json

import pytest
import torch

from nemo.collections.asr.models import EncDecRNNTBPEModel

from nemo_codert.data.manifest import ManifestError, check_model_data
from nemo_codert.losses.rnnt_cpu import CpuRNNTLoss
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, logits_ctc, make_trainer, tiny_config


def _dev_audio(corpus, n=3):
    return [json.loads(line)["audio_filepath"] for line in corpus.dev_manifest.read_text().splitlines()[:n]]


def test_teacher_transcribe_with_timestamps_stays_on_the_teacher(corpus):
    """NeMo's transcribe(timestamps=True) rebuilds decoding inside use_side('teacher'); it must stay the teacher's
    (teacher width 48 vs student 24 here: the student's decoding on teacher features was a shape error)."""
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    model.eval()
    audio = _dev_audio(corpus)
    plain = [h.text for h in model.transcribe(audio, use_teacher=True, verbose=False)]
    stamped = model.transcribe(audio, use_teacher=True, timestamps=True, verbose=False)
    assert [h.text for h in stamped] == plain
    assert all(h.timestamp is not None for h in stamped)
    # Back on the student, whose decoding was rebuilt from the config NeMo changed.
    assert model.decoding is model.student_decoding and model.wer is model.student_wer
    assert model.student_decoding.cfg.compute_timestamps is True == model.cfg.decoding.compute_timestamps
    student = [h.text for h in model.transcribe(audio, verbose=False)]
    with model.use_side("student"):
        assert student == [h.text for h in model.transcribe(audio, verbose=False)]


@pytest.mark.parametrize("ctc", [logits_ctc(0.3), {}], ids=["ctc_on_logits", "aux_ctc_heads"])
def test_change_vocabulary_keeps_the_pair_working(corpus, other_tokenizer, ctc):
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **ctc))
    model.change_vocabulary(str(other_tokenizer), "bpe")
    classes = model.tokenizer.vocab_size + 1
    assert model.tokenizer.vocab_size == 48
    if (
        model.cfg.get("aux_ctc") is not None
    ):  # NeMo's RNN-T change_vocabulary knows nothing of the heads: they must follow the tokenizer too
        heads = (model.ctc_decoder, model.student_ctc_decoder)
        assert [h.num_classes_with_blank for h in heads] == [classes, classes]
        assert model.cfg.aux_ctc.decoder.num_classes == 48
    assert model.student_joint.pred is model.joint.pred and model.student_joint.joint_net is model.joint.joint_net
    assert model.joint.num_classes_with_blank == model.student_joint.num_classes_with_blank == classes
    assert isinstance(model.loss, CpuRNNTLoss) and model.ctc_loss._blank == classes - 1
    assert model.student_decoding.decoding.joint is model.student_joint
    assert model.teacher_decoding.decoding.joint is model.joint

    model.setup_validation_data(model.cfg.validation_ds)  # re-tokenised with the new vocabulary
    out = model.codert_losses(*first_batch(model))
    for key in ("rnnt_student", "rnnt_teacher", "ctc_student", "ctc_teacher", "kd"):
        assert torch.isfinite(out[key]), key
    model.eval()
    for use_teacher in (False, True):
        assert len(model.transcribe(_dev_audio(corpus), use_teacher=use_teacher, verbose=False)) == 3


def test_static_teacher_brings_its_own_features(corpus, tmp_path):
    """A teacher trained on 80 mel bands: the CoDERT config says 64; the model must use the teacher's 80."""
    teacher_cfg = tiny_config(corpus, **{"preprocessor.features": 80, "preprocessor.window_stride": 0.01})
    assert teacher_cfg.encoder.feat_in == 80
    EncDecRNNTBPEModel(cfg=teacher_cfg).save_to(str(tmp_path / "teacher.nemo"))

    cfg = tiny_config(
        corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    )
    assert cfg.preprocessor.features == 64
    model = CodertRNNTBPEModel(cfg=cfg)
    assert model.cfg.preprocessor.features == 80 and model.cfg.student_encoder.feat_in == 80
    out = model.codert_losses(*first_batch(model))
    assert torch.isfinite(out["kd"]) and torch.isfinite(out["rnnt_student"])


def test_static_teacher_with_own_decoders_does_not_run_the_teacher_decoder(corpus, tmp_path):
    EncDecRNNTBPEModel(cfg=tiny_config(corpus)).save_to(str(tmp_path / "teacher.nemo"))
    model = CodertRNNTBPEModel(
        cfg=tiny_config(
            corpus,
            **{
                "codert.mode": "static_teacher",
                "codert.teacher_nemo": str(tmp_path / "teacher.nemo"),
                "codert.share_decoder": False,
            },
        )
    )
    calls = []
    model.decoder.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    model.codert_losses(*first_batch(model))
    assert calls == [], "a static teacher has no RNN-T loss: its prediction network must not run in training"


def test_fused_joint_in_a_training_step_matches_the_unfused_one(corpus):
    """Train mode (BatchNorm on batch statistics), both sides, every loss term and every gradient."""
    no_randomness = {
        "spec_augment": None,
        "preprocessor.dither": 0.0,
        "joint.jointnet.dropout": 0.0,
        "decoder.prednet.dropout": 0.0,
        **{
            f"{enc}.{k}": 0.0
            for enc in ("encoder", "student_encoder")
            for k in ("dropout", "dropout_pre_encoder", "dropout_emb", "dropout_att")
        },
    }
    torch.manual_seed(0)
    unfused = CodertRNNTBPEModel(cfg=tiny_config(corpus, **no_randomness, **{"joint.fuse_loss_wer": False}))
    fused = CodertRNNTBPEModel(
        cfg=tiny_config(corpus, **no_randomness, **{"joint.fuse_loss_wer": True, "joint.fused_batch_size": 3})
    )
    fused.load_state_dict(unfused.state_dict())
    batch = first_batch(unfused)
    results = []
    for model in (unfused, fused):
        model.train()
        out = model.codert_losses(*batch)
        out["loss"].backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, grads_a), (b, grads_b) = results
    for key in ("loss", "rnnt_student", "rnnt_teacher", "ctc_student", "ctc_teacher", "kd"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and any(n.startswith("encoder.") for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_an_evaluation_set_with_a_bad_utterance_is_an_error_unless_allowed(corpus, tmp_path):
    items = [json.loads(line) for line in corpus.dev_manifest.read_text().splitlines()]
    for item in items:  # absolute paths: the copy lives elsewhere
        item["audio_filepath"] = str(corpus.dev_manifest.parent / item["audio_filepath"])
    items[0]["audio_filepath"] = str(tmp_path / "missing.wav")
    dev = tmp_path / "dev.json"
    dev.write_text("".join(json.dumps(item) + "\n" for item in items))
    cfg = tiny_config(corpus, **{"validation_ds.manifest_filepath": str(dev)})
    with pytest.raises(
        ManifestError, match=r"model.validation_ds.manifest_filepath: .*evaluation set must be complete"
    ):
        check_model_data(cfg, tmp_path / "checked")
    assert check_model_data(cfg, tmp_path / "checked", 0.2, allow_eval_skips=True) == ["validation_ds"]


def test_a_pair_decodes_without_cuda_graphs_and_a_single_model_keeps_them(corpus):
    """NeMo toggles CUDA graphs for ``self.decoding`` only; a pair's other side kept its graphs, and on an H200 both
    sides replaying graphs over the shared prediction network crashed validation. The pair decodes eagerly, whatever
    NeMo's hooks ask; a single model (and the config an exported student carries) keeps NeMo's default."""
    pair = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    for decoding in (pair.student_decoding, pair.teacher_decoding):
        assert decoding.decoding.use_cuda_graph_decoder is False
    assert pair.maybe_enable_cuda_graphs(force_reinit=True) is False  # NeMo's validation-start hook: stays off
    with pair.use_side("teacher"):
        assert pair.maybe_enable_cuda_graphs() is False
    assert pair.cfg.decoding.greedy.get("use_cuda_graph_decoder", True) is not False

    single = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    assert single.decoding.decoding.use_cuda_graph_decoder is True


def test_a_frozen_teacher_is_decoded_once_per_evaluation_batch(corpus, tmp_path):
    """A static teacher's dev loss and WER cannot change: later validations reuse them instead of decoding the
    teacher again; the student is decoded every time, and the teacher's numbers are the same."""
    EncDecRNNTBPEModel(cfg=tiny_config(corpus)).save_to(str(tmp_path / "teacher.nemo"))
    cfg = tiny_config(
        corpus, **{"codert.mode": "static_teacher", "codert.teacher_nemo": str(tmp_path / "teacher.nemo")}
    )
    model = CodertRNNTBPEModel(cfg=cfg)
    model.setup_validation_data(model.cfg.validation_ds)
    calls = {"student": 0, "teacher": 0}
    for side, decoding in (("student", model.student_decoding), ("teacher", model.teacher_decoding)):
        decode = decoding.rnnt_decoder_predictions_tensor

        def counted(*args, _side=side, _decode=decode, **kwargs):
            calls[_side] += 1
            return _decode(*args, **kwargs)

        decoding.rnnt_decoder_predictions_tensor = counted
    trainer = make_trainer(limit_val_batches=2)
    first = trainer.validate(model, verbose=False)[0]
    assert calls == {"student": 2, "teacher": 2}
    second = trainer.validate(model, verbose=False)[0]
    assert calls == {"student": 4, "teacher": 2}
    assert (
        second["val_wer_teacher"] == first["val_wer_teacher"]
        and second["val_loss_teacher"] == first["val_loss_teacher"]
    )
    assert second["val_kd"] == pytest.approx(first["val_kd"])  # the teacher's encoder still runs for the KD term
