#!/usr/bin/env bash
# The CUDA path, checked on a GPU machine: a tiny search and a tiny training on CUDA (bf16 autocast,
# channels_last) against the same runs on CPU: samples/s, peak GPU memory, losses step by step
# (benchmarks/gpu_check.py). With 2+ GPUs it also runs a tiny search data-parallel under torchrun (NCCL).
# Usage: benchmarks/gpu_check.sh [gpu_check.py options]; PYTHON=/path/to/python to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export MUSICNAS_NO_REEXEC=1

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$gpus" -lt 1 ]; then
  echo "gpu_check: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA GPU; run this on a machine with one (nothing was measured)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m musicnas data synth --out "$tmp/audio" --tracks-per-class 6 --seconds 10 >/dev/null
"$PY" -m musicnas data prepare --data "$tmp/audio" --cache "$tmp/cache" >/dev/null
"$PY" benchmarks/gpu_check.py --data "$tmp/audio" --cache "$tmp/cache" "$@"

if [ "$gpus" -ge 2 ]; then
  start=$(date +%s)
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m musicnas search --data "$tmp/audio" \
    --cache "$tmp/cache" --epochs 1 --out "$tmp/search2" --device cuda
  echo "2 GPUs (NCCL): tiny search in $(( $(date +%s) - start )) s"
fi
