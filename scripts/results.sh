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
# quantize.log each). QAT: runs/<arch>_qat/last.safetensors evaluated (int8 graph).
# PyTorch: when /usr/bin/python3 has torch, its FX PTQ (onednn, qnnpack) of the
# same checkpoint; logs in runs/results/<arch>_torch_<engine>.log. And its QAT
# with DESIGN's comparison recipe from the same checkpoint
# (bench/torch_models.py qat; minutes per model), kept in
# runs/results/<arch>_torch_qat.log and reused by later runs (delete it to
# rerun).
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
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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
# An int8 cell: top-1, ties going to the first class as torch.argmax (infer/label_rank.h).
cell() { fmt "${acc[$1,$2]}"; }

# The test top-1 of a QAT run's last checkpoint, evaluated now by the train
# binary (its evaluation of a QAT model runs the frozen int8 graph).
qat_top1() {
    local dir=$1
    [[ -f $dir/last.safetensors && -f $dir/config.resolved.json ]] || return 1
    "$build/train/train" "$dir/config.resolved.json" --resume "$dir/last.safetensors" --eval-only 2>/dev/null |
        sed -n 's/^test top-1 \([0-9.]*\)%.*/\1/p'
}

# PyTorch 1.13 (Debian's /usr/bin/python3) quantizing the same fp32 weights:
# FX post-training static quantization with the engine's default qconfig.
torch_py=$(mktemp --suffix=.py)
trap 'rm -f "$torch_py"' EXIT
cat > "$torch_py" <<'PY'
# PyTorch 1.13's FX post-training static quantization of a qforge fp32
# checkpoint (bench/torch_models.py builds the same module tree, so the names
# match), with the engine's default qconfig, calibrated on the first
# CALIB x 128 training images, scored on the 10,000 test images.
#   python3 THIS ARCH CHECKPOINT ENGINE [CALIB]  -> "TORCH engine=E top1=T qconfig=..."
import sys
import torch
sys.path.insert(0, "bench")
import torch_models
arch, ckpt, engine = sys.argv[1:4]
calib = int(sys.argv[4]) if len(sys.argv) > 4 else 16
torch.set_num_threads(2)
try:
    model = torch_models.load_qforge_checkpoint(torch_models.build_model(arch), ckpt)
except ValueError as e:
    sys.exit(f"torch_ptq: {e}")
model.eval()
d = "/usr/share/datasets/fashion-mnist"
xt, yt = torch_models.load_idx(f"{d}/t10k-images-idx3-ubyte.gz", f"{d}/t10k-labels-idx1-ubyte.gz")
if engine == "fp32":
    print(f"TORCH engine=fp32 top1={torch_models.evaluate(model, xt, yt):.2f}")
    sys.exit(0)
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
torch.backends.quantized.engine = engine
mapping = get_default_qconfig_mapping(engine)
prepared = prepare_fx(model, mapping, example_inputs=(torch.randn(1, 1, 28, 28),))
xs, _ = torch_models.load_idx(f"{d}/train-images-idx3-ubyte.gz", f"{d}/train-labels-idx1-ubyte.gz")
with torch.inference_mode():
    for i in range(calib):
        prepared(xs[i * 128:(i + 1) * 128])
q = convert_fx(prepared)
qc = mapping.global_qconfig
print(f"TORCH engine={engine} top1={torch_models.evaluate(q, xt, yt):.2f} "
      f"weight={qc.weight.p.func.__name__ if hasattr(qc.weight, 'p') else qc.weight}")
