#!/usr/bin/env bash
# Stand-in for the gpugrid binary in tests/families_test.sh: runs the model with onnxruntime
# (tests/models/ort_run.py), to check the harness. Not a test of the engine.
root=$(cd "$(dirname "$0")/../.." && pwd)
exec "${GPUGRID_PYTHON:-$root/.venv/bin/python}" "$root/tests/models/ort_run.py" "$@"
