#!/usr/bin/env bash
# Pretrains the bundled base model on the lent GPU machine in calls of at most 10 minutes (docs/PRETRAINING.md).
#
#   bash scripts/pretrain-gpu.sh build          here: bundle the CLI into scratch/pretrain-gpu/tunelab.mjs
#   bash scripts/pretrain-gpu.sh run            on the GPU machine (device tool `run`, carry [".gpu", "scratch/pretrain-gpu"])
#   bash scripts/pretrain-gpu.sh collect DIR    here: DIR = the call's files_at; unpacks into scratch/pretrain-gpu/resume/
#
# `run` does whatever the run needs next, so every call has the same command:
#   - the machine still holds the run (scratch/pretrain-run/out/checkpoint, kept while it stays warm): resume exactly;
#   - else a carried scratch/pretrain-gpu/resume/ (what `collect` unpacked from the last call): resume approximately
#     (weights and data position restored, AdamW's moments from zero; the f32 checkpoint is too large to carry);
#   - else start: `tunelab init` the model, time a few steps, fix --steps so training fits TRAIN_SECONDS (and at most
#     MAX_EPOCHS), and train.
# Each call trains until CALL_SECONDS (less FINISH_SECONDS) with --time-limit, then packs into $OUT: run.tar.gz
# (pretrain.json, metrics.jsonl, config.json, tokenizer.json, MODEL_CARD.md, and once complete eval.json and
# samples.jsonl), model.safetensors.partNN (the f16 weights in 15 MiB pieces: $OUT takes files of 16 MiB at most)
# and run.log. Settings come from the environment (defaults below); they only matter when a run starts.
#
# A dry run on SwiftShader here, with a tiny model:
#   printf 'export DAWN_FLAGS=""\n' > /tmp/no-gpu-setup.sh
#   SETUP=/tmp/no-gpu-setup.sh OUT=/tmp/pretrain-out LAYERS=2 DIM=32 HEADS=2 CONTEXT=32 TOKENIZER=bytes BATCH=4 \
#     PROBE_STEPS=3 TRAIN_SECONDS=20 CALL_SECONDS=300 bash scripts/pretrain-gpu.sh run

set -euo pipefail
cd "$(dirname "$0")/.."

GPU_DIR=${GPU_DIR:-scratch/pretrain-gpu}   # carried to the machine: the bundle, and resume/ after a collect
RUN=${RUN:-scratch/pretrain-run}           # on the machine only (ignored, not carried): survives while it stays warm
BUNDLE=$GPU_DIR/tunelab.mjs

# The model (docs/PRETRAINING.md says why this shape): 10,101,760 parameters, 20.2 MB in f16.
LAYERS=${LAYERS:-6}
DIM=${DIM:-320}
HEADS=${HEADS:-5}
CONTEXT=${CONTEXT:-256}
TOKENIZER=${TOKENIZER:-corpus}             # a directory holding tokenizer.json, or 'bytes'
MODEL_NAME=${MODEL_NAME:-tunelab-base}     # the title of MODEL_CARD.md
MODEL_SEED=${MODEL_SEED:-0}
# The run.
CORPUS=${CORPUS:-corpus/train.txt.gz}
VALIDATION=${VALIDATION:-corpus/validation.txt.gz}
BATCH=${BATCH:-32}                         # rows of CONTEXT tokens per step
LR=${LR:-1e-3}
MIN_LR_RATIO=${MIN_LR_RATIO:-0.1}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
BETA2=${BETA2:-0.99}
GRAD_CLIP=${GRAD_CLIP:-1}
SEED=${SEED:-0}
STEPS=${STEPS:-}                           # fixed step count; empty = from the measured speed
TRAIN_SECONDS=${TRAIN_SECONDS:-1200}       # training time the whole run may take, all calls together
MAX_EPOCHS=${MAX_EPOCHS:-10}               # the corpus is small: more passes mostly overfit
PROBE_STEPS=${PROBE_STEPS:-40}
# This call.
CALL_SECONDS=${CALL_SECONDS:-585}          # the device tool stops a command at 600 s
FINISH_SECONDS=${FINISH_SECONDS:-60}       # kept for the final evaluation, samples and packing
SAMPLE_PROMPTS=(
  'The whale'
  'It is my duty to'
  'Call me Ishmael.'
  'The economy of our country'
  'Fellow-Citizens of the Senate and House of Representatives:'
)

tl() { node "$BUNDLE" "$@"; }
say() { printf '== %s\n' "$*" >&2; }
fail() { printf 'pretrain-gpu: %s\n' "$*" >&2; exit 1; }
# A field of a JSON file, or of the last line of a JSON-lines file: json FILE result.step
json() {
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8").trim();
    let v;
    try { v = JSON.parse(text); } catch { v = JSON.parse(text.split("\n").pop()); }
    console.log(process.argv[2].split(".").reduce((o, k) => o?.[k], v) ?? "");' "$1" "$2"
}

