#!/usr/bin/env bash
# The main job: installs what is missing, builds, then on Fashion-MNIST
#   1. trains lenet in float32 with the fp32 recipe of DESIGN.md (3 epochs),
#   2. fine-tunes it with quantization-aware training (1 epoch; qforge's QAT
#      recipe: lr 5e-4 with cosine decay, BN statistics frozen at 50% and
#      ranges at 75%; DESIGN.md's comparison recipe is configs/lenet_qat.json),
#      validating on the frozen int8 graph, and writes the int8 model,
#   3. evaluates that int8 model with the pure-integer `infer` binary.
# Extra arguments are config overrides for both runs, e.g. model.arch=resnet20
# (then also pass quant.init_checkpoint=runs/main/fp32/last.safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/train/train configs/lenet.json out_dir=runs/main/fp32 "$@"
./build/train/train configs/lenet_qat_cosine.json out_dir=runs/main/qat \
    quant.init_checkpoint=runs/main/fp32/last.safetensors "$@"
./build/infer/infer runs/main/qat/model.int8.safetensors \
    --data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --batch 64
echo
echo "main job done:"
echo "  fp32 checkpoint    runs/main/fp32/last.safetensors (metrics.jsonl, config.resolved.json beside it)"
echo "  QAT checkpoint     runs/main/qat/last.safetensors"
echo "  int8 model         runs/main/qat/model.int8.safetensors (run it: build/infer/infer MODEL --data DIR_OR_IDX)"
