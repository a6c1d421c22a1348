"""A teacher head start inside one tandem run (``model.codert.teacher_lead_steps``), on real NeMo models, real
audio and a real Lightning fit: the students are untouched during the lead, and at the hand-over the optimiser's
moments and NeMo's lr schedule start afresh."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import open_dict

from nemo.core.optim.lr_scheduler import prepare_lr_scheduler

from nemo_codert.models import CodertRNNTBPEModel
from nemo_codert.models.config import parse_codert_config

from helpers.factories import make_trainer, tiny_config

LEAD, STEPS = 2, 2  # STEPS: trainer.max_steps, the students' steps; the run is LEAD + STEPS
RUN = LEAD + STEPS


class _Recorder(Callback):
    """Per optimiser step: the lr of each group it steps with, the student's and the teacher's weights after it, and
    Adam's step count of a teacher weight."""

    def __init__(self):
        self.lrs, self.student, self.teacher, self.adam_steps = [], [], [], []

    def on_train_batch_start(self, trainer, model, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        self.student.append([p.detach().clone() for p in _student_params(model)])
        self.teacher.append([p.detach().clone() for p in model.encoder.parameters()])
        state = trainer.optimizers[0].state.get(next(model.encoder.parameters()), {})
        self.adam_steps.append(int(state["step"]) if "step" in state else 0)


def _student_params(model):
    return [*model.student_encoder.parameters(), *model.student_joint.enc.parameters()]


def _nemo_schedule(group_lrs, steps, sched_cfg, n):
    """The lrs NeMo's scheduler of ``sched_cfg`` gives groups starting at ``group_lrs`` over ``steps``: first n."""
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in group_lrs]
    optimizer = torch.optim.AdamW(groups)
    scheduler = prepare_lr_scheduler(optimizer, dict(sched_cfg, max_steps=steps))["scheduler"]
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def test_the_teacher_leads_alone_then_the_students_join_with_fresh_moments_and_schedule(corpus):
    cfg = tiny_config(
        corpus,
        **{"codert.teacher_lead_steps": LEAD, "codert.teacher_lr_scale": 0.5, "optim.sched.warmup_steps": 1},
    )
    trainer = make_trainer(max_steps=STEPS, log_every_n_steps=1)
    recorder = _Recorder()
    trainer.callbacks.append(recorder)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    start = [p.detach().clone() for p in _student_params(model)]
    teacher_start = [p.detach().clone() for p in model.encoder.parameters()]
    assert model.kd_scale() == 0.0  # KD is off during the lead, and validation logs it so (val_kd_weighted)
    trainer.fit(model)
    assert trainer.global_step == RUN  # the lead, then the students' trainer.max_steps
    assert model.kd_scale() == cfg.codert.kd_weight * cfg.codert.kd_temperature**2

    # The lead: not one student weight moves (no gradient, so no AdamW step and no weight decay); the teacher learns.
    for after in recorder.student[:LEAD]:
        assert all(torch.equal(a, b) for a, b in zip(after, start))
    assert not all(torch.equal(a, b) for a, b in zip(recorder.teacher[0], teacher_start))
    # The hand-over: the students learn, and Adam's moments were made afresh (the teacher's step count restarts).
    assert not all(torch.equal(a, b) for a, b in zip(recorder.student[LEAD], start))
    assert recorder.adam_steps == [1, 2, 1, 2]
    assert model.kd_start_step() == LEAD

    # NeMo's schedule twice: over the lead with every group at the teacher's rate, then from its start again over the
    # remaining steps with each group at its own rate (the rest at lr, the teacher encoder at lr x 0.5).
    sched = dict(cfg.optim.sched)
    lr = cfg.optim.lr
    expected = _nemo_schedule([0.5 * lr, 0.5 * lr], LEAD, sched, LEAD)
    expected += _nemo_schedule([lr, 0.5 * lr], STEPS, sched, STEPS)
    torch.testing.assert_close(torch.tensor(recorder.lrs), torch.tensor(expected))


def test_without_a_teacher_that_learns_from_scratch_the_lead_is_skipped_and_the_students_keep_their_steps(corpus):
    """One config (codert_small ships a lead) serves CoDERT, its baseline, a static teacher and phase 2 of the two
    runs: where no teacher learns from scratch the lead is a logged no-op, and trainer.max_steps is the run."""
    skipped = {
        "student_only": {"codert.mode": "student_only"},
        "a teacher that does not learn": {"codert.teacher_rnnt_weight": 0.0},
        "a teacher trained already": {"codert.teacher_nemo": "teacher.nemo"},
    }
    for why, overrides in skipped.items():
        codert = parse_codert_config(tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD, **overrides}))
        assert codert.teacher_lead_steps == 0, why
    assert parse_codert_config(tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD})).teacher_lead_steps == LEAD
    trainer = make_trainer(max_steps=STEPS)
    cfg = tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD, "codert.mode": "student_only"})
    model = CodertRNNTBPEModel(cfg=cfg, trainer=trainer)
    trainer.fit(model)
    assert trainer.global_step == STEPS
    # The config the run saves (hparams.yaml, checkpoints) says what ran; the user's config is left as it was.
    assert model.cfg.codert.teacher_lead_steps == 0 and cfg.codert.teacher_lead_steps == LEAD


