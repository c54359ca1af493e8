#!/usr/bin/env bash
# Checks that bench/torch_models.py builds the same state (names and shapes,
# in qforge's order) as qforge's model builders, for every reference model.
#   bench/check_state_names.sh [build-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-bench}"
make -C "$build" -j"$(nproc)" bench_train > /dev/null
status=0
for model in lenet resnet20 mbv2; do
  if diff <("$build/bench/bench_train" --list-state --model "$model") \
          <(/usr/bin/python3 bench/torch_models.py names "$model"); then
    echo "$model: state names and shapes match"
  else
    echo "$model: state differs (< qforge, > PyTorch)"; status=1
  fi
done
exit $status
