#!/bin/bash
# One device call: install the carried NeMo wheels, run the GPU paper table, bring back the report and raw results.
export PYTHONUNBUFFERED=1
set -o pipefail
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
export PYTHONPATH=/tmp/site:$PWD NEMO_CODERT_COMMIT=${NEMO_CODERT_COMMIT:?the commit the working tree holds}
echo "install $(($(date +%s)-t0)) s"
python3 -c "import numpy, lightning, torch, nemo.collections.asr as a, nemo_codert.models; print(numpy.__version__, lightning.__version__, torch.__version__, torch.cuda.is_available())" 2>&1 | tail -3 || exit 2
echo "import $(($(date +%s)-t0)) s"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 15 > $OUT/gpu_util.log 2>&1 &
timeout ${BUDGET:-470} python3 benchmarks/paper_table.py "$@" --work-dir /tmp/pt --results-dir benchmarks/results/paper_table_gpu > $OUT/driver.log 2>&1
echo "paper_table rc $? at $(($(date +%s)-t0)) s"
grep -v "NeMo [IW]" $OUT/driver.log | tail -60
cp benchmarks/results/paper_table_gpu/* $OUT/ 2>/dev/null
tar czf $OUT/raw.tgz -C /tmp/pt train eval logs $(cd /tmp/pt && ls -d corpus*/corpus.json) 2>/dev/null
ls -la $OUT
