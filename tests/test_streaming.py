"""A cache-aware streaming student from a full-context teacher (conf/codert_streaming.yaml): the pair trains at one
frame rate, and the exported student streams chunk by chunk through NeMo's own cache-aware API
(``CacheAwareStreamingAudioBuffer`` + ``conformer_stream_step``, what NeMo's
speech_to_text_cache_aware_streaming_infer.py runs) with exactly its offline output, frame for frame, on real audio."""

import json

import pytest
import torch

from nemo.collections.asr.models import ASRModel
from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

from nemo_codert.export import export_side
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import first_batch, make_trainer, tiny_config


def _tokens(hypotheses):
    return [h.y_sequence.tolist() for h in hypotheses]


def _buffer(model, audio):
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False, pad_and_drop_preencoded=False)
    for path in audio:
        buffer.append_audio_file(path, stream_id=-1)
    return buffer


def _stream(model, audio, decode: bool):
    """NeMo's streaming loop, as its cache-aware streaming example runs it: chunk by chunk, the caches (and
    hypotheses) of the previous chunk carried over. ``decode``: through ``conformer_stream_step`` (encoder and
    decoder), returning the final hypotheses; else the encoder's ``cache_aware_stream_step`` alone, returning its
    outputs concatenated and their lengths. Both with the number of chunks."""
    buffer = _buffer(model, audio)
    channel, time, channel_len = model.encoder.get_initial_cache_state(batch_size=len(audio))
    outputs, lengths, hypotheses, chunks = [], 0, None, 0
    for step, (chunk, chunk_len) in enumerate(iter(buffer)):
        kwargs = dict(
            processed_signal=chunk,
            processed_signal_length=chunk_len,
            cache_last_channel=channel,
            cache_last_time=time,
            cache_last_channel_len=channel_len,
            keep_all_outputs=buffer.is_buffer_empty(),
            drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
        )
        if decode:
            _, _, channel, time, channel_len, hypotheses = model.conformer_stream_step(
                **kwargs, previous_hypotheses=hypotheses
            )
        else:
            encoded, encoded_len, channel, time, channel_len = model.encoder.cache_aware_stream_step(**kwargs)
            outputs.append(encoded)
            lengths = lengths + encoded_len
        chunks += 1
    if decode:
        return hypotheses, chunks
    return torch.cat(outputs, dim=-1), lengths, chunks


@pytest.fixture(scope="module")
def streaming_student(corpus, tmp_path_factory):
    # Untrained: a few steps on the tiny corpus teach it to emit only blanks, and an empty output proves little.
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, "codert_streaming"))
    model.eval()
    return model, export_side(model, "student", tmp_path_factory.mktemp("streaming") / "student.nemo")


def test_streaming_student_config_is_nemos_cache_aware_recipe_beside_a_full_context_teacher(streaming_student):
    model, _ = streaming_student
    assert model.student_encoder.att_context_style == "chunked_limited"
    assert list(model.student_encoder.att_context_size) == [48, 3]
    assert model.encoder.att_context_size == [-1, -1]  # the teacher sees the whole utterance
    assert model.cfg.preprocessor.normalize == "NA"


def test_exported_streaming_student_streams_exactly_as_it_runs_offline(corpus, streaming_student):
    _, path = streaming_student
    stock = ASRModel.restore_from(str(path), map_location="cpu")
    stock.eval()
    audio = [json.loads(line)["audio_filepath"] for line in corpus.dev_manifest.read_text().splitlines()[:3]]
    with torch.no_grad():
        signal, signal_len = _buffer(stock, audio).get_all_audios()
        offline, offline_len = stock.encoder(audio_signal=signal, length=signal_len)
        streamed, streamed_len, _ = _stream(stock, audio, decode=False)
        hypotheses, chunks = _stream(stock, audio, decode=True)
    assert chunks > 3, "the audio must span several chunks, or nothing was streamed"

    # Encoder: every frame the stream emits equals the offline frame (same attention context, causal convolutions
    # and subsampling). Offline, causal subsampling's right padding (stride - 1) can add one last frame that the
    # stream, which never sees past the audio's end, does not emit.
    assert torch.all((offline_len - streamed_len >= 0) & (offline_len - streamed_len <= 1)), (
        offline_len,
        streamed_len,
    )
    for b, n in enumerate(streamed_len.tolist()):
        torch.testing.assert_close(streamed[b, :, :n], offline[b, :, :n], atol=1e-5, rtol=1e-5)

    # Decoding: the streamed hypotheses are NeMo's offline decoding of the same frames.
    offline_hyps = stock.decoding.rnnt_decoder_predictions_tensor(encoder_output=offline, encoded_lengths=streamed_len)
    assert _tokens(hypotheses) == _tokens(offline_hyps)
    assert any(_tokens(hypotheses)), "the model should emit tokens, or the comparison proves little"
    assert [h.text for h in hypotheses] == [h.text for h in offline_hyps]


def test_the_streaming_pair_trains_with_a_kd_frame_shift(corpus):
    torch.manual_seed(1)
    trainer = make_trainer(max_steps=2)
    cfg = tiny_config(corpus, "codert_streaming", **{"codert.kd_frame_shift": 2})
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    out = model.codert_losses(*first_batch(model))  # raises if the encoders emitted different frame counts
    assert torch.isfinite(out["kd"]) and out["kd"] > 0
    out["kd_weighted"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.student_encoder.state_dict().items()}
    trainer.fit(model)
    assert trainer.global_step == 2
    assert any(not torch.equal(v, model.student_encoder.state_dict()[k]) for k, v in before.items())


def test_a_teacher_with_symmetric_subsampling_cannot_start_a_streaming_tandem_run(corpus, tmp_path):
    """Phase 1 of a streaming two-phase run must be conf/codert_streaming_teacher.yaml (causal subsampling): a model
    with codert_small_teacher's symmetric subsampling emits one frame fewer per 1024 input frames than the streaming
    student, and CoDERT, which distils frame by frame, must refuse it by name rather than misalign."""
    symmetric = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    teacher = export_side(symmetric, "student", tmp_path / "teacher.nemo")
    cfg = tiny_config(corpus, "codert_streaming", **{"codert.teacher_nemo": str(teacher)})
    with pytest.raises(ValueError, match=r"model.student_encoder: subsampling factor 3.98\d* differs .*\(257 vs 256"):
        CodertRNNTBPEModel(cfg=cfg)
