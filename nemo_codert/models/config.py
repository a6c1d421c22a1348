"""The ``model.codert`` section of a CoDERT config: schema, defaults and validation.

Everything else in a CoDERT config is a stock NeMo transducer config (plus ``model.student_encoder``), so this is
the only schema the package adds. Values are checked once, at model construction, and every error names the field.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nemo.utils import logging

from nemo_codert.losses.encoder_kd import KD_REDUCTIONS

__all__ = [
    "CodertConfig",
    "KD_TARGETS",
    "KD_TEACHER_INPUTS",
    "MODES",
    "TEACHERLESS_MODES",
    "aux_ctc_weight",
    "parse_codert_config",
    "resolve_students",
]

#: tandem: teacher and student learn together (the paper's in-place distillation).
#: static_teacher: a frozen pre-trained teacher from ``teacher_nemo`` (conventional KD).
#: (tandem with ``teacher_nemo``: the teacher starts from that file and trains on, a warm start.)
#: student_only: the student alone, no teacher built or run (the honest baseline).
#: offline_teacher: no teacher built either; KD from the teacher's cached encoder logits (``teacher_cache``,
#: nemo_codert.data.teacher_cache), for teachers too large to run beside the student.
MODES = ("tandem", "static_teacher", "student_only", "offline_teacher")
#: Modes whose model holds no teacher module: a stock NeMo transducer whose ``encoder`` is the student.
TEACHERLESS_MODES = ("student_only", "offline_teacher")
CPU_RNNT_LOSSES = ("vectorised", "nemo")
KD_STARTS = ("always", "teacher_leads")
#: encoder_logits: CoDERT's KL on the joint applied to the encoder alone (nemo_codert.losses.encoder_kd).
#: joint_lattice: Panchapagesan et al.'s KL on the collapsed joint posteriors over the lattice, the comparison
#: (nemo_codert.losses.lattice_kd).
KD_TARGETS = ("encoder_logits", "joint_lattice")
#: augmented: the teacher's KD logits come from the spec-augmented features both encoders train on (the paper's
#: in-place distillation). clean: from the same features before spec-augment, the teacher in inference mode (no
#: dropout), as the offline cache's logits are made.
KD_TEACHER_INPUTS = ("augmented", "clean")
#: The name of the one student of a config with ``model.student_encoder`` alone.
SINGLE_STUDENT = "student"
_STUDENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class StudentWeights:
    """One student's weights in a ladder (``model.codert.student_weights.NAME``); unset: the shared defaults."""

    rnnt_weight: Optional[float] = None  # default: model.codert.student_rnnt_weight
    kd_weight: Optional[float] = None  # default: model.codert.kd_weight (the λ of every student)


