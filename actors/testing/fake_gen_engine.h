// A tiny deterministic language model for tests of the generation grid: no files, no engine.
// The next token after a sequence is a fixed function of the sequence; its log-prob is a fixed
// function of the token. Faults are switched on per instance (a different "model", tokens out of
// order, too many tokens, a stall after some tokens, a slow decoder).
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "actors/generation_host.h"
#include "base/testing/concurrency_gauge.h"

namespace gpugrid::grid::testing {

class fake_gen_engine : public gen_engine {
 public:
  static constexpr int64_t kVocab = 50;
  static constexpr int32_t kEos = 0;

  int32_t variant = 0;            // != 0: a different model (other tokens, other log-probs)
  int64_t stall_after = -1;       // >= 0: stop answering (block until cancelled) after this many tokens
  bool out_of_order = false;      // the second token skips an index
  bool ignore_limit = false;      // streams past max_new_tokens
  int sleep_us_per_token = 0;
  int rendezvous = 0;             // > 0: each answer waits (up to 10 s) until this many have run at once
  gpugrid::testing::concurrency_gauge running;
  std::atomic<int64_t> steps{0};
  std::atomic<bool> saw_cancel{false};

  static int32_t next_of(const std::vector<int32_t>& seq, int32_t variant) {
    int64_t h = 17 + variant * 1000003;
    for (int32_t id : seq) h = (h * 31 + id) % 1000003;
    int32_t t = static_cast<int32_t>(1 + h % (kVocab - 1));  // never EOS
    return t;
  }
  static float logprob_of(int32_t id, int32_t variant) { return -0.05f - 0.01f * static_cast<float>((id + 3 * variant) % 7); }

  expected<llm::completion_stats> complete(const llm::completion_request& r, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    gpugrid::testing::concurrency_gauge::inside counted(running);
    if (rendezvous > 0 && !running.reached(rendezvous)) return status(error_kind::io, "the other answers never came");
    std::vector<int32_t> seq = r.prompt_ids;
    seq.insert(seq.end(), r.generated_ids.begin(), r.generated_ids.end());
    llm::completion_stats st;
    int64_t index = static_cast<int64_t>(r.generated_ids.size());
    int64_t made = 0;
    int64_t limit = ignore_limit ? r.stop.max_new_tokens + 3 : r.stop.max_new_tokens;
    while (index < limit) {
      if (cancelled && cancelled()) {
        saw_cancel = true;
        st.reason = llm::finish_reason::cancelled;
        return st;
      }
      if (stall_after >= 0 && made >= stall_after) {
        while (!(cancelled && cancelled())) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        saw_cancel = true;
        st.reason = llm::finish_reason::cancelled;
        return st;
      }
      if (sleep_us_per_token) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_per_token));
      llm::generated_token g;
      g.id = next_of(seq, variant);
      g.index = (out_of_order && made == 1) ? index + 1 : index;
      g.logprob = logprob_of(g.id, variant);
      seq.push_back(g.id);
      st.token_ids.push_back(g.id);
      ++index;
      ++made;
      ++steps;
      if (!sink(g)) {
        st.reason = llm::finish_reason::cancelled;
        return st;
      }
    }
    st.generated_tokens = made;
    st.reason = llm::finish_reason::length;
    return st;
  }

  expected<std::vector<float>> score(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) override {
    std::vector<int32_t> seq = prompt;
    std::vector<float> out;
    for (int32_t id : answer) {
      out.push_back(id == next_of(seq, variant) ? logprob_of(id, variant) : -9.0f);
      seq.push_back(id);
    }
    return out;
  }
  int64_t kv_bytes_per_token() const override { return 1000; }
  int64_t context_length() const override { return 4096; }
  int64_t vocab_size() const override { return kVocab; }
  double tokens_per_s() const override { return 100; }
};

}  // namespace gpugrid::grid::testing
