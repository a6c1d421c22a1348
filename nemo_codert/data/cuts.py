"""A corpus split as a lhotse CutSet (one cut per utterance, its transcript as the supervision), for users whose
pipelines read lhotse rather than NeMo manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

__all__ = ["write_cuts"]


def write_cuts(entries: Sequence[Dict], path: Path, sample_rate: int) -> None:
    """Write ``entries`` (manifest lines: audio_filepath, duration, text, voice) as a CutSet to ``path``."""
    from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recordings, supervisions = [], []
    for e in entries:
        rec_id = Path(e["audio_filepath"]).stem
        samples = round(e["duration"] * sample_rate)
        recordings.append(
            Recording(
                id=rec_id,
                sources=[AudioSource(type="file", channels=[0], source=e["audio_filepath"])],
                sampling_rate=sample_rate,
                num_samples=samples,
                duration=samples / sample_rate,
            )
        )
        supervisions.append(
            SupervisionSegment(
                id=rec_id,
                recording_id=rec_id,
                start=0.0,
                duration=samples / sample_rate,
                text=e["text"],
                speaker=e["voice"],
                language="en",
            )
        )
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings), supervisions=SupervisionSet.from_segments(supervisions)
    )
    cuts.to_file(path)
