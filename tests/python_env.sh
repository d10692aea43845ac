# Sourced by test scripts: sets PY to a Python that has numpy and onnx (the project's .venv
# when it exists, else Debian's python3), or leaves it empty.
PY=""
root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
for cand in "${GPUGRID_PYTHON:-}" "$root/.venv/bin/python" /usr/bin/python3 python3; do
  [ -n "$cand" ] || continue
  if "$cand" -c "import numpy, onnx" >/dev/null 2>&1; then PY=$cand; break; fi
done
