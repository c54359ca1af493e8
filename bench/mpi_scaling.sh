#!/usr/bin/env bash
# Data-parallel training on one machine: images/s of 1 rank x 2 threads
# against 2 ranks x 1 thread (mpirun), the bytes each rank communicates per
# step and the time spent waiting for the gradient sums (docs/distributed.md).
#   bench/mpi_scaling.sh [BUILD_DIR] [CONFIG] [STEPS]
# Each run trains STEPS steps of CONFIG (default configs/lenet.json, global
# batch 128); the rate is taken between step 10 and the last, from the
# metrics rank 0 writes, so start-up and the first steps do not count.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CONFIG=${2:-configs/lenet.json}
STEPS=${3:-60}
TRAIN=$BUILD/train/train
[ -x "$TRAIN" ] || { echo "build $TRAIN first" >&2; exit 1; }
MPI=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)"
echo "config: $CONFIG, $STEPS steps, train.batch_size (global) $(grep -o '"batch_size": *[0-9]*' "$CONFIG" | grep -o '[0-9]*$')"

# rate NAME: steady images/s between the records at step 10 and the last one.
rate() {
  python3 - "$TMP/$1/metrics.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
a, b = recs[0], recs[-1]
# images_per_s is the epoch's running mean: images / seconds since its start.
t = lambda r, n: r["step"] * n / r["images_per_s"]
n = 128
ips = (b["step"] - a["step"]) * n / (t(b, n) - t(a, n))
extra = ""
if "comm_bytes_per_step" in b:
    extra = "  per rank and step: gradients %.3f MB + other collectives %.1f kB; gradient wait %.1f ms" % (
        b["gradient_bytes_per_step"] / 1e6, (b["comm_bytes_per_step"] - b["gradient_bytes_per_step"]) / 1e3,
        1e3 * b["gradient_wait_s_total"] / b["step"])
print("%8.1f img/s  (%.1f ms/step)%s" % (ips, 1e3 * n / ips, extra))
PY
}

COMMON=(train.stop_after_steps=$STEPS train.log_every=10 train.checkpoint_every_steps=0 data.workers=1)
run() {  # run NAME LAUNCHER... -- OVERRIDES...
  local name=$1; shift
  local launcher=()
  while [ "$1" != "--" ]; do launcher+=("$1"); shift; done
  shift
  "${launcher[@]}" "$TRAIN" "$CONFIG" "${COMMON[@]}" out_dir="$TMP/$name" "$@" > "$TMP/$name.log" 2>&1 ||
    { echo "$name failed:"; tail -5 "$TMP/$name.log"; exit 1; }
  printf "%-34s %s\n" "$name" "$(rate "$name")"
}
for quant in false true; do
  echo "quant.enabled=$quant"
  run "1 rank x 2 threads" env -- threads=2 quant.enabled=$quant
  run "2 ranks x 1 thread, overlap" "${MPI[@]}" -np 2 -- threads=1 quant.enabled=$quant
  run "2 ranks x 1 thread, no overlap" "${MPI[@]}" -np 2 -- threads=1 quant.enabled=$quant distributed.overlap=false
  run "2 ranks x 1 thread, SyncBN" "${MPI[@]}" -np 2 -- threads=1 quant.enabled=$quant distributed.sync_bn=true
  run "1 rank x 1 thread" env -- threads=1 quant.enabled=$quant
done
