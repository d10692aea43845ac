"""Open Inference Protocol v2 through the real Triton HTTP client (tritonclient[http]).

Usage: triton_client_test.py HOST:PORT MODEL_DIR [API_KEY]
MODEL_DIR holds digits.onnx (the bundled digit classifier); outputs are compared with
onnxruntime on the same inputs. Prints one line per check; exits 1 on the first failure.
"""
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model_dir = sys.argv[1], sys.argv[2]
headers = {"Authorization": "Bearer " + sys.argv[3]} if len(sys.argv) > 3 else None
client = httpclient.InferenceServerClient(url=url, concurrency=4)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def expect_error(fn, status_words, what):
    try:
        fn()
    except InferenceServerException as e:
        msg = str(e)
        check(all(w in msg for w in status_words), f"{what}: {msg[:120]}")
        return
    check(False, what + ": no error raised")


check(client.is_server_live(headers=headers), "server live")
check(client.is_server_ready(headers=headers), "server ready")
meta = client.get_server_metadata(headers=headers)
check(meta["name"] == "gpugrid" and "binary_tensor_data" in meta["extensions"], "server metadata")
check(client.is_model_ready("digits", headers=headers), "model ready")
check(not client.is_model_ready("no_such_model", headers=headers), "unknown model not ready")

mmeta = client.get_model_metadata("digits", headers=headers)
inp = mmeta["inputs"][0]
out = mmeta["outputs"][0]
check(inp["datatype"] == "FP32" and out["datatype"] == "FP32", f"model metadata: {inp} -> {out}")
index = client.get_model_repository_index(headers=headers)
check(any(m["name"] == "digits" and m["state"] == "READY" for m in index), "repository index")

sess = ort.InferenceSession(f"{model_dir}/digits.onnx", providers=["CPUExecutionProvider"])
ort_in = sess.get_inputs()[0]
shape = [d if isinstance(d, int) and d > 0 else 3 for d in ort_in.shape]
rng = np.random.default_rng(7)
x = rng.standard_normal(shape).astype(np.float32)
want = sess.run(None, {ort_in.name: x})[0]

for binary in (False, True):
    i = httpclient.InferInput(inp["name"], list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    o = httpclient.InferRequestedOutput(out["name"], binary_data=binary)
    res = client.infer("digits", [i], outputs=[o], headers=headers, request_id="r1")
    got = res.as_numpy(out["name"])
    check(got is not None and got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5),
          f"infer ({'binary' if binary else 'JSON'} tensors) matches onnxruntime")
    check(res.get_response()["id"] == "r1", "request id echoed")

# Many requests at once: async_infer keeps several in flight on the client's pool.
reqs = []
for k in range(16):
    xk = rng.standard_normal(shape).astype(np.float32)
    i = httpclient.InferInput(inp["name"], list(xk.shape), "FP32")
    i.set_data_from_numpy(xk, binary_data=True)
    reqs.append((xk, client.async_infer("digits", [i], headers=headers)))
ok = 0
for xk, r in reqs:
    got = r.get_result().as_numpy(out["name"])
    ok += np.allclose(got, sess.run(None, {ort_in.name: xk})[0], rtol=1e-4, atol=1e-5)
check(ok == 16, f"16 concurrent requests correct ({ok})")

# Errors come back as the protocol's {"error": ...}, which the client raises.
expect_error(lambda: client.get_model_metadata("no_such_model", headers=headers), ["unknown model"], "unknown model metadata")
bad = httpclient.InferInput(inp["name"], [1, 5], "FP32")
bad.set_data_from_numpy(np.zeros((1, 5), np.float32))
expect_error(lambda: client.infer("digits", [bad], headers=headers), ["must have shape"], "wrong shape")
badt = httpclient.InferInput(inp["name"], list(x.shape), "INT32")
badt.set_data_from_numpy(np.zeros(x.shape, np.int32))
expect_error(lambda: client.infer("digits", [badt], headers=headers), ["must be FP32"], "wrong datatype")
expect_error(lambda: client.infer("no_such_model", [bad], headers=headers), ["unknown model"], "infer on unknown model")
check(client.is_server_live(headers=headers), "server still live after the errors")
client.close()
print("all checks passed")
