// Edge cases of the LSTM / GRU / RNN kernels (rnn.cc). Their agreement with onnxruntime on
// every direction, layout and activation is checked by tests/op_cases_test.sh.
#include <catch2/catch.hpp>

#include <cmath>

#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

attribute strs(std::vector<std::string> v) {
  attribute a;
  a.type = attribute::kind::strings;
  a.strings = std::move(v);
  return a;
}

node rnn_node(const std::string& type, int64_t hidden, const std::string& dir = "forward", size_t outs = 2) {
  node n = op(type, outs, 14);
  n.attrs["hidden_size"] = ai(hidden);
  n.attrs["direction"] = as(dir);
  return n;
}

// X [S, B, I] <-> [B, S, I] (and Y_h [D, B, H] <-> [B, D, H] with S = D).
tensor swap01(const tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1), c = t.numel() / (a * b);
  shape_t s = t.shape();
  std::swap(s[0], s[1]);
  tensor o = tensor::zeros(dtype::f32, s);
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j)
      for (int64_t k = 0; k < c; ++k) o.data<float>()[(j * a + i) * c + k] = t.data<float>()[(i * b + j) * c + k];
  return o;
}

}  // namespace

TEST_CASE("RNN: one unit by hand, forward and reverse with a short sequence", "[rnn]") {
  // H = I = 1: h_t = tanh(0.5 x_t + 0.25 h_{t-1} + 0.1 + 0.2).
  tensor X = tensor::from_vector<float>({3, 1, 1}, {1.f, -2.f, 0.5f});
  tensor W = tensor::from_vector<float>({1, 1, 1}, {0.5f});
  tensor R = tensor::from_vector<float>({1, 1, 1}, {0.25f});
  tensor B = tensor::from_vector<float>({1, 2}, {0.1f, 0.2f});
  auto f = [](float x, float h) { return std::tanh(0.5f * x + 0.25f * h + 0.3f); };
  SECTION("forward") {
    auto out = run(rnn_node("RNN", 1), {X, W, R, B});
    REQUIRE(out);
    const float h1 = f(1.f, 0.f), h2 = f(-2.f, h1), h3 = f(0.5f, h2);
    check_close((*out)[0], {h1, h2, h3});
    check_close((*out)[1], {h3});
  }
  SECTION("reverse, sequence_lens 2: time 2 is padding") {
    tensor lens = tensor::from_vector<int32_t>({1}, {2});
    auto out = run(rnn_node("RNN", 1, "reverse"), {X, W, R, B, lens});
    REQUIRE(out);
    const float h_t1 = f(-2.f, 0.f), h_t0 = f(1.f, h_t1);
    check_close((*out)[0], {h_t0, h_t1, 0.f});
    check_close((*out)[1], {h_t0});
  }
  SECTION("sequence_lens 0 keeps the initial state and leaves Y zero") {
    tensor lens = tensor::from_vector<int32_t>({1}, {0});
    tensor h0 = tensor::from_vector<float>({1, 1, 1}, {0.7f});
    auto out = run(rnn_node("RNN", 1), {X, W, R, B, lens, h0});
    REQUIRE(out);
    check_close((*out)[0], {0.f, 0.f, 0.f});
    check_close((*out)[1], {0.7f});
  }
}