@dataclass
class CodertConfig:
    mode: str = "tandem"
    kd_weight: float = 1.0  # λ
    kd_temperature: float = 1.0  # τ
    student_rnnt_weight: float = 1.0
    teacher_rnnt_weight: float = 1.0
    # One prediction network and joint for both encoders ("implicit distillation"); false is the paper's ablation.
    share_decoder: bool = True
    teacher_nemo: Optional[str] = None
    # Directory of a teacher cache (examples/cache_teacher_logits.py), required by mode offline_teacher.
    teacher_cache: Optional[str] = None
    # RNN-T loss for CPU tensors: our exact vectorised kernel, or NeMo's own (Python loops; slow but the reference).
    # CUDA tensors always go to NeMo's numba kernel.
    cpu_rnnt_loss: str = "vectorised"
    # Auxiliary CTC on each side's encoder logits (blank last, as NeMo's CTC expects): side loss =
    # (1 - w)·RNNT + w·CTC, NeMo's hybrid-model convention. No new parameters, so the export is unchanged. The
    # alternative is NeMo's own `model.aux_ctc` section (a CTC head per encoder); one or the other.
    ctc_weight: float = 0.0
    # The teacher encoder learns at optim.lr × this scale (tandem). A wider encoder wants a smaller Adam step: at the
    # shared lr the 3x larger teacher of codert_small trailed its student; at half of it, it leads (kd_sweep.md).
    teacher_lr_scale: float = 1.0
    # λ ramps linearly from 0 to kd_weight over this many steps (0: full λ from the first step), so an untrained
    # teacher's noise is not distilled.
    kd_warmup_steps: int = 0
    # always: KD from the first step. teacher_leads: KD waits for the first validation at which the teacher's dev WER
    # is below the student's (distilling a teacher that trails pulls the student back); the ramp starts there.
    kd_start: str = "always"
    # N > 0 (tandem): the teacher side trains alone for the run's first N steps, then the students join with the
    # optimiser's moments and the lr schedule started afresh: a teacher head start in one run (TeacherLeadMixin).
    # trainer.max_steps stays the students' steps; the run is N steps longer. Where no teacher learns from scratch
    # beside the students (another mode, teacher_rnnt_weight 0, a teacher_nemo to start from) it is skipped, logged.
    teacher_lead_steps: int = 0
    # What the KD term compares: CoDERT's encoder logits (B x T x (V+1)), or the collapsed joint posteriors at every
    # lattice node (B x T x (U+1) x 3), Panchapagesan et al. 2021, for comparison; both weighted λ·τ².
    kd_target: str = "encoder_logits"
    # k >= 0: the student's encoder-logit frame t is distilled towards the teacher's frame t - k. A streaming student
    # sees less future than a full-context teacher; a small delay lets it emit a little later (conf/codert_streaming).
    kd_frame_shift: int = 0
    # What the teacher sees when it makes the KD targets (KD_TEACHER_INPUTS). clean costs tandem one teacher forward
    # without a graph per step (the teacher's own losses still train on the augmented features); a static teacher
    # simply runs on the clean features instead. An offline teacher's cache is made from clean input whatever this
    # says.
    kd_teacher_input: str = "augmented"
    # With several students (``model.student_encoders``): the one whose metrics carry NeMo's plain names (val_wer,
    # which exp_manager monitors), which transcribes and exports by default; None: the first. Ignored with one.
    primary_student: Optional[str] = None
    # With several students: per-student weights, name -> {rnnt_weight, kd_weight}; a student not named here, or a
    # weight left unset, takes student_rnnt_weight and kd_weight.
    student_weights: Dict[str, StudentWeights] = field(default_factory=dict)

    def weights_of(self, student: str) -> Tuple[float, float]:
        """(RNN-T weight, λ) of the student named ``student``."""
        own = self.student_weights.get(student, StudentWeights())
        rnnt = self.student_rnnt_weight if own.rnnt_weight is None else own.rnnt_weight
        return rnnt, (self.kd_weight if own.kd_weight is None else own.kd_weight)


def aux_ctc_weight(model_cfg: DictConfig) -> Optional[float]:
    """``model.aux_ctc.ctc_loss_weight`` (NeMo's hybrid models default it to 0.5); None without an aux_ctc section."""
    aux_ctc = model_cfg.get("aux_ctc", None)
    return None if aux_ctc is None else float(aux_ctc.get("ctc_loss_weight", 0.5))


def _why_no_teacher_lead(cfg: CodertConfig) -> Optional[str]:
    """Why a teacher lead would mean nothing for this config; None where it applies."""
    if cfg.mode != "tandem":
        return f"mode {cfg.mode!r} has no teacher that learns"
    if cfg.teacher_rnnt_weight == 0:
        return "teacher_rnnt_weight 0: the teacher does not learn"
    if cfg.teacher_nemo:
        return "the teacher starts from teacher_nemo, trained already"
    return None


