"""Load test of `gpugrid serve`: C concurrent clients (default 64), each on its own keep-alive
connection, POST /v2/models/NAME/infer with JSON tensors for D seconds on a tiny model;
prints requests/s and p50/p90/p99 latency as one JSON line.

Usage: serve_bench.py HOST:PORT MODEL_NAME INPUT_NAME SHAPE [--clients 64] [--seconds 10]
       (SHAPE like 1,64). The client is asyncio with raw sockets, so that on a small machine the
       load generator costs as little CPU as possible; it shares the cores with the server, so
       the figures are a lower bound of the server's own capacity.
"""
import argparse
import asyncio
import json
import time

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("model")
ap.add_argument("input")
ap.add_argument("shape")
ap.add_argument("--clients", type=int, default=64)
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--path", default=None, help="POST path (default /v2/models/MODEL/infer)")
args = ap.parse_args()
host, port = args.addr.rsplit(":", 1)
shape = [int(d) for d in args.shape.split(",")]
n = 1
for d in shape:
    n *= d
body = json.dumps({"inputs": [{"name": args.input, "shape": shape, "datatype": "FP32",
                               "data": [0.5] * n}]}).encode()
path = args.path or f"/v2/models/{args.model}/infer"
request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
latencies = []
errors = 0


async def client(deadline):
    global errors
    reader, writer = await asyncio.open_connection(host, int(port))
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if status != 200:
            errors += 1
        latencies.append(time.perf_counter() - t0)
    writer.close()


async def main():
    deadline = time.perf_counter() + args.seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(client(deadline) for _ in range(args.clients)))
    return time.perf_counter() - t0


elapsed = asyncio.run(main())
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
print(json.dumps({"clients": args.clients, "seconds": round(elapsed, 2), "requests": len(latencies), "errors": errors,
                  "req_per_s": round(len(latencies) / elapsed, 1), "p50_ms": round(q(0.50), 2),
                  "p90_ms": round(q(0.90), 2), "p99_ms": round(q(0.99), 2)}))
