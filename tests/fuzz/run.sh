#!/usr/bin/env bash
# Builds one libFuzzer target and runs it for a bounded time.
#
#   tests/fuzz/run.sh TARGET SECONDS [WORKDIR]
#
# TARGET names tests/fuzz/TARGET.cpp, which defines LLVMFuzzerTestOneInput.
# It is compiled with clang++ and -fsanitize=fuzzer,address,undefined together
# with the library sources it needs, then run for SECONDS (-max_total_time)
# from a small seed corpus made on the fly. WORKDIR (default
# /tmp/qf-fuzz-TARGET) holds the build, the corpus and any crash reproducer.
#
# Exit status: 0 nothing found; 1 a finding (reproducer in WORKDIR/artifacts,
# rerun it with WORKDIR/TARGET FILE) or a build failure; 2 usage;
# 77 clang++ is missing (CTest reports the test as skipped).
#
# Adding a target: write tests/fuzz/fuzz_NAME.cpp and add a case below setting
#   SOURCES  the repository's .cpp files it links (paths from the repo root)
#   SEEDS    gen:FILE.cpp  a program built from FILE.cpp (with SOURCES, no
#                          sanitizers) that writes seeds into the folder it is given
#            files:GLOB    existing files copied as seeds (glob from the repo root)
#            none          start from an empty corpus
#   LIBS     extra link flags (e.g. -lz)
#   INCLUDES extra -I / -isystem flags
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 TARGET SECONDS [WORKDIR]" >&2
    exit 2
fi
TARGET=$1
SECONDS_TO_RUN=$2
WORKDIR=${3:-/tmp/qf-fuzz-$TARGET}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[[ "$SECONDS_TO_RUN" =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number, got $SECONDS_TO_RUN" >&2; exit 2; }

SOURCES=()
SEEDS=none
LIBS=()
INCLUDES=()
case "$TARGET" in
    fuzz_image)
        SOURCES=(data/image_io.cpp data/stb_guard.cpp data/stb_impl.cpp data/transforms.cpp)
        SEEDS=gen:tests/fuzz/seeds_image.cpp
        INCLUDES=(-isystem /usr/include/stb)
        ;;
    fuzz_config)
        SOURCES=(train/config.cpp format/safetensors.cpp)
        SEEDS='files:configs/*.json'
        ;;
    fuzz_model_loader)
        # Every kernel of infer/ (globbed, so a new kernel file cannot be forgotten).
        SOURCES=(infer/model.cpp infer/model_format.cpp infer/quantize.cpp
                 $(cd "$ROOT" && ls infer/kernels/*.cpp infer/kernels/reference/*.cpp)
                 format/safetensors.cpp tests/infer/tiny_models.cpp)
        # The kernels ask OpenMP for its thread count; the fuzz build runs them
        # single-threaded but still links GCC's OpenMP runtime for that call.
        LIBS=(-lgomp)
        SEEDS=gen:tests/infer/write_seed_models.cpp
        ;;
    *)
        echo "unknown fuzz target '$TARGET' (add it to the case statement in $0)" >&2
        exit 2
        ;;
esac

CXX=${CXX_FUZZ:-clang++}
if ! command -v "$CXX" >/dev/null 2>&1; then
    echo "SKIPPED: $CXX not found (install clang and libclang-rt-dev to run fuzz tests)"
    exit 77
fi

mkdir -p "$WORKDIR/obj" "$WORKDIR/artifacts"
COMMON=(-std=c++20 -g -O1 -w -I"$ROOT" "${INCLUDES[@]}")
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# compile SOURCE FLAVOUR FLAGS...: compiles the repo-relative SOURCE to an
# object in $WORKDIR/obj (kept while newer than the source, every header of
# the repository and this script) and appends its path to OBJECTS.
compile() {
    local source=$1 flavour=$2
    shift 2
    local object="$WORKDIR/obj/${source//\//_}.$flavour.o"
    if [[ ! "$object" -nt "$ROOT/$source" || ! "$object" -nt "$0" ]] || \
       [[ -n "$(find "$ROOT" -path "$ROOT/build*" -prune -o -name '*.h' -newer "$object" -print -quit)" ]]; then
        "$CXX" "${COMMON[@]}" "$@" -c "$ROOT/$source" -o "$object"
    fi
    OBJECTS+=("$object")
}

echo "building $TARGET with $CXX ..."
OBJECTS=()
for source in "${SOURCES[@]}" "tests/fuzz/$TARGET.cpp"; do
    compile "$source" fuzz "${SANITIZE[@]}" -fsanitize=fuzzer-no-link
done
"$CXX" "${SANITIZE[@]}" -fsanitize=fuzzer "${OBJECTS[@]}" "${LIBS[@]}" -o "$WORKDIR/$TARGET"

# A fresh corpus each run, so a run's result depends on the code, not on history.
rm -rf "$WORKDIR/corpus" "$WORKDIR/seeds"
mkdir -p "$WORKDIR/corpus" "$WORKDIR/seeds"
case "$SEEDS" in
    gen:*)
        generator=${SEEDS#gen:}
        OBJECTS=()
        for source in "${SOURCES[@]}" "$generator"; do
            compile "$source" plain
        done
        "$CXX" "${OBJECTS[@]}" "${LIBS[@]}" -o "$WORKDIR/seed_generator"
        "$WORKDIR/seed_generator" "$WORKDIR/seeds"
        ;;
    files:*)
        (cd "$ROOT" && for f in ${SEEDS#files:}; do [[ -f "$f" ]] && cp "$f" "$WORKDIR/seeds/"; done) || true
        ;;
    none) ;;
esac

echo "running $TARGET for $SECONDS_TO_RUN s ..."
set +e
"$WORKDIR/$TARGET" -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORKDIR/artifacts/" "$WORKDIR/corpus" "$WORKDIR/seeds" 2>"$WORKDIR/fuzz.log"
status=$?
set -e
grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' "$WORKDIR/fuzz.log" || true
if [[ $status -ne 0 ]]; then
    tail -n 60 "$WORKDIR/fuzz.log"
    echo "FAILED: $TARGET found a problem (exit $status); reproducers in $WORKDIR/artifacts" >&2
    exit 1
fi
echo "OK: $TARGET ran $SECONDS_TO_RUN s without a finding"