build() {
  [ -d node_modules/esbuild ] || fail 'npm install first (esbuild comes with vite)'
  mkdir -p "$GPU_DIR"
  # The whole CLI as one ES module, WGSL inlined (as Vite and bin/raw-loader.mjs give it); `webgpu` stays external:
  # on the machine Dawn is loaded from DAWN_NODE (.gpu/setup.sh), here from node_modules.
  node --input-type=module -e '
    import { build } from "esbuild";
    import { readFile } from "node:fs/promises";
    import { resolve } from "node:path";
    const [root, outfile] = process.argv.slice(1);
    const rawText = { name: "raw-text", setup(b) {
      b.onResolve({ filter: /\?raw$/ }, (a) => ({ path: resolve(a.resolveDir, a.path.slice(0, -4)), namespace: "raw-text" }));
      b.onLoad({ filter: /.*/, namespace: "raw-text" }, async (a) => ({ contents: await readFile(a.path, "utf8"), loader: "text" }));
    } };
    await build({
      stdin: { contents: "import { main } from \"./src/cli/main.ts\"; process.exitCode = await main(process.argv.slice(2));", resolveDir: root, loader: "ts", sourcefile: "pretrain-gpu-entry.ts" },
      outfile, bundle: true, platform: "node", format: "esm", target: "node20", external: ["webgpu"], plugins: [rawText],
      legalComments: "none", logLevel: "warning", banner: { js: "// Generated by scripts/pretrain-gpu.sh build from src/cli; do not edit." },
    });' "$PWD" "$BUNDLE"
  tl pretrain --help > /dev/null
  say "built $BUNDLE ($(du -h "$BUNDLE" | cut -f1)); carry [\".gpu\", \"$GPU_DIR\"]"
  [ -f .gpu/setup.sh ] || say 'no .gpu/ yet: run ../shared/gpu/pack.sh (Node, Dawn and the Vulkan loader for the machine)'
  du -sh "$GPU_DIR" .gpu 2>/dev/null || true
}

# Seconds this call may still train.
remaining() { echo $(( CALL_SECONDS - FINISH_SECONDS - ($(date +%s) - CALL_START) )); }

start_run() {
  say "init: $LAYERS layers × $DIM wide × $HEADS heads, context $CONTEXT, tokenizer $TOKENIZER"
  rm -rf "$RUN/init" "$RUN/probe" "$RUN/out"
  tl init --out "$RUN/init" --layers "$LAYERS" --dim "$DIM" --heads "$HEADS" --context "$CONTEXT" --tokenizer "$TOKENIZER" --seed "$MODEL_SEED"
  local data=(--model "$RUN/init" --corpus "$CORPUS" --validation "$VALIDATION" --batch-size "$BATCH" --seq "$CONTEXT" --seed "$SEED")
  if [ -z "$STEPS" ]; then
    say "probe: $PROBE_STEPS steps to measure tokens/s"
    tl pretrain "${data[@]}" --out "$RUN/probe" --steps "$PROBE_STEPS" --eval-every 0 --eval-batches 1 --lr "$LR" > "$RUN/probe.json"
    STEPS=$(node -e '
      const fs = require("fs");
      const [resultFile, recordFile, seconds, epochs, perStep] = process.argv.slice(1);
      const result = JSON.parse(fs.readFileSync(resultFile, "utf8").trim().split("\n").pop());
      const record = JSON.parse(fs.readFileSync(recordFile, "utf8"));
      const byTime = Math.floor((0.9 * seconds * result.tokensPerSecond) / perStep); // 10% for evaluations and saves
      const byEpochs = Math.floor((epochs * record.corpus.train.tokens) / perStep);
      console.log(Math.max(1, Math.min(byTime, byEpochs)));
    ' "$RUN/probe.json" "$RUN/probe/pretrain.json" "$TRAIN_SECONDS" "$MAX_EPOCHS" "$((BATCH * CONTEXT))")
    say "probe: $(json "$RUN/probe.json" tokensPerSecond) tokens/s → $STEPS steps (TRAIN_SECONDS $TRAIN_SECONDS, MAX_EPOCHS $MAX_EPOCHS)"
    mkdir -p "$RUN/out" && cp -r "$RUN/probe/tokens" "$RUN/out/tokens" # tokenized once
  fi
  local save=$(( STEPS / 10 > 50 ? STEPS / 10 : 50 ))
  ARGS=("${data[@]}" --out "$RUN/out" --steps "$STEPS" --lr "$LR" --schedule cosine --min-lr-ratio "$MIN_LR_RATIO"
        --weight-decay "$WEIGHT_DECAY" --beta2 "$BETA2" --grad-clip "$GRAD_CLIP" --save-every "$save" --dtype f16 --name "$MODEL_NAME")
}

finish_run() {
  say 'complete: evaluating the f16 model files on the held-out text, and samples'
  local text=$RUN/validation.txt
  case "$VALIDATION" in *.gz) gzip -dc "$VALIDATION" > "$text" ;; *) cp "$VALIDATION" "$text" ;; esac
  tl eval --model "$RUN/out" --data "$text" --format text --batch-size "$BATCH" > "$RUN/out/eval.json"
  : > "$RUN/out/samples.jsonl"
  for prompt in "${SAMPLE_PROMPTS[@]:0:${SAMPLE_COUNT:-${#SAMPLE_PROMPTS[@]}}}"; do
    tl generate --model "$RUN/out" --prompt "$prompt" --max-new-tokens 96 --temperature 0.8 --top-k 40 --seed 1 --json >> "$RUN/out/samples.jsonl" \
      || say "no sample for: $prompt"
  done
}

