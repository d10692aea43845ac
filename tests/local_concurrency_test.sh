#!/usr/bin/env bash
# Local runs at once on a model large enough for the engine's threads to split its loops
# (bench/make_mlp.py, 18 MFLOP): `run --batch --local --in-flight 4` gives every job of one input
# the output of that job run alone, bit for bit, and so does `serve --local` to 8 clients at
# once. Both share one engine session between the runs (its thread pool once mixed up the loops
# of runs at once).
# Usage: tests/local_concurrency_test.sh path/to/gpugrid path/to/source
py=${GPUGRID_PYTHON:-$2/.venv/bin/python}
if ! "$py" -c "import onnx, numpy" >/dev/null 2>&1; then
  echo "skipped: $py lacks onnx or numpy (run scripts/python_env.sh)"
  exit 77
fi
source "$2/tests/lib/loopback_grid.sh" "$@"
"$py" "$src/bench/make_mlp.py" "$tmp/mlp" 2048 3 >/dev/null || { fail "bench/make_mlp.py failed"; exit 1; }
mkdir -p "$tmp/in" "$tmp/one"
for k in $(seq 0 199); do ln -s "$tmp/mlp/mlp_input.npy" "$tmp/in/x$k.npy"; done
ln -s "$tmp/mlp/mlp_input.npy" "$tmp/one/x.npy"
"$bin" run "$tmp/mlp/mlp.onnx" --batch "$tmp/one" --output-dir "$tmp/want" --local --threads 2 2>/dev/null ||
  fail "a batch of one job failed"
"$bin" run "$tmp/mlp/mlp.onnx" --batch "$tmp/in" --output-dir "$tmp/out" --local --threads 2 --in-flight 4 2>"$tmp/b.err" ||
  fail "the batch failed: $(tail -1 "$tmp/b.err")"
same=0 differ=0
for f in "$tmp"/out/*/y.npy; do
  if cmp -s "$f" "$tmp/want/x/y.npy"; then same=$((same + 1)); else differ=$((differ + 1)); fi
done
[ "$same" -eq 200 ] || fail "$differ of 200 jobs of one input gave another output than the job run alone"

# serve --local, 8 clients at once
mkdir -p "$tmp/models"
cp "$tmp/mlp/mlp.onnx" "$tmp/models/"
start_serve --models "$tmp/models" --local --threads 2 --workers 8 || exit 1
addr=$serve_addr
answers="$("$py" - "$addr" "$tmp/mlp/mlp_input.npy" <<'PY'
import http.client, json, sys, threading
import numpy as np
host, port = sys.argv[1].rsplit(":", 1)
x = np.load(sys.argv[2]).astype(np.float32)
body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
seen, lock = {}, threading.Lock()
def client():
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(40):
        try:
            c.request("POST", "/v2/models/mlp/infer", body=body)
            r = c.getresponse()
            data = r.read().decode()
            key = json.dumps(json.loads(data)["outputs"][0]["data"]) if r.status == 200 else "status %d: %s" % (r.status, data[:100])
        except Exception as e:
            key = "status error: %s" % e
        with lock:
            seen[key] = seen.get(key, 0) + 1
threads = [threading.Thread(target=client) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(len(seen) if all(not k.startswith("status") for k in seen) else "failed: " + next(k for k in seen if k.startswith("status")))
PY
)"
[ "$answers" = 1 ] || fail "320 requests with one input (8 clients at once) got $answers different answers from serve --local"

[ "$failures" -eq 0 ] || exit 1
echo "local_concurrency_test: all checks passed (200 batch jobs 4 at once, 320 serve requests 8 at once: one output each)"
