"""The OpenAI-compatible API of `gpugrid serve` through the real `openai` Python package.

Usage: openai_client_test.py BASE_URL MODEL_DIR MODEL_NAME [KEYS_BASE_URL KEY]
BASE_URL is http://HOST:PORT/v1 of a serve whose --models folder holds MODEL_DIR (the bundled
examples/chat folder) as MODEL_NAME; KEYS_BASE_URL one that needs the API key KEY and allows
two requests at once per key, then one every two seconds. Token counts are checked against the folder's tokenizer
(the `tokenizers` package) and its chat template (jinja2, as transformers renders it); the
greedy answer against the folder's expected_greedy.json (onnxruntime's decoding). Prints one
line per check; exits 1 on the first failure.
"""
import json
import os
import re
import sys
import time
import urllib.request

import jinja2
import openai
from tokenizers import Tokenizer

base_url, model_dir, name = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
    tcfg = json.load(f)
template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(tcfg["chat_template"])
with open(os.path.join(model_dir, "expected_greedy.json")) as f:
    greedy_case = json.load(f)["cases"][0]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def expect_error(cls, fn, words, what):
    try:
        fn()
    except cls as e:
        msg = str(e)
        check(all(w in msg for w in words), f"{what}: {type(e).__name__} {msg[:150]}")
        return e
    except Exception as e:  # noqa: BLE001 - any other exception is the failure being reported
        check(False, f"{what}: raised {type(e).__name__} {str(e)[:150]}, not {cls.__name__}")
    check(False, f"{what}: no error raised")


def chat_prompt_tokens(messages):
    text = template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token=tcfg["eos_token"])
    return len(tok.encode(text, add_special_tokens=False).ids)


def metrics():
    url = base_url.rsplit("/v1", 1)[0] + "/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(gpugrid_serve_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


# ---- models
models = client.models.list()
ids = [m.id for m in models.data]
check(name in ids, f"models.list has {name}: {ids}")
check(client.models.retrieve(name).id == name, "models.retrieve")
expect_error(openai.NotFoundError, lambda: client.models.retrieve("no-such-model"), ["no-such-model"], "retrieve unknown model")

# ---- chat, greedy: the answer onnxruntime gives, token counts of the tokenizer
messages = greedy_case["messages"]
greedy_ids = greedy_case["greedy_ids"]
eos = {0, 2}
cut = next((i for i, t in enumerate(greedy_ids) if t in eos), len(greedy_ids))
want_text = tok.decode(greedy_ids[:cut], skip_special_tokens=True)
max_tokens = min(len(greedy_ids), 24)
r = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=max_tokens)
check(r.object == "chat.completion" and r.id.startswith("chatcmpl-"), f"chat object and id: {r.object} {r.id}")
check(r.model == name and r.created > 1_600_000_000, "chat model and created")
choice = r.choices[0]
check(choice.message.role == "assistant", "chat message role")
expect_text = tok.decode(greedy_ids[: min(cut, max_tokens)], skip_special_tokens=True)
check(choice.message.content == expect_text, f"greedy answer as onnxruntime's: {choice.message.content!r} vs {expect_text!r}")
check(r.usage.prompt_tokens == len(greedy_case["prompt_ids"]) == chat_prompt_tokens(messages),
      f"prompt_tokens {r.usage.prompt_tokens} = the template's tokens {chat_prompt_tokens(messages)}")
check(choice.finish_reason == ("length" if cut >= max_tokens else "stop"), f"finish_reason {choice.finish_reason}")
check(r.usage.completion_tokens == min(cut + (1 if cut < max_tokens else 0), max_tokens),
      f"completion_tokens {r.usage.completion_tokens}")
check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens")
check(len(tok.encode(choice.message.content, add_special_tokens=False).ids) <= r.usage.completion_tokens + 1,
      "completion text is about completion_tokens long")
greedy_text = choice.message.content

# content as a list of text parts, a system message
r2 = client.chat.completions.create(model=name, temperature=0, max_tokens=max_tokens, messages=[
    {"role": "user", "content": [{"type": "text", "text": "Give me a verse "}, {"type": "text", "text": "about light."}]}])
check(r2.choices[0].message.content == greedy_text, "content parts are joined")
sys_msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello"}]
r3 = client.chat.completions.create(model=name, messages=sys_msgs, max_tokens=4, temperature=0)
check(r3.usage.prompt_tokens == chat_prompt_tokens(sys_msgs), "system message goes through the template")

# ---- chat, streaming: role first, then content, finish_reason last, usage chunk
stream = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=max_tokens,
                                        stream=True, stream_options={"include_usage": True})
