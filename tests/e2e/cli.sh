#!/usr/bin/env bash
# The `train` binary on bad input: each case must exit non-zero with a
# message naming what is wrong, and never crash.
#   tests/e2e/cli.sh PATH/TO/train PATH/TO/idx_to_png PATH/TO/quantize PATH/TO/infer
set -u
TRAIN=$1
IDX_TO_PNG=$2
QUANTIZE=$3
INFER=$4
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/expect.sh"

echo '{"model": {"arch": "lenet",}' > "$TMP/malformed.json"
expect "malformed JSON" 2 "malformed.json" -- "$TRAIN" "$TMP/malformed.json"
echo '{"optimizer": {"learning_rate": 0.1}}' > "$TMP/unknown.json"
expect "unknown key" 2 "did you mean 'optimizer.lr'" -- "$TRAIN" "$TMP/unknown.json"
echo '{"train": {"epochs": "three"}}' > "$TMP/type.json"
expect "wrong type" 2 "train.epochs" -- "$TRAIN" "$TMP/type.json"
expect "out of range" 2 "optimizer.lr" -- "$TRAIN" configs/smoke.json optimizer.lr=-1
expect "bad choice" 2 "model.arch" -- "$TRAIN" configs/smoke.json model.arch=vgg
expect "missing config" 2 "nonexistent.json" -- "$TRAIN" "$TMP/nonexistent.json"
expect "missing dataset folder" 1 "$TMP/nope" -- "$TRAIN" configs/smoke.json data.format=folder \
    data.train_dir="$TMP/nope" data.val_dir="$TMP/nope" out_dir="$TMP/run"
mkdir -p "$TMP/empty"
expect "empty dataset folder" 1 "$TMP/empty" -- "$TRAIN" configs/smoke.json data.format=folder \
    data.train_dir="$TMP/empty" data.val_dir="$TMP/empty" out_dir="$TMP/run"
mkdir -p "$TMP/noimg/cat"
touch "$TMP/noimg/cat/readme.txt"
expect "class folder without images" 1 "cat" -- "$TRAIN" configs/smoke.json data.format=folder \
    data.train_dir="$TMP/noimg" data.val_dir="$TMP/noimg" out_dir="$TMP/run"
expect "missing IDX file" 1 "$TMP/none.gz" -- "$TRAIN" configs/smoke.json data.train_images="$TMP/none.gz"

# A checkpoint of another architecture: the first tensor that differs is named.
"$TRAIN" configs/smoke.json out_dir="$TMP/lenet" train.stop_after_steps=1 > /dev/null 2>&1
expect "checkpoint of another arch" 1 "tensor 'model." -- "$TRAIN" configs/smoke.json model.arch=resnet20 \
    --resume "$TMP/lenet/last.safetensors" --eval-only out_dir="$TMP/r20"
head -c 1000 "$TMP/lenet/last.safetensors" > "$TMP/truncated.safetensors"
expect "truncated checkpoint" 1 "truncated.safetensors" -- "$TRAIN" configs/smoke.json \
    --resume "$TMP/truncated.safetensors" --eval-only
expect "eval-only on a good checkpoint" 0 "test top-1" -- "$TRAIN" configs/smoke.json \
    --resume "$TMP/lenet/last.safetensors" --eval-only

# infer --compare: the fp32 checkpoint (run by the train binary) beside its int8 model, same data.
FM=/usr/share/datasets/fashion-mnist
"$TRAIN" configs/smoke.json quant.enabled=true quant.init_checkpoint="$TMP/lenet/last.safetensors" \
    out_dir="$TMP/qat" train.stop_after_steps=1 > /dev/null 2>&1
expect "quantize the smoke checkpoint" 0 "RESULT" -- "$QUANTIZE" configs/smoke.json \
    quant.init_checkpoint="$TMP/lenet/last.safetensors" out_dir="$TMP/ptq" --skip-fp32
expect "infer --compare" 0 "int8 / fp32 speed" -- env QF_TRAIN_BINARY="$TRAIN" "$INFER" "$TMP/ptq/model.int8.safetensors" \
    --data $FM/t10k-images-idx3-ubyte.gz --batch 100 --compare "$TMP/lenet/last.safetensors"
out=$(env QF_TRAIN_BINARY="$TRAIN" "$INFER" "$TMP/ptq/model.int8.safetensors" --data $FM/t10k-images-idx3-ubyte.gz \
    --batch 100 --compare "$TMP/lenet/last.safetensors" 2>&1)
if [[ $(grep -c "fp32: 10000 images\|(10000 images)" <<< "$out") -eq 2 && $(grep -E '^(fp32|int8) +[0-9]' <<< "$out" | wc -l) -eq 2 ]]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); echo "FAIL infer --compare table:"; echo "$out"
fi
expect "infer --compare needs --data" 2 "--compare needs --data" -- "$INFER" "$TMP/ptq/model.int8.safetensors" \
    --image x.png --compare "$TMP/lenet/last.safetensors"
expect "infer --compare of a QAT checkpoint" 1 "a QAT checkpoint" -- env QF_TRAIN_BINARY="$TRAIN" "$INFER" \
    "$TMP/ptq/model.int8.safetensors" --data $FM/t10k-images-idx3-ubyte.gz --compare "$TMP/qat/last.safetensors"
expect "infer --compare of a non-checkpoint" 1 "no 'config'" -- env QF_TRAIN_BINARY="$TRAIN" "$INFER" \
    "$TMP/ptq/model.int8.safetensors" --data $FM/t10k-images-idx3-ubyte.gz --compare "$TMP/ptq/model.int8.safetensors"

# The ImageNet-style case: Fashion-MNIST written out as PNG class folders,
# trained from the folders with decoding on worker threads.
expect "idx_to_png" 0 "" -- "$IDX_TO_PNG" $FM/train-images-idx3-ubyte.gz $FM/train-labels-idx1-ubyte.gz "$TMP/png/train" --limit 300
expect "idx_to_png refuses a non-empty folder" 1 "not empty" -- "$IDX_TO_PNG" $FM/train-images-idx3-ubyte.gz $FM/train-labels-idx1-ubyte.gz "$TMP/png/train" --limit 10
expect "train on PNG folders" 0 "test top-1" -- "$TRAIN" configs/lenet_png.json data.train_dir="$TMP/png/train" \
    data.val_dir="$TMP/png/train" train.epochs=1 train.batch_size=32 out_dir="$TMP/png_run"
printf 'not a png' > "$TMP/png/train/Bag/broken.png"
expect "a corrupt image is skipped with a warning" 0 "broken.png" -- "$TRAIN" configs/lenet_png.json \
    data.train_dir="$TMP/png/train" data.val_dir="$TMP/png/train" train.epochs=1 train.batch_size=32 out_dir="$TMP/png_run2"
expect "or fails when the config says so" 1 "broken.png" -- "$TRAIN" configs/lenet_png.json data.on_bad_image=fail \
    data.train_dir="$TMP/png/train" data.val_dir="$TMP/png/train" train.epochs=1 train.batch_size=32 out_dir="$TMP/png_run3"

echo "cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
