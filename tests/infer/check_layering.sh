#!/usr/bin/env bash
# Fails if any source under infer/ (the folder given) includes a header of the
# training engine: autograd/, nn/, quant/ or train/ (DESIGN.md's layering).
set -euo pipefail
dir=${1:?usage: check_layering.sh INFER_DIR}
[[ -d "$dir" ]] || { echo "no folder $dir" >&2; exit 2; }
if hits=$(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](autograd|nn|quant|train)/' "$dir"); then
    echo "infer/ must not include the training engine:" >&2
    echo "$hits" >&2
    exit 1
fi
echo "OK: infer/ includes nothing from autograd/, nn/, quant/, train/"