def parse_codert_config(model_cfg: DictConfig) -> CodertConfig:
    """Validate ``model.codert`` (missing section = all defaults) and ``model.student_encoder``."""
    section = model_cfg.get("codert", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(CodertConfig), section if section is not None else {})
    except OmegaConfBaseException as e:  # unknown key or wrong type: OmegaConf's message names the key
        raise ValueError(f"model.codert: {e}") from None
    cfg: CodertConfig = OmegaConf.to_object(merged)

    if cfg.mode not in MODES:
        raise ValueError(f"model.codert.mode: {cfg.mode!r} is not one of {', '.join(MODES)}")
    if cfg.kd_start not in KD_STARTS:
        raise ValueError(f"model.codert.kd_start: {cfg.kd_start!r} is not one of {', '.join(KD_STARTS)}")
    if cfg.kd_target not in KD_TARGETS:
        raise ValueError(f"model.codert.kd_target: {cfg.kd_target!r} is not one of {', '.join(KD_TARGETS)}")
    if cfg.kd_teacher_input not in KD_TEACHER_INPUTS:
        raise ValueError(
            f"model.codert.kd_teacher_input: {cfg.kd_teacher_input!r} is not one of {', '.join(KD_TEACHER_INPUTS)}"
        )
    if cfg.cpu_rnnt_loss not in CPU_RNNT_LOSSES:
        raise ValueError(
            f"model.codert.cpu_rnnt_loss: {cfg.cpu_rnnt_loss!r} is not one of {', '.join(CPU_RNNT_LOSSES)}"
        )
    if cfg.kd_frame_shift and cfg.kd_target != "encoder_logits":
        raise ValueError(
            f"model.codert.kd_frame_shift: {cfg.kd_frame_shift} frames is defined for kd_target encoder_logits only, "
            f"not {cfg.kd_target}"
        )
    non_negative = (
        "kd_weight",
        "student_rnnt_weight",
        "teacher_rnnt_weight",
        "kd_warmup_steps",
        "kd_frame_shift",
        "teacher_lead_steps",
    )
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ValueError(f"model.codert.{name}: must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.ctc_weight <= 1.0:
        raise ValueError(f"model.codert.ctc_weight: must be in [0, 1], got {cfg.ctc_weight}")
    aux_weight = aux_ctc_weight(model_cfg)
    if aux_weight is not None:
        if not 0.0 <= aux_weight <= 1.0:
            raise ValueError(f"model.aux_ctc.ctc_loss_weight: must be in [0, 1], got {aux_weight}")
        if cfg.ctc_weight > 0:
            raise ValueError(
                "model.codert.ctc_weight and model.aux_ctc: choose one auxiliary CTC term, not both: ctc_weight "
                "scores the encoder logits (no new parameters), aux_ctc adds NeMo's CTC head per encoder (set "
                "model.codert.ctc_weight=0 to use it)"
            )
    reduction = model_cfg.get("rnnt_reduction", "mean_batch")
    if reduction not in KD_REDUCTIONS:
        raise ValueError(
            f"model.rnnt_reduction: {reduction!r} is not supported by CoDERT (one of {', '.join(KD_REDUCTIONS)}): "
            "the KD and CTC terms are reduced like the RNN-T loss they join, and a per-token normalisation has "
            "no frame-level counterpart"
        )
    lead_skipped = _why_no_teacher_lead(cfg)
    if cfg.teacher_lead_steps and lead_skipped:
        # A logged no-op, not an error: the shipped configs carry a lead, and the same config serves the baseline
        # (student_only), a static teacher, and phase 2 of the two-run recipe (teacher_nemo), which has led already.
        logging.info(f"model.codert.teacher_lead_steps: {cfg.teacher_lead_steps} skipped: {lead_skipped}")
        cfg.teacher_lead_steps = 0
    if cfg.teacher_lr_scale <= 0:
        raise ValueError(f"model.codert.teacher_lr_scale: must be > 0, got {cfg.teacher_lr_scale}")
    if cfg.teacher_lr_scale != 1.0 and model_cfg.get("optim_param_groups", None):
        raise ValueError(
            "model.codert.teacher_lr_scale: set either it or model.optim_param_groups (NeMo's per-module settings), "
            "not both"
        )
    if cfg.kd_temperature <= 0:
        raise ValueError(f"model.codert.kd_temperature: must be > 0, got {cfg.kd_temperature}")
    if cfg.mode == "static_teacher" and not cfg.teacher_nemo:
        raise ValueError("model.codert.teacher_nemo: mode 'static_teacher' needs the path of the teacher's .nemo")
    if cfg.mode == "offline_teacher":
        if not cfg.teacher_cache:
            raise ValueError(
                "model.codert.teacher_cache: mode 'offline_teacher' needs the directory of a teacher cache (make one "
                "with examples/cache_teacher_logits.py)"
            )
        unsupported = {
            "kd_target": cfg.kd_target != "encoder_logits",  # the cache holds encoder logits, no lattice
            "kd_start": cfg.kd_start != "always",  # there is no teacher to validate
            "kd_frame_shift": cfg.kd_frame_shift != 0,
        }
        for name, bad in unsupported.items():
            if bad:
                raise ValueError(
                    f"model.codert.{name}: {getattr(cfg, name)!r} is not available in mode 'offline_teacher' (the "
                    "cache holds the teacher's encoder logits of each training utterance, nothing else)"
                )
    if model_cfg.get("student_encoder", None) is None and model_cfg.get("student_encoders", None) is None:
        raise ValueError(
            "model.student_encoder: missing. A CoDERT config is a NeMo transducer config whose `encoder` is the "
            "teacher, plus a `student_encoder` section (any NeMo encoder config, e.g. a smaller ConformerEncoder)"
        )
    return cfg


def resolve_students(model_cfg: DictConfig, codert: CodertConfig) -> Tuple[DictConfig, List[str]]:
    """(config, student names with the primary first) of a config with one student or a ladder of them.

    One student: ``model.student_encoder``, named ``student``. Several: ``model.student_encoders``, a mapping name ->
    encoder config (or a list, named student0, student1, ...); the config returned holds it as a mapping and
    ``student_encoder`` = the primary student's config (``codert.primary_student``, default the first), written into
    ``codert.primary_student`` too, so code that knows one student sees the primary and a restored model the same
    students. Every error names the field."""
    ladder = model_cfg.get("student_encoders", None)
    if ladder is None:
        if codert.primary_student not in (None, SINGLE_STUDENT):
            raise ValueError(
                f"model.codert.primary_student: {codert.primary_student!r} names a student, but the config has one "
                "(model.student_encoder); several students go in model.student_encoders"
            )
        if codert.student_weights:
            raise ValueError("model.codert.student_weights: per-student weights need model.student_encoders")
        return model_cfg, [SINGLE_STUDENT]
    if OmegaConf.is_list(ladder):
        ladder = {f"student{i}": c for i, c in enumerate(ladder)}
    elif not OmegaConf.is_dict(ladder):
        raise ValueError("model.student_encoders: must be a mapping name -> encoder config, or a list of configs")
    names = list(ladder.keys())
    if not names:
        raise ValueError("model.student_encoders: empty; give at least one student (or use model.student_encoder)")
    for name in names:
        if not isinstance(name, str) or not _STUDENT_NAME.match(name) or name == "teacher":
            raise ValueError(
                f"model.student_encoders: {name!r} is not a student name (letters, digits, _; not 'teacher')"
            )
        if not OmegaConf.is_dict(ladder[name]) or "_target_" not in ladder[name]:
            raise ValueError(f"model.student_encoders.{name}: must be a NeMo encoder config (with _target_)")
    if codert.mode not in ("tandem", "static_teacher"):
        raise ValueError(
            f"model.student_encoders: several students learn from one teacher; mode {codert.mode!r} has none "
            "(use tandem or static_teacher, or one model.student_encoder)"
        )
    primary = codert.primary_student or names[0]
    if primary not in names:
        raise ValueError(f"model.codert.primary_student: {primary!r} is not one of model.student_encoders ({names})")
    if SINGLE_STUDENT in names and primary != SINGLE_STUDENT:
        # 'student' names the primary student everywhere (side, export --which student, transcribe): a further
        # student of that name could never be reached, and its config would be read for the primary's weights.
        raise ValueError(
            f"model.student_encoders: {SINGLE_STUDENT!r} names the primary student ({primary!r} here); "
            "give the other student another name, or make it model.codert.primary_student"
        )
    unknown = sorted(set(codert.student_weights) - set(names))
    if unknown:
        raise ValueError(f"model.codert.student_weights: {unknown} are not students of model.student_encoders")
    for name, weights in codert.student_weights.items():
        for key in ("rnnt_weight", "kd_weight"):
            if getattr(weights, key) is not None and getattr(weights, key) < 0:
                raise ValueError(f"model.codert.student_weights.{name}.{key}: must be >= 0")
    model_cfg = copy.deepcopy(model_cfg)
    with open_dict(model_cfg):
        model_cfg.student_encoders = {n: ladder[n] for n in names}
        model_cfg.student_encoder = copy.deepcopy(ladder[primary])
        if model_cfg.get("codert", None) is None:
            model_cfg.codert = {}
        model_cfg.codert.primary_student = primary
    codert.primary_student = primary
    return model_cfg, [primary] + [n for n in names if n != primary]
