"""A Ray Serve deployment of an ONNX model run with onnxruntime, answering the same Open
Inference Protocol v2 JSON body that `gpugrid serve` takes (POST /v2/models/NAME/infer), for
bench/serve_ray_bench.sh. Runs until killed; prints "ready" once the route answers.

Usage: serve_ray_app.py MODEL.onnx NAME PORT [--replicas 1] [--batch 16] [--cpus 2]
Two applications in one Ray instance: /plain/v2/models/NAME/infer (one onnxruntime run per
request) and /batched/v2/models/NAME/infer (Ray Serve's own dynamic batching, @serve.batch with
at most --batch requests and a 500 us wait).
"""
import argparse
import json
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("name")
ap.add_argument("port", type=int)
ap.add_argument("--replicas", type=int, default=1)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--cpus", type=int, default=2)
args = ap.parse_args()


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def answer(name, y):
    return Response(json.dumps({"model_name": name, "outputs": [
        {"name": "output0", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}),
        media_type="application/json")


@serve.deployment(num_replicas=args.replicas, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0})
class Model:
    def __init__(self, path, name):
        self.s = session(path)
        self.input = self.s.get_inputs()[0].name
        self.name = name

    async def __call__(self, request: Request):
        body = await request.json()
        t = body["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        return answer(self.name, self.s.run(None, {self.input: x})[0])


@serve.deployment(num_replicas=args.replicas, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0})
class BatchedModel:
    def __init__(self, path, name):
        self.s = session(path)
        self.input = self.s.get_inputs()[0].name
        self.name = name

    @serve.batch(max_batch_size=args.batch, batch_wait_timeout_s=0.0005)
    async def run(self, xs):
        rows = [x.shape[0] for x in xs]
        y = self.s.run(None, {self.input: np.concatenate(xs)})[0]
        return np.split(y, np.cumsum(rows)[:-1])

    async def __call__(self, request: Request):
        body = await request.json()
        t = body["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        return answer(self.name, await self.run(x))


ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": args.port})
serve.run(Model.bind(args.model, args.name), name="plain", route_prefix="/plain")
serve.run(BatchedModel.bind(args.model, args.name), name="batched", route_prefix="/batched")
body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}).encode()
for app in ("plain", "batched"):
    for _ in range(600):
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{args.port}/{app}/v2/models/{args.name}/infer", data=body, method="POST"),
                timeout=5).read()
            break
        except Exception:
            time.sleep(0.5)
print("ready", flush=True)
while True:
    time.sleep(3600)
