"""A teacher head start inside one tandem run: ``model.codert.teacher_lead_steps``.

Why: on this project's recipe a student distils best from a teacher that already leads. The measured way to get one
was two runs (the teacher architecture alone for a quarter of the steps, ``conf/codert_small_teacher.yaml``, then
tandem from its export: system 4q of ``benchmarks/paper_table.py``). This mixin makes the same schedule one run:

- steps ``[0, N)``, the lead: the teacher side (encoder, the shared prediction network and joint, its aux_ctc head)
  trains alone. No student encoder runs, so no student parameter has a gradient and AdamW leaves it untouched
  (decoupled weight decay included: AdamW skips parameters without a gradient). Every parameter group learns at the
  teacher encoder's rate, as the teacher-alone run of the two-run recipe does, under a schedule of its own over the N
  steps (warm-up and cosine of ``model.optim.sched``).
- at step N, the hand-over: the optimiser's moments are cleared and the schedule starts again, warm-up included, over
  the students' ``trainer.max_steps`` steps with each group at its own rate, as the tandem run of the two-run
  recipe starts them fresh. From there on it is a tandem run; KD's warm-up (``kd_warmup_steps``) counts from N.

``trainer.max_steps`` stays the students' steps in every mode, so that one config trains CoDERT and its
``student_only`` baseline for the same student budget: the lead makes the fit N steps longer (``setup`` sets the
trainer's step limit to the students' steps + N at each fit, before NeMo builds the schedules). ``conf/codert_small.yaml`` ships
``teacher_lead_steps: 450`` with ``trainer.max_steps: 1800``: a run of 2250 steps, 1800 of them the students'.
Where no teacher learns from scratch beside the students, ``parse_codert_config`` skips the lead (logged); so does a
``trainer.fast_dev_run``, whose few batches would otherwise never run a student.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from nemo.core.optim.lr_scheduler import prepare_lr_scheduler
from nemo.utils import logging

__all__ = ["TeacherLeadMixin"]


class TeacherLeadMixin:
    """Put it before ``KdGateMixin`` and ``PairLossesMixin`` in the bases (so that a KD gate opened during the lead,
    where the untrained student trails any teacher, still starts KD at the hand-over). It overrides
    ``students_learn_now`` (whether this training step runs the students, read by ``PairLossesMixin.codert_losses``),
    ``kd_start_step`` (not before the hand-over), ``setup`` (the fit is the lead longer than ``trainer.max_steps``; a
    run without a step limit is refused), ``setup_optimization`` (the two schedules; a lead without ``optim.sched``
    is refused), ``on_train_batch_start`` (the hand-over) and ``on_fit_start`` (DDP that does not allow unused
    parameters is refused). The host provides ``codert``
    (``teacher_lead_steps``), ``encoder`` (the teacher's) and NeMo's ``_optimizer``/``_scheduler``/``_trainer``."""

    @property
    def teacher_lead_steps(self) -> int:
        trainer = getattr(self, "_trainer", None)
        # A fast_dev_run is a smoke test of the whole step: with the lead its few batches would be the teacher's alone.
        if trainer is not None and trainer.fast_dev_run:
            return 0
        return self.codert.teacher_lead_steps

    def _global_step(self) -> Optional[int]:
        trainer = getattr(self, "_trainer", None)
        return None if trainer is None else int(trainer.global_step)

    def students_learn_now(self) -> bool:
        step = self._global_step()
        leading = self.training and step is not None and step < self.teacher_lead_steps
        return super().students_learn_now() and not leading

    def kd_start_step(self) -> Optional[int]:
        start = super().kd_start_step()
        return None if start is None else max(start, self.teacher_lead_steps)

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        lead, students = self.teacher_lead_steps, self._students_steps()
        if self.codert.teacher_lead_steps and not lead:
            logging.info(
                f"CoDERT: trainer.fast_dev_run: the teacher lead ({self.codert.teacher_lead_steps} steps) is skipped, "
                "so that its batches run the students too"
            )
        if lead and (students is None or students < 1):
            raise ValueError(
                f"model.codert.teacher_lead_steps: {lead} needs trainer.max_steps (the students' steps; got "
                f"{students}): the schedule restarts at the hand-over over those steps"
            )
        if students is None:
            return
        # Lightning has no public setter for the step limit; its epoch loop holds it as a plain attribute, read at
        # every step. Set here, before configure_optimizers, so that NeMo's schedules see the whole run; from the
        # students' steps each time, so that a second fit on the same trainer (any model, any lead) is not extended
        # twice.
        loop = self.trainer.fit_loop.epoch_loop
        loop.max_steps = students + lead
        loop._codert_teacher_lead = lead
        if lead:
            logging.info(f"CoDERT: the teacher leads alone for {lead} steps, then {students} students' steps")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        lead = self.teacher_lead_steps
        strategy = self.trainer.strategy
        # During the lead the students' parameters get no gradient; torch's DDP waits for every parameter's gradient
        # unless told some may be unused, and fails at the second step ("Expected to have finished reduction").
        if lead and isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            raise ValueError(
                f"model.codert.teacher_lead_steps: {lead}: under DDP the students' parameters have no gradient "
                "during the lead, which DDP refuses unless it looks for unused parameters: "
                "trainer.strategy=ddp_find_unused_parameters_true"
            )

    def _students_steps(self) -> Optional[int]:
        """``trainer.max_steps`` as configured (the students' steps), whether or not ``setup`` has extended it."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return None
        loop = trainer.fit_loop.epoch_loop
        return loop.max_steps - (getattr(loop, "_codert_teacher_lead", None) or 0)

    def setup_optimization(
        self, optim_config: Optional[Union[DictConfig, Dict]] = None, optim_kwargs: Optional[Dict[str, Any]] = None
    ) -> Tuple[Any, Any]:
        super().setup_optimization(optim_config, optim_kwargs)
        lead = self.teacher_lead_steps
        if lead and (self._cfg.get("optim") or {}).get("sched") is None:
            # Without a schedule no group's rate could change at the hand-over: the lead would not be what it says.
            raise ValueError(
                f"model.codert.teacher_lead_steps: {lead} needs model.optim.sched (the lead and the steps after it "
                "each run NeMo's schedule of it)"
            )
        students = self._students_steps()
        if not lead or self._scheduler is None or students is None or students < 1:
            return self._optimizer, self._scheduler  # NeMo's (setup refuses a fit without a step limit)
        sched = OmegaConf.to_container(self._cfg.optim.sched, resolve=True)
        phases = []
        for steps in (lead, students):
            phases.append(prepare_lr_scheduler(self._optimizer, dict(sched, max_steps=steps), self._train_dl))
        lead_sched, tandem = phases[0]["scheduler"], phases[1]
        # The lead: every group at the teacher encoder's rate (each group's ``initial_lr``, what a group was built
        # with; the teacher's is lr x teacher_lr_scale, or its optim_param_groups entry).
        teacher = {id(p) for p in self.encoder.parameters()}
        groups = self._optimizer.param_groups
        teacher_lr = next(g["initial_lr"] for g in groups if any(id(p) in teacher for p in g["params"]))
        lead_sched.base_lrs = [teacher_lr] * len(groups)
        # torch's own sequence of schedulers; at the milestone it sets the second back to its start.
        sequence = torch.optim.lr_scheduler.SequentialLR(
            self._optimizer, [lead_sched, tandem["scheduler"]], milestones=[lead]
        )
        self._scheduler = dict(tandem, scheduler=sequence)
        return self._optimizer, self._scheduler

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        result = super().on_train_batch_start(batch, batch_idx)
        lead = self.teacher_lead_steps
        # The hand-over: Adam's moments start afresh (they would in a second run). Within one accumulated step this
        # hook runs again at the same global step and finds them cleared already: moments are made at optimiser steps.
        optimizers = self.trainer.optimizers
        if lead and self._global_step() == lead and any(optimizer.state for optimizer in optimizers):
            for optimizer in optimizers:
                optimizer.state.clear()
            logging.info(f"CoDERT: the teacher led for {lead} steps; the students start now")
        return result
