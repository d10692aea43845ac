#!/usr/bin/env bash
# Creates the test/benchmark Python environment .venv (with --system-site-packages, so it sees
# Debian's numpy, onnx, torch and sklearn from scripts/setup.sh) and installs the pinned
# packages of scripts/requirements-test.txt (onnxruntime) from PyPI.
# Idempotent: when .venv exists and the requirements are unchanged since the last successful
# install (a stamp holds their hash) and still import, it does nothing.
# Python is used only by test and benchmark scripts, never by the gpugrid binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements-test.sha256"
base_python=${GPUGRID_BASE_PYTHON:-/usr/bin/python3}

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
   "$venv/bin/python" -c "import onnxruntime, numpy, onnx" >/dev/null 2>&1; then
  echo "python_env.sh: .venv is up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "python_env.sh: creating $venv"
  "$base_python" -m venv --system-site-packages "$venv"
fi

echo "python_env.sh: installing $(basename "$req")"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req"
"$venv/bin/python" -c "import onnxruntime, numpy, onnx" 
echo "$want" > "$stamp"
"$venv/bin/python" -c "import onnxruntime as o, numpy as n, onnx; print('python_env.sh: onnxruntime', o.__version__, 'numpy', n.__version__, 'onnx', onnx.__version__)"