chunks = list(stream)
check(len(chunks) >= 3, f"{len(chunks)} stream chunks")
check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects")
check(len({c.id for c in chunks}) == 1, "one id for all chunks")
check(chunks[0].choices[0].delta.role == "assistant", "first chunk has the role")
content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
check(all(c.choices[0].delta.role is None for c in content_chunks), "content chunks carry no role")
streamed = "".join(c.choices[0].delta.content for c in content_chunks)
check(streamed == greedy_text, f"streamed text = non-streamed: {streamed!r}")
finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
check(len(finals) == 1 and finals[0] is chunks[-2], "finish_reason in the last choice chunk")
check(chunks[-1].choices == [] and chunks[-1].usage is not None, "usage chunk last")
check(chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens and chunks[-1].usage.completion_tokens == r.usage.completion_tokens,
      "stream usage = non-stream usage")
check(all(c.usage is None for c in chunks[:-1]), "usage null before the last chunk")

# ---- completions
prompt = "The LORD is my shepherd;"
c = client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0)
check(c.object == "text_completion" and c.id.startswith("cmpl-"), "completion object")
check(isinstance(c.choices[0].text, str) and len(c.choices[0].text) > 0, f"completion text {c.choices[0].text!r}")
check(c.usage.prompt_tokens == len(tok.encode(prompt).ids), f"completion prompt_tokens {c.usage.prompt_tokens}")
check(c.usage.completion_tokens <= 6, "completion_tokens within max_tokens")
check(c.choices[0].finish_reason in ("stop", "length"), "completion finish_reason")
c_default = client.completions.create(model=name, prompt=prompt, temperature=0)
check(c_default.usage.completion_tokens <= 16, "completions default to 16 tokens as OpenAI's")
two = client.completions.create(model=name, prompt=[prompt, "In the beginning"], max_tokens=5, temperature=0)
check([ch.index for ch in two.choices] == [0, 1], "a list of prompts gives one choice each")
check(two.choices[0].text == c.choices[0].text[: len(two.choices[0].text)], "batched prompt answers as alone")
check(two.usage.prompt_tokens == len(tok.encode(prompt).ids) + len(tok.encode("In the beginning").ids), "prompt tokens summed")
many = client.completions.create(model=name, prompt=[prompt] * 5, n=8, max_tokens=3, temperature=0)
check([ch.index for ch in many.choices] == list(range(40)) and len({ch.text for ch in many.choices}) == 1 and
      many.choices[0].text == c.choices[0].text[: len(many.choices[0].text)], "40 answers (over one engine batch) agree")
echo = client.completions.create(model=name, prompt=prompt, max_tokens=3, temperature=0, echo=True)
check(echo.choices[0].text.startswith(prompt), "echo puts the prompt first")
parts = list(client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0, stream=True))
check("".join(p.choices[0].text for p in parts if p.choices) == c.choices[0].text, "streamed completion = non-streamed")

# ---- seed: reproducible with temperature > 0; n choices
sampled = [client.chat.completions.create(model=name, messages=messages, temperature=1.0, seed=1234, max_tokens=16)
           .choices[0].message.content for _ in range(2)]
check(sampled[0] == sampled[1], f"same seed, same answer: {sampled[0]!r}")
other = client.chat.completions.create(model=name, messages=messages, temperature=1.0, seed=99, max_tokens=16)
check(other.choices[0].message.content != sampled[0], "another seed gives another answer")
multi = client.chat.completions.create(model=name, messages=messages, temperature=1.0, seed=1234, max_tokens=16, n=3)
check([ch.index for ch in multi.choices] == [0, 1, 2], "n=3 gives three choices")
check(multi.choices[0].message.content == sampled[0], "choice 0 of n samples as a single answer with the seed")
check(multi.usage.prompt_tokens == r.usage.prompt_tokens, "n counts the prompt once")
check(multi.usage.completion_tokens >= 3, "n counts every choice's tokens")
nstream = list(client.chat.completions.create(model=name, messages=messages, temperature=1.0, seed=1234, max_tokens=16,
                                              n=3, stream=True))
per_choice = {}
for ch in nstream:
    for x in ch.choices:
        per_choice[x.index] = per_choice.get(x.index, "") + (x.delta.content or "")
check([per_choice[i] for i in range(3)] == [x.message.content for x in multi.choices], "n=3 streamed = non-streamed")

# ---- concurrent requests for one model (decoded together when they wait at the same time)
# answer as they do alone: greedy, and sampled with their own seeds
import concurrent.futures
jobs = [(0, None), (1.0, 1234), (1.0, 99), (0, None), (1.0, 1234), (1.0, 99)]
def ask(job):
    t, seed = job
    kw = {"seed": seed} if seed is not None else {}
    return client.chat.completions.create(model=name, messages=messages, temperature=t, max_tokens=16 if t else max_tokens,
                                          **kw).choices[0].message.content
batches_before = metrics()["gpugrid_serve_completion_batches_total"]
with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    answers = list(pool.map(ask, jobs))
batches = metrics()["gpugrid_serve_completion_batches_total"] - batches_before
check(batches < len(jobs), f"{len(jobs)} concurrent requests ran in {batches:.0f} batches")
want = {None: greedy_text, 1234: sampled[0], 99: other.choices[0].message.content}
check(answers == [want[s] for _, s in jobs], f"concurrent answers as alone: {answers}")

