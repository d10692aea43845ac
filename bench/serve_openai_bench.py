"""Streams through `gpugrid serve`'s /v1/chat/completions with the openai package: C clients at
once, each sending R requests of T tokens (ignore_eos, so every answer is T tokens long).
Reports time to first token (p50/p99), the whole answer's latency, and tokens/s over all clients,
against one client alone (C=1) on the same server.

Usage: serve_openai_bench.py BASE_URL MODEL [--clients C] [--requests R] [--tokens T]
e.g.  gpugrid serve --listen 127.0.0.1:8080 --models DIR --local &
      python bench/serve_openai_bench.py http://127.0.0.1:8080/v1 chat --clients 8
"""
import argparse
import statistics
import threading
import time

import openai


def run(client, model, clients, requests, tokens):
    ttft, total = [], []
    lock = threading.Lock()

    def worker(k):
        for i in range(requests):
            t0 = time.perf_counter()
            first = None
            n = 0
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Tell me about day {k * 100 + i}."}],
                max_tokens=tokens, temperature=0.8, seed=k * 100 + i, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
                if chunk.usage:
                    n = chunk.usage.completion_tokens
            with lock:
                ttft.append(first if first is not None else float("nan"))
                total.append((time.perf_counter() - t0, n))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for x, _ in total)
    ft = sorted(ttft)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
    toks = sum(n for _, n in total)
    return {"clients": clients, "answers": len(total), "tokens": toks, "wall_s": wall, "tokens_per_s": toks / wall,
            "ttft_p50_ms": 1000 * statistics.median(ft), "ttft_p99_ms": 1000 * pct(ft, 0.99),
            "answer_p50_ms": 1000 * statistics.median(lat), "answer_p99_ms": 1000 * pct(lat, 0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("model")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key="unused", max_retries=0, timeout=600,
                           http_client=None)
    run(client, a.model, 1, 1, 4)  # warm-up: loads the model
    for c in (1, a.clients):
        r = run(client, a.model, c, a.requests, a.tokens)
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
