#!/usr/bin/env bash
# One lease of a lent GPU machine: correctness first, then kernel and training figures, logs to $OUT.
# Usage (device tool, carry [".gpu"], after ../shared/tools/gpu-carry.sh and copying the
# stories260K model and GSM8K into .gpu/shared/):
#   source .gpu/enter.sh && bash bench/gpu_session.sh doctor PHASE [PHASE ...]
# Phases: doctor, tests (kernel + graph tests on the GPU), kernels (bench kernels), matmul, attention
# (every attention_gpu thread grid at the 135M and 1B shapes), small (stories260k and stories15m vs
# torch), 135m, 1b (the two recipe shapes vs torch fp32 and bf16), f16 (the f16 matmul kernels
# alone, then the 135M shape with our GEMMs in f16), 1b_f16 (the 1B shape alike), quickstart
# (`deno task train`: every stage of the pipeline on the GPU). One device call runs at most 600 s:
#   doctor tests attention 135m  |  f16 1b  |  1b_f16 quickstart
# (each call's $OUT/session.tgz holds the logs of every phase so far while the machine stays warm).
# NO_TORCH=1 leaves PyTorch out of the train phases; TORCH_IMPL=hf runs transformers' model alone.
set -uo pipefail
OUT=${OUT:-/tmp/out}
LOGS=/tmp/gpu_session
mkdir -p "$OUT" "$LOGS"
# ../shared does not travel with the tree: gpu-carry users copy what the benches read into .gpu/shared.
[ -e ../shared ] || { [ -d .gpu/shared ] && ln -s "$PWD/.gpu/shared" ../shared; }
# gpu-carry.sh leaves out the test-only @lenml tokenizer fixtures (159 MB, over the carry limit):
# drop them from this copy's lockfile, or Deno tries to download them before running anything.
python3 - <<'EOS'
import json
lock = json.load(open("deno.lock"))
for section in ("specifiers", "npm"):
    lock[section] = {k: v for k, v in lock.get(section, {}).items() if "@lenml" not in k}
json.dump(lock, open("deno.lock", "w"), indent=2)
EOS
step() { # step NAME TIMEOUT_S CMD...: run with a limit, log to $OUT/NAME.log, print the last lines
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$LOGS/$name.log"
  echo "=== $name: rc $rc, $((SECONDS - t0)) s"
}
vs_torch=(--vs-torch --torch-device cuda --torch-dtype fp32,bf16 --torch-impl "${TORCH_IMPL:-hf,plain}" --python python3)
# NO_TORCH=1: our side alone (when a phase's PyTorch figures were taken earlier in the lease)
[ "${NO_TORCH:-0}" = 1 ] && vs_torch=()
for phase in "$@"; do
  case $phase in
  doctor) step doctor 60 deno task doctor ;;
  tests) step tests 240 deno test -A --no-check=remote tests/kernels tests/model/llama_graph_test.ts \
    tests/model/decode_graph_test.ts ;;
  kernels) step kernels 120 deno task bench kernels ;;
  matmul) step matmul 90 deno task bench kernels --filter matmul ;;
  attention) TAIL=72 step attention 150 deno task bench kernels --filter attention_sweep ;;
  small) step train_260k 120 deno task bench train --model stories260k "${vs_torch[@]}"
    step train_15m 150 deno task bench train --model stories15m "${vs_torch[@]}" ;;
  135m) step train_135m 180 deno task bench train --model smollm2-135m "${vs_torch[@]}" ;;
  quickstart) step quickstart 240 deno task train ;; # the whole pipeline, end to end
  1b) step train_1b 300 deno task bench train --model llama-3.2-1b "${vs_torch[@]}" ;;
  f16) step matmul_f16 90 deno task bench kernels --filter f16
    step train_135m_f16 180 deno task bench train --model smollm2-135m --matmul-precision f16 \
      "${vs_torch[@]}" ;;
  1b_f16) step train_1b_f16 300 deno task bench train --model llama-3.2-1b --matmul-precision f16 \
    "${vs_torch[@]}" ;;
  *) echo "unknown phase $phase" ;;
  esac
  for f in bench/out/*.json; do [ -f "$f" ] && cp "$f" "$LOGS/${phase}_$(basename "$f")"; done
  rm -f bench/out/*.json
  # every train result so far as one table (also in the archive)
  deno run -A bench/summarize.ts "$LOGS" >"$LOGS/summary.md" 2>&1 && cat "$LOGS/summary.md"
  # The device tool returns at most 8 files: one archive, refreshed after every phase.
  tar czf "$OUT/session.tgz" -C "$LOGS" .
done
