#include "llm/generator.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <catch2/catch.hpp>

using namespace gpugrid::llm;

namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.5f, 2.9f, -1.0f};

std::set<int32_t> kept(std::vector<float> l, const sampling_options& s, const std::vector<int32_t>& seen = {}) {
  apply_sampling_filters(l, s, seen);
  std::set<int32_t> out;
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i] != -std::numeric_limits<float>::infinity()) out.insert(static_cast<int32_t>(i));
  return out;
}

sampling_options sampled(double t = 1.0) {
  sampling_options s;
  s.temperature = t;
  return s;
}

}  // namespace

TEST_CASE("greedy picks the arg-max, whatever the seed and index", "[llm][sampling]") {
  sampling_options s;
  for (uint64_t seed : {0u, 1u, 99u})
    for (int64_t i : {0, 5, 1000}) {
      s.seed = seed;
      CHECK(sample_token(kLogits, s, {}, i) == 1);
    }
}

TEST_CASE("repetition penalty divides positive and multiplies negative scores of seen tokens", "[llm][sampling]") {
  std::vector<float> l = kLogits;
  sampling_options s;
  s.repetition_penalty = 2.0;
  apply_sampling_filters(l, s, {1, 5, 1});
  CHECK(l[1] == Approx(1.5f));   // 3 / 2, once even though seen twice
  CHECK(l[5] == Approx(-2.0f));  // -1 * 2
  CHECK(l[2] == Approx(2.0f));
  // Greedy with the penalty now prefers token 4 (2.9) over the penalised token 1.
  CHECK(sample_token(kLogits, s, {1}, 0) == 4);
}

TEST_CASE("top-k keeps the k likeliest tokens", "[llm][sampling]") {
  auto s = sampled();
  s.top_k = 2;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 4});
  s.top_k = 3;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 2, 4});
  s.top_k = 0;
  CHECK(kept(kLogits, s).size() == kLogits.size());
}

TEST_CASE("top-p keeps the smallest set reaching p, and always the best token", "[llm][sampling]") {
  // softmax of {1, 3, 2, .5, 2.9, -1}: p(1) ~ .39, p(4) ~ .35, p(2) ~ .14, p(0) ~ .05 ...
  auto s = sampled();
  s.top_p = 0.3;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1});
  s.top_p = 0.5;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 4});
  s.top_p = 0.8;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 2, 4});
  s.top_p = 1e-9;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1});
}

TEST_CASE("min-p drops tokens below min_p times the best probability", "[llm][sampling]") {
  auto s = sampled();
  s.min_p = 0.5;  // p(4)/p(1) = e^-0.1 ~ .905 stays, p(2)/p(1) = e^-1 ~ .37 goes
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 4});
  s.min_p = 0.3;
  CHECK(kept(kLogits, s) == std::set<int32_t>{1, 2, 4});
}

TEST_CASE("temperature sharpens or flattens the distribution", "[llm][sampling]") {
  std::map<int32_t, int> cold, hot;
  for (int64_t i = 0; i < 2000; ++i) {
    cold[sample_token(kLogits, sampled(0.1), {}, i)]++;
    hot[sample_token(kLogits, sampled(5.0), {}, i)]++;
  }
  CHECK(cold[1] > 1400);  // p(1) at T=0.1 ~ .73
  CHECK(cold[5] == 0);
  CHECK(hot.size() == kLogits.size());  // every token drawn at T=5
  CHECK(hot[5] > 100);
}

TEST_CASE("sampling frequencies follow the softmax", "[llm][sampling]") {
  std::map<int32_t, int> n;
  const int draws = 20000;
  for (int64_t i = 0; i < draws; ++i) n[sample_token(kLogits, sampled(), {}, i)]++;
  double sum = 0;
  for (float l : kLogits) sum += std::exp(l);
  for (size_t t = 0; t < kLogits.size(); ++t) CHECK(n[t] / double(draws) == Approx(std::exp(kLogits[t]) / sum).margin(0.015));
}

TEST_CASE("a draw depends only on the seed and the token index", "[llm][sampling]") {
  auto s = sampled();
  s.seed = 42;
  std::vector<int32_t> a, b, c;
  for (int64_t i = 0; i < 200; ++i) a.push_back(sample_token(kLogits, s, {}, i));
  // The same draws in another order (a continuation starting at index 100 first).
  std::vector<int32_t> rev(200);
  for (int64_t i = 199; i >= 0; --i) rev[i] = sample_token(kLogits, s, {}, i);
  CHECK(a == rev);
  s.seed = 43;
  for (int64_t i = 0; i < 200; ++i) c.push_back(sample_token(kLogits, s, {}, i));
  CHECK(a != c);
  // Different indices do not all draw the same token.
  CHECK(std::set<int32_t>(a.begin(), a.end()).size() > 2);
}

TEST_CASE("filtered-out tokens are never drawn", "[llm][sampling]") {
  auto s = sampled(2.0);
  s.top_k = 2;
  for (int64_t i = 0; i < 500; ++i) {
    int32_t t = sample_token(kLogits, s, {}, i);
    CHECK((t == 1 || t == 4));
  }
}

