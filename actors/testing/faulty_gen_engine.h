// Generation engines that misbehave, for tests only (the gpugrid-faulty test binary), wrapping
// the real engine: truncating_gen_engine answers from a cut context, as a provider that
// truncates its KV cache to save memory would (its tokens and log-probs are the real model's,
// but not for the prompt it was given, so a teacher-forced spot check over the whole prompt
// catches it); slow_gen_engine decodes slowly.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

#include "actors/generation_host.h"

namespace gpugrid::grid::testing {

class truncating_gen_engine : public gen_engine {
 public:
  truncating_gen_engine(std::shared_ptr<gen_engine> inner, size_t keep) : inner_(std::move(inner)), keep_(keep) {}

  expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    llm::completion_request cut = request;
    if (cut.prompt_ids.size() > keep_)
      cut.prompt_ids.erase(cut.prompt_ids.begin(), cut.prompt_ids.end() - static_cast<std::ptrdiff_t>(keep_));
    return inner_->complete(cut, sink, cancelled);
  }
  expected<std::vector<float>> score(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) override {
    std::vector<int32_t> cut = prompt;
    if (cut.size() > keep_) cut.erase(cut.begin(), cut.end() - static_cast<std::ptrdiff_t>(keep_));
    return inner_->score(cut, answer);
  }
  int64_t kv_bytes_per_token() const override { return inner_->kv_bytes_per_token(); }
  int64_t context_length() const override { return inner_->context_length(); }
  int64_t vocab_size() const override { return inner_->vocab_size(); }
  double tokens_per_s() const override { return inner_->tokens_per_s(); }

 private:
  std::shared_ptr<gen_engine> inner_;
  size_t keep_;
};

// Decodes `delay` slower per token (a provider slow enough for a test to kill it mid-answer).
class slow_gen_engine : public gen_engine {
 public:
  slow_gen_engine(std::shared_ptr<gen_engine> inner, std::chrono::milliseconds delay) : inner_(std::move(inner)), delay_(delay) {}
  expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    auto d = delay_;
    return inner_->complete(
        request,
        [&sink, d](const llm::generated_token& t) {
          std::this_thread::sleep_for(d);
          return sink(t);
        },
        cancelled);
  }
  expected<std::vector<float>> score(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) override {
    return inner_->score(prompt, answer);
  }
  int64_t kv_bytes_per_token() const override { return inner_->kv_bytes_per_token(); }
  int64_t context_length() const override { return inner_->context_length(); }
  int64_t vocab_size() const override { return inner_->vocab_size(); }
  double tokens_per_s() const override { return inner_->tokens_per_s(); }

 private:
  std::shared_ptr<gen_engine> inner_;
  std::chrono::milliseconds delay_;
};

inline gen_engine_loader slow_loader(gen_engine_loader real, std::chrono::milliseconds delay) {
  return [real, delay](const std::string& dir) -> expected<std::shared_ptr<gen_engine>> {
    auto e = real(dir);
    if (!e) return e.error();
    return std::shared_ptr<gen_engine>(std::make_shared<slow_gen_engine>(*e, delay));
  };
}

inline gen_engine_loader truncating_loader(gen_engine_loader real, size_t keep) {
  return [real, keep](const std::string& dir) -> expected<std::shared_ptr<gen_engine>> {
    auto e = real(dir);
    if (!e) return e.error();
    return std::shared_ptr<gen_engine>(std::make_shared<truncating_gen_engine>(*e, keep));
  };
}

}  // namespace gpugrid::grid::testing
