"""Bad and slow clients against `gpugrid serve`, with raw sockets (no client library smooths
anything over). Usage: raw_http_test.py HOST:PORT [API_KEY]
Expects a server started with --max-body-mb 1 --header-timeout 1 --body-timeout 1 serving
digits. Prints one line per check; exits 1 on the first failure.
"""
import json
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
key = sys.argv[2] if len(sys.argv) > 2 else None


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def connect():
    s = socket.create_connection((host, port), timeout=10)
    return s


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return None, {}, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n]


def request(method, path, body=b"", extra=None, auth=True):
    h = {"Host": "x", "Content-Length": str(len(body))}
    if key and auth:
        h["Authorization"] = "Bearer " + key
    h.update(extra or {})
    s = connect()
    s.sendall(f"{method} {path} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode() + b"\r\n" + body)
    r = read_response(s)
    s.close()
    return r


def live():
    st, _, _ = request("GET", "/v2/health/live")
    return st == 200


st, _, body = request("POST", "/v2/models/digits/infer", b"{not json")
check(st == 400 and "error" in json.loads(body), f"malformed JSON -> 400 {body[:80]!r}")

st, _, body = request("POST", "/v2/models/digits/infer", b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1, 2]}]}')
check(st == 400 and "error" in json.loads(body), f"data/shape mismatch -> 400 {body[:80]!r}")

st, _, body = request("POST", "/v2/models/digits/infer", b"[" * 100000)
check(st == 400 and "deeper" in json.loads(body)["error"], "deeply nested JSON -> 400")

st, _, body = request("GET", "/v2/models/missing")
check(st == 404 and json.loads(body)["error"].startswith("unknown model"), "unknown model -> 404")

# A body over the limit is refused from its Content-Length, before it is read.
s = connect()
s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n" +
          (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"\r\n")
st, _, body = read_response(s)
s.close()
check(st == 413 and "limit" in json.loads(body)["error"], "oversized body -> 413")

# Chunked bodies past the limit too.
s = connect()
s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
          (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"\r\n")
try:
    for _ in range(3):
        s.sendall(b"80000\r\n" + b" " * 0x80000 + b"\r\n")
except OSError:
    pass
st, _, body = read_response(s)
s.close()
check(st == 413, "oversized chunked body -> 413")

# Slowloris: a header dribbled out byte by byte is cut off by the header timeout.
s = connect()
t0 = time.time()
st = None
try:
    for c in b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        s.send(bytes([c]))
        time.sleep(0.05)
        if time.time() - t0 > 4:
            break
except OSError:
    pass
try:
    st, _, _ = read_response(s)
except OSError:
    st = None
s.close()
check(st == 408 and time.time() - t0 < 4, f"slowloris header -> 408 after the header timeout ({time.time() - t0:.1f} s)")

# A body that never arrives.
s = connect()
s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" +
          (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"\r\n{")
t0 = time.time()
st, _, _ = read_response(s)
s.close()
check(st == 408 and time.time() - t0 < 4, "stalled body -> 408")

# Garbage instead of HTTP.
s = connect()
s.sendall(b"\x16\x03\x01 definitely not http\r\n\r\n")
st, _, _ = read_response(s)
s.close()
check(st == 400, "garbage -> 400")

# Clients that go away mid-request or before reading the answer.
for _ in range(20):
    s = connect()
    s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
    s.close()
    s = connect()
    body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}).encode()
    s.sendall(f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode() +
              (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"\r\n" + body)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
check(live(), "server still live after 40 clients disconnected mid-request")

# Keep-alive: two requests on one connection.
s = connect()
for _ in range(2):
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, _ = read_response(s)
    check(st == 200, "keep-alive request")
s.close()

if key:
    st, h, body = request("GET", "/v2/models/digits", auth=False)
    check(st == 401 and "error" in json.loads(body) and h.get("www-authenticate") == "Bearer", "missing key -> 401")
    st, _, body = request("GET", "/v2/models/digits", auth=False, extra={"Authorization": "Bearer wrong-key-0123456789"})
    check(st == 401, "wrong key -> 401")
    st, _, _ = request("GET", "/v2/health/ready", auth=False)
    check(st == 200, "health checks need no key")

st, _, body = request("GET", "/metrics")
text = body.decode()
check(st == 200 and "gpugrid_serve_timeouts_total" in text and "gpugrid_serve_too_large_total 2" in text,
      "metrics count the bad clients")
print("all checks passed")
