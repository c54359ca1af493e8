#!/usr/bin/env bash
# Installs what qforge needs from Debian 12's packages (only what is missing)
# and builds it in build/. Sourced by run_main.sh and run_tests.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake make g++ pkg-config zlib1g-dev libblis-openmp-dev libstb-dev nlohmann-json3-dev
          doctest-dev libcli11-dev libgemmlowp-dev dataset-fashion-mnist clang libclang-rt-14-dev
          libopenmpi-dev openmpi-bin)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
make -C build -j"$(nproc)" >> build.log 2>&1 || { tail -60 build.log; echo "setup: build failed (full log: build.log)"; exit 1; }
echo "setup: built into build/ (log: build.log)"
