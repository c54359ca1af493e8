#!/usr/bin/env bash
# Training speed of qforge beside PyTorch 1.13 (Debian's python3-torch) in one
# run: model by model, alternating the two (and which goes first) for a few
# repetitions, then a table of median images/s, the ratio qforge/PyTorch, and
# peak RSS. Every measurement is its own process.
#
#   bench/train_speed.sh [--reps 3] [--steps 20] [--warmup 3] [--threads 2]
#                        [--models "lenet resnet20 mbv2"] [--build build-bench]
#                        [--out docs/train_speed.md]
#
# It builds bench_train in the build folder first (configuring it if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

reps=3 steps=20 warmup=3 threads=2 models="lenet resnet20 mbv2" build=build-bench out=""
command_line="bench/train_speed.sh $*"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "train_speed.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# Debian's python3-torch lives in the system Python, which may not be the
# python3 first on PATH.
PYTHON=/usr/bin/python3
"$PYTHON" -c "import torch" 2>/dev/null || { echo "train_speed.sh: $PYTHON has no torch (apt-get install python3-torch)" >&2; exit 1; }

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
make -C "$build" -j"$(nproc)" bench_train > /dev/null
BENCH="$build/bench/bench_train"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
common=(--steps "$steps" --warmup "$warmup" --threads "$threads")
# PyTorch's Linear layers go through BLIS, which ignores torch.set_num_threads.
export BLIS_NUM_THREADS="$threads"

run_qforge() { "$BENCH" --model "$1" "${common[@]}" | tee -a "$results" | grep -v '^RESULT'; }
run_pytorch() { "$PYTHON" bench/torch_train.py --model "$1" "${common[@]}" | tee -a "$results" | grep -v '^RESULT'; }

for model in $models; do
  for rep in $(seq 1 "$reps"); do
    echo "== $model, repetition $rep/$reps"
    # Alternate which side goes first, so a slow drift of the machine's load
    # does not always fall on the same one.
    if [ $((rep % 2)) -eq 1 ]; then run_qforge "$model"; run_pytorch "$model"
    else run_pytorch "$model"; run_qforge "$model"; fi
  done
done

table=$("$PYTHON" bench/speed_table.py "$results")
echo
echo "$table"

if [ -n "$out" ]; then
  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  torch_version=$("$PYTHON" -c "import torch; print(torch.__version__)")
  {
    echo "# Training speed: qforge beside PyTorch"
    echo
    echo "Training images/s (forward, cross-entropy, backward, SGD momentum 0.9 + weight decay"
    echo "5e-4) at batch $(grep -m1 -o 'batch=[0-9]*' "$results" | cut -d= -f2) on random 1x28x28 data;"
    echo "median over $reps repetitions of the median of $steps steps after $warmup warmup steps;"
    echo "ratio above 1 means qforge is faster. The best-step column takes the fastest single"
    echo "step of all repetitions: the closer estimate of an idle machine when others share it."
    echo "Peak RSS is each process's ru_maxrss"
    echo "(PyTorch's includes the torch library itself)."
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $cpu, nproc $(nproc)"
    echo "- threads: $threads (qforge OpenMP+BLIS; PyTorch torch.set_num_threads($threads), BLIS_NUM_THREADS=$BLIS_NUM_THREADS)"
    echo "- PyTorch: $torch_version ($PYTHON); qforge commit $(git rev-parse --short HEAD)"
    echo "- command: \`$command_line\`"
    echo "- load average (1, 5, 15 min) at the start: $load_at_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "$table"
    echo
    echo "## Where qforge's step time goes"
    echo
    echo "Per-op wall time of qforge's training step (\`$BENCH --model MODEL --steps 5 --warmup 2"
    echo "--threads $threads --profile\`, run right after the table; the markers add a little to every op)."
    for model in $models; do
      echo
      echo "### $model"
      echo
      echo '```'
      "$BENCH" --model "$model" --steps 5 --warmup 2 --threads "$threads" --profile | grep -v '^RESULT'
      echo '```'
    done
  } > "$out"
  echo "wrote $out"
fi
