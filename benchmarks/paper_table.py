"""The CoDERT paper's comparison on this machine: baseline student, teacher, and the CoDERT variants, several seeds.

    python benchmarks/paper_table.py            # the full table (the budget: <= 2 h on 2 CPU cores)
    python benchmarks/paper_table.py --quick    # a smoke version of the same pipeline (<= 10 min)

Pipeline (every stage reuses what an earlier, interrupted run finished: rerun the same command to continue):

1. Corpus: the offline eSpeak NG synthesiser (``nemo_codert.data.synth``) with reverberation and additive noise
   (``nemo_codert.data.augment``); many voice variants, random rate and pitch; the test split's voices *and*
   sentences are unseen in training.
2. Training: every system below, every seed, the same data, steps, optimiser and schedule (``conf/<config>.yaml``:
   AdamW, cosine, the default batch), in its own process, ``--jobs`` at a time (each with cores/jobs torch threads).
   The student of every system is exported as a stock NeMo ``.nemo`` (``nemo_codert.export.export_side``).
3. Cost: each system's training step is timed alone (all cores, nothing else running), median of
   ``--time-steps`` steps after 3 warm-up steps; peak memory is the process's peak resident set (VmHWM, reset when
   training starts) and its growth over the resident set at that moment (activations, gradients, optimiser state).
4. Evaluation: each exported student (the deployable model) transcribes the test split with stock NeMo: WER,
   parameters, CPU real-time factor (``nemo_codert.evaluation``). Teachers trained in tandem are scored too.
5. Report: ``<results-dir>/paper_table.md`` (table, command, machine, date, commit), ``paper_table.json`` (every
   number of every run) and ``paper_table.png`` (test WER per system; dev WER over training for 1 and 4).

Systems (``SYSTEMS``): 1 student_only, 2 teacher_only (the teacher architecture trained alone), 3 tandem with
lambda=0 (implicit distillation through the shared prediction network and joint only), 4 CoDERT as ``codert_small``
ships it (the teacher side alone for a quarter of the steps, then tandem + encoder-logit KD), 5 static_teacher (KD
from system 2's model of the same seed, frozen), 6 CoDERT with separate decoders; 7 and 8 are 4 and 5 with the
lattice KD of Panchapagesan et al. 2021 (``model.codert.kd_target: joint_lattice``) in place of the encoder logits,
CoDERT's choice of what to distil measured against the other; 3, 6 and 7 lead as 4 does, and 4s
(``codert_scratch``, the recipe until ab33403; run when named) is 4 without the lead, tandem from scratch. 9 is 5 with the
teacher's encoder logits cached once (top 8 per frame) and no teacher in training (``model.codert.mode:
offline_teacher``; 9b and 9c keep 4 and 16, and run only when named, as ``benchmarks/offline_teacher.py`` does).
4b and 5c are 4s and 5 with the teacher's KD logits made from the clean features (``model.codert.kd_teacher_input:
clean``), as 9's cache is, and 5d is 5 with the student's own prediction network and joint, as 9 has: which of 9's
differences it gains by; they too run only when named. Most other named screens (their labels say "4 ..." from
before the lead shipped) vary 4s, tandem from scratch.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from common import REPO, compose, git_commit, machine_description, typed_command  # benchmarks/common.py

#: Modes whose student learns from a frozen teacher's exported model (the teacher_nemo of their spec); a tandem
#: system with ``warm_teacher`` needs that file too, as its teacher's start.
_TEACHER_FILE_MODES = ("static_teacher", "offline_teacher")


@dataclass(frozen=True)
class System:
    name: str
    label: str
    mode: str  # model.codert.mode
    # lambda; None: the config's own (the shipped default, chosen by benchmarks/kd_sweep.py). The CoDERT systems
    # follow the config: a table at a fixed lambda of its own measured another recipe than the one users get.
    kd_weight: Optional[float] = None
    share_decoder: bool = True
    teacher_sized: bool = False  # student_only with the teacher's encoder: the teacher trained alone
    curve: bool = False  # validate during training (dev WER over steps is plotted for these)
    kd_target: str = "encoder_logits"  # model.codert.kd_target: CoDERT's encoder logits, or the lattice (7, 8)
    cache_k: Optional[int] = None  # offline_teacher: logits per frame in the teacher cache
    kd_teacher_input: str = "augmented"  # model.codert.kd_teacher_input: the teacher's KD logits from clean input?
    # model.student_encoders: name -> changes to the config's student encoder, the primary student first; None: the
    # config's one student_encoder. Every student is exported and scored (benchmarks/multi_student.py).
    students: Optional[Dict[str, Dict[str, Any]]] = None
    # Any other change of this system's config, dotted KEY=VALUE (YAML value), applied before the fields above.
    overrides: Tuple[str, ...] = ()
    in_full_table: bool = True  # False: trained only when --systems names it
    # tandem only: the teacher starts from the model system 5's would be (system 2's, or the one trained to its own
    # budget) and trains on beside the student: a warm start (model.codert.teacher_nemo in mode tandem).
    warm_teacher: bool = False
    # With warm_teacher: the teacher starts from system 2 of the same seed even where the table trains a teacher to
    # its own budget (--static-teacher-steps) for 5: a two-phase CoDERT, teacher alone then tandem, same budget each.
    same_budget_teacher: bool = False
    # With warm_teacher: > 0 starts the teacher from system 2's config trained alone (same seed, a schedule of its
    # own) for this share of the table's steps instead: a short head start, then tandem for the table's steps.
    teacher_head_start: float = 0.0
    # tandem: > 0 makes the head start part of the one run (model.codert.teacher_lead_steps): the teacher side alone
    # for this share of the table's steps, then tandem for the table's steps (the run is the sum).
    teacher_lead: float = 0.0

    def __post_init__(self) -> None:
        # The fields' pairings: a system that broke one would train something other than its label says, silently
        # (plan_jobs reads same_budget_teacher and teacher_head_start only for a warm tandem teacher).
        if self.warm_teacher and self.mode != "tandem":
            raise ValueError(f"System {self.name}: warm_teacher is a tandem run's, not mode {self.mode!r}'s")
        if (self.same_budget_teacher or self.teacher_head_start) and not self.warm_teacher:
            raise ValueError(f"System {self.name}: same_budget_teacher and teacher_head_start need warm_teacher")
        for name in ("teacher_head_start", "teacher_lead"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"System {self.name}: {name} {getattr(self, name)} is not in [0, 1)")
        if self.teacher_lead and (self.mode != "tandem" or self.warm_teacher):
            raise ValueError(
                f"System {self.name}: teacher_lead is a tandem run's own head start, not a warm teacher's"
            )

    def lead_steps(self, table_steps: int) -> int:
        """The run's teacher lead (model.codert.teacher_lead_steps) in a table of ``table_steps`` students' steps."""
        return round(table_steps * self.teacher_lead)

    @property
    def learns_from_teacher_file(self) -> bool:
        """Whether the run needs a teacher .nemo (its spec's teacher_nemo): frozen, cached, or a warm start."""
        return self.mode in _TEACHER_FILE_MODES or self.warm_teacher

    @property
    def takes_own_budget_teacher(self) -> bool:
        """Whether, in a table that trains a teacher to its own budget (--static-teacher-steps), the run learns from
        that teacher rather than from system 2 of its seed (or from a head start of its own)."""
        return self.learns_from_teacher_file and not (self.same_budget_teacher or self.teacher_head_start)


def at_lambdas(template: System, lambdas: Sequence[Tuple[str, float]]) -> Tuple[System, ...]:
    """A lambda screen of ``template``: one system per (name suffix, lambda), its label naming the lambda; trained
    only when a table names it."""
    return tuple(
        replace(
            template,
            name=template.name + tag,
            label=f"{template.label}, lambda={lam:g}",
            kd_weight=lam,
            in_full_table=False,
        )
        for tag, lam in lambdas
    )


#: The middle rung of the ladder: codert_small's student encoder at width 104 (about twice its parameters; the
#: teacher, width 144, has about twice the medium's).
MEDIUM_STUDENT = {"d_model": 104, "subsampling_conv_channels": 104}

#: The deeper teacher of systems 2d and 4d: one change, shared, so that the pair stays one teacher.
FOUR_LAYER_TEACHER = ("model.encoder.n_layers=4",)


def speed_perturbation(num_rates: int) -> Tuple[str, ...]:
    """NeMo's speed augmentor on the training set: every utterance resampled by a rate in [0.9, 1.1], drawn from
    ``num_rates`` evenly spaced rates (-1: any rate, which costs ~7x the resampling time: arbitrary lengths)."""
    return tuple(
        f"model.train_ds.augmentor.speed.{key}={value}"
        for key, value in (
            ("prob", 1.0),
            ("sr", 16000),
            ("resample_type", "fft"),
            ("min_speed_rate", 0.9),
            ("max_speed_rate", 1.1),
            ("num_rates", num_rates),
        )
    )


#: Any rate in [0.9, 1.1] (systems 1v, 2v, 4v).
SPEED_PERTURBATION = speed_perturbation(-1)
#: The discrete rates 0.9, 0.95, 1.0, 1.05, 1.1 (4.4 ms per utterance against 30 ms for any rate).
SPEED_PERTURBATION_5_RATES = speed_perturbation(5)

#: A NeMo Conformer encoder's dropout keys (its layers, its pre-encoder, its attention).
ENCODER_DROPOUTS = ("dropout", "dropout_pre_encoder", "dropout_att")

#: Every dropout of the student's transducer off (encoder, prediction network, joint).
NO_DROPOUT = tuple(
    f"model.{key}=0.0"
    for key in (
        *(f"student_encoder.{k}" for k in ENCODER_DROPOUTS),
        "decoder.prednet.dropout",
        "joint.jointnet.dropout",
    )
)

#: Spec-augment off and every dropout off but the teacher encoder's.
STUDENT_UNREGULARISED = ("model.spec_augment=null", *NO_DROPOUT)

#: No regularisation at all: spec-augment and every dropout of both encoders, prediction network and joint off.
NO_REGULARISATION = (*STUDENT_UNREGULARISED, *(f"model.encoder.{key}=0.0" for key in ENCODER_DROPOUTS))

#: The teacher encoder's dropouts at 0.1 again, the rest of the shipped (unregularised) recipe unchanged.
TEACHER_DROPOUT = tuple(f"model.encoder.{key}=0.1" for key in ENCODER_DROPOUTS)

#: The teacher lead of the shipped recipe as a share of the students' steps: codert_small's teacher_lead_steps 450
#: of its 1800 (tests/test_configs.py checks that its model and trainer are system 4's). System 4 is CoDERT as it
#: ships, and the systems that are 4 with one change (3, 6, 7, 4z) lead as it does; 4s is tandem from scratch.
SHIPPED_LEAD = 0.25

#: What CoDERT's choice of KD target buys, in tandem: system 4 distilled through the lattice instead (Panchapagesan et
#: al. 2021: collapsed joint posteriors at every T x (U+1) node), same lambda; its lambda screen below.
CODERT_LATTICE = System(
    "codert_lattice", "7 tandem + lattice KD", "tandem", kd_target="joint_lattice", teacher_lead=SHIPPED_LEAD
)

SYSTEMS: Sequence[System] = (
    System("student_only", "1 student alone (baseline)", "student_only", kd_weight=0.0, curve=True),
    System("teacher_only", "2 teacher alone", "student_only", kd_weight=0.0, teacher_sized=True),
    System(
        "tandem_implicit", "3 tandem, lambda=0 (implicit only)", "tandem", kd_weight=0.0, teacher_lead=SHIPPED_LEAD
    ),
    System(
        "codert",
        "4 CoDERT as shipped: the teacher side alone for a quarter of the steps, then tandem + encoder KD",
        "tandem",
        curve=True,
        teacher_lead=SHIPPED_LEAD,
    ),
    # The recipe until ab33403 (and this table's system 4 until then): no lead, both sides from the first step.
    System(
        "codert_scratch",
        "4s CoDERT from scratch: tandem + encoder KD, no teacher lead",
        "tandem",
        curve=True,
        in_full_table=False,
    ),
    System("static_teacher", "5 static teacher (2) + encoder KD", "static_teacher"),
    # 5's control: the same frozen teacher (its trained prediction network and joint serve the student) without KD,
    # so that 5 - 5b is what the KD term itself buys.
    System("static_teacher_kd0", "5b static teacher (2), lambda=0", "static_teacher", kd_weight=0.0),
    System(
        "codert_own_decoder",
        "6 CoDERT, separate decoders",
        "tandem",
        share_decoder=False,
        curve=True,
        teacher_lead=SHIPPED_LEAD,
    ),
    # Two tries at a tandem teacher that leads by more: 6 at the lambda that made the static teacher's student with
    # its own decoder and joint best (5d, lambda=0.3), and 4 with the teacher encoder at the full learning rate.
    System(
        "codert_own_decoder_l03",
        "6 CoDERT, separate decoders, lambda=0.3",
        "tandem",
        kd_weight=0.3,
        share_decoder=False,
        curve=True,
        in_full_table=False,
    ),
    # Tandem from a trained teacher (model.codert.teacher_nemo in mode tandem): the teacher starts as 5's (2, or the
    # teacher trained to its own budget) and trains on beside the student, sharing its prediction network and joint
    # (4h) or with the student's own (6h, the shape of 5d): does a teacher that keeps learning pass on more than a
    # frozen one?
    System(
        "codert_warm", "4h CoDERT, teacher warm-started", "tandem", curve=True, warm_teacher=True, in_full_table=False
    ),
    System(
        "codert_warm_own_decoder",
        "6h CoDERT, teacher warm-started, separate decoders",
        "tandem",
        share_decoder=False,
        curve=True,
        warm_teacher=True,
        in_full_table=False,
    ),
    # CoDERT in two phases: the teacher alone for the table's steps (system 2, same seed), then tandem from it for as
    # many (4h's recipe): the student's budget stays the baseline's, the teacher's is doubled.
    System(
        "codert_two_phase",
        "4p CoDERT in two phases: 2, then tandem from it",
        "tandem",
        curve=True,
        warm_teacher=True,
        same_budget_teacher=True,
        in_full_table=False,
    ),
    # The same with a short phase 1: the teacher alone for a quarter of the table's steps (1800: 450 steps, a teacher
    # far from trained), then tandem for the table's steps: level with 4p at a quarter of its phase 1
    # (benchmarks/results/head_start_3seeds/).
    System(
        "codert_head_start",
        "4q CoDERT after a teacher head start: 2 for a quarter of the steps, then tandem",
        "tandem",
        curve=True,
        warm_teacher=True,
        teacher_head_start=0.25,
        in_full_table=False,
    ),
    # The teacher encoder's learning rate: the full rate (lr1) trails; below the shipped half rate (lr035, lr025), as
    # a wider encoder often wants a smaller step, it trails too (benchmarks/results/teacher_lr_screen/).
    *(
        System(
            f"codert_teacher_lr{tag}",
            f"4 CoDERT, teacher encoder at lr x {scale:g}",
            "tandem",
            curve=True,
            overrides=(f"model.codert.teacher_lr_scale={scale}",),
            in_full_table=False,
        )
        for tag, scale in (("1", 1.0), ("035", 0.35), ("025", 0.25))
    ),
    # 4 with lambda ramped up from 0 over the first 300 steps, KD held back while both encoders still guess: a dev
    # lead in one seed (benchmarks/results/kd_schedule_screen/) that three seeds did not keep (kd_warmup_3seeds/).
    System(
        "codert_warmup300",
        "4w CoDERT, lambda warm-up 300 steps",
        "tandem",
        curve=True,
        overrides=("model.codert.kd_warmup_steps=300",),
        in_full_table=False,
    ),
    # A teacher with more capacity, the lever for a larger lead (the 3-layer teacher leads the student alone by only
    # 0.94 x at 3000 steps): one more Conformer layer, alone (2d) and in tandem (4d). It learns slower within the
    # CPU budget, as before the aux CTC heads (commit 5172ede): benchmarks/results/deeper_teacher_screen/.
    System(
        "teacher_only_4l",
        "2d teacher alone, 4 layers",
        "student_only",
        kd_weight=0.0,
        teacher_sized=True,
        overrides=FOUR_LAYER_TEACHER,
        in_full_table=False,
    ),
    System(
        "codert_teacher4l",
        "4d CoDERT, 4-layer teacher",
        "tandem",
        curve=True,
        overrides=FOUR_LAYER_TEACHER,
        in_full_table=False,
    ),
    # What CoDERT's choice of KD target buys: the same teachers (4's tandem, 5's static), distilled through the
    # lattice instead, same lambda.
    CODERT_LATTICE,
    # 7 at smaller lambdas: at 4's lambda the lattice term is the stronger one (~U+1 nodes per encoder frame); in the
    # static recipe it fared best at 0.03 (benchmarks/results/lattice_kd_lambda/).
    *at_lambdas(CODERT_LATTICE, (("_l003", 0.03), ("_l001", 0.01))),
    System("static_teacher_lattice", "8 static teacher (2) + lattice KD", "static_teacher", kd_target="joint_lattice"),
    # 8 in the shipped static recipe (conf/codert_small_static.yaml: the student's own decoder and joint, lambda 0.3),
    # against 5d at that lambda (static_teacher_own_decoder_l03): the KD target compared where the static mode is best.
    # 8d's lambda from a dev sweep: the lattice KL sums over ~U+1 times as many nodes as the encoder-logit KL has
    # frames, so 5d's lambda is a far stronger term there.
    *at_lambdas(
        System(
            "static_teacher_lattice_own_decoder",
            "8d static teacher (2) + lattice KD, own decoder and joint",
            "static_teacher",
            share_decoder=False,
            kd_target="joint_lattice",
            curve=True,
        ),
        (("", 0.3), ("_l01", 0.1), ("_l003", 0.03), ("_l001", 0.01)),
    ),
    # 5 without the teacher in training: its encoder logits cached once per training utterance (top-k, float16).
    System("offline_teacher", "9 offline teacher (2), cached top-8 logits", "offline_teacher", cache_k=8),
    System("offline_teacher_k4", "9b offline teacher (2), top-4", "offline_teacher", cache_k=4, in_full_table=False),
    System(
        "offline_teacher_k16", "9c offline teacher (2), top-16", "offline_teacher", cache_k=16, in_full_table=False
    ),
    # 9's targets without 9's other differences: 4 and 5 with the teacher's KD logits from the clean features.
    System(
        "codert_clean",
        "4b CoDERT, clean KD targets",
        "tandem",
        curve=True,
        kd_teacher_input="clean",
        in_full_table=False,
    ),
    # 9's other difference: the student's own prediction network and joint, learnt from scratch, the KL training
    # its whole encoder-logit path (nothing shared can collapse); 5 with that and nothing else changed.
    System(
        "static_teacher_own_decoder",
        "5d static teacher (2), the student's own decoder and joint",
        "static_teacher",
        share_decoder=False,
        curve=True,
        in_full_table=False,
    ),
    # 5d's lambda from a dev sweep (5d itself runs at the tandem config's 0.1; the KL now also trains a joint).
    *at_lambdas(
        System(
            "static_teacher_own_decoder",
            "5d static teacher (2), own decoder and joint",
            "static_teacher",
            share_decoder=False,
            curve=True,
        ),
        (("_l03", 0.3), ("_l1", 1.0), ("_l3", 3.0)),
    ),
    # 5 at the lambda conf/codert_small_static.yaml shipped (its own 500-step sweep), against 5d's lambda sweep.
    System(
        "static_teacher_l1",
        "5 static teacher (2), lambda=1",
        "static_teacher",
        kd_weight=1.0,
        curve=True,
        in_full_table=False,
    ),
    # A ladder of students (benchmarks/multi_student.py): 4 with a middle-sized student alone, and 4 with the middle
    # and the small student in one run (the small one primary, so its row compares with 4's).
    System(
        "codert_medium",
        "4m CoDERT, the medium student alone",
        "tandem",
        curve=True,
        students={"medium": MEDIUM_STUDENT},
        in_full_table=False,
    ),
    System(
        "codert_ladder",
        "4l CoDERT, small + medium students in one run",
        "tandem",
        curve=True,
        students={"small": {}, "medium": MEDIUM_STUDENT},
        in_full_table=False,
    ),
    # A streaming student's KD pairing (benchmarks/streaming.py): conf/codert_streaming.yaml ships kd_frame_shift 2
    # (its frame t learns from the full-context teacher's frame t - 2, the future it cannot see being late); this is
    # the pairing one to one, the comparison (the results of c1e4588 have it the other way round: codert_shift2).
    System(
        "codert_shift0",
        "4z CoDERT, kd_frame_shift 0",
        "tandem",
        curve=True,
        overrides=("model.codert.kd_frame_shift=0",),
        teacher_lead=SHIPPED_LEAD,
        in_full_table=False,
    ),
    System(
        "static_teacher_clean",
        "5c static teacher (2), clean KD targets",
        "static_teacher",
        curve=True,
        kd_teacher_input="clean",
        in_full_table=False,
    ),
    # A screen of the recipe's learning speed (issue 10.4): the student alone with one training setting changed.
    # These and the systems below change codert_small as it was before ccf2596 (spec-augment, dropout 0.1); since
    # then it ships 1n/2n/4n's recipe, so on later commits NO_REGULARISATION changes nothing and the screens are
    # reproduced from the commits their READMEs name.
    *(
        System(
            f"student_only_{tag}",
            f"1r student alone, {what}",
            "student_only",
            kd_weight=0.0,
            curve=True,
            overrides=changes,
            in_full_table=False,
        )
        for tag, what, changes in (
            ("lr2e3", "lr 2e-3", ("model.optim.lr=2e-3",)),
            ("lr5e3", "lr 5e-3", ("model.optim.lr=5e-3",)),
            ("nospecaug", "no spec-augment", ("model.spec_augment=null",)),
            ("nodropout", "no dropout", NO_DROPOUT),
        )
    ),
    # The screen's two winners together, on every side (spec-augment off, every dropout off): 1, 2 and 4 again.
    System(
        "student_only_noreg",
        "1n student alone, no spec-augment or dropout",
        "student_only",
        kd_weight=0.0,
        curve=True,
        overrides=NO_REGULARISATION,
        in_full_table=False,
    ),
    System(
        "teacher_only_noreg",
        "2n teacher alone, no spec-augment or dropout",
        "student_only",
        kd_weight=0.0,
        teacher_sized=True,
        overrides=NO_REGULARISATION,
        in_full_table=False,
    ),
    System(
        "codert_noreg",
        "4n CoDERT, no spec-augment or dropout",
        "tandem",
        curve=True,
        overrides=NO_REGULARISATION,
        in_full_table=False,
    ),
    # 2n's teacher alone generalised worse than 1n's student (test 0.569 vs 0.555) and 4n's tandem teacher led by
    # nothing on dev: the 3x wider encoder may need its dropout. 2n and 4n with the teacher encoder's dropout kept.
    System(
        "teacher_only_noreg_td",
        "2t teacher alone, no spec-augment, dropout in its encoder only",
        "student_only",
        kd_weight=0.0,
        teacher_sized=True,
        overrides=STUDENT_UNREGULARISED,
        in_full_table=False,
    ),
    System(
        "codert_noreg_td",
        "4t CoDERT, no spec-augment, dropout in the teacher encoder only",
        "tandem",
        curve=True,
        overrides=STUDENT_UNREGULARISED,
        in_full_table=False,
    ),
    # 4n's lambda, screened on dev (its tandem teacher led by nothing: a weaker or stronger pull).
    *at_lambdas(
        System(
            "codert_noreg", "4n CoDERT, no spec-augment or dropout", "tandem", curve=True, overrides=NO_REGULARISATION
        ),
        (("_l003", 0.03), ("_l03", 0.3)),
    ),
    # In the 1800-step default run (the shipped recipe, nothing regularised) the teacher's dev WER rose after step
    # 1200 (0.371 -> 0.385) while its student's kept falling: the 3x wider encoder overfits the 1 h corpus. Its
    # dropout back, on the shipped recipe (4t above predates it: on later commits it equals codert).
    System(
        "codert_teacher_dropout",
        "4e CoDERT, dropout 0.1 in the teacher encoder",
        "tandem",
        curve=True,
        overrides=TEACHER_DROPOUT,
        in_full_table=False,
    ),
    # Speed perturbation of the training audio (NeMo's own `speed` augmentor, drawn afresh for every utterance of
    # every epoch): resampling by 0.9-1.1 shifts pitch and formants, more voices from the same speakers. Only the
    # test split holds unseen voices (eSpeak variants), and there the students lost most to the teacher (issue 10).
    System(
        "student_only_speed",
        "1v student alone, speed perturbation",
        "student_only",
        kd_weight=0.0,
        curve=True,
        overrides=SPEED_PERTURBATION,
        in_full_table=False,
    ),
    System(
        "teacher_only_speed",
        "2v teacher alone, speed perturbation",
        "student_only",
        kd_weight=0.0,
        teacher_sized=True,
        overrides=SPEED_PERTURBATION,
        in_full_table=False,
    ),
    System(
        "codert_speed",
        "4v CoDERT, speed perturbation",
        "tandem",
        curve=True,
        overrides=SPEED_PERTURBATION,
        in_full_table=False,
    ),
    # The same with five discrete rates: the default run fits its 15 minutes with them (13.0 min), not with any rate.
    # codert_small ships them since 71951ee, so from there on 1w and 4w train what 1 and 4 train (under other names).
    System(
        "student_only_speed5",
        "1w student alone, speed perturbation at 5 rates",
        "student_only",
        kd_weight=0.0,
        curve=True,
        overrides=SPEED_PERTURBATION_5_RATES,
        in_full_table=False,
    ),
    System(
        "codert_speed5",
        "4w CoDERT, speed perturbation at 5 rates",
        "tandem",
        curve=True,
        overrides=SPEED_PERTURBATION_5_RATES,
        in_full_table=False,
    ),
    # With speed perturbation the tandem teacher leads (dev 0.38 vs its student's 0.42, 3 seeds) but the CoDERT student
    # no longer beats the student alone at lambda 0.3 (speed_perturbation_3seeds/): is the pull too weak for a
    # teacher that leads? The lambda screen without it rose to its top value, 0.3.
    *at_lambdas(
        System("codert_speed", "4v CoDERT, speed perturbation", "tandem", curve=True, overrides=SPEED_PERTURBATION),
        (("_l1", 1.0), ("_l3", 3.0)),
    ),
)
BY_NAME = {s.name: s for s in SYSTEMS}


@dataclass(frozen=True)
class Settings:
    hours: float
    dev_hours: float
    test_hours: float
    steps: int
    seeds: List[int]
    val_every: int
    time_steps: int
    jobs: int
    reverb_prob: float = 0.5
    noise_prob: float = 0.8
    config: str = "codert_small"
    overrides: List[str] = field(default_factory=list)  # extra dotted config keys, KEY=VALUE (YAML value)
    single_seed: List[str] = field(default_factory=list)  # systems trained with the first seed only (budget)
    accelerator: str = "cpu"  # Lightning accelerator of the training runs (gpu: one device each)
    # System 5's teacher: None = system 2 of the same seed (same budget); N = one teacher-sized model trained alone
    # for N steps (first seed), the static teacher of every seed: a teacher with a budget of its own.
    static_teacher_steps: Optional[int] = None
    # The systems this table trains (empty: all of SYSTEMS); a budget choice, e.g. the GPU table's 1, 2 and 4.
    systems: List[str] = field(default_factory=list)

    def chosen_systems(self) -> List[System]:
        return [x for x in SYSTEMS if x.name in self.systems or (not self.systems and x.in_full_table)]

    def seeds_of(self, system: str) -> List[int]:
        return self.seeds[:1] if system in self.single_seed else self.seeds


PRESETS = {
    # Sized for <= 2 h on 2 CPU cores: 18 runs of the two-encoder systems dominate (~5.5 s per step of all runs).
    "full": Settings(
        hours=2.0, dev_hours=0.1, test_hours=0.2, steps=700, seeds=[0, 1, 2], val_every=100, time_steps=20, jobs=2
    ),
    "quick": Settings(
        hours=0.15, dev_hours=0.03, test_hours=0.05, steps=40, seeds=[0, 1, 2], val_every=20, time_steps=5, jobs=2
    ),
}


# ------------------------------------------------------------------------------------------ configuration


def system_config(
    settings: Settings,
    system: System,
    seed: int,
    corpus_dir: Path,
    teacher_nemo: Optional[Path],
    extra: Sequence[str] = (),
):
    """The full hydra-style config (model + trainer) of one system and seed: the base config plus what differs.

    ``extra`` (KEY=VALUE) is applied last, over the system's own fields: a sweep varies a system this way."""
    from omegaconf import OmegaConf, open_dict

    from nemo_codert.models.mixins.offline_teacher import RETIMING_AUGMENTATIONS

    cfg = compose(settings.config)  # hydra's composition: a config may build on another (its defaults list)
    cfg.pop("seed", None)  # the script's seed: a worker seeds itself with the run's seed (the key holds that one)
    # A table's system leads only if it says so (System.teacher_lead, a share of the table's steps: the config's 450
    # would be all of a short table's run); set before the overrides, so that --set model.codert.teacher_lead_steps=N
    # still applies to the systems that do not lead.
    cfg.model.codert.teacher_lead_steps = 0
    # The table's changes (--set), then the system's own; values parsed as YAML.
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([*settings.overrides, *system.overrides]))
    with open_dict(cfg):
        cfg.data.dir = str(corpus_dir)
        cfg.model.train_ds.seed = seed
        cfg.trainer.max_steps = settings.steps
        cfg.trainer.val_check_interval = settings.val_every  # what the worker's trainer runs (and the key holds)
        c = cfg.model.codert
        if system.teacher_lead:  # the run is the lead longer than trainer.max_steps, the table's student steps
            c.teacher_lead_steps = system.lead_steps(settings.steps)
        c.mode = system.mode
        if system.kd_weight is not None:
            c.kd_weight = system.kd_weight
        c.share_decoder = system.share_decoder
        c.kd_target = system.kd_target
        c.kd_teacher_input = system.kd_teacher_input
        c.teacher_nemo = str(teacher_nemo) if teacher_nemo else None
        augmentor = cfg.model.train_ds.get("augmentor")
        if system.mode == "offline_teacher" and augmentor:
            # The cache holds the frames of the audio on disk: the base recipe's retiming augmentor goes (the mode
            # refuses one); what the student sees then differs from the other systems' by that too.
            for key in RETIMING_AUGMENTATIONS:
                augmentor.pop(key, None)
        if system.students is not None:
            base = cfg.model.student_encoder
            cfg.model.student_encoders = {n: OmegaConf.merge(base, delta) for n, delta in system.students.items()}
        if system.teacher_sized:
            # The teacher architecture trained alone, at the teacher's learning rate.
            cfg.model.student_encoder = cfg.model.encoder
            cfg.model.optim.lr = cfg.model.optim.lr * cfg.model.codert.get("teacher_lr_scale", 1.0)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(extra)))
    OmegaConf.resolve(cfg)
    return cfg


