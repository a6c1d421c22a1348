"""Teacher and student must emit the same frames: KD pairs their encoder logits frame by frame."""

from __future__ import annotations

import torch

__all__ = ["check_same_frame_rate"]

# Input length (feature frames) of the probe that measures each encoder's frame rate.
_PROBE_LENGTH = 1024


def _frame_count(encoder: torch.nn.Module, feat_in: int) -> int:
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(1, feat_in, _PROBE_LENGTH)
            _, length = encoder(audio_signal=probe, length=torch.tensor([_PROBE_LENGTH]))
    finally:
        encoder.train(was_training)
    return int(length[0])


def check_same_frame_rate(
    teacher: torch.nn.Module, student: torch.nn.Module, feat_in: int, student_field: str = "model.student_encoder"
) -> None:
    """Raise a ``ValueError`` naming both subsampling factors when the encoders emit different frame counts.

    Measured, not read from the config: encoders name their subsampling differently (or not at all).
    """
    frames_t, frames_s = _frame_count(teacher, feat_in), _frame_count(student, feat_in)
    if frames_t != frames_s:
        raise ValueError(
            f"{student_field}: subsampling factor {_PROBE_LENGTH / frames_s:g} differs from the teacher "
            f"model.encoder's {_PROBE_LENGTH / frames_t:g} ({frames_s} vs {frames_t} frames for "
            f"{_PROBE_LENGTH} input frames); CoDERT distils frame by frame, so both must emit the same frames"
        )
