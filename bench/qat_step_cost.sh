#!/usr/bin/env bash
# The cost of a QAT training step against an fp32 step (issue 3's target:
# at most 1.3x), per reference model, alternating the two in one run.
#   bench/qat_step_cost.sh [BUILD_DIR] [REPS]
# Prints the median img/s of each and the ratio fp32/QAT (= QAT step cost).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
REPS=${2:-3}
BIN=$BUILD/bench/bench_train
[ -x "$BIN" ] || { echo "build $BIN first (make -C $BUILD bench_train)" >&2; exit 1; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)"
printf "%-9s %12s %12s %10s\n" model "fp32 img/s" "QAT img/s" "QAT cost"
for model in lenet resnet20 mbv2; do
  fp=(); q=()
  for ((r = 0; r < REPS; r++)); do
    fp+=("$("$BIN" --model "$model" --steps 8 --warmup 2 | sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p')")
    q+=("$("$BIN" --model "$model" --steps 8 --warmup 2 --qat | sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p')")
  done
  med() { printf "%s\n" "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  f=$(med "${fp[@]}"); g=$(med "${q[@]}")
  printf "%-9s %12s %12s %9.2fx\n" "$model" "$f" "$g" "$(echo "$f / $g" | bc -l)"
done