TEST_CASE("token_logprob is the log-softmax", "[llm][sampling]") {
  double sum = 0;
  for (float l : kLogits) sum += std::exp(l);
  CHECK(token_logprob(kLogits.data(), 6, 2) == Approx(2.0 - std::log(sum)));
  CHECK(std::isinf(token_logprob(kLogits.data(), 6, 7)));
}

TEST_CASE("finish reasons have names", "[llm][sampling]") {
  CHECK(std::string(finish_reason_name(finish_reason::length)) == "length");
  CHECK(std::string(finish_reason_name(finish_reason::stop_token)) == "stop");
  CHECK(std::string(finish_reason_name(finish_reason::stop_string)) == "stop_string");
  CHECK(std::string(finish_reason_name(finish_reason::cancelled)) == "cancelled");
}

TEST_CASE("a folder without a model config fails with a one-line error naming the file", "[llm][generator]") {
  auto g = generator::load("/nonexistent-gpugrid-model-dir");
  REQUIRE(!g.has_value());
  CHECK(g.error().message().find("/nonexistent-gpugrid-model-dir") != std::string::npos);
}

// ---- on real decoder folders: tests/llm_generator_test.sh makes them (tests/llm/make_tiny_decoder.py)
// and points GPUGRID_LLM_DECODERS at them.

namespace {

std::string decoders_dir() {
  const char* d = std::getenv("GPUGRID_LLM_DECODERS");
  if (!d) FAIL("GPUGRID_LLM_DECODERS is not set (run tests/llm_generator_test.sh)");
  return d;
}

completion_request request(std::vector<int32_t> prompt, int64_t max_new, double temperature = 0, uint64_t seed = 0) {
  completion_request r;
  r.prompt_ids = std::move(prompt);
  r.stop.max_new_tokens = max_new;
  r.stop.ignore_eos = true;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  return r;
}

std::vector<generated_token> run_all(generator& g, const completion_request& r, completion_stats* stats = nullptr) {
  std::vector<generated_token> toks;
  auto s = g.complete(r, [&](const generated_token& t) { toks.push_back(t); return true; }, {});
  REQUIRE(s.has_value());
  if (stats) *stats = *s;
  return toks;
}

}  // namespace

TEST_CASE("generator on decoder folders: batches, continuation, score, cache, cancel", "[.llm_generator]") {
  const std::string root = decoders_dir();
  for (const char* kind : {"genai", "optimum", "merged"}) {
    INFO(kind);
    generator_options o;
    o.threads = 1;
    auto loaded = generator::load(root + "/" + kind, o);
    REQUIRE(loaded.has_value());
    generator& g = **loaded;
    const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 8, 9, 10, 11}, {12}, {40, 41, 42, 43}};

    // A batch of prompts of different lengths decodes each as it would alone.
    std::vector<std::vector<int32_t>> alone;
    for (auto& p : prompts) {
      std::vector<int32_t> ids;
      for (auto& t : run_all(g, request(p, 12))) ids.push_back(t.id);
      alone.push_back(ids);
    }
    std::vector<completion_request> reqs;
    for (size_t i = 0; i < prompts.size(); ++i) reqs.push_back(request(prompts[i], 6 + 3 * int64_t(i)));
    auto b = g.start(reqs);
    REQUIRE(b.has_value());
    std::vector<std::vector<int32_t>> batched(prompts.size());
    std::vector<generated_token> out;
    int64_t bytes_before = -1;
    while (!(*b)->done()) {
      REQUIRE((*b)->step(&out).is_ok());
      for (size_t i = 0; i < out.size(); ++i)
        if (out[i].id >= 0) {
          CHECK(out[i].index == int64_t(batched[i].size()));
          batched[i].push_back(out[i].id);
        }
      CHECK((*b)->kv_cache_bytes() > 0);
      if (bytes_before < 0) bytes_before = (*b)->kv_cache_bytes();
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      CHECK((*b)->reason(i) == finish_reason::length);
      CHECK(batched[i] == std::vector<int32_t>(alone[i].begin(), alone[i].begin() + 6 + 3 * i));
    }

    // Continuation: prompt + the first k sampled tokens continue exactly as the whole answer.
    auto whole = run_all(g, request(prompts[0], 10, 1.0, 77));
    completion_request cont = request(prompts[0], 10, 1.0, 77);
    for (int k = 0; k < 4; ++k) cont.generated_ids.push_back(whole[k].id);
    completion_stats cs;
    auto rest = run_all(g, cont, &cs);
    REQUIRE(rest.size() == 6);
    for (size_t i = 0; i < rest.size(); ++i) {
      CHECK(rest[i].id == whole[4 + i].id);
      CHECK(rest[i].index == int64_t(4 + i));
    }
    CHECK(cs.token_ids.size() == 10);
    CHECK(cs.generated_tokens == 6);

    // score(): the teacher-forced pass gives the streamed logprobs and the greedy arg-max.
    auto greedy = run_all(g, request(prompts[2], 8));
    std::vector<int32_t> ids;
    for (auto& t : greedy) ids.push_back(t.id);
    auto sc = g.score(prompts[2], ids);
    REQUIRE(sc.has_value());
    CHECK(sc->argmax == ids);
    for (size_t i = 0; i < ids.size(); ++i) CHECK(sc->logprobs[i] == Approx(greedy[i].logprob).margin(1e-3));
    auto sampled_toks = run_all(g, request(prompts[2], 8, 1.0, 3));
    std::vector<int32_t> sids;
    for (auto& t : sampled_toks) sids.push_back(t.id);
    auto ss = g.score(prompts[2], sids);
    REQUIRE(ss.has_value());
    for (size_t i = 0; i < sids.size(); ++i) CHECK(ss->logprobs[i] == Approx(sampled_toks[i].logprob).margin(1e-3));

    // Cancel between steps; a sink returning false cancels too.
    int got = 0;
    auto c = g.complete(request(prompts[0], 50), [&](const generated_token&) { return ++got > 0; },
                        [&] { return got >= 3; });
    REQUIRE(c.has_value());
    CHECK(c->reason == finish_reason::cancelled);
    CHECK(c->generated_tokens == 3);
    auto c2 = g.complete(request(prompts[0], 50), [](const generated_token& t) { return t.index < 1; }, {});
    REQUIRE(c2.has_value());
    CHECK(c2->reason == finish_reason::cancelled);
    CHECK(c2->generated_tokens == 2);

    // Context: a prompt as long as the context is refused; answers stop at the context.
    auto too_long = g.start({request(std::vector<int32_t>(g.max_length(), 5), 4)});
    REQUIRE(!too_long.has_value());
    CHECK(too_long.error().message().find("context is") != std::string::npos);
    completion_stats full;
    run_all(g, request(std::vector<int32_t>(g.max_length() - 3, 5), 10), &full);
    CHECK(full.reason == finish_reason::context_full);
    CHECK(full.generated_tokens == 3);
    CHECK(g.measured_tokens_per_s() > 0);
  }
}

