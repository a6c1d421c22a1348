"""A TDT teacher (NeMo's token-and-duration transducer, the kind NVIDIA's current English models are): as a static
teacher whose student shares its TDT joint, and through the offline cache to a plain RNN-T student. Real stock NeMo
models, saved as .nemo, trained for a few real steps on CPU (the TDT loss by ``nemo_codert.losses.tdt_cpu``)."""

from __future__ import annotations

import pytest
import torch

from nemo.collections.asr.models import ASRModel, EncDecRNNTBPEModel

from nemo_codert.data.teacher_cache import write_teacher_cache
from nemo_codert.export import export_side
from nemo_codert.losses.encoder_kd import encoder_logits
from nemo_codert.losses.rnnt_cpu import DispatchingTDTLossNumba
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import OFFLINE_TEACHER, first_batch, make_trainer, tiny_config

DURATIONS = [0, 1, 2, 3, 4]
# NeMo's TDT recipe (conformer_tdt_bpe.yaml): duration outputs after blank, the TDT loss with its durations.
TDT = {
    "aux_ctc": None,
    "joint.num_extra_outputs": len(DURATIONS),
    "decoding.model_type": "tdt",
    "decoding.durations": DURATIONS,
    "loss": {
        "loss_name": "tdt",
        "tdt_kwargs": {"durations": DURATIONS, "sigma": 0.02, "omega": 0.1, "fastemit_lambda": 0.0, "clamp": -1.0},
    },
}


@pytest.fixture(scope="module")
def tdt_teacher(corpus, tmp_path_factory):
    torch.manual_seed(0)
    teacher = EncDecRNNTBPEModel(cfg=tiny_config(corpus, **TDT))
    path = tmp_path_factory.mktemp("tdt_teacher") / "teacher.nemo"
    teacher.save_to(str(path))
    return path


# Shared: the student plugs into the frozen TDT joint; own (conf/codert_small_static.yaml): a TDT joint of its own.
@pytest.mark.parametrize("share_decoder", [True, False], ids=["shared_joint", "own_joint"])
def test_static_tdt_teacher_trains_a_tdt_student_and_stays_bit_identical(
    corpus, tdt_teacher, tmp_path, good, share_decoder
):
    overrides = {"codert.teacher_nemo": str(tdt_teacher), "codert.share_decoder": share_decoder}
    cfg = tiny_config(corpus, **{"codert.mode": "static_teacher", **overrides})
    trainer = make_trainer(max_steps=3)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    vocab = len(model.tokenizer.vocab)
    # The student shares the teacher's TDT joint (durations after blank) and so trains with the TDT loss, on CPU.
    assert model.student_joint.num_extra_outputs == len(DURATIONS)
    assert isinstance(model.loss._loss, DispatchingTDTLossNumba)
    # KD compares like with like: token and blank logits only, the duration outputs dropped on both sides.
    model.eval()
    signal, signal_len, *_ = first_batch(model)
    with torch.no_grad():
        features, lengths = model.preprocessor(input_signal=signal, length=signal_len)
        enc, _ = model.encoder(audio_signal=features, length=lengths)
        assert encoder_logits(model.joint, enc).shape[-1] == vocab + 1

    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in ("encoder", "decoder", "joint")
    }
    student_before = {k: v.clone() for k, v in model.student_encoder.state_dict().items()}
    trainer.fit(model)
    after = model.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), f"static TDT teacher tensor {k} changed during training"
    assert any(not torch.equal(v, model.student_encoder.state_dict()[k]) for k, v in student_before.items())
    assert torch.isfinite(trainer.callback_metrics["train_rnnt_student"])

    # The exported student is a stock NeMo TDT model: NeMo decodes it with its durations.
    stock = ASRModel.restore_from(str(export_side(model, "student", tmp_path / "student.nemo")), map_location="cpu")
    assert type(stock).__module__.startswith("nemo.") and stock.joint.num_extra_outputs == len(DURATIONS)
    assert list(stock.decoding.durations) == DURATIONS
    (hypothesis,) = stock.transcribe([good[0]["audio_filepath"]], batch_size=1)
    assert isinstance(getattr(hypothesis, "text", hypothesis), str)


def test_tdt_pair_trains_in_tandem(corpus):
    """A TDT teacher and student learning together: one TDT joint shared, both sides on the TDT loss, KD on the token
    and blank logits only."""
    torch.manual_seed(0)
    trainer = make_trainer(max_steps=2, log_every_n_steps=1)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **TDT), trainer=trainer)
    assert model.joint.num_extra_outputs == model.student_joint.num_extra_outputs == len(DURATIONS)
    assert isinstance(model.loss._loss, DispatchingTDTLossNumba)
    teacher_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer.fit(model)
    for key in ("train_rnnt_student", "train_rnnt_teacher", "train_kd"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in teacher_before.items())
    (metrics,) = trainer.validate(model, verbose=False)
    assert 0 <= metrics["val_wer"] and 0 <= metrics["val_wer_teacher"]


def test_tandem_from_a_tdt_teacher_file_starts_from_it_and_trains_it_on(corpus, tdt_teacher):
    """A user's TDT model as the start of a tandem run (mode tandem + teacher_nemo, the two-phase recipe's phase 2):
    the TDT joint comes from the file and is shared, both sides train on the TDT loss, and the teacher trains on."""
    stock = ASRModel.restore_from(str(tdt_teacher), map_location="cpu")
    torch.manual_seed(0)
    trainer = make_trainer(max_steps=2, log_every_n_steps=1)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_nemo": str(tdt_teacher)}), trainer=trainer)
    assert model.joint.num_extra_outputs == model.student_joint.num_extra_outputs == len(DURATIONS)
    assert isinstance(model.loss._loss, DispatchingTDTLossNumba)
    for name in ("encoder", "joint"):
        for k, v in getattr(stock, name).state_dict().items():
            assert torch.equal(getattr(model, name).state_dict()[k], v), f"{name}.{k} not loaded from the .nemo"
    teacher_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer.fit(model)
    for key in ("train_rnnt_student", "train_rnnt_teacher", "train_kd"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in teacher_before.items())


def test_tdt_teacher_distils_into_a_plain_rnnt_student_through_the_cache(corpus, tdt_teacher, tmp_path):
    teacher = ASRModel.restore_from(str(tdt_teacher), map_location="cpu")
    cache = write_teacher_cache(teacher, corpus.train_manifest, tmp_path / "cache", k=4, batch_size=8)
    cfg = tiny_config(corpus, **{**OFFLINE_TEACHER, "codert.teacher_cache": str(cache)})
    trainer = make_trainer(max_steps=2)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    assert model.joint.num_extra_outputs == 0  # the student is the config's plain RNN-T transducer
    trainer.fit(model)
    assert torch.isfinite(trainer.callback_metrics["train_kd"]) and trainer.callback_metrics["train_kd"] > 0


def test_lattice_kd_from_a_tdt_teacher_is_a_clear_error(corpus, tdt_teacher):
    cfg = tiny_config(
        corpus,
        **{
            "codert.mode": "static_teacher",
            "codert.teacher_nemo": str(tdt_teacher),
            "codert.kd_target": "joint_lattice",
        },
    )
    with pytest.raises(ValueError, match="model.codert.kd_target: joint_lattice .* extra \\(TDT duration\\) outputs"):
        CodertRNNTBPEModel(cfg=cfg)
