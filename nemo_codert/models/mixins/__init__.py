"""Cross-cutting concerns of the CoDERT model, one mixin each (as NeMo's ``parts/mixins``): each class docstring
names the calls its host model makes."""

from nemo_codert.models.mixins.atomic_save import AtomicSaveMixin
from nemo_codert.models.mixins.aux_ctc_heads import AuxCtcHeadsMixin
from nemo_codert.models.mixins.kd_gate import KdGateMixin
from nemo_codert.models.mixins.norm_guard import NormStatisticsGuardMixin
from nemo_codert.models.mixins.offline_teacher import OfflineTeacherMixin
from nemo_codert.models.mixins.pair_losses import PairLossesMixin
from nemo_codert.models.mixins.resumable_shuffle import ResumableShuffleMixin
from nemo_codert.models.mixins.side_inference import SideInferenceMixin
from nemo_codert.models.mixins.side_metrics import SideMetricsMixin
from nemo_codert.models.mixins.student_ladder import StudentLadderMixin
from nemo_codert.models.mixins.teacher_lead import TeacherLeadMixin

__all__ = [
    "AtomicSaveMixin",
    "AuxCtcHeadsMixin",
    "KdGateMixin",
    "NormStatisticsGuardMixin",
    "OfflineTeacherMixin",
    "PairLossesMixin",
    "ResumableShuffleMixin",
    "SideInferenceMixin",
    "SideMetricsMixin",
    "StudentLadderMixin",
    "TeacherLeadMixin",
]