PY
have_torch=0
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi
torch_ptq() {  # ARCH CHECKPOINT ENGINE -> top-1, or "failed"
    local out
    out=$(PYTHONWARNINGS=ignore /usr/bin/python3 "$torch_py" "$1" "$2" "$3" 2>"$4") || { echo failed; return; }
    sed -n 's/^TORCH .*top1=\([0-9.]*\).*/\1/p' <<<"$out"
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
    # QAT: DESIGN.md's comparison recipe, qforge's cosine recipe, 4-bit-weight LSQ.
    for qat in qat qat_cosine qat_lsq4; do
        qat_dir=runs/${arch}_$qat
        echo "== $arch $qat ($qat_dir)"
        if q=$(qat_top1 "$qat_dir") && [[ -n $q ]]; then
            acc[$arch,$qat]=$(printf '%.2f' "$q")
        else
            acc[$arch,$qat]="not run"
        fi
        echo "   top-1 ${acc[$arch,$qat]}"
    done
    qat_log=runs/results/${arch}_torch_qat.log
    if [[ $have_torch == 1 ]] && ! grep -q '^TORCH qat' "$qat_log" 2>/dev/null; then
        echo "== $arch PyTorch QAT (DESIGN recipe, onednn), into $qat_log"
        PYTHONWARNINGS=ignore /usr/bin/python3 bench/torch_models.py qat "$arch" "$ckpt" > "$qat_log" 2>&1 || true
    fi
    acc[$arch,torch_qat]=$(sed -n 's/^TORCH qat .*int8_top1=\([0-9.]*\).*/\1/p' "$qat_log" 2>/dev/null | tail -1)
    acc[$arch,torch_qat]=${acc[$arch,torch_qat]:-not measured}
    echo "   PyTorch QAT top-1 ${acc[$arch,torch_qat]}"
    for engine in onednn qnnpack; do
        if [[ $have_torch == 1 ]]; then
            echo "== $arch PyTorch PTQ ($engine)"
            acc[$arch,torch_$engine]=$(torch_ptq "$arch" "$ckpt" "$engine" "runs/results/${arch}_torch_$engine.log")
            echo "   top-1 ${acc[$arch,torch_$engine]}"
        else
            acc[$arch,torch_$engine]="not measured"
        fi
    done
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
    echo "Ties: the int8 logits take 256 values, so the top two classes tie on some images; every"
    echo "score here (qforge's and PyTorch's) gives a tie to the first class, as torch.argmax does."
    echo
    echo "## Weights per-tensor vs per-channel (the whitepaper's table, PTQ without equalization or bias correction)"
    echo
    echo "| model | asymmetric per-tensor | symmetric per-channel | asymmetric per-channel | fp32 | PyTorch 1.13 PTQ, onednn / qnnpack |"
    echo "|---|---|---|---|---|---|"
    for arch in $models; do
        echo "| $arch | $(cell "$arch" asym_pt) | $(cell "$arch" sym_pc) | $(cell "$arch" asym_pc) | $(fmt "${acc[$arch,fp32]}") | ${acc[$arch,torch_onednn]} / ${acc[$arch,torch_qnnpack]} |"
    done
    echo
    echo "## With cross-layer equalization and bias correction, and QAT"
    echo
    echo "CLE: conv→ReLU/ReLU6(→max pool)→conv pairs, depthwise included (ReLU6 clip kept at 6·s);"
    echo "bias correction: empirical, on the calibration batches."
    echo
    echo "| model | fp32 | PTQ asym per-tensor | + CLE + bias corr. | PTQ sym per-channel | + CLE + bias corr. | QAT 8-bit (DESIGN recipe) | PyTorch 1.13 QAT, same checkpoint and recipe (onednn) | PyTorch QAT in DESIGN.md (its own fp32) | QAT 8-bit (qforge cosine recipe) | QAT 4-bit weights, LSQ |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    declare -A design_torch_qat=([lenet]="90.87 (fp32 90.84)" [resnet20]="90.02 (fp32 91.63)" [mbv2]="88.32 (fp32 91.03)")
    for arch in $models; do
        echo "| $arch | $(fmt "${acc[$arch,fp32]}") | $(cell "$arch" asym_pt) | $(cell "$arch" asym_pt_cle_bc) | $(cell "$arch" sym_pc) | $(cell "$arch" sym_pc_cle_bc) | ${acc[$arch,qat]} | ${acc[$arch,torch_qat]} | ${design_torch_qat[$arch]:-–} | ${acc[$arch,qat_cosine]} | ${acc[$arch,qat_lsq4]} |"
    done
    echo
    echo "QAT: the last checkpoint of runs/<arch>_qat (configs/<arch>_qat.json: DESIGN.md's comparison"
    echo "recipe, 1 epoch at lr 0.005 constant, BN frozen at 50%, ranges at 75%), runs/<arch>_qat_cosine"
    echo "(configs/<arch>_qat_cosine.json: lr 5e-4 cosine) and runs/<arch>_qat_lsq4"
    echo "(configs/<arch>_qat_lsq4.json: 4-bit symmetric per-channel weights and 8-bit activations with"
    echo "LSQ/LSQ+ learned step sizes, lr 0.002 cosine), each evaluated now on the frozen int8 graph by"
    echo "the train binary; \"not run\" when the run is missing. PyTorch QAT, same checkpoint: PyTorch 1.13"
    echo "FX QAT (onednn default QAT qconfig, BN folded by its fused QAT modules) of the same fp32 checkpoint"
    echo "with the same recipe (\`bench/torch_models.py qat ARCH CHECKPOINT\`), int8 model scored on the test"
    echo "set; one run each, so seed noise of a few tenths applies to both columns (lenet over 20 seeds each:"
    echo "docs/qat_seeds.md, by scripts/qat_seeds.sh). DESIGN.md's figure started"
    echo "from PyTorch's own fp32 model. PyTorch has no int8 kernels for 4-bit weights."
    echo "PyTorch PTQ: PyTorch 1.13 (Debian's python3-torch; this build has the onednn and qnnpack"
    echo "engines, no fbgemm) quantizing the same fp32 checkpoint with FX post-training static"
    echo "quantization and the engine's default qconfig (onednn: symmetric per-channel weights;"
    echo "qnnpack: symmetric per-tensor weights; activations: histogram observer), calibrated on the"
    echo "first 16 x 128 training images, scored on the same test set (the script is inside"
    echo "scripts/results.sh)."
    echo
    echo "Each run's log (stage by stage: fold, CLE pairs and sweeps, bias correction, calibration,"
    echo "int8 accuracy) is runs/results/<arch>_<variant>/quantize.log; the overrides per variant:"
    echo
    echo "- common: \`$common\`"
    for v in "${variants[@]}"; do echo "- ${v%%:*}: \`${v#*:}\`"; done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
