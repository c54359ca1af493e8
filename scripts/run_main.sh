#!/usr/bin/env bash
# The main job: installs what is missing, builds, then trains lenet on
# Fashion-MNIST with the fp32 recipe of DESIGN.md (3 epochs; about 5 minutes
# on 2 cores) and evaluates it. Extra arguments are config overrides, e.g.
#   scripts/run_main.sh model.arch=resnet20 out_dir=runs/resnet20
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/train/train configs/lenet.json out_dir=runs/main "$@"
echo
echo "main job done: the checkpoint, metrics.jsonl and config.resolved.json are in runs/main/"