# ---- stop strings
words = greedy_text.split(" ")
stop = " " + words[2] if len(words) > 3 else None
if stop:
    s = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=max_tokens, stop=[stop, "@@"])
    check(s.choices[0].message.content == greedy_text[: greedy_text.index(stop)],
          f"stop {stop!r}: {s.choices[0].message.content!r}")
    check(s.choices[0].finish_reason == "stop", "stop string gives finish_reason stop")
    ss = list(client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=max_tokens,
                                             stop=stop, stream=True))
    check("".join(x.choices[0].delta.content or "" for x in ss if x.choices) == s.choices[0].message.content,
          "stop string never streamed")

# ---- errors as the package's exception classes
expect_error(openai.NotFoundError, lambda: client.chat.completions.create(model="nope", messages=messages), ["nope"],
             "unknown model")
e = expect_error(openai.BadRequestError, lambda: client.chat.completions.create(model=name, messages=messages,
                                                                                presence_penalty=0.5),
                 ["presence_penalty"], "presence_penalty refused by name")
check(e.body.get("param") == "presence_penalty" and e.body.get("type") == "invalid_request_error", f"error body {e.body}")
expect_error(openai.BadRequestError, lambda: client.chat.completions.create(model=name, messages=messages, temperature=5),
             ["temperature"], "temperature out of range")
expect_error(openai.BadRequestError, lambda: client.chat.completions.create(model=name, messages=messages, n=0),
             ["'n'"], "n out of range")
long_prompt = "light " * 600
expect_error(openai.BadRequestError, lambda: client.completions.create(model=name, prompt=long_prompt),
             ["context is 512"], "prompt longer than the context")
expect_error(openai.BadRequestError, lambda: client.completions.create(model=name, prompt=prompt, max_tokens=600),
             ["max_tokens"], "prompt + max_tokens over the context")
expect_error(openai.BadRequestError,
             lambda: client.chat.completions.create(model=name, messages=[{"role": "tool", "content": "x"}]),
             ["role"], "unsupported role")

# ---- a client that goes away mid-stream: generation stops at once; the server serves on
before = metrics()
# ignore_eos (vLLM's extension, through extra_body) keeps it generating for the whole max_tokens.
stream = client.chat.completions.create(model=name, messages=messages, temperature=1.0, seed=5, max_tokens=480, n=4,
                                        stream=True, extra_body={"ignore_eos": True})
got = 0
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        got += 1
        if got == 1:
            # Other routes are served while this stream is open (answers for this model wait their turn).
            t0 = time.time()
            check(client.models.retrieve(name).id == name and metrics()["gpugrid_serve_completions_running"] == 1,
                  f"other requests answered while a stream is open ({time.time() - t0:.2f} s)")
        if got >= 3:
            break
stream.close()
deadline = time.time() + 5
while time.time() < deadline and metrics()["gpugrid_serve_completions_running"] > 0:
    time.sleep(0.05)
after = metrics()
check(after["gpugrid_serve_completions_running"] == 0, "the cancelled generation stopped")
check(after["gpugrid_serve_completions_cancelled_total"] == before["gpugrid_serve_completions_cancelled_total"] + 1,
      "counted as cancelled")
decoded = after["gpugrid_serve_generated_tokens_total"] - before["gpugrid_serve_generated_tokens_total"]
check(decoded < 4 * 480 / 2, f"{decoded:.0f} of {4 * 480} tokens decoded before the stop")
time.sleep(0.3)
check(metrics()["gpugrid_serve_generated_tokens_total"] == after["gpugrid_serve_generated_tokens_total"],
      "nothing decoded after the stop")
again = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=max_tokens)
check(again.choices[0].message.content == greedy_text, "a normal request after the disconnect")

# ---- API keys (401) and the per-key rate limit (429) as the package's exceptions
if len(sys.argv) > 5:
    keys_url, key = sys.argv[4], sys.argv[5]
    ask = dict(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    wrong = openai.OpenAI(base_url=keys_url, api_key="wrong-key-0123456789", max_retries=0)
    e = expect_error(openai.AuthenticationError, lambda: wrong.chat.completions.create(**ask), ["not valid"], "wrong key")
    check(e.body.get("type") == "authentication_error", f"401 body {e.body}")
    good = openai.OpenAI(base_url=keys_url, api_key=key, max_retries=0)
    check(good.chat.completions.create(**ask).choices[0].message.content is not None, "the right key is served")
    good.models.list()
    e = expect_error(openai.RateLimitError, lambda: good.chat.completions.create(**ask), ["rate limit"], "rate limit")
    check(e.body.get("type") == "rate_limit_error" and e.response.headers.get("retry-after"), f"429 body {e.body}")
print("all openai client checks passed")
