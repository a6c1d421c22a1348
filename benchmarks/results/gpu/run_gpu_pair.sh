#!/bin/bash
# One device call: the README's GPU command for the tandem pair and for the student-only baseline, side by side on
# one GPU (same corpus, steps, seed), then the exported student through stock NeMo on the GPU.
export PYTHONUNBUFFERED=1
set -o pipefail
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
el installed
ARGS="--config-name=codert_small trainer.accelerator=gpu trainer.max_steps=${STEPS:-1500} trainer.val_check_interval=500 ++trainer.enable_progress_bar=false model.train_ds.batch_size=32 data.dir=data/synth_3h data.hours=3 data.test_hours=0.2 data.num_workers=16 exp_manager.exp_dir=/tmp/runs"
timeout ${BUDGET:-420} python3 examples/train_codert.py $ARGS name=tandem > $OUT/tandem.log 2>&1 &
while [ ! -f data/synth_3h/corpus.json ] && kill -0 $! 2>/dev/null; do sleep 2; done
el corpus ready
timeout ${BUDGET:-420} python3 examples/train_codert.py $ARGS name=student_only model.codert.mode=student_only > $OUT/student_only.log 2>&1 &
wait
el trained
for n in tandem student_only; do echo "== $n"; grep -a -E "test_wer|test_loss|Error|error:" $OUT/$n.log | grep -v "NeMo W" | tail -8; done
NEMO=$(ls /tmp/runs/tandem/*/checkpoints/tandem.nemo 2>/dev/null | head -1)
echo "tandem .nemo: $NEMO"
if [ -n "$NEMO" ]; then
  python3 -m nemo_codert.export --nemo "$NEMO" --which student --out /tmp/student.nemo > $OUT/export.log 2>&1 || tail -5 $OUT/export.log
  python3 - <<'PY' 2>&1 | grep -v "NeMo [IW]" | tail -6
import json, torch
from nemo.collections.asr.models import ASRModel
m = ASRModel.restore_from("/tmp/student.nemo", map_location="cuda")
print("restored", type(m).__name__, "on", next(m.parameters()).device, "cuda graphs", m.decoding.decoding.use_cuda_graph_decoder)
files = [json.loads(l)["audio_filepath"] for l in open("data/synth_3h/test_manifest.json")][:8]
print("stock transcribe:", [h.text for h in m.transcribe(files, batch_size=8, verbose=False)][:3])
PY
fi
el done
tar czf $OUT/tb.tgz -C /tmp/runs $(cd /tmp/runs && find . -name "events.out.tfevents*" -o -name "hparams.yaml" -o -name "nemo_log*.txt" | head -40) 2>/dev/null
ls -la $OUT
