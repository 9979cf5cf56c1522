#!/usr/bin/env bash
# The one GPU script: the GPU tier, the whole stack on CuPy, and timings. Under 5 minutes on one GPU.
# Needs only numpy, scipy, cupy, pytest, hypothesis (torch, matplotlib, graphviz, sklearn optional: the
# parts that need a missing package say SKIP and why). Installs nothing; runs from the source tree.
#   bash benchmarks/gpu_check.sh                       # on a GPU machine
#   GRAPHDIFF_CUPY_STANDIN=1 bash benchmarks/gpu_check.sh   # anywhere: the CuPy stand-in (tests/cupy_standin)
#   GPU_CHECK_PARTS="tier bench-*" bash benchmarks/gpu_check.sh   # only the parts matching these patterns
#   GPU_CHECK_OUT=/some/dir bash benchmarks/gpu_check.sh  # keep the results there as each part ends
# Prints one line per part (PASS / FAIL / SKIP part: reason, with its seconds) and exits non-zero if any part
# fails. On a fresh machine CuPy compiles each kernel at its first use, so the first parts take longest.
# With GPU_CHECK_OUT, each part's output is appended to DIR/gpu_check.log and the summary so far rewritten
# to DIR/summary.txt as soon as the part ends, and the benchmarks write their JSON there (else to
# benchmarks/results): a run stopped part-way (a time limit) keeps every part it finished, in a few files.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "${GRAPHDIFF_CUPY_STANDIN:-}" = "1" ]; then
  export PYTHONPATH="$ROOT/tests/cupy_standin:$PYTHONPATH"
fi
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SUMMARY=()
FAILED=0
OUTDIR=${GPU_CHECK_OUT:-}
RES=${OUTDIR:-$ROOT/benchmarks/results}      # where the benchmarks' JSON goes
if [ -n "$OUTDIR" ]; then
  mkdir -p "$OUTDIR" && : >"$OUTDIR/gpu_check.log" && : >"$OUTDIR/summary.txt" || exit 1
fi

keep() {   # keep NAME: with GPU_CHECK_OUT, the part's log appended to gpu_check.log, the summary rewritten
  [ -n "$OUTDIR" ] || return 0
  { echo "===== $1"; cat "$WORK/$1.log" 2>/dev/null; } >>"$OUTDIR/gpu_check.log"
  printf '%s\n' "${SUMMARY[@]}" >"$OUTDIR/summary.txt"
}

selected() {   # selected NAME: true unless GPU_CHECK_PARTS is set and no pattern in it matches NAME
  [ -z "${GPU_CHECK_PARTS:-}" ] && return 0
  local pat
  for pat in $GPU_CHECK_PARTS; do
    # shellcheck disable=SC2053  (a glob pattern on purpose)
    [[ $1 == $pat ]] && return 0
  done
  return 1
}

part() {   # part NAME COMMAND...: run it, log to $WORK/NAME.log, record PASS/FAIL and its seconds
  local name=$1; shift
  selected "$name" || return 0
  local start=$SECONDS rc=0
  "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then
    SUMMARY+=("PASS $name ($((SECONDS - start)) s)")
  else
    SUMMARY+=("FAIL $name (exit $rc, $((SECONDS - start)) s; last lines below)")
    FAILED=1
    echo "----- $name failed:"; tail -25 "$WORK/$name.log"
  fi
  keep "$name"
}

skip_unless() {   # skip_unless NAME MODULE: true when MODULE imports, else records SKIP (if NAME is selected)
  if $PY -c "import $2" >/dev/null 2>&1; then return 0; fi
  selected "$1" || return 1
  SUMMARY+=("SKIP $1: the '$2' package is not installed here")
  keep "$1"
  return 1
}

