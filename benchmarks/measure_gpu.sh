#!/usr/bin/env bash
# The measured cost records committed in tables/measured/: every Q2L and ASL model (and the MLSPL
# ResNet-50) on this machine's GPU, in fp32 and in fp16 autocast (the Q2L authors' inference
# setting), each with the fit search in a 12 GB budget. Needs no install, no data, no download:
# run from the repository root with any python3 that has torch, timm, nvidia-ml-py and pyyaml.
#
#   HARNESS_GIT_COMMIT=$(git rev-parse HEAD) bash benchmarks/measure_gpu.sh [OUT] [bench options...]
#
# OUT defaults to tables/measured; options after it go to every `harness bench` call.
set -euo pipefail
out=${1:-tables/measured}
shift || true
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout, installed or not

"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible")'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$python" -m harness bench all --device cuda --out "$out" "$@"
"$python" -m harness bench all --device cuda --amp fp16 --out "$out" "$@"
"$python" -m harness report --runs "$out" --measured none --format markdown | sed -n '/^## Cost/,$p'
