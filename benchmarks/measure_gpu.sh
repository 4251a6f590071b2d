#!/usr/bin/env bash
# The measured cost records committed in tables/measured/: every Q2L and ASL model (and the MLSPL
# ResNet-50) on this machine's GPU, in fp32 and in fp16 autocast (the Q2L authors' inference
# setting), each with the fit search in a 12 GB budget. Needs no install, no data, no download:
# run from the repository root with a python3 that has torch, torchvision, timm, nvidia-ml-py,
# pyyaml, numpy, scipy and tabulate (checked first).
#
#   HARNESS_GIT_COMMIT=$(git rev-parse HEAD) bash benchmarks/measure_gpu.sh [OUT] [bench options...]
#
# OUT defaults to tables/measured; options after it go to every `harness bench` call. Each model
# runs in its own process, so no model inherits another's CUDA context, workspaces or failure.
set -euo pipefail
out=${1:-tables/measured}
shift || true
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout, installed or not

"$python" - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "torchvision", "timm", "pynvml", "yaml", "numpy", "scipy", "tabulate")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"measure_gpu.sh: missing Python packages: {', '.join(missing)}")
import torch
if not torch.cuda.is_available():
    sys.exit("measure_gpu.sh: no CUDA GPU visible")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
models=$("$python" -c 'from harness.measure.bench import models_to_run; print(" ".join(s.id for s in models_to_run("all")))')
failed=""
for amp in "" fp16; do
  for model in $models; do
    "$python" -m harness bench "$model" --device cuda ${amp:+--amp $amp} --runs "$out" "$@" || failed="$failed $model${amp:+/$amp}"
  done
done
"$python" -m harness report --runs "$out" --measured none --format markdown | sed -n '/^## Cost/,$p'
if [ -n "$failed" ]; then echo "measure_gpu.sh: failed:$failed" >&2; exit 1; fi