TEST_CASE("generator: a chat's KV cache is reused across turns, with the same answers", "[.llm_generator]") {
  const std::string root = decoders_dir();
  for (const char* kind : {"genai", "optimum", "merged"}) {
    INFO(kind);
    generator_options plain_o, reuse_o;
    plain_o.threads = reuse_o.threads = 1;
    plain_o.reuse_caches = 0;
    reuse_o.reuse_caches = 1;
    auto plain = generator::load(root + "/" + kind, plain_o);
    auto reuse = generator::load(root + "/" + kind, reuse_o);
    REQUIRE(plain.has_value());
    REQUIRE(reuse.has_value());
    auto ids_of = [](const std::vector<generated_token>& t) {
      std::vector<int32_t> v;
      for (auto& x : t) v.push_back(x.id);
      return v;
    };
    // One turn on both generators: the same tokens (and log-probabilities); returns the answer
    // and the reused count.
    auto turn = [&](const completion_request& r, int64_t* cached) {
      completion_stats ps, rs;
      auto a = run_all(**plain, r, &ps);
      auto b = run_all(**reuse, r, &rs);
      CHECK(ps.cached_prompt_tokens == 0);
      CHECK(ids_of(a) == ids_of(b));
      for (size_t i = 0; i < a.size() && i < b.size(); ++i) CHECK(a[i].logprob == Approx(b[i].logprob).margin(1e-4));
      *cached = rs.cached_prompt_tokens;
      return ids_of(b);
    };
    int64_t cached = -1;
    const std::vector<int32_t> p1 = {5, 6, 7, 8, 9};
    auto a1 = turn(request(p1, 6), &cached);
    CHECK(cached == 0);
    // The next turn: the conversation so far, the answer, a new message. Everything but the
    // answer's last token (never fed to the model) comes from the cache.
    std::vector<int32_t> p2 = p1;
    p2.insert(p2.end(), a1.begin(), a1.end());
    p2.insert(p2.end(), {20, 21, 22});
    auto a2 = turn(request(p2, 5), &cached);
    CHECK(cached == int64_t(p1.size() + a1.size() - 1));
    // Sampling continues the same way too.
    std::vector<int32_t> p3 = p2;
    p3.insert(p3.end(), a2.begin(), a2.end());
    p3.push_back(23);
    auto a3 = turn(request(p3, 5, 1.0, 9), &cached);
    CHECK(cached == int64_t(p2.size() + a2.size() - 1));
    // A prompt that leaves the conversation after 3 tokens: the cache is cut there.
    std::vector<int32_t> p4 = {5, 6, 7, 30, 31};
    auto a4 = turn(request(p4, 4), &cached);
    CHECK(cached == 3);
    // A prompt equal to what the cache holds: all but its last token are reused.
    std::vector<int32_t> p5 = p4;
    p5.insert(p5.end(), a4.begin(), a4.end() - 1);
    turn(request(p5, 3), &cached);
    CHECK(cached == int64_t(p5.size() - 1));
    // An unrelated prompt reuses nothing.
    turn(request({40, 41}, 3), &cached);
    CHECK(cached == 0);
  }
}
