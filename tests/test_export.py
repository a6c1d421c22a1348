"""Export of a CoDERT side as a stock NeMo transducer: round trip, loading without this package, ONNX, bad input
files, atomic writes, the evaluation script and the Dockerfile's install step. Real NeMo models, real eSpeak audio."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from nemo.collections.asr.models import ASRModel, EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from nemo_codert.export import (
    HYBRID_TARGET,
    STOCK_TARGET,
    NemoFileError,
    export_onnx,
    export_side,
)
from nemo_codert.export import main as export_main
from nemo_codert.export import stock_model
from nemo_codert.models import CodertRNNTBPEModel

from helpers.factories import REPO, first_batch, logits_ctc, tiny_config
from helpers.hidden_loader import load_without_codert

N_AUDIO = 3


def _manifest(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def audio(corpus):
    return [e["audio_filepath"] for e in _manifest(corpus.dev_manifest)[:N_AUDIO]]


@pytest.fixture(scope="module")
def codert(corpus, tmp_path_factory):
    """A tandem CoDERT model and its .nemo; the exports below start from the .nemo, as the CLI does."""
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus))
    model.eval()
    path = tmp_path_factory.mktemp("codert") / "codert.nemo"
    model.save_to(str(path))
    return model, path


@pytest.fixture(scope="module")
def exported(codert):
    _, path = codert
    return {which: export_side(path, which, path.parent / f"{which}.nemo") for which in ("student", "teacher")}


def _texts(hypotheses):
    return [h.text for h in hypotheses]


def _transcribe(model, files, **kwargs):
    # NeMo's transcribe() leaves encoder/decoder/joint in train mode (it `unfreeze()`s them): back to eval after.
    try:
        return _texts(model.transcribe(files, batch_size=len(files), num_workers=0, verbose=False, **kwargs))
    finally:
        model.eval()


def _tensors(module):
    return {k: v for k, v in module.state_dict().items() if not k.startswith(("_loss.", "_wer."))}


# ------------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_exported_side_is_a_stock_nemo_model_with_the_sides_outputs(codert, exported, audio, which):
    model, _ = codert
    model.eval()
    stock = ASRModel.restore_from(str(exported[which]), map_location="cpu")
    stock.eval()

    # codert_small ships NeMo's aux_ctc heads: each side exports as NeMo's hybrid RNN-T/CTC model, its head kept.
    assert type(stock) is EncDecHybridRNNTCTCBPEModel and stock.cfg.target == HYBRID_TARGET
    assert "codert" not in stock.cfg and "student_encoder" not in stock.cfg
    with tarfile.open(exported[which]) as tar:  # tokenizer inside the file, not pointing at the corpus
        names = {Path(n).name for n in tar.getnames()}
    for artifact in ("tokenizer.model", "vocab.txt", "tokenizer.vocab"):
        assert any(n.endswith(f"_{artifact}") for n in names), (artifact, names)
        assert stock.cfg.tokenizer[_cfg_key(artifact)].startswith("nemo:")

    side = getattr(model, which)
    # Weights: every tensor of the stock model is the side's (strict load at export; checked again here).
    expected = {f"encoder.{k}": v for k, v in _tensors(side.encoder).items()}
    expected |= {f"decoder.{k}": v for k, v in _tensors(side.decoder).items()}
    expected |= {f"joint.{k}": v for k, v in _tensors(side.joint).items()}
    expected |= {f"ctc_decoder.{k}": v for k, v in _tensors(side.ctc_decoder).items()}
    expected |= {f"preprocessor.{k}": v for k, v in model.preprocessor.state_dict().items()}
    got = stock.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
    modules = (side.encoder, side.decoder, side.joint, side.ctc_decoder)
    side_params = {id(p): p.numel() for m in modules for p in m.parameters()}
    assert sum(p.numel() for p in stock.parameters()) == sum(side_params.values())
    assert stock.cfg.aux_ctc.decoder.feat_in == side.encoder._feat_out

    # Encoder outputs: bit-identical to the side inside the CoDERT model, on real audio through NeMo's dataloader.
    signal, signal_len, _, _ = first_batch(model)
    with torch.no_grad(), model.use_side(which):
        a, a_len = model(input_signal=signal, input_signal_length=signal_len)
        b, b_len = stock(input_signal=signal, input_signal_length=signal_len)
    assert torch.equal(a, b) and torch.equal(a_len, b_len)
    assert b.shape[1] == side.encoder._feat_out
    with torch.no_grad():
        assert torch.equal(stock.ctc_decoder(encoder_output=b), side.ctc_decoder(encoder_output=a))

    # Transcripts: exactly the side's (NeMo's hybrid model decodes with the transducer by default).
    ours = _transcribe(model, audio, use_teacher=which == "teacher")
    assert _transcribe(stock, audio) == ours
    assert any(ours), "the untrained model should still emit tokens, or the comparison proves little"
    stock.change_decoding_strategy(decoder_type="ctc", verbose=False)  # and with its CTC head when asked
    assert len(_transcribe(stock, audio)) == len(audio)


def _cfg_key(artifact):
    return {"tokenizer.model": "model_path", "vocab.txt": "vocab_path", "tokenizer.vocab": "spe_tokenizer_vocab"}[
        artifact
    ]


def test_student_and_teacher_exports_differ(codert, exported, audio):
    """The round-trip test could not tell the sides apart if they transcribed alike: they must not."""
    model, _ = codert
    assert _transcribe(model, audio) != _transcribe(model, audio, use_teacher=True)
    sizes = {
        w: sum(p.numel() for p in ASRModel.restore_from(str(p), map_location="cpu").parameters())
        for w, p in exported.items()
    }
    assert sizes["student"] < sizes["teacher"]


@pytest.mark.parametrize(
    "overrides",
    [{"codert.share_decoder": False}, {"joint.fuse_loss_wer": True}, logits_ctc(0.3)],
    ids=["own_student_decoder", "fused_joint", "ctc_on_encoder_logits"],
)
def test_other_layouts_export_exactly(corpus, audio, overrides):
    torch.manual_seed(1)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **overrides))
    model.eval()
    signal, signal_len, _, _ = first_batch(model)
    for which in ("student", "teacher"):
        with stock_model(model, which) as stock:  # strict=True load inside
            # No aux_ctc head (CTC on the encoder logits has no parameters): a plain transducer.
            plain = getattr(model, which).ctc_decoder is None
            assert type(stock) is (EncDecRNNTBPEModel if plain else EncDecHybridRNNTCTCBPEModel), which
            with torch.no_grad(), model.use_side(which):
                a, _ = model(input_signal=signal, input_signal_length=signal_len)
                b, _ = stock(input_signal=signal, input_signal_length=signal_len)
            assert torch.equal(a, b), which
            assert _transcribe(stock, audio) == _transcribe(model, audio, use_teacher=which == "teacher"), which


def test_student_only_model_exports(corpus, audio, tmp_path):
    torch.manual_seed(2)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.mode": "student_only"}))
    model.eval()
    out = export_side(model, "student", tmp_path / "baseline.nemo")
    stock = ASRModel.restore_from(str(out), map_location="cpu")
    assert type(stock) is EncDecHybridRNNTCTCBPEModel  # the student with its aux_ctc head: NeMo's hybrid layout
    assert sum(p.numel() for p in stock.parameters()) == sum(p.numel() for p in model.parameters())
    assert _transcribe(stock, audio) == _transcribe(model, audio)
    with pytest.raises(ValueError, match="no teacher"):
        export_side(model, "teacher", tmp_path / "teacher.nemo")
    assert not (tmp_path / "teacher.nemo").exists()


# ------------------------------------------------------------------------------------------------ without nemo_codert


def test_exported_files_load_where_nemo_codert_cannot_be_imported(corpus, codert, exported, audio, tmp_path):
    model, codert_path = codert
    torch.manual_seed(4)  # and a plain transducer: a model without aux_ctc heads
    plain = CodertRNNTBPEModel(cfg=tiny_config(corpus, **logits_ctc(0.3)))
    plain.eval()
    plain_student = export_side(plain, "student", tmp_path / "plain_student.nemo")

    result = load_without_codert({**exported, "plain_student": plain_student}, audio, codert_path, tmp_path)
    assert result["codert_importable"] is False
    # The CoDERT .nemo itself is refused there (its target is outside NeMo's allowed prefixes): the exports are
    # what makes the model usable.
    assert result["codert_restored"] is False, result
    assert result["classes"] == {"student": HYBRID_TARGET, "teacher": HYBRID_TARGET, "plain_student": STOCK_TARGET}
    assert result["texts"]["student"] == _transcribe(model, audio)
    assert result["texts"]["teacher"] == _transcribe(model, audio, use_teacher=True)
    assert result["texts"]["plain_student"] == _transcribe(plain, audio)


# ------------------------------------------------------------------------------------------------ ONNX


def test_cli_export_with_onnx_matches_pytorch(codert, audio, tmp_path):
    """The CLI writes the stock .nemo and NeMo's ONNX export; onnxruntime matches PyTorch on real audio."""
    import onnxruntime as ort

    from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import ONNXGreedyBatchedRNNTInfer

    _, codert_path = codert
    out, onnx_dir = tmp_path / "student.nemo", tmp_path / "onnx"
    assert (
        export_main(["--nemo", str(codert_path), "--which", "student", "--out", str(out), "--onnx", str(onnx_dir)])
        == 0
    )
    encoder_onnx, decoder_joint_onnx = onnx_dir / "encoder-model.onnx", onnx_dir / "decoder_joint-model.onnx"
    assert encoder_onnx.is_file() and decoder_joint_onnx.is_file()
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["decoder_joint-model.onnx", "encoder-model.onnx"]

    stock = ASRModel.restore_from(str(out), map_location="cpu")
    stock.eval()
    session = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    greedy = ONNXGreedyBatchedRNNTInfer(
        str(encoder_onnx), str(decoder_joint_onnx), max_symbols_per_step=stock.cfg.decoding.greedy.max_symbols
    )
    onnx_texts = []
    for path in audio:
        samples, rate = sf.read(path, dtype="float32")
        assert rate == stock.cfg.sample_rate
        signal, length = torch.from_numpy(samples)[None], torch.tensor([len(samples)])
        with torch.no_grad():
            features, features_len = stock.preprocessor(input_signal=signal, length=length)
            encoded, encoded_len = stock.encoder(audio_signal=features, length=features_len)
        onnx_encoded, onnx_len = session.run(None, {names[0]: features.numpy(), names[1]: features_len.numpy()})
        assert np.array_equal(onnx_len, encoded_len.numpy())
        assert np.abs(onnx_encoded - encoded.numpy()).max() <= 1e-4
        hypothesis = greedy(audio_signal=features, length=features_len)[0]
        onnx_texts.append(stock.tokenizer.ids_to_text([int(t) for t in hypothesis.y_sequence]))
    torch_texts = [_transcribe(stock, [path])[0] for path in audio]
    assert onnx_texts == torch_texts


