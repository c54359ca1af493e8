#!/usr/bin/env bash
# The `sensitivity` binary: bad input exits 1 or 2 with a message naming what
# is wrong; a small good run prints the table and writes the markdown.
#   tests/e2e/sensitivity_cli.sh PATH/TO/sensitivity PATH/TO/train
set -u
SENS=$1
TRAIN=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/expect.sh"

expect "no config" 2 "config file is required" -- "$SENS"
expect "no model" 2 "--qat-checkpoint" -- "$SENS" configs/smoke.json
expect "both checkpoints" 2 "exclude each other" -- "$SENS" configs/smoke.json --checkpoint a --qat-checkpoint b
expect "bad --batches" 2 "--batches" -- "$SENS" configs/smoke.json --checkpoint a --batches 0
expect "bad config key" 2 "quant.weight_bits" -- "$SENS" configs/smoke.json quant.weight_bits=12 --checkpoint a
expect "missing fp32 checkpoint" 1 "$TMP/none.safetensors" -- "$SENS" configs/smoke.json \
    --checkpoint "$TMP/none.safetensors" out_dir="$TMP/ptq"
expect "missing QAT checkpoint" 1 "$TMP/none.safetensors" -- "$SENS" configs/smoke.json \
    --qat-checkpoint "$TMP/none.safetensors"

# A one-step fp32 smoke model: given as a QAT checkpoint it is refused with a hint.
"$TRAIN" configs/smoke.json out_dir="$TMP/fp32" train.stop_after_steps=1 > /dev/null 2>&1
expect "fp32 checkpoint as --qat-checkpoint" 1 "for an fp32 checkpoint use --checkpoint" -- "$SENS" \
    configs/smoke.json --qat-checkpoint "$TMP/fp32/last.safetensors"
expect "another architecture" 1 "resnet20" -- "$SENS" configs/smoke.json model.arch=resnet20 \
    --checkpoint "$TMP/fp32/last.safetensors" out_dir="$TMP/ptq"
expect "a small PTQ report" 0 "local SQNR dB" -- "$SENS" configs/smoke.json --checkpoint "$TMP/fp32/last.safetensors" \
    out_dir="$TMP/ptq" ptq.calibration_batches=2 --batches 1 --eval-images 64 --out "$TMP/report.md"
if grep -q "| 0 | input | input |" "$TMP/report.md" 2>/dev/null; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "FAIL the markdown report has no input row"
fi

echo "sensitivity cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
