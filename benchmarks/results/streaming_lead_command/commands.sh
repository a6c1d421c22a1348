#!/bin/bash
# The README's one-run streaming command (teacher lead) as written (one torch thread: other runs share the 2 cores).
set -e
export OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
date; $PY examples/train_codert.py --config-name=codert_streaming model.codert.teacher_lead_steps=450 \
    trainer.max_steps=2250 trainer.val_check_interval=450 > lead.log 2>&1; date
