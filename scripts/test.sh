#!/usr/bin/env bash
# The test command (README and CI run this same script): installs what is missing, builds a
# Release tree in build/ with Ninja (with the CUDA backend module when nvcc is found; it is
# only compiled, tests that need a GPU skip without one), the fuzz targets with clang in
# build-fuzz/, and runs every test with ctest.
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

# The libFuzzer targets of the parsers of untrusted input (.npy, TensorProto, ONNX models,
# network frames), built with clang and ASan/UBSan in build-fuzz/, for the short bounded run
# of tests/fuzz_smoke_test.sh (8 s per target). GPUGRID_SKIP_FUZZ=1 leaves them out.
if [ "${GPUGRID_SKIP_FUZZ:-0}" != 1 ] && command -v clang++ >/dev/null 2>&1; then
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DGPUGRID_FUZZ=ON -DGPUGRID_TESTS=OFF \
      -DGPUGRID_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
  fi
  cmake --build build-fuzz ${JOBS:+-j "$JOBS"} --target fuzz_npy fuzz_tensor_proto fuzz_model_loader fuzz_frame
  export GPUGRID_FUZZ_BUILD="$PWD/build-fuzz"
fi

ctest --test-dir build --output-on-failure -j2