# Which seeds and systems a table holds changes no run: a run is reused by every table that differs from its own only
# in these (a table over fewer systems, a second batch of seeds).
TABLE_FIELDS = ("seeds", "single_seed", "systems")


def config_digest(cfg) -> str:
    """A short hash of a resolved training config: equal digests, equal training inputs."""
    from omegaconf import OmegaConf

    return hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:16]


def _spec_key(spec: Dict[str, Any]) -> str:
    """The reuse key of a run: everything its spec says it depends on."""
    settings = {k: v for k, v in spec.get("settings", {}).items() if k not in TABLE_FIELDS}
    return hashlib.sha256(json.dumps({**spec, "settings": settings}, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ worker (one process)


def _rss_bytes(field_name: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _sync(module) -> None:
    import torch

    if next(module.parameters()).is_cuda:
        torch.cuda.synchronize()


class _Recorder:
    """Lightning callback: per-step wall time, dev WER at each validation, memory from the start of training."""

    def __init__(self) -> None:
        self.step_seconds: List[float] = []
        self.dev_wer: List[Dict[str, float]] = []
        self.rss_at_start: Optional[int] = None
        self._t0 = 0.0

    def hooks(self):
        import lightning.pytorch as pl

        recorder = self

        class Callback(pl.Callback):
            def on_train_start(self, trainer, pl_module):
                # Reset the kernel's peak-RSS mark (VmHWM) so the peak is that of training, not of model building.
                try:
                    Path("/proc/self/clear_refs").write_text("5")
                except OSError:
                    pass
                recorder.rss_at_start = _rss_bytes("VmRSS")

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                _sync(pl_module)
                recorder._t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                _sync(pl_module)  # on a GPU the step is done when its kernels are, not when Python returns
                recorder.step_seconds.append(time.perf_counter() - recorder._t0)

            def on_validation_end(self, trainer, pl_module):
                metrics = trainer.callback_metrics
                point = {"step": int(trainer.global_step), "student": float(metrics["val_wer"])}
                if "val_wer_teacher" in metrics:
                    point["teacher"] = float(metrics["val_wer_teacher"])
                for name in pl_module.extra_students:  # a ladder's primary student is "student", as above
                    point[f"student:{name}"] = float(metrics[f"val_wer_{name}"])
                recorder.dev_wer.append(point)

        return Callback()


def teacher_cache(teacher: Path, corpus_dir: Path, k: int, root: Path, teacher_key: str = "") -> Dict[str, Any]:
    """System 9's cache of ``teacher`` over the corpus's training manifest (built once per teacher and k, by
    ``nemo_codert.data.teacher_cache``; a finished one is reused): its directory, size and build time. The
    directory names the teacher run's key too: a teacher trained again with other settings gets a cache of its own."""
    from nemo_codert.data.manifest import read_manifest
    from nemo_codert.data.teacher_cache import write_teacher_cache
    from nemo_codert.models.loading import load_transducer
    from nemo_codert.utils import write_json_atomic

    directory = root / (f"{teacher.parent.name}-k{k}" + (f"-{teacher_key[:8]}" if teacher_key else ""))
    timing = directory.with_name(directory.name + ".build.json")
    if not timing.is_file():
        started = time.time()
        write_teacher_cache(load_transducer(teacher)[0], corpus_dir / "train_manifest.json", directory, k=k)
        write_json_atomic({"seconds": time.time() - started}, timing)
    hours = sum(e["duration"] for e in read_manifest(corpus_dir / "train_manifest.json")) / 3600
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {
        "dir": str(directory),
        "k": k,
        "bytes": size,
        "audio_hours": hours,
        "bytes_per_hour": size / hours,
        "build_seconds": json.loads(timing.read_text())["seconds"],
    }


def job_config(spec: Dict[str, Any]):
    """The training config of one job: its system's config, and for the cost pass (a few timed steps) no teacher
    lead, since the lead (the teacher alone) would be most of those steps, or all of them (then refused)."""
    from omegaconf import open_dict

    teacher = Path(spec["teacher_nemo"]) if spec.get("teacher_nemo") else None
    settings, system = Settings(**spec["settings"]), BY_NAME[spec["system"]]
    cfg = system_config(settings, system, spec["seed"], Path(spec["corpus_dir"]), teacher, spec.get("overrides", ()))
    if spec["kind"] == "time":
        with open_dict(cfg):
            cfg.model.codert.teacher_lead_steps = 0
    return cfg


def run_worker(spec_path: Path) -> None:
    """Train (or time) one system for one seed, as ``spec_path`` describes; the result JSON is written last."""
    import lightning.pytorch as pl
    import torch
    from omegaconf import open_dict

    from nemo_codert.export import export_side
    from nemo_codert.models import CodertRNNTBPEModel
    from nemo_codert.utils import flush_denormals, quiet_trainer, write_json_atomic

    flush_denormals()  # before any parallel op, as the training script does (its docstring says why)
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    settings = Settings(**spec["settings"])
    system = BY_NAME[spec["system"]]
    run_dir = Path(spec["run_dir"])
    teacher = Path(spec["teacher_nemo"]) if spec.get("teacher_nemo") else None
    cfg = job_config(spec)
    timing = spec["kind"] == "time"
    cache = None
    if system.mode == "offline_teacher":
        cache = teacher_cache(
            teacher,
            Path(spec["corpus_dir"]),
            system.cache_k,
            run_dir.parent.parent / "teacher_cache",
            spec.get("teacher_key", ""),
        )
        with open_dict(cfg):
            cfg.model.codert.teacher_cache = cache["dir"]

    pl.seed_everything(spec["seed"], workers=True)
    recorder = _Recorder()
    validate = (system.curve or spec.get("curve", False)) and not timing  # a sweep asks for every point's curve
    trainer = quiet_trainer(
        accelerator=settings.accelerator,
        max_steps=3 + settings.time_steps if timing else cfg.trainer.max_steps,
        val_check_interval=settings.val_every if validate else None,
        check_val_every_n_epoch=None if validate else 1,
        limit_val_batches=1.0 if validate else 0,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        callbacks=[recorder.hooks()],
    )
    model = CodertRNNTBPEModel(cfg=cfg.model, trainer=trainer)
    started = time.time()
    trainer.fit(model)
    result: Dict[str, Any] = {
        "spec": spec,
        "commit": git_commit(),  # runs are reused across commits (the key has no code version): the report lists these
        "train_seconds": time.time() - started,
        "steps": int(trainer.global_step),
        "step_seconds": recorder.step_seconds,
        "dev_wer": recorder.dev_wer,
        "peak_rss": _rss_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_at_train_start": recorder.rss_at_start,
        "threads": torch.get_num_threads(),
        "teacher_cache": cache,
    }
    if not timing:
        run_dir.mkdir(parents=True, exist_ok=True)
        model.save_to(str(run_dir / "model.nemo"))  # the whole CoDERT model (benchmarks/entropy.py reads it)
        result["student_nemo"] = str(export_side(model, "student", run_dir / "student.nemo"))
        if system.mode == "tandem":
            result["teacher_nemo"] = str(export_side(model, "teacher", run_dir / "teacher.nemo"))
        if model.extra_students:  # a ladder: student_nemo is the primary student's, the others under their names
            result["primary_student"] = model.student_names[0]
            result["students_nemo"] = {
                name: str(export_side(model, f"student:{name}", run_dir / f"student_{name}.nemo"))
                for name in model.extra_students
            }
    write_json_atomic(result, Path(spec["result"]))


# ------------------------------------------------------------------------------------------ driver


@dataclass
class Job:
    spec: Dict[str, Any]
    needs: Optional[Path] = None  # a result file that must exist first (static_teacher needs its teacher)

    @property
    def result(self) -> Path:
        return Path(self.spec["result"])

    def done(self) -> bool:
        if not self.result.is_file():
            return False
        return _spec_key(json.loads(self.result.read_text())["spec"]) == _spec_key(self.spec)


def _run_jobs(jobs: List[Job], parallel: int, log_dir: Path) -> None:
    """Run the jobs not done yet, ``parallel`` at a time, each in its own Python process; stop at the first failure."""
    pending = [j for j in jobs if not j.done()]
    skipped = len(jobs) - len(pending)
    if skipped:
        print(f"  {skipped} of {len(jobs)} already done (reused)", flush=True)
    running: List[tuple] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    while pending or running:
        # A needed result must exist and not be about to change: a stale file of a teacher that this call trains
        # again would otherwise start its students on the old teacher. (A job started in this pass stays in it.)
        waiting = {j.result for j in pending} | {r[0].result for r in running}
        for job in list(pending):
            if len(running) >= parallel:
                break
            if job.needs is not None and (not job.needs.is_file() or job.needs in waiting):
                continue
            pending.remove(job)
            spec_path = job.result.with_suffix(".spec.json")
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            spec_path.write_text(json.dumps(job.spec, indent=2))
            log = open(log_dir / f"{job.result.stem}.log", "w")
            env = {**os.environ, "OMP_NUM_THREADS": str(job.spec["threads"]), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(spec_path)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
            running.append((job, proc, log, time.time()))
            print(f"  started {job.result.stem}", flush=True)
        if not running:
            missing = [str(j.needs) for j in pending]
            raise RuntimeError(f"jobs wait for results no job will produce: {missing}")
        time.sleep(0.5)
        for entry in list(running):
            job, proc, log, began = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            log.close()
            if proc.returncode != 0 or not job.result.is_file():
                for _, other, *_ in running:
                    other.kill()
                tail = (log_dir / f"{job.result.stem}.log").read_text()[-3000:]
                raise RuntimeError(f"{job.result.stem} failed (exit {proc.returncode}); log tail:\n{tail}")
            print(f"  finished {job.result.stem} in {time.time() - began:.0f} s", flush=True)


def _corpus_config(s: Settings):
    """The ``data`` section the table's corpus follows: the base config's, with the table's ``--set`` overrides."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(compose(s.config).data, OmegaConf.from_dotlist(s.overrides).get("data", {}))


def benchmark_corpus_dir(work: Path, s: Settings) -> Path:
    data = _corpus_config(s)
    derived, dev_voices = (int(data.get(key, 0)) for key in ("derived_voices", "dev_voices"))
    return work / (
        f"corpus-{s.hours}h-r{s.reverb_prob}-n{s.noise_prob}"
        + (f"-v{derived}" if derived else "")
        + (f"-dv{dev_voices}" if dev_voices else "")
    )


def build_benchmark_corpus(work: Path, s: Settings):
    from omegaconf import OmegaConf

    from nemo_codert.data.augment import Augmentation
    from nemo_codert.data.synth import build_corpus_from_config

    # The config's data section at the table's size; seed 0: the data are fixed, the seeds vary the models.
    sized = {"hours": s.hours, "dev_hours": s.dev_hours, "test_hours": s.test_hours, "seed": 0}
    return build_corpus_from_config(
        OmegaConf.merge(_corpus_config(s), sized),
        out_dir=benchmark_corpus_dir(work, s),
        num_workers=os.cpu_count() or 1,
        augment=Augmentation(reverb_prob=s.reverb_prob, noise_prob=s.noise_prob),
    )


def run_spec(
    s: Settings,
    system: System,
    seed: int,
    corpus_dir: Path,
    work: Path,
    *,
    kind: str,
    threads: int,
    stem: Optional[str] = None,
    teacher_nemo: Optional[str] = None,
) -> Dict[str, Any]:
    """The spec of one run (its reuse key, ``_spec_key``): every table and sweep builds its runs here.

    ``stem`` names the run's directory and result file (``SYSTEM-seedN`` unless a sweep names its points).
    """
    stem = stem or f"{system.name}-seed{seed}"
    return {
        "kind": kind,
        "system": system.name,
        "seed": seed,
        "settings": asdict(s),
        "corpus_dir": str(corpus_dir),
        "threads": threads,
        "run_dir": str(work / "runs" / stem),
        "result": str(work / kind / f"{stem}.json"),
        "teacher_nemo": teacher_nemo,
        # The composed config is a training input the rest of the spec does not spell out (the base config's
        # lambda, regularisation, ...): a new default must retrain the runs it changes, not reuse them.
        "config_digest": config_digest(system_config(s, system, seed, corpus_dir, None)),
    }


def head_start_job(s: Settings, system: System, seed: int, corpus_dir: Path, work: Path, threads: int) -> Job:
    """Phase 1 of ``system`` (one with a ``teacher_head_start``): system 2 trained for its share of the table's steps,
    the cosine schedule over those steps; named by its steps, so that systems of the same head start share it."""
    steps = round(s.steps * system.teacher_head_start)
    teacher = BY_NAME["teacher_only"]
    stem = f"teacher_only_s{steps}-seed{seed}"
    return Job(
        run_spec(replace(s, steps=steps), teacher, seed, corpus_dir, work, kind="train", threads=threads, stem=stem)
    )


def plan_jobs(s: Settings, work: Path, corpus_dir: Path, kind: str) -> List[Job]:
    cores = os.cpu_count() or 1
    train_threads = max(1, cores // s.jobs)
    threads = train_threads if kind == "train" else cores
    jobs = []
    source = None
    if kind == "train" and s.static_teacher_steps and any(x.learns_from_teacher_file for x in s.chosen_systems()):
        name = f"teacher_source-steps{s.static_teacher_steps}"
        source = Job(
            run_spec(
                replace(s, steps=s.static_teacher_steps),
                BY_NAME["teacher_only"],
                s.seeds[0],
                corpus_dir,
                work,
                kind=kind,
                threads=threads,
                stem=name,
            )
        )
        jobs.append(source)
    for seed in s.seeds if kind == "train" else s.seeds[:1]:
        teacher_run = work / "runs" / f"teacher_only-seed{seed}"
        teacher_key = None  # system 2's run key for this seed, made once for the systems that learn from its file
        for system in s.chosen_systems():
            if seed not in s.seeds_of(system.name):
                continue
            spec = run_spec(s, system, seed, corpus_dir, work, kind=kind, threads=threads)
            needs = None
            if system.teacher_head_start:
                head = head_start_job(s, system, seed, corpus_dir, work, threads)
                if kind == "train" and all(j.result != head.result for j in jobs):
                    jobs.append(head)
                spec["teacher_nemo"] = str(Path(head.spec["run_dir"]) / "student.nemo")
                spec["teacher_key"] = _spec_key(head.spec)  # a teacher trained otherwise makes this another run
                needs = head.result
            elif system.learns_from_teacher_file:
                # System 5's teacher is system 2 of the same seed, as exported (a stock NeMo .nemo), or the teacher
                # trained to its own budget (static_teacher_steps).
                own_budget = source is not None and system.takes_own_budget_teacher
                teacher = Path(source.spec["run_dir"]) if own_budget else teacher_run
                spec["teacher_nemo"] = str(teacher / "student.nemo")
                needs = source.result if own_budget else work / "train" / f"teacher_only-seed{seed}.json"
                if not own_budget and teacher_key is None:
                    system_2 = run_spec(
                        s, BY_NAME["teacher_only"], seed, corpus_dir, work, kind="train", threads=train_threads
                    )
                    teacher_key = _spec_key(system_2)
                spec["teacher_key"] = _spec_key(source.spec) if own_budget else teacher_key
            jobs.append(Job(spec, needs))
    # Teachers first (the longest first): the static-teacher runs wait for them.
    return sorted(jobs, key=lambda j: (j is not source, j.spec["system"] != "teacher_only", j.needs is not None))


def evaluate_runs(train_jobs: List[Job], test_manifest: Path, work: Path) -> Dict[str, Dict[str, Any]]:
    """WER, parameters and CPU RTF of each exported student on the test split (and WER of tandem teachers)."""
    import torch

    from nemo_codert.data.manifest import read_manifest
    from nemo_codert.evaluation import count_parameters, measure_transcription
    from nemo_codert.models import load_stock_transducer
    from nemo_codert.utils import write_json_atomic

    torch.set_num_threads(os.cpu_count() or 1)
    entries = read_manifest(test_manifest)
    scores = {}
    for job in train_jobs:
        run = json.loads(job.result.read_text())
        cache = work / "eval" / job.result.name
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        # The spec names what was trained, its training time which training it was: a run trained again (its
        # result deleted) is scored again. (Scores cached before "trained" was kept have only the key.)
        if (
            cached.get("key") == _spec_key(run["spec"])
            and cached.get("trained", run["train_seconds"]) == run["train_seconds"]
        ):
            scores[job.result.stem] = cached
            continue
        score: Dict[str, Any] = {"key": _spec_key(run["spec"]), "trained": run["train_seconds"]}
        files = {side: run[f"{side}_nemo"] for side in ("student", "teacher") if f"{side}_nemo" in run}
        files.update({f"student:{name}": path for name, path in run.get("students_nemo", {}).items()})
        for side, path in files.items():
            model = load_stock_transducer(path)
            r = measure_transcription(model.transcribe, entries, batch_size=8, params=count_parameters(model))
            score[side] = {k: v for k, v in r.items() if k != "hypotheses"}
        write_json_atomic(score, cache)
        scores[job.result.stem] = score
        print(f"  evaluated {job.result.stem}: test WER {score['student']['wer']:.3f}", flush=True)
    return scores


# ------------------------------------------------------------------------------------------ report


def mean_sd(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (n - 1); 0.0 for one value (printed as "1 seed", not as a spread)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_mean_sd(values: Sequence[float], scale: float = 1.0, fmt: str = ".3f", unit: str = "") -> str:
    """``mean +- sd`` of ``values`` x ``scale``; one value has no spread to print: ``value (1 seed)``."""
    mean, sd = mean_sd(values)
    if len(values) == 1:
        return f"{scale * mean:{fmt}}{unit} (1 seed)"
    return f"{scale * mean:{fmt}}{unit} +- {scale * sd:{fmt.lstrip('+')}}"  # a spread has no sign


#: A teacher-student gap under this (or under the baseline's seed-to-seed sd) has no "gap closed": its ratio is noise.
GAP_FLOOR = 0.01


def summarise(s: Settings, train_jobs, time_jobs, scores, work: Path) -> Dict[str, Any]:
    runs = {j.result.stem: json.loads(j.result.read_text()) for j in train_jobs}
    timings = {j.spec["system"]: json.loads(j.result.read_text()) for j in time_jobs}
    rows = {}
    for system in s.chosen_systems():
        seeds = s.seeds_of(system.name)
        per_seed = {seed: scores[f"{system.name}-seed{seed}"] for seed in seeds}
        t = timings.get(system.name)  # absent when the cost pass was skipped (--time-steps 0)
        steps = (t["step_seconds"][3:] or t["step_seconds"]) if t else None
        rows[system.name] = {
            "label": system.label,
            "seeds": seeds,
            "test_wer": {seed: v["student"]["wer"] for seed, v in per_seed.items()},
            "test_cer": {seed: v["student"].get("cer") for seed, v in per_seed.items()},
            "teacher_test_wer": {seed: v["teacher"]["wer"] for seed, v in per_seed.items() if "teacher" in v},
            "params": per_seed[seeds[0]]["student"]["params"],
            "rtf": statistics.fmean(v["student"]["rtf"] for v in per_seed.values()),
            "step_seconds": statistics.median(steps) if steps else None,
            "peak_rss": t["peak_rss"] if t else None,
            "train_rss_growth": t["peak_rss"] - t["rss_at_train_start"] if t and t["rss_at_train_start"] else None,
            "dev_wer": {seed: runs[f"{system.name}-seed{seed}"]["dev_wer"] for seed in seeds},
            "commits": sorted({runs[f"{system.name}-seed{seed}"].get("commit") or "not recorded" for seed in seeds}),
            "train_seconds": {seed: runs[f"{system.name}-seed{seed}"]["train_seconds"] for seed in seeds},
        }
    source = next((j for j in train_jobs if Path(j.spec["run_dir"]).name.startswith("teacher_source-")), None)
    static_source = None
    if source is not None:
        static_source = {
            "steps": s.static_teacher_steps,
            "seed": source.spec["seed"],
            **{k: scores[source.result.stem]["student"][k] for k in ("wer", "cer", "params")},
        }
    base, teacher = rows["student_only"]["test_wer"], rows["teacher_only"]["test_wer"]
    for name, row in rows.items():
        # Paired by seed: the same seed gives both systems the same data order and (student) initial weights. Only
        # the seeds the baseline has pair (a table may train it with one seed, --single-seed student_only).
        row["rel_reduction"] = {
            seed: (base[seed] - w) / base[seed] for seed, w in row["test_wer"].items() if seed in base
        }
        # Share of the gap to the teacher the student learnt from closed, (WER_1 - WER_x) / (WER_1 - WER_t), from the
        # seed means: t is system 2, except for a student of the teacher trained to its own budget, whose gap is to
        # that teacher (against system 2 a stronger teacher's student would close more than the whole gap). The
        # means are over the seeds the row shares with 1 (and with 2 where it is the teacher): means of different
        # seed sets would put seed-to-seed spread into the share. A gap within the baseline's sd (or under
        # GAP_FLOOR) gives none: the ratio of two differences of that size is noise.
        own_budget = static_source is not None and BY_NAME[name].takes_own_budget_teacher
        shared = [seed for seed in row["test_wer"] if seed in base and (own_budget or seed in teacher)]
        row["gap_closed"] = None
        if shared:
            b, x = (statistics.fmean(d[seed] for seed in shared) for d in (base, row["test_wer"]))
            t = static_source["wer"] if own_budget else statistics.fmean(teacher[seed] for seed in shared)
            if b - t > max(mean_sd(list(base.values()))[1], GAP_FLOOR):
                row["gap_closed"] = (b - x) / (b - t)
    corpus_meta = json.loads((benchmark_corpus_dir(work, s) / "corpus.json").read_text())
    return {"settings": asdict(s), "rows": rows, "corpus": corpus_meta, "static_teacher_source": static_source}


def _targets(summary: Dict[str, Any]) -> List[str]:
    rows = summary["rows"]
    base, teacher, codert = rows["student_only"], rows["teacher_only"], rows["codert"]
    b_mean, b_sd = mean_sd(list(base["test_wer"].values()))
    t_mean, _ = mean_sd(list(teacher["test_wer"].values()))
    c_mean, c_sd = mean_sd(list(codert["test_wer"].values()))
    separated = max(codert["test_wer"].values()) < min(base["test_wer"].values())
    ratio = c_mean / b_mean
    mem_parts = [rows[n]["train_rss_growth"] for n in ("student_only", "teacher_only", "codert")]
    lines = [
        f"- the teacher leads: system 2 <= 0.85 x system 1: {t_mean:.3f} vs {b_mean:.3f} = {t_mean / b_mean:.3f} x -> "
        + ("**met**" if t_mean <= 0.85 * b_mean else "**not met**"),
        f"- CoDERT student WER <= 0.90 x baseline, every CoDERT seed below every baseline seed: {c_mean:.3f} vs "
        f"{b_mean:.3f} = {ratio:.3f} x; separated: {'yes' if separated else 'no'} "
        f"(baseline {b_mean:.3f} +- {b_sd:.3f}, CoDERT {c_mean:.3f} +- {c_sd:.3f}) -> "
        + ("**met**" if ratio <= 0.90 and separated else "**not met**"),
    ]
    if codert["step_seconds"] is not None:
        step_sum = rows["student_only"]["step_seconds"] + rows["teacher_only"]["step_seconds"]
        lines.append(
            f"- tandem step vs (teacher-only + student-only step): {codert['step_seconds']:.3f} s vs "
            f"{step_sum:.3f} s = {codert['step_seconds'] / step_sum:.2f} x"
        )
    if None not in mem_parts:
        s_g, t_g, c_g = mem_parts
        lines.append(
            f"- tandem peak memory vs the sum of the two (growth of the resident set during training): "
            f"{c_g / 2**20:.0f} MiB vs {s_g / 2**20:.0f} + {t_g / 2**20:.0f} = {(s_g + t_g) / 2**20:.0f} MiB"
        )
    return lines


def _systems_by_commit(rows: Dict[str, Any]) -> Dict[str, List[str]]:
    """commit -> the systems with a run trained at it ("not recorded": runs from before commits were kept)."""
    out: Dict[str, List[str]] = {}
    for name, row in rows.items():
        for commit in row.get("commits", ["not recorded"]):
            out.setdefault(commit, []).append(name)
    return out


def write_report(summary: Dict[str, Any], results_dir: Path, command: str, wall_seconds: float) -> Path:
    s = Settings(**summary["settings"])
    rows = summary["rows"]
    corpus = summary["corpus"]
    lines = [
        "# CoDERT on this machine: the paper's comparison",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
        f"report written at commit {git_commit()}",
        f"- machine: {machine_description()}; training {s.jobs} runs at a time, "
        f"{max(1, (os.cpu_count() or 1) // s.jobs)} torch thread(s) each; "
        + ("" if s.time_steps else "step time and memory not measured (--time-steps 0); ")
        + f"{'step time, memory and ' if s.time_steps else ''}RTF measured alone with {os.cpu_count()} threads",
        f"- training accelerator: {s.accelerator}",
        f"- wall time of this invocation (reused runs not included): {wall_seconds / 60:.1f} min",
        "- code of the training runs (a run is reused across commits when its key matches): "
        + "; ".join(f"{commit}: {', '.join(names)}" for commit, names in _systems_by_commit(rows).items()),
        f"- corpus: eSpeak NG, {corpus['splits']['train']['utterances']} train utterances "
        f"({corpus['splits']['train']['hours']} h, {len(corpus['splits']['train']['voices'])} voices), "
        f"dev {corpus['splits']['dev']['hours']} h, test {corpus['splits']['test']['hours']} h "
        f"({corpus['splits']['test']['utterances']} utterances, {len(corpus['splits']['test']['voices'])} voices and "
        f"all sentences unseen in training); reverberation on {s.reverb_prob:.0%} of utterances (RT60 0.2-0.8 s), "
        f"noise on {s.noise_prob:.0%} (white/pink/brown, SNR 5-25 dB)",
        f"- training: `conf/{s.config}.yaml`"
        + (f" with {' '.join(s.overrides)}" if s.overrides else "")
        + f", {s.steps} steps for every system, seeds {', '.join(map(str, s.seeds))} (seed = weights, shuffle, "
        "dropout, masks; the data are the same)"
        + (f"; {', '.join(s.single_seed)} with seed {s.seeds[0]} only (budget)" if s.single_seed else ""),
        "",
        "Test WER/CER of the deployed model (the student; for 2 the teacher-sized model), mean +- sample standard "
        "deviation (n - 1) over seeds; relative WER reduction vs 1, paired by seed, mean +- sd; share of the "
        "teacher-student gap closed, (WER_1 - WER_x) / (WER_1 - WER_2) of the means over the seeds the row shares "
        f"with 1 and 2 ('-' where WER_1 - WER_2 is within 1's sd or under {GAP_FLOOR}: noise)"
        + (
            "; for a student of the teacher trained to its own budget (5, 9, and the warm starts 4h, 6h), WER_2 is that "
            "teacher's (below)"
            if s.static_teacher_steps
            else ""
        )
        + ".",
        "",
        "| system | test WER | per seed | test CER | rel. reduction vs 1 | gap closed | params (deployed) | step (s) | "
        "peak RSS (MiB) | RSS growth in training (MiB) | RTF |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        wers = list(row["test_wer"].values())
        cers = [c for c in row["test_cer"].values() if c is not None]
        cer = f"{statistics.fmean(cers):.3f}" if cers else "n/a"
        paired = list(row["rel_reduction"].values())
        rel = "-" if name == "student_only" else format_mean_sd(paired, 100, "+.1f", " %")
        if len(paired) < len(wers) and name != "student_only":
            rel += f" ({len(paired)} seed{'s' if len(paired) > 1 else ''} paired)"
        gap = (
            "-"
            if name in ("student_only", "teacher_only") or row["gap_closed"] is None
            else f"{row['gap_closed']:.2f}"
        )
        growth = f"{row['train_rss_growth'] / 2**20:.0f}" if row["train_rss_growth"] is not None else "n/a"
        step = f"{row['step_seconds']:.3f}" if row["step_seconds"] is not None else "n/a"
        rss = f"{row['peak_rss'] / 2**20:.0f}" if row["peak_rss"] is not None else "n/a"
        lines.append(
            f"| {row['label']} | {format_mean_sd(wers)} | {' / '.join(f'{w:.3f}' for w in wers)} | {cer} | {rel} | "
            f"{gap} | {row['params']:,} | {step} | {rss} | {growth} | "
            f"{row['rtf']:.4f} |"
        )
    teacher_rows = [(r["label"], list(r["teacher_test_wer"].values())) for r in rows.values() if r["teacher_test_wer"]]
    if teacher_rows:
        lines += [
            "",
            "Teachers trained in tandem (test WER of the teacher side, same runs):",
            "",
            "| system | teacher test WER | per seed |",
            "|---|---:|---|",
        ]
        for label, wers in teacher_rows:
            lines.append(f"| {label} | {format_mean_sd(wers)} | {' / '.join(f'{w:.3f}' for w in wers)} |")
    source = summary.get("static_teacher_source")
    if source:
        lines += [
            "",
            f"System 5's static teacher: the teacher architecture trained alone for {source['steps']} steps "
            f"(seed {source['seed']}; one teacher for every seed of system 5): test WER {source['wer']:.3f}, "
            f"CER {source['cer']:.3f}, {source['params']:,} parameters.",
        ]
    lines += ["", "Targets (issue 10):", "", *_targets(summary), "", "![WER per system](paper_table.png)", ""]
    out = results_dir / "paper_table.md"
    out.write_text("\n".join(lines))
    return out


def plot(summary: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = Settings(**summary["settings"])
    rows = summary["rows"]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(rows)
    means = [mean_sd(list(rows[n]["test_wer"].values())) for n in names]
    x = range(len(names))
    bars.bar(x, [m for m, _ in means], yerr=[sd for _, sd in means], capsize=4, color="#9ab", edgecolor="#345")
    for i, n in enumerate(names):
        wers = list(rows[n]["test_wer"].values())
        bars.scatter([i] * len(wers), wers, s=12, color="#123", zorder=3)
    bars.set_xticks(list(x), [rows[n]["label"].split(":")[0] for n in names], rotation=25, ha="right", fontsize=8)
    bars.set_ylabel("test WER (unseen voices and sentences)")
    bars.set_title(f"Deployed model, {len(s.seeds)} seeds (bars: mean +- sd, dots: seeds)")
    for name, colour in (("student_only", "#c44"), ("codert", "#27a")):
        # On the students' steps: a lead system's first steps are its teacher's alone (validated, students untrained).
        lead = BY_NAME[name].lead_steps(s.steps)
        by_seed = {seed: [p for p in curve if p["step"] > lead] for seed, curve in rows[name]["dev_wer"].items()}
        steps = [p["step"] - lead for p in next(iter(by_seed.values()))]
        if not steps:
            continue
        table = [[p["student"] for p in curve] for curve in by_seed.values()]
        mean = [statistics.fmean(col) for col in zip(*table)]
        curves.plot(steps, mean, color=colour, marker="o", label=rows[name]["label"].split(":")[0])
        curves.fill_between(
            steps, [min(c) for c in zip(*table)], [max(c) for c in zip(*table)], color=colour, alpha=0.2
        )
    curves.set_xlabel("students' training step (after a lead system's lead)")
    curves.set_ylabel("dev WER (student)")
    curves.set_title("Dev WER during training (line: mean, band: min-max over seeds)")
    curves.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Optional[Sequence[str]]) -> tuple:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke preset (small corpus, few steps)")
    parser.add_argument("--hours", type=float, help="train hours of the benchmark corpus")
    parser.add_argument("--dev-hours", type=float)
    parser.add_argument("--test-hours", type=float)
    parser.add_argument("--reverb-prob", type=float, help="share of utterances reverberated (default 0.5)")
    parser.add_argument("--noise-prob", type=float, help="share of utterances with added noise (default 0.8)")
    parser.add_argument("--steps", type=int, help="training steps of every system")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--val-every", type=int, help="dev WER every N steps (systems 1 and 4)")
    parser.add_argument(
        "--time-steps", type=int, help="steps timed per system (after 3 warm-up steps); 0 skips the cost pass"
    )
    parser.add_argument("--jobs", type=int, help="training runs at a time")
    parser.add_argument(
        "--single-seed",
        nargs="+",
        choices=list(BY_NAME),
        metavar="SYSTEM",
        help="systems trained with the first seed only (to fit a budget)",
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(BY_NAME),
        metavar="SYSTEM",
        help="train and report these systems only (default: all; student_only, teacher_only and codert are required)",
    )
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], help="where the training runs go (default cpu)")
    parser.add_argument(
        "--static-teacher-steps",
        type=int,
        metavar="N",
        help="train system 5's teacher alone for N steps (first seed) instead of using system 2",
    )
    parser.add_argument("--config", help="base config in conf/ (default codert_small)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every system, e.g. --set model.optim.lr=2e-3",
    )
    parser.add_argument("--work-dir", type=Path, help="corpus, runs and models (default: data/paper_table[_quick])")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    chosen = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__ and v not in (None, [])}
    settings = replace(preset, **chosen)
    if settings.steps % settings.val_every:
        parser.error(f"--steps ({settings.steps}) must be a multiple of --val-every ({settings.val_every})")
    missing = {"student_only", "teacher_only", "codert"} - set(settings.systems or BY_NAME)
    if missing:
        parser.error(f"--systems must include {', '.join(sorted(missing))}: the table's ratios and targets need them")
    if len(settings.seeds) < 1 or settings.jobs < 1:
        parser.error("need at least one seed and one job")
    return args, settings


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, s = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    started = time.time()
    work = (args.work_dir or REPO / "data" / ("paper_table_quick" if args.quick else "paper_table")).resolve()
    results_dir = args.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    command = typed_command("paper_table.py", argv)

    print(f"[1/5] corpus ({s.hours} h train, reverb {s.reverb_prob}, noise {s.noise_prob})", flush=True)
    corpus = build_benchmark_corpus(work, s)
    print(
        f"[2/5] training {len(s.chosen_systems())} systems x {len(s.seeds)} seeds, {s.steps} steps, "
        f"{s.jobs} at a time",
        flush=True,
    )
    train_jobs = plan_jobs(s, work, corpus.root, "train")
    _run_jobs(train_jobs, s.jobs, work / "logs")
    time_jobs = plan_jobs(s, work, corpus.root, "time") if s.time_steps else []
    print(
        "[3/5] step time and memory, one system at a time" + ("" if time_jobs else ": skipped (--time-steps 0)"),
        flush=True,
    )
    _run_jobs(time_jobs, 1, work / "logs")
    print("[4/5] test WER and real-time factor of the exported students", flush=True)
    scores = evaluate_runs(train_jobs, corpus.test_manifest, work)
    print("[5/5] report", flush=True)
    summary = summarise(s, train_jobs, time_jobs, scores, work)
    (results_dir / "paper_table.json").write_text(json.dumps({"command": command, **summary}, indent=1))
    plot(summary, results_dir / "paper_table.png")
    report = write_report(summary, results_dir, command, time.time() - started)
    print(report.read_text())
    return 0


def run_for_driver(
    name: str, doc: str, argv: Sequence[str], systems: Sequence[str]
) -> Tuple[Dict[str, Any], Path, Path, str]:
    """The table of a thin driver (``benchmarks/<name>.py``): the driver's own ``--results-dir`` (default
    benchmarks/results) and ``--work-dir`` (default data/<name>), every other argument passed to this table, which
    runs ``systems`` and writes under ``<results-dir>/<name>/table``. Returns (the table's summary, the results
    directory, the work directory, the driver's command as typed)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / name)
    args, table_args = parser.parse_known_args(argv)
    results_dir = args.results_dir.resolve()
    table_dir = results_dir / name / "table"
    main([*table_args, "--work-dir", str(args.work_dir), "--results-dir", str(table_dir), "--systems", *systems])
    summary = json.loads((table_dir / "paper_table.json").read_text())
    return summary, results_dir, args.work_dir.resolve(), typed_command(f"{name}.py", argv)


if __name__ == "__main__":
    sys.exit(main())
