"""The shipped configs compose as hydra composes them for `examples/train_codert.py --config-name=...`."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nemo_codert.models.config import parse_codert_config

from helpers.factories import benchmark_module, compose_config


def test_the_static_config_is_codert_small_with_a_frozen_teacher_and_its_own_lambda():
    small, static = compose_config("codert_small"), compose_config(
        "codert_small_static", ["model.codert.teacher_nemo=/t.nemo"]
    )
    # Chosen on dev (benchmarks/results/own_decoder_lambda_3seeds/): the student's own decoder and joint, λ = 0.3.
    assert static.model.codert.mode == "static_teacher" and static.model.codert.kd_weight == 0.3
    assert static.model.codert.share_decoder is False and small.model.codert.share_decoder is True
    assert small.model.codert.kd_weight == 0.3  # both 0.3 now, chosen apart (no_regularisation_lambda03_3seeds/)
    # Everything else is codert_small's: the same student, data, optimiser and budget ...
    for key in ("data", "model.optim", "trainer", "model.codert.ctc_weight"):
        assert OmegaConf.select(static, key) == OmegaConf.select(small, key), key
    # ... but the regularisation its lambda was chosen with (codert_small dropped spec-augment and dropout later).
    dropouts = ("dropout", "dropout_pre_encoder", "dropout_att")
    unregularised = {k: v for k, v in small.model.student_encoder.items() if k not in dropouts}
    assert {k: v for k, v in static.model.student_encoder.items() if k not in dropouts} == unregularised
    assert [static.model.student_encoder[k] for k in dropouts] == [0.1] * 3
    assert (static.model.spec_augment.freq_masks, static.model.spec_augment.time_masks) == (2, 2)
    assert small.model.student_encoder.dropout == 0.0 and small.model.spec_augment.freq_masks == 0
    assert parse_codert_config(static.model).teacher_nemo == "/t.nemo"


def test_the_static_config_without_a_teacher_names_the_missing_key():
    cfg = compose_config("codert_small_static")
    with pytest.raises(ValueError, match="model.codert.teacher_nemo: mode 'static_teacher' needs the path"):
        parse_codert_config(cfg.model)


def test_the_ladder_config_is_codert_small_with_a_medium_student_beside_the_small_one():
    small, ladder = compose_config("codert_small"), compose_config("codert_ladder")
    OmegaConf.resolve(ladder)
    OmegaConf.resolve(small)
    assert list(ladder.model.student_encoders) == ["small", "medium"]
    assert ladder.model.student_encoders.small == small.model.student_encoder
    # The medium student is the benchmark's (benchmarks/multi_student.py measures this config's ladder).
    medium = OmegaConf.merge(small.model.student_encoder, benchmark_module("paper_table").MEDIUM_STUDENT)
    assert ladder.model.student_encoders.medium == medium
    for key in ("model.encoder", "data", "model.optim", "trainer", "model.codert.kd_weight"):
        assert OmegaConf.select(ladder, key) == OmegaConf.select(small, key), key
    assert parse_codert_config(ladder.model).primary_student == "small"


def test_the_streaming_config_distils_with_the_frame_shift_its_table_chose():
    small, streaming = compose_config("codert_small"), compose_config("codert_streaming")
    # Chosen on dev (benchmarks/results/streaming_frame_shift/), 3 seeds in benchmarks/results/streaming.md: the
    # streaming student's frame t learns from the full-context teacher's frame t - 2.
    assert parse_codert_config(streaming.model).kd_frame_shift == 2
    assert parse_codert_config(small.model).kd_frame_shift == 0  # a full-context student pairs frames one to one
    for key in ("data", "model.optim", "trainer", "model.codert.kd_weight", "model.train_ds.augmentor"):
        assert OmegaConf.select(streaming, key) == OmegaConf.select(small, key), key


def _table_settings(pt, **fields):
    """The paper table's settings for a shipped config's 1800 steps, seed 0, validated as the shipped configs are
    (every 450 steps; the tables validated every 300: when to score is no training input)."""
    return pt.Settings(
        hours=1.0,
        dev_hours=0.1,
        test_hours=0.2,
        steps=1800,
        seeds=[0],
        val_every=450,
        time_steps=0,
        jobs=2,
        **fields,
    )


@pytest.mark.parametrize(
    "config, table_config, max_steps, head_start",
    [
        ("codert_small_teacher", "codert_small", None, False),
        ("codert_small_teacher", "codert_small", 450, True),
        ("codert_streaming_teacher", "codert_streaming", None, True),
    ],
)
def test_the_teacher_configs_are_the_paper_tables_system_2(tmp_path, config, table_config, max_steps, head_start):
    """Phase 1 of the two-phase recipe must train what the tables measured: system 2, the teacher's architecture
    alone at the teacher's learning rate, for the table's steps (benchmarks/results/two_phase_3seeds/) or for system
    4q's head start (benchmarks/results/head_start_3seeds/: codert_small_teacher with trainer.max_steps=450, the
    README's cheaper phase 1), and codert_streaming_teacher as shipped is that head start under --config
    codert_streaming at the shipped 1800 steps (the streaming tables, benchmarks/results/streaming_head_start*/, ran
    1200 steps with a 300-step head start: the same share)."""
    pt = benchmark_module("paper_table")
    settings = _table_settings(pt, config=table_config)
    if head_start:
        head = pt.head_start_job(settings, pt.BY_NAME["codert_head_start"], 0, tmp_path, tmp_path, 1)
        settings = pt.Settings(**head.spec["settings"])
        assert settings.steps == 450
    system_2 = pt.system_config(settings, pt.BY_NAME["teacher_only"], 0, tmp_path, None)
    overrides = [f"data.dir={tmp_path}", "model.train_ds.seed=0"]
    if max_steps:
        overrides.append(f"trainer.max_steps={max_steps}")
    teacher = compose_config(config, overrides)
    OmegaConf.resolve(teacher)
    assert teacher.model.student_encoder == teacher.model.encoder
    assert parse_codert_config(teacher.model).mode == "student_only"
    # The table spells out the KD target, which a student-only run does not read; all else must be equal.
    system_2.model.codert.pop("kd_target")
    for key in ("model", "trainer", "data"):
        assert OmegaConf.select(teacher, key) == OmegaConf.select(system_2, key), key


def test_the_streaming_teacher_subsamples_like_the_streaming_student():
    """CoDERT pairs frames one to one: a phase 1 with symmetric subsampling (codert_small_teacher) would hand phase 2
    a teacher that emits one frame fewer per 1024 input frames than the streaming student."""
    teacher, streaming = compose_config("codert_streaming_teacher"), compose_config("codert_streaming")
    OmegaConf.resolve(teacher)
    assert teacher.model.student_encoder.causal_downsampling is True
    assert teacher.model.encoder == streaming.model.encoder
    assert compose_config("codert_small_teacher").model.encoder.get("causal_downsampling", False) is False


def test_the_default_config_is_the_tables_system_4_and_its_baseline_keeps_the_students_steps(tmp_path):
    """codert_small ships what measured best of the one-run recipes (4r, 3 seeds: results/teacher_lead_3seeds/),
    and the paper table's system 4 is CoDERT as shipped: its model and trainer are system 4's at 1800 steps.
    trainer.max_steps is the students' steps, so the README's baseline (mode=student_only) and phase 2 of the two
    runs (teacher_nemo), where the lead is skipped, train their student as long as the lead run does."""
    pt = benchmark_module("paper_table")
    settings = _table_settings(pt)
    table = pt.system_config(settings, pt.BY_NAME["codert"], 0, tmp_path, None)
    shipped = compose_config("codert_small", [f"data.dir={tmp_path}", "model.train_ds.seed=0"])
    OmegaConf.resolve(shipped)
    table.model.codert.pop("kd_target")  # spelled out by the table, the config's default
    for key in ("model", "trainer"):
        assert OmegaConf.select(shipped, key) == OmegaConf.select(table, key), key
    assert (shipped.model.codert.teacher_lead_steps, shipped.trainer.max_steps) == (450, 1800)
    for overrides in (["model.codert.mode=student_only"], ["model.codert.teacher_nemo=teacher.nemo"]):
        cfg = compose_config("codert_small", overrides)
        assert parse_codert_config(cfg.model).teacher_lead_steps == 0 and cfg.trainer.max_steps == 1800, overrides
    assert parse_codert_config(compose_config("codert_streaming").model).teacher_lead_steps == 450
