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