def test_export_onnx_of_a_stock_nemo_path(exported, tmp_path):
    written = export_onnx(exported["teacher"], tmp_path / "teacher_onnx")
    assert sorted(p.name for p in written) == ["decoder_joint-model.onnx", "encoder-model.onnx"]
    assert all(p.stat().st_size > 0 for p in written)


# ------------------------------------------------------------------------------------------------ bad input


def _bad_files(codert_path: Path, student_path: Path, root: Path):
    data = codert_path.read_bytes()
    (root / "truncated.nemo").write_bytes(data[: len(data) // 2])
    with tarfile.open(codert_path) as tar:
        weights = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
    (root / "cut_before_weights_data.nemo").write_bytes(data[: weights.offset_data + 100])
    (root / "noise.nemo").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "empty.nemo").write_bytes(b"")
    with tarfile.open(root / "no_config.nemo", "w") as tar:
        tar.add(str(codert_path), arcname="./model_weights.ckpt")
    shutil.copy(student_path, root / "stock.nemo")
    return {
        "missing.nemo": (FileNotFoundError, "no such file"),
        "truncated.nemo": (NemoFileError, "truncated"),
        "cut_before_weights_data.nemo": (NemoFileError, "truncated"),
        "noise.nemo": (NemoFileError, "not a tar archive"),
        "empty.nemo": (NemoFileError, "empty"),
        "no_config.nemo": (NemoFileError, "no model_config.yaml"),
        "stock.nemo": (NemoFileError, r"stock NeMo model, not a CoDERT model"),
    }


def test_bad_input_nemo_is_one_clear_error(codert, exported, tmp_path, capsys):
    _, codert_path = codert
    cases = _bad_files(codert_path, exported["student"], tmp_path)
    for name, (error, message) in cases.items():
        path = tmp_path / name
        with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
            export_side(path, "student", tmp_path / "out.nemo")
        assert not (tmp_path / "out.nemo").exists(), name
    # The CLI: one line on stderr, exit status 2, no traceback.
    assert export_main(["--nemo", str(tmp_path / "truncated.nemo"), "--out", str(tmp_path / "out.nemo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'truncated.nemo'}: truncated"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n in cases if n != "missing.nemo")


# ------------------------------------------------------------------------------------------------ atomicity


def test_failed_save_leaves_no_file_and_keeps_the_old_one(codert, tmp_path, monkeypatch):
    model, _ = codert
    out = tmp_path / "student.nemo"

    def crash_mid_write(filename, source_dir):
        with open(filename, "wb") as f:  # half an archive on disk, then the failure
            f.write(b"\0" * 4096)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(SaveRestoreConnector, "_make_nemo_file_from_folder", staticmethod(crash_mid_write))
        with pytest.raises(OSError, match="No space left"):
            export_side(model, "student", out)
        assert list(tmp_path.iterdir()) == []  # neither OUT nor a temporary file

        out.write_bytes(b"previous export")
        with pytest.raises(OSError, match="No space left"):
            export_side(model, "student", out)
        assert out.read_bytes() == b"previous export"
        assert list(tmp_path.iterdir()) == [out]

    assert export_side(model, "student", out) == out.resolve()  # a successful export replaces it
    assert type(ASRModel.restore_from(str(out), map_location="cpu")) is EncDecHybridRNNTCTCBPEModel
    assert list(tmp_path.iterdir()) == [out]


# ------------------------------------------------------------------------------------------------ evaluation script


def _evaluate_script():
    spec = importlib.util.spec_from_file_location("evaluate_codert", REPO / "examples" / "evaluate_codert.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass config looks its module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_evaluate_script_reports_wer_size_and_rtf(codert, exported, corpus, tmp_path, capsys):
    from nemo.collections.asr.metrics.wer import word_error_rate

    script = _evaluate_script()
    _, codert_path = codert
    manifest = corpus.dev_manifest
    references = [e["text"] for e in _manifest(manifest)]

    both = script.evaluate(codert_path, manifest, batch_size=4)
    stock = script.evaluate(exported["student"], manifest, batch_size=4)
    assert set(both["results"]) == {"student", "teacher"} and set(stock["results"]) == {"model"}
    student, teacher, exported_student = (
        both["results"]["student"],
        both["results"]["teacher"],
        stock["results"]["model"],
    )
    # The deployable student is exactly the exported stock model: same transcripts, WER and parameter count (its
    # aux_ctc head included: the exported hybrid .nemo holds it).
    assert student["hypotheses"] == exported_student["hypotheses"]
    assert student["wer"] == exported_student["wer"] == word_error_rate(student["hypotheses"], references)
    assert student["params"] == exported_student["params"] < teacher["params"]
    assert student["params"] == sum(
        p.numel() for p in ASRModel.restore_from(str(exported["student"]), map_location="cpu").parameters()
    )
    for r in (student, teacher, exported_student):
        assert r["rtf"] > 0 and r["wall_seconds"] > 0

    # The CLI's config (dataclass + hydra, as NeMo's speech_to_text_eval.py): a table on stdout, JSON at out=.
    from omegaconf import OmegaConf

    def config(**values):
        return OmegaConf.merge(OmegaConf.structured(script.EvaluationConfig), values)

    out = tmp_path / "eval.json"
    script.main(config(model=str(codert_path), manifest=str(manifest), batch_size=4, out=str(out)))
    report = json.loads(out.read_text())
    assert report["results"]["student"]["params"] == student["params"]
    cer = word_error_rate(student["hypotheses"], references, use_cer=True)
    assert report["results"]["student"]["cer"] == pytest.approx(cer) and student["cer"] == pytest.approx(cer)
    assert "hypotheses" not in report["results"]["student"]
    assert "student" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"error: .*nope.nemo: no such file"):
        script.main(config(model=str(tmp_path / "nope.nemo"), manifest=str(manifest)))
    with pytest.raises(SystemExit, match=r"error: model=\.\.\. is required"):
        script.main(config(manifest=str(manifest)))
    # The command line itself, as a user types it (hydra key=value overrides).
    done = subprocess.run(
        [
            sys.executable,
            "examples/evaluate_codert.py",
            f"model={exported['student']}",
            f"manifest={manifest}",
            "batch_size=4",
            f"out={tmp_path / 'cli.json'}",
            "threads=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "cli.json").read_text())["results"]["model"]["wer"] == exported_student["wer"]


def test_evaluation_refuses_segments_of_longer_files(corpus, tmp_path):
    """NeMo's transcribe reads whole files: a manifest of segments (offset > 0) would be scored wrongly, silently."""
    from nemo_codert.evaluation import evaluate

    entries = _manifest(corpus.dev_manifest)[:3]
    entries[1] = {**entries[1], "offset": 0.5, "duration": entries[1]["duration"] - 0.5}
    manifest = tmp_path / "segments.json"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with pytest.raises(ValueError, match=r"segments.json: 1 entries are segments .* the first is entry 2"):
        evaluate(tmp_path / "never_read.nemo", manifest)


# ------------------------------------------------------------------------------------------------ Dockerfile


def _dockerfile_install_command() -> str:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# install-step"))
    run = []
    for line in lines[start + 1 :]:
        run.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    command = " ".join(run)
    assert command.startswith("RUN "), command
    return command[len("RUN ") :]


def test_dockerfile_base_image_is_an_ngc_nemo_container():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/nemo:\$\{NEMO_TAG\}$", text, re.M)
    assert re.search(r"^ARG NEMO_TAG=\d\d\.\d\d", text, re.M)


@pytest.mark.slow
def test_dockerfile_install_step_keeps_the_containers_torch(tmp_path):
    """The Dockerfile's install command, verbatim, in a venv that sees the system torch as the container's."""
    command = _dockerfile_install_command()
    source = tmp_path / "src"  # the image's WORKDIR: what the Dockerfile COPYs
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("nemo_codert", "conf", "examples"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))

    probe = "import json, torch; print(json.dumps([torch.__version__, torch.__file__]))"
    before = json.loads(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    )

    # The "container": a fresh venv whose only site-packages beyond its own is the one holding the torch this test
    # runs with (a .pth line), whether that is the system's or CI's .venv. No pip or setuptools of its own
    # (ensurepip's would shadow the ones found there, as nothing shadows the container's): `python -m pip` then runs
    # that pip, installing into the venv.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv_site,) = (venv / "lib").glob("python*/site-packages")
    (venv_site / "_container.pth").write_text(str(Path(before[1]).resolve().parents[1]) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        VIRTUAL_ENV=str(venv),
        PIP_NO_INDEX="1",  # offline: every dependency must already be satisfied, nothing may be fetched
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    proc = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    constraints = (source / ".torch-constraints.txt").read_text().split()
    assert f"torch=={before[0]}" in constraints
    venv_python = str(venv / "bin" / "python")
    after = json.loads(
        subprocess.run([venv_python, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    )
    assert after == before, "the install replaced torch"
    assert not (venv_site / "torch").exists(), "torch was installed into the venv"
    where = subprocess.run(
        [venv_python, "-c", "import nemo_codert; print(nemo_codert.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve() == (source / "nemo_codert" / "__init__.py").resolve()
