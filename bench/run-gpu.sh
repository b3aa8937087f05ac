#!/usr/bin/env bash
# The whole benchmark run of issue 7 on the GPU machine, in one `run` call: our engine (`tunelab bench all` from the
# carried bundle, over Dawn/Vulkan) and the PyTorch peer (bench/peer.py, CUDA, eager fp32, TF32 off) on the same
# card one after the other, then the ratios ours/peer, then the tensor-core kernel checks (bench/gpu-check.ts). $OUT
# gets results.md (rows for bench/RESULTS.md), ratios.jsonl and bench.tgz, which holds everything: ours.jsonl,
# peer.jsonl, gpu-check.jsonl, the logs, the environment and nvidia-smi's view of the card (the device tool brings
# back at most 8 files).
#
# Before the call, on the development machine (see bench/README.md):
#   npm install && ../shared/gpu/pack.sh && node bench/build.mjs
# The call:
#   run  carry: [".gpu", "bench/dist"]
#        command: COMMIT=<git rev-parse --short HEAD> bash bench/run-gpu.sh [--quick]
# Options after the script name go to both sides (--quick, --iters N, --warmup N).
# For a dry run elsewhere: SETUP=<a file that sets DAWN_FLAGS> PEER_DEVICE=cpu PYTHON=/usr/bin/python3 bash bench/run-gpu.sh

set -o pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1090
source "${SETUP:-.gpu/setup.sh}"
set -u

OUT=${OUT:-/tmp/tunelab-bench}
mkdir -p "$OUT"
RESULTS=$OUT
OUT=$(mktemp -d) # the run's files; packed into $RESULTS/bench.tgz at the end
BUNDLE=${BUNDLE:-bench/dist/tunelab-bench.mjs}
PYTHON=${PYTHON:-python3}
PEER_DEVICE=${PEER_DEVICE:-cuda}
COMMIT=${COMMIT:-unknown}
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
{
  echo "commit: $COMMIT"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "node: $(node --version)"
  echo "DAWN_FLAGS: $DAWN_FLAGS"
  "$PYTHON" -c 'import torch, sys; print("python:", sys.version.split()[0], "torch:", torch.__version__, "cuda:", torch.version.cuda)' 2>&1
} > "$OUT/environment.txt"

echo "== tunelab bench all $*" >&2
if ! node "$BUNDLE" bench all --json "$@" > "$OUT/ours.jsonl" 2> "$OUT/ours.log"; then
  echo "tunelab bench failed (see ours.log):" >&2
  tail -20 "$OUT/ours.log" >&2
  status=1
fi
cat "$OUT/ours.jsonl"

echo "== peer.py all $*" >&2
if ! "$PYTHON" bench/peer.py all --json --device "$PEER_DEVICE" "$@" > "$OUT/peer.jsonl" 2> "$OUT/peer.log"; then
  echo "peer.py failed (see peer.log):" >&2
  tail -20 "$OUT/peer.log" >&2
  status=1
fi
cat "$OUT/peer.jsonl"

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
machine="${gpu_name:-no nvidia-smi} (ours: Dawn/Vulkan; peer: PyTorch eager fp32 on $PEER_DEVICE)"
echo "== ratios (ours/peer)" >&2
"$PYTHON" bench/compare.py "$OUT/ours.jsonl" "$OUT/peer.jsonl" --commit "$COMMIT" --machine "$machine" > "$OUT/ratios.jsonl" || status=1
"$PYTHON" bench/compare.py "$OUT/ours.jsonl" "$OUT/peer.jsonl" --commit "$COMMIT" --machine "$machine" --markdown \
  | grep '^|' > "$OUT/results.md" || true
cat "$OUT/ratios.jsonl"
cat "$OUT/results.md"

echo "== gpu-check (tensor-core matmul against a Float64 reference)" >&2
node "$(dirname "$BUNDLE")/gpu-check.mjs" --no-timing > "$OUT/gpu-check.jsonl" 2>&1 \
  || echo "gpu-check: a check failed, or the device has no f16 tensor cores (see gpu-check.jsonl)" >&2
tail -1 "$OUT/gpu-check.jsonl" >&2

cp "$OUT/results.md" "$OUT/ratios.jsonl" "$RESULTS/"
tar -czf "$RESULTS/bench.tgz" -C "$OUT" .
exit $status