pack() {
  local out=$RUN/out pack=$RUN/pack
  [ -f "$out/pretrain.json" ] || { say 'nothing to pack yet'; return; }
  rm -rf "$pack" && mkdir -p "$pack"
  for f in pretrain.json metrics.jsonl config.json tokenizer.json MODEL_CARD.md eval.json samples.jsonl; do
    [ -f "$out/$f" ] && cp "$out/$f" "$pack/"
  done
  (cd "$out" && sha256sum model.safetensors) > "$pack/model.safetensors.sha256"
  tar -czf "$OUT/run.tar.gz" -C "$pack" .
  split -b 15M -d -a 2 "$out/model.safetensors" "$OUT/model.safetensors.part"
  say "packed step $(json "$out/pretrain.json" result.step) of $(json "$out/pretrain.json" result.totalSteps) into $OUT"
}

run_chunk() {
  mkdir -p "$RUN"
  if [ -f "$RUN/out/checkpoint/trainer_state.json" ] || [ -f "$RUN/out/checkpoint.old/trainer_state.json" ]; then
    say 'resuming exactly from the checkpoint this machine still holds'
    ARGS=(--resume "$RUN/out")
  elif [ -f "$GPU_DIR/resume/pretrain.json" ]; then
    local shape
    shape=$(json "$GPU_DIR/resume/pretrain.json" model.layers)x$(json "$GPU_DIR/resume/pretrain.json" model.width)x$(json "$GPU_DIR/resume/pretrain.json" model.heads)
    [ "$shape" = "${LAYERS}x${DIM}x${HEADS}" ] \
      || fail "the carried $GPU_DIR/resume holds a ${shape} model, not ${LAYERS}x${DIM}x${HEADS}: delete it (here) to start afresh"
    say "a fresh machine: resuming approximately from the carried $GPU_DIR/resume"
    rm -rf "$RUN/out"
    ARGS=(--resume "$GPU_DIR/resume" --out "$RUN/out" --corpus "$CORPUS" --validation "$VALIDATION") # paths may differ there
  else
    start_run
  fi
  local left status=0
  left=$(remaining)
  if [ "$left" -ge 30 ]; then
    say "training for at most $left s"
    tl pretrain "${ARGS[@]}" --time-limit "$left" > "$RUN/result.json" || status=$?
    cat "$RUN/result.json"
  else
    say "only $left s left in this call: not training"
  fi
  if [ "$status" -eq 0 ] && [ -f "$RUN/result.json" ] && [ "$(json "$RUN/result.json" complete)" = true ]; then finish_run || status=$?; fi
  pack
  return "$status"
}

run() {
  CALL_START=$(date +%s)
  # shellcheck disable=SC1090
  source "${SETUP:-.gpu/setup.sh}"
  [ -f "$BUNDLE" ] || fail "no $BUNDLE: run 'bash scripts/pretrain-gpu.sh build' here and carry $GPU_DIR"
  OUT=${OUT:-/tmp/pretrain-out}
  mkdir -p "$OUT"
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  node: $(node --version)  DAWN_FLAGS: ${DAWN_FLAGS:-}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
    run_chunk
  } 2>&1 | tee -a "$OUT/run.log"
}

collect() {
  local from=${1:?usage: pretrain-gpu.sh collect FILES_AT}
  local dest=$GPU_DIR/resume
  [ -f "$from/run.tar.gz" ] || fail "$from has no run.tar.gz"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  tar -xzf "$from/run.tar.gz" -C "$dest.new"
  cat "$from"/model.safetensors.part* > "$dest.new/model.safetensors"
  (cd "$dest.new" && sha256sum --quiet -c model.safetensors.sha256) || fail 'the joined model.safetensors does not match its checksum'
  [ -f "$from/run.log" ] && cp "$from/run.log" "$dest.new/"
  rm -rf "$dest" && mv "$dest.new" "$dest"
  node -e '
    const fs = require("fs");
    const dir = process.argv[1];
    const r = JSON.parse(fs.readFileSync(`${dir}/pretrain.json`, "utf8"));
    const ev = r.result.lastEval;
    console.log(`step ${r.result.step}/${r.result.totalSteps}${r.result.complete ? " (complete)" : ""}, ${r.result.tokensSeen} tokens, ` +
      `train loss ${r.result.finalTrainLoss?.toFixed(4)}, validation loss ${ev?.loss.toFixed(4)} (ppl ${ev?.perplexity.toFixed(2)}) at step ${ev?.step}`);
    if (fs.existsSync(`${dir}/eval.json`)) console.log("f16 model on the validation text:", fs.readFileSync(`${dir}/eval.json`, "utf8").trim());
  ' "$dest"
  say "unpacked into $dest (a model directory; the next call carries it in case the machine is gone)"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  collect) shift; collect "$@" ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
