#!/usr/bin/env bash
# The test command (README and CI run this same script): installs what is missing, builds a
# Release tree in build/ with Ninja (with the CUDA backend module when nvcc is found; it is
# only compiled, tests that need a GPU skip without one) and runs every test with ctest.
# Environment: JOBS=N limits build parallelism (default: ninja's).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ -f scripts/python_env.sh ]; then
  bash scripts/python_env.sh
fi

cuda=(-DGPUGRID_CUDA=OFF)
if command -v nvcc >/dev/null 2>&1; then
  cuda=(-DGPUGRID_CUDA=ON)
elif [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda=(-DGPUGRID_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda[@]}"
cmake --build build ${JOBS:+-j "$JOBS"}
ctest --test-dir build --output-on-failure -j2