TEST_CASE("LSTM/GRU: a wide batch (packed products) matches each sequence run alone", "[rnn]") {
  const int64_t S = 4, N = 6, I = 5, H = 7;
  for (const std::string type : {"LSTM", "GRU"}) {
    for (int lbr = 0; lbr < 2; ++lbr) {
      if (type == "LSTM" && lbr) continue;
      const int64_t G = type == "LSTM" ? 4 : 3;
      tensor X = rnd({S, N, I}, 1), W = rnd({2, G * H, I}, 2), R = rnd({2, G * H, H}, 3), B = rnd({2, 2 * G * H}, 4);
      tensor lens = tensor::from_vector<int32_t>({N}, {4, 1, 3, 4, 2, 4});
      tensor h0 = rnd({2, N, H}, 5);
      node n = rnn_node(type, H, "bidirectional", 2);
      if (type == "GRU") n.attrs["linear_before_reset"] = ai(lbr);
      auto all = run(n, {X, W, R, B, lens, h0});
      REQUIRE(all);
      for (int64_t b = 0; b < N; ++b) {
        tensor x1 = tensor::zeros(dtype::f32, {S, 1, I}), h1 = tensor::zeros(dtype::f32, {2, 1, H});
        for (int64_t t = 0; t < S; ++t)
          for (int64_t i = 0; i < I; ++i) x1.data<float>()[t * I + i] = X.data<float>()[(t * N + b) * I + i];
        for (int64_t d = 0; d < 2; ++d)
          for (int64_t j = 0; j < H; ++j) h1.data<float>()[d * H + j] = h0.data<float>()[(d * N + b) * H + j];
        tensor l1 = tensor::from_vector<int32_t>({1}, {lens.data<int32_t>()[b]});
        auto one = run(n, {x1, W, R, B, l1, h1});
        REQUIRE(one);
        std::vector<float> want_y, want_h;
        for (int64_t t = 0; t < S; ++t)
          for (int64_t d = 0; d < 2; ++d)
            for (int64_t j = 0; j < H; ++j) want_y.push_back((*all)[0].data<float>()[((t * 2 + d) * N + b) * H + j]);
        for (int64_t d = 0; d < 2; ++d)
          for (int64_t j = 0; j < H; ++j) want_h.push_back((*all)[1].data<float>()[(d * N + b) * H + j]);
        INFO(type << " lbr " << lbr << " batch item " << b);
        check_close((*one)[0], want_y, 1e-5f, 1e-4f);
        check_close((*one)[1], want_h, 1e-5f, 1e-4f);
      }
    }
  }
}

TEST_CASE("LSTM: layout 1 is layout 0 with batch and time swapped", "[rnn]") {
  const int64_t S = 3, N = 2, I = 4, H = 5;
  tensor X = rnd({S, N, I}, 11), W = rnd({1, 4 * H, I}, 12), R = rnd({1, 4 * H, H}, 13);
  tensor h0 = rnd({1, N, H}, 14), c0 = rnd({1, N, H}, 15);
  node n0 = rnn_node("LSTM", H, "forward", 3);
  node n1 = n0;
  n1.attrs["layout"] = ai(1);
  auto a = run(n0, {X, W, R, tensor(), tensor(), h0, c0});
  auto b = run(n1, {swap01(X), W, R, tensor(), tensor(), swap01(h0), swap01(c0)});
  REQUIRE(a);
  REQUIRE(b);
  // Y: [S, 1, N, H] vs [N, S, 1, H].
  check_close((*b)[0], values(swap01((*a)[0].reshaped({S, N, H}))));
  check_close((*b)[1], values(swap01((*a)[1])));
  check_close((*b)[2], values(swap01((*a)[2])));
}

TEST_CASE("RNN family: bad attributes and inputs are one-line errors", "[rnn]") {
  tensor X = rnd({2, 1, 3}, 1), W = rnd({1, 4, 3}, 2), R = rnd({1, 4, 4}, 3);
  SECTION("sequence_lens past seq_length") {
    auto out = run(rnn_node("RNN", 4), {X, W, R, tensor(), tensor::from_vector<int32_t>({1}, {3})});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("sequence_lens[0] = 3") != std::string::npos);
  }
  SECTION("W of the wrong shape") {
    auto out = run(rnn_node("GRU", 4), {X, W, R});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("W must be [1, 12, 3]") != std::string::npos);
  }
  SECTION("unknown activation") {
    node n = rnn_node("RNN", 4);
    n.attrs["activations"] = strs({"Swish"});
    auto out = run(n, {X, W, R});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("unknown activation \"Swish\"") != std::string::npos);
  }
  SECTION("wrong number of activations") {
    node n = rnn_node("LSTM", 1);
    n.attrs["activations"] = strs({"Sigmoid", "Tanh"});
    auto out = run(n, {X, rnd({1, 4, 3}, 4), rnd({1, 4, 1}, 5)});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("activations lists 2 functions, expected 3") != std::string::npos);
  }
  SECTION("bad direction") {
    auto out = run(rnn_node("RNN", 4, "sideways"), {X, W, R});
    REQUIRE_FALSE(out);
  }
}
