#!/bin/bash
# The README's streaming two-phase commands as written (one torch thread each: two processes share 2 cores).
set -e
export OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
date; $PY examples/train_codert.py --config-name=codert_streaming_teacher > phase1.log 2>&1; date
N=$(ls nemo_experiments/CoDERT-streaming-teacher/*/checkpoints/CoDERT-streaming-teacher.nemo | head -1)
$PY -m nemo_codert.export --nemo $N --which student --out teacher.nemo > export.log 2>&1; date
$PY examples/train_codert.py --config-name=codert_streaming model.codert.teacher_nemo=teacher.nemo > phase2.log 2>&1; date
#!/bin/bash
set -e
export OMP_NUM_THREADS=1
while [ ! -f data/synth_small/test_manifest.json ]; do sleep 10; done; sleep 20
date; /work/main/.venv/bin/python examples/train_codert.py --config-name=codert_streaming model.codert.mode=student_only name=CoDERT-streaming-alone > alone.log 2>&1; date