$PY - <<'PY' || { echo "FAIL setup: CuPy or its GPU is not usable"; exit 1; }
import cupy, numpy
print(f"cupy {cupy.__version__}, numpy {numpy.__version__}, "
      f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
PY

# 1. the GPU tier: the op table, random DAGs, nn/lm parity, CuPy == NumPy, sync counts (stand-in only),
#    the stand-in's own checks. Files that import torch or graphviz are left out when those are missing.
TIER=(tests/ops tests/test_autodiff.py tests/test_backend.py tests/test_gpu.py tests/test_standin.py
      tests/test_syncs.py tests/nn tests/lm/test_generate.py tests/lm/test_gpt.py tests/lm/test_capture.py)
HAVE_TORCH=0
$PY -c "import torch" >/dev/null 2>&1 && HAVE_TORCH=1
without_torch() {   # without_torch PATH...: the paths, less the test files that import torch (or tests/lm/
  # torch_ref) at the top when torch is missing here, and --ignore for those inside folders
  if [ $HAVE_TORCH = 1 ]; then printf '%s\n' "$@"; return; fi
  local f torchy
  torchy=$(grep -rlE "^(import torch|from torch|from \.torch_ref import)" tests --include="test_*.py")
  for f in "$@"; do grep -qxF "$f" <<<"$torchy" || echo "$f"; done
  for f in $torchy; do echo "--ignore=$f"; done
}
if [ $HAVE_TORCH = 0 ] && selected tier; then
  SUMMARY+=("NOTE tier: torch is not installed here: the test files that import it are left out")
fi
mapfile -t TIER_RUN < <(without_torch "${TIER[@]}")
part tier $PY -m pytest -q -p no:cacheprovider -m gpu "${TIER_RUN[@]}"

# 1b. the fused CuPy kernels (ops/fused_cupy.py; opt-in: GRAPHDIFF_CUPY_KERNELS=1): each against its rule at
#     the H200 GPT's shapes and timed against it (benchmarks/results/kernels_cupy.json), then the op table,
#     nn and GPT tests with the kernels bound
if [ "${GRAPHDIFF_CUPY_STANDIN:-}" = "1" ]; then
  part kernels $PY benchmarks/bench_kernels.py --backend cupy --quick --json "$WORK/kernels_cupy.json"
else
  part kernels $PY benchmarks/bench_kernels.py --backend cupy --json "$RES/kernels_cupy.json"
fi
grep -E "^(gelu|softmax|log_softmax|layer_norm|adamw) |MISMATCH|FAIL|agree" "$WORK/kernels.log" 2>/dev/null | sed 's/^/  /'
mapfile -t KERNEL_TIER < <(without_torch tests/test_gpu.py tests/ops/test_ops.py tests/nn tests/lm/test_gpt.py)
part tier-cupy-kernels env GRAPHDIFF_CUPY_KERNELS=1 $PY -m pytest -q -p no:cacheprovider -m gpu "${KERNEL_TIER[@]}"

# 2. the whole stack on CuPy, as a user runs it
TINY=(--model gpt --steps 40 --batch-size 8 --block-size 32 --n-layer 2 --n-head 2 --n-embd 32
      --eval-every 20 --eval-batches 2 --sample-chars 40 --no-progress --backend cupy)
part train     $PY -m graphdiff train "${TINY[@]}" --out "$WORK/ckpt"
part train-cuda-graph $PY -m graphdiff train "${TINY[@]}" --dropout 0 --cuda-graph --out "$WORK/ckpt-graph"
part resume    $PY -m graphdiff train "${TINY[@]}" --steps 50 --out "$WORK/ckpt" --resume
part generate  $PY -m graphdiff generate --checkpoint "$WORK/ckpt" --prompt "def " --max-new-tokens 40 --backend cupy
part generate-cuda-graph $PY -m graphdiff generate --checkpoint "$WORK/ckpt" --prompt "def " --max-new-tokens 40 \
                           --cuda-graph --backend cupy
part generate-no-cache $PY -m graphdiff generate --checkpoint "$WORK/ckpt" --prompt "def " --max-new-tokens 40 \
                           --no-kv-cache --backend cupy
if skip_unless demo graphviz; then
  part demo    $PY -m graphdiff demo --backend cupy
fi
part gradcheck $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_stack.py -k gradcheck
if skip_unless render graphviz; then
  part render  $PY -m graphdiff render mlp --out "$WORK/viz" --backend cupy
  part compare $PY -m graphdiff compare scalar --repeats 1 --out "$WORK/viz" --backend cupy
  if skip_unless growth matplotlib; then
    part growth $PY -m graphdiff growth --max-len 8 --render-len 2 --out "$WORK/growth" --backend cupy
  fi
elif selected compare || selected growth; then
  SUMMARY+=("SKIP compare, growth: need the graphviz package too (DOT building); pip install graphviz graphviz-pure")
fi
part example-lecture_mlp  $PY examples/lecture_mlp.py --backend cupy
part example-module_tape  $PY examples/module_tape.py --backend cupy
part example-scalar_graph $PY examples/scalar_graph.py --backend cupy
part example-tiny_gpt     $PY examples/tiny_gpt.py --backend cupy --steps 40 --chars 50000
if skip_unless example-pretrain_finetune sklearn; then
  part example-pretrain_finetune $PY examples/pretrain_finetune.py --backend cupy --seeds 1
fi
part example-attention_positions $PY examples/attention_positions.py --backend cupy
part example-batching    $PY examples/batching.py --backend cupy
part example-decoding    $PY examples/decoding.py --backend cupy --steps 40 --chars 50000
part example-finetune_lm $PY examples/finetune_lm.py --backend cupy --pre-steps 40 --steps 40 --pre-chars 50000 \
  --new-chars 5000 --out "$WORK/finetune"

# 3. timings: GPT forward + backward step, generation tokens/s with and without the KV cache
part timings $PY - <<'PY'
import statistics, time
import numpy as np
import cupy
import graphdiff as gd
from graphdiff.lm import GPT, generate

def sync():
    cupy.cuda.Device().synchronize()

def median_ms(fn, n=5):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3

rng = np.random.default_rng(0)
for B, T, L, C in [(8, 64, 2, 64), (16, 128, 4, 256)]:
    m = GPT(vocab_size=96, block_size=T, n_layer=L, n_head=4, n_embd=C, seed=0, backend="cupy")
    idx = rng.integers(1, 96, (B, T)); mask = np.ones((B, T), bool)
    for fused in (False, True):
        with gd.fused_kernels(cupy=fused):
            ms = median_ms(lambda: m.loss(idx, idx, mask, backward=True))
        print(f"GPT B={B} T={T} L={L} C={C}: fwd+bwd step {ms:.1f} ms, fused CuPy kernels {'on' if fused else 'off'}")
m = GPT(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=256, seed=0, backend="cupy")
for cache, graph in ((True, False), (True, True), (False, False)):
    generate(m, [1, 2, 3], 16, greedy=True, use_cache=cache, cuda_graph=graph)
    t = time.perf_counter(); generate(m, [1, 2, 3], 100, greedy=True, use_cache=cache, cuda_graph=graph); sync()
    how = ("KV cache, CUDA graph" if graph else "KV cache") if cache else "recompute"
    print(f"generation, {how}: {100 / (time.perf_counter() - t):.0f} tok/s")
PY
cat "$WORK/timings.log" 2>/dev/null | sed 's/^/  /'

# 4. graphdiff on CuPy against PyTorch eager CUDA, same process (benchmarks/results/gpu.json; under 3 minutes)
if skip_unless bench-gpu torch; then
  if [ "${GRAPHDIFF_CUPY_STANDIN:-}" = "1" ]; then
    part bench-gpu $PY benchmarks/bench_gpu.py --smoke --json "$WORK/gpu.json"
    part bench-gpu-train $PY benchmarks/bench_gpu.py --train-step --smoke --json "$WORK/gpu_train.json"
    part bench-gpu-train-kernels env GRAPHDIFF_CUPY_KERNELS=1 $PY benchmarks/bench_gpu.py --train-step --smoke \
      --json "$WORK/gpu_train_kernels.json"
  else
    part bench-gpu $PY benchmarks/bench_gpu.py --json "$RES/gpu.json"
    part bench-gpu-tf32 $PY benchmarks/bench_gpu.py --tf32 --rounds 15 --json "$RES/gpu_tf32.json"
    part bench-gpu-train $PY benchmarks/bench_gpu.py --train-step --rounds 15 --json "$RES/gpu_train.json"
    # the same training steps with the fused CuPy kernels on (the ops' kernels and AdamW's one-kernel update)
    part bench-gpu-train-kernels env GRAPHDIFF_CUPY_KERNELS=1 $PY benchmarks/bench_gpu.py --train-step --rounds 15 \
      --json "$RES/gpu_train_kernels.json"
  fi
  grep -hE "^(gpu|small|tiny) |memory|GPU:" "$WORK/bench-gpu.log" "$WORK/bench-gpu-train.log" \
    "$WORK/bench-gpu-train-kernels.log" 2>/dev/null | sed 's/^/  /'
fi

echo "===== gpu_check summary"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
