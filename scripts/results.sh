#!/usr/bin/env bash
# Generates docs/results.md: Fashion-MNIST test accuracy of the reference
# models quantized to 8 bits after training (the `quantize` binary), in the
# layout of the whitepaper's table (Krishnamoorthi 2018, table 2/3), then
# PTQ with cross-layer equalization and bias correction, then QAT when a QAT
# run exists. Every number in the file comes from a run of this script.
#
#   scripts/results.sh [--models "lenet resnet20 mbv2"] [--fp32-dir runs]
#                      [--build build] [--out docs/results.md]
#
# --fp32-dir DIR  reuse DIR/<arch>/last.safetensors (the fp32 recipe's
#                 checkpoints) instead of training them (into runs/results_fp32/).
# --models LIST   space- or comma-separated subset (default: all three).
# --build DIR     where the quantize and train binaries are (default: build).
# Runs go to runs/results/<arch>_<variant>/ (model.int8.safetensors and
# quantize.log each). QAT: the last int8 evaluation in runs/<arch>_qat/metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

models="lenet resnet20 mbv2"
fp32_dir=""
build=build
out=docs/results.md
command_line="scripts/results.sh $*"
while [[ $# -gt 0 ]]; do
    case $1 in
        --models) models=${2//,/ }; shift 2 ;;
        --fp32-dir) fp32_dir=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "results.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
quantize=$build/train/quantize
train=$build/train/train
[[ -x $quantize ]] || { echo "results.sh: $quantize not found; build it first (make -C $build quantize)" >&2; exit 2; }
for arch in $models; do
    [[ -f configs/$arch.json ]] || { echo "results.sh: no config configs/$arch.json for model '$arch'" >&2; exit 2; }
done

# The PTQ variants: name, then the overrides. Activations are 8-bit
# asymmetric per-tensor throughout (the config's defaults), observer minmax.
common="quant.weight_bits=8 quant.activation_bits=8 quant.activation_symmetric=false quant.observer=minmax ptq.calibration_batches=16"
plain="ptq.equalize=false ptq.bias_correction=none"
variants=(
    "asym_pt:quant.weight_symmetric=false quant.weight_per_channel=false $plain"
    "sym_pc:quant.weight_symmetric=true quant.weight_per_channel=true $plain"
    "asym_pc:quant.weight_symmetric=false quant.weight_per_channel=true $plain"
    "asym_pt_cle_bc:quant.weight_symmetric=false quant.weight_per_channel=false ptq.equalize=true ptq.bias_correction=empirical"
    "sym_pc_cle_bc:quant.weight_symmetric=true quant.weight_per_channel=true ptq.equalize=true ptq.bias_correction=empirical"
)

# The value of KEY=... in the RESULT line of a quantize log.
result_field() { sed -n "s/^RESULT .*[ ]$2=\([^ ]*\).*/\1/p" "$1" | tail -1; }
fmt() { [[ -z $1 || $1 == nan ]] && echo "–" || printf '%.2f' "$1"; }

# The test top-1 of the last eval record of a metrics.jsonl (QAT: the int8 graph's).
last_eval_top1() {
    local f=$1
    if command -v jq >/dev/null; then
        jq -r 'select(.event == "eval") | .test_top1' "$f" | tail -1
    else
        grep '"event":"eval"' "$f" | tail -1 | sed -n 's/.*"test_top1":\([-0-9.eE+]*\).*/\1/p'
    fi
}

declare -A acc
for arch in $models; do
    if [[ -n $fp32_dir ]]; then
        ckpt=$fp32_dir/$arch/last.safetensors
        [[ -f $ckpt ]] || { echo "results.sh: $ckpt not found (--fp32-dir)" >&2; exit 1; }
    else
        [[ -x $train ]] || { echo "results.sh: $train not found" >&2; exit 2; }
        echo "== $arch: training fp32 (configs/$arch.json) into runs/results_fp32/$arch"
        "$train" "configs/$arch.json" "out_dir=runs/results_fp32/$arch"
        ckpt=runs/results_fp32/$arch/last.safetensors
    fi
    first=1
    for v in "${variants[@]}"; do
        name=${v%%:*}
        overrides=${v#*:}
        dir=runs/results/${arch}_$name
        mkdir -p "$dir"
        skip=--skip-fp32
        [[ $first == 1 ]] && skip=""
        echo "== $arch $name"
        # shellcheck disable=SC2086
        "$quantize" "configs/$arch.json" "quant.init_checkpoint=$ckpt" "out_dir=$dir" $common $overrides $skip \
            > "$dir/quantize.log" 2>&1 || { echo "results.sh: quantize failed, see $dir/quantize.log" >&2; tail -5 "$dir/quantize.log" >&2; exit 1; }
        grep -E '^(ptq:|RESULT)' "$dir/quantize.log" | sed 's/^/   /'
        if [[ $first == 1 ]]; then
            acc[$arch,fp32]=$(result_field "$dir/quantize.log" fp32_top1)
            first=0
        fi
        acc[$arch,$name]=$(result_field "$dir/quantize.log" int8_top1)
    done
    qat_metrics=runs/${arch}_qat/metrics.jsonl
    if [[ -f $qat_metrics ]] && q=$(last_eval_top1 "$qat_metrics") && [[ -n $q ]]; then
        acc[$arch,qat]=$(printf '%.2f' "$q")
        acc[$arch,qat_src]=$qat_metrics
    else
        acc[$arch,qat]="not run"
    fi
done

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
{
    echo "# Results: 8-bit post-training quantization on Fashion-MNIST"
    echo
    echo "Generated by \`$command_line\` on $(date -u '+%Y-%m-%d %H:%M UTC') (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, $(uname -sm). Do not edit by hand: rerun the script."
    echo
    echo "Test top-1 accuracy (%) on the 10,000 test images. fp32: the checkpoint as trained"
    echo "(the fp32 recipe of DESIGN.md; $( [[ -n $fp32_dir ]] && echo "reused from $fp32_dir/<arch>/last.safetensors" || echo "trained by this script")),"
    echo "evaluated before quantization. int8: the frozen integer graph (infer::Model), not the"
    echo "fake-quant simulation. Activations 8-bit asymmetric per-tensor, min/max observer over"
    echo "16 training batches (no augmentation); weights 8-bit; BN folded before quantizing."
    echo
    echo "## Weights per-tensor vs per-channel (the whitepaper's table, PTQ without equalization or bias correction)"
    echo
    echo "| model | asymmetric per-tensor | symmetric per-channel | asymmetric per-channel | fp32 | PyTorch 1.13 (fbgemm / onednn / qnnpack) |"
    echo "|---|---|---|---|---|---|"
    for arch in $models; do
        echo "| $arch | $(fmt "${acc[$arch,asym_pt]}") | $(fmt "${acc[$arch,sym_pc]}") | $(fmt "${acc[$arch,asym_pc]}") | $(fmt "${acc[$arch,fp32]}") | not measured |"
    done
    echo
    echo "## With cross-layer equalization and bias correction, and QAT"
    echo
    echo "CLE: conv→ReLU/ReLU6(→max pool)→conv pairs, depthwise included (ReLU6 clip kept at 6·s);"
    echo "bias correction: empirical, on the calibration batches."
    echo
    echo "| model | fp32 | PTQ asym per-tensor | + CLE + bias corr. | PTQ sym per-channel | + CLE + bias corr. | QAT 8-bit | PyTorch 1.13 |"
    echo "|---|---|---|---|---|---|---|---|"
    for arch in $models; do
        echo "| $arch | $(fmt "${acc[$arch,fp32]}") | $(fmt "${acc[$arch,asym_pt]}") | $(fmt "${acc[$arch,asym_pt_cle_bc]}") | $(fmt "${acc[$arch,sym_pc]}") | $(fmt "${acc[$arch,sym_pc_cle_bc]}") | ${acc[$arch,qat]} | not measured |"
    done
    echo
    qat_sources=""
    for arch in $models; do
        if [[ -n ${acc[$arch,qat_src]:-} ]]; then qat_sources+=" $arch: ${acc[$arch,qat_src]};"; fi
    done
    echo "QAT: the last int8 evaluation recorded in runs/<arch>_qat/metrics.jsonl (the QAT recipe's"
    echo "run, when it exists${qat_sources:+:${qat_sources%;}}); \"not run\" when there is none."
    echo "PyTorch: its eager-mode PTQ of the same weights (bench/torch_models.py with the fbgemm,"
    echo "onednn and qnnpack engines) was not measured by this script, so those columns say \"not measured\"."
    echo
    echo "Each run's log (stage by stage: fold, CLE pairs and sweeps, bias correction, calibration,"
    echo "int8 accuracy) is runs/results/<arch>_<variant>/quantize.log; the overrides per variant:"
    echo
    echo "- common: \`$common\`"
    for v in "${variants[@]}"; do echo "- ${v%%:*}: \`${v#*:}\`"; done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
