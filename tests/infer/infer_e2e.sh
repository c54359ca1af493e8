#!/usr/bin/env bash
# The `infer` CLI end to end on a tiny model and tiny inputs made in /tmp:
#   tests/infer/infer_e2e.sh INFER MAKE_TINY_MODELS
# Good inputs must succeed with the expected report; each bad input must
# fail with exit code 1 (2 for a bad command line) and a message naming it.
set -uo pipefail
INFER=${1:?usage: infer_e2e.sh INFER MAKE_TINY_MODELS}
MAKE=${2:?usage: infer_e2e.sh INFER MAKE_TINY_MODELS}
DIR=$(mktemp -d /tmp/qf-infer-e2e-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
"$MAKE" "$DIR" || { echo "FAIL: make_tiny_models"; exit 1; }

failures=0
# expect CODE PATTERN -- COMMAND...: runs COMMAND, checks its exit code and
# that its output (stdout and stderr) matches the extended regex PATTERN.
expect() {
    local code=$1 pattern=$2
    shift 3
    local out status
    out=$("$@" 2>&1)
    status=$?
    if [[ $status -ne $code ]] || ! grep -qE -- "$pattern" <<<"$out"; then
        echo "FAIL: $* -> exit $status (expected $code), output:"
        echo "$out" | sed 's/^/    /'
        echo "    (expected /$pattern/)"
        failures=$((failures + 1))
    else
        echo "ok: $*"
    fi
}

M=$DIR/lenet.safetensors
expect 0 'top-1: [0-9.]+%  top-5: [0-9.]+%' -- "$INFER" "$M" --data "$DIR/tiny-images-idx3-ubyte"
expect 0 '37 images' -- "$INFER" "$M" --data "$DIR/tiny-images-idx3-ubyte" --batch 5 --threads 1
expect 0 'images/s, batch 8 latency' -- "$INFER" "$M" --data "$DIR/tiny-images-idx3-ubyte" --batch 8
expect 0 'fc1 +fully_connected' -- "$INFER" "$M" --data "$DIR/tiny-images-idx3-ubyte" --profile
expect 0 'top-1' -- "$INFER" "$M" --data "$DIR/other-images" --labels "$DIR/tiny-labels-idx1-ubyte"
expect 0 '20 images' -- "$INFER" "$M" --data "$DIR/folder"
expect 0 '3\. class_[0-9]' -- "$INFER" "$M" --image "$DIR/good.png" --top 3

# Bad models.
expect 1 'truncated.safetensors: .*outside' -- "$INFER" "$DIR/truncated.safetensors" --data "$DIR/tiny-images-idx3-ubyte"
expect 1 'header_past_end.safetensors: header length' -- "$INFER" "$DIR/header_past_end.safetensors" --image "$DIR/good.png"
expect 1 "bad_version.safetensors: format version '7'" -- "$INFER" "$DIR/bad_version.safetensors" --image "$DIR/good.png"
expect 1 'missing.safetensors: cannot open' -- "$INFER" "$DIR/missing.safetensors" --image "$DIR/good.png"
# Bad data.
expect 1 'images are 1x28x28; the model expects 1x12x12' -- "$INFER" "$M" --data "$DIR/big-images-idx3-ubyte"
expect 1 '--labels is needed' -- "$INFER" "$M" --data "$DIR/other-images"
expect 1 'big.png: image is 20x12' -- "$INFER" "$M" --image "$DIR/big.png"
expect 1 'colour.png: a colour image' -- "$INFER" "$M" --image "$DIR/colour.png"
expect 1 'nothing.png: cannot open' -- "$INFER" "$M" --image "$DIR/nothing.png"
# Bad command lines.
expect 2 'exactly one of --data and --image' -- "$INFER" "$M"
expect 2 'batch' -- "$INFER" "$M" --data "$DIR/tiny-images-idx3-ubyte" --batch 0

if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "OK: infer CLI end to end"