def test_a_fast_dev_run_skips_the_lead_so_that_its_step_trains_the_students(corpus):
    """fast_dev_run is the smoke test of a config: with a lead its one batch would run the teacher side alone."""
    trainer = make_trainer(fast_dev_run=1)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD}), trainer=trainer)
    start = [p.detach().clone() for p in _student_params(model)]
    trainer.fit(model)
    assert trainer.global_step == 1 and model.teacher_lead_steps == 0
    assert not all(torch.equal(a, b) for a, b in zip(_student_params(model), start))


def test_a_teacher_lead_needs_a_step_limit_and_a_schedule(corpus):
    with pytest.raises(ValueError, match="teacher_lead_steps: must be >= 0"):
        CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_lead_steps": -1}))
    trainer = make_trainer(max_steps=-1, max_epochs=1)  # epochs, no step count: no schedule to restart over
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_lead_steps": 2}), trainer=trainer)
    with pytest.raises(ValueError, match="teacher_lead_steps: 2 needs trainer.max_steps .*got -1"):
        trainer.fit(model)
    # No schedule: no group's rate could change at the hand-over.
    cfg = tiny_config(corpus, **{"codert.teacher_lead_steps": 2})
    with open_dict(cfg):
        del cfg.optim.sched
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=STEPS))
    with pytest.raises(ValueError, match="teacher_lead_steps: 2 needs model.optim.sched"):
        model.setup_optimization(model.cfg.optim)


def test_a_teacher_lead_under_ddp_needs_unused_parameters_allowed(corpus):
    """During the lead the students' parameters have no gradient, which torch's DDP refuses at the second step
    unless it looks for unused parameters: refused at fit start, with the strategy that allows it named."""
    cfg = tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD})
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=STEPS, strategy="ddp"))
    with pytest.raises(ValueError, match="trainer.strategy=ddp_find_unused_parameters_true"):
        model.on_fit_start()
    trainer = make_trainer(max_steps=STEPS, strategy="ddp_find_unused_parameters_true")
    CodertRNNTBPEModel(cfg=cfg, trainer=trainer).on_fit_start()


class _StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def test_a_run_stopped_in_the_lead_resumes_with_the_same_schedule_and_hand_over(corpus, tmp_path):
    cfg = tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD, "optim.sched.warmup_steps": 1})
    whole = _Recorder()
    trainer = make_trainer(max_steps=STEPS, callbacks=[whole])
    trainer.fit(CodertRNNTBPEModel(cfg=cfg, trainer=trainer))

    trainer = make_trainer(max_steps=STEPS, callbacks=[_StopAt(1)])
    trainer.fit(CodertRNNTBPEModel(cfg=cfg, trainer=trainer))
    assert trainer.global_step == 1
    trainer.save_checkpoint(tmp_path / "lead.ckpt")
    resumed = _Recorder()
    trainer = make_trainer(max_steps=STEPS, callbacks=[resumed])
    trainer.fit(CodertRNNTBPEModel(cfg=cfg, trainer=trainer), ckpt_path=str(tmp_path / "lead.ckpt"))
    assert trainer.global_step == RUN  # the step limit is extended by the lead once, in the resumed run as well
    # The resumed run's last three steps use the uninterrupted run's lrs, and its moments restart at the hand-over.
    assert resumed.lrs == whole.lrs[1:] and resumed.adam_steps == whole.adam_steps[1:] == [2, 1, 2]


def test_with_one_parameter_group_the_lead_runs_at_the_shared_lr(corpus):
    """teacher_lr_scale 1: NeMo's one group (the teacher encoder among the rest) leads at lr, then restarts."""
    cfg = tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD, "codert.teacher_lr_scale": 1.0})
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=STEPS))
    optimizer, scheduler = model.setup_optimization(model.cfg.optim)  # NeMo's return, as NeMo's own gives it
    assert optimizer is model._optimizer and scheduler is model._scheduler
    assert len(model._optimizer.param_groups) == 1
    assert isinstance(model._scheduler["scheduler"], torch.optim.lr_scheduler.SequentialLR)
    assert model._scheduler["scheduler"]._schedulers[0].base_lrs == [cfg.optim.lr]


def test_a_second_fit_on_the_same_trainer_is_extended_from_the_students_steps_again(corpus):
    """The step limit is set from the students' steps at each fit: a second lead model on the same trainer runs
    the same LEAD + STEPS, not LEAD more, and a model without a lead after it its STEPS alone."""
    trainer = make_trainer(max_steps=STEPS)
    led = CodertRNNTBPEModel(cfg=tiny_config(corpus, **{"codert.teacher_lead_steps": LEAD}), trainer=trainer)
    plain = CodertRNNTBPEModel(cfg=tiny_config(corpus), trainer=trainer)
    for expected, model in ((RUN, led), (RUN, led), (STEPS, plain)):
        model.setup("fit")
        assert trainer.max_steps == expected
        assert model._students_steps() == STEPS
