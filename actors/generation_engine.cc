#include "actors/generation_engine.h"

#include <algorithm>

namespace gpugrid::grid {

namespace {

// KV-cache bytes one more token costs: the cache after a one-token prefill and after one decode
// step; a cache preallocated to the model's length (genai share-buffer) does not grow, so its
// bytes are spread over that length.
int64_t measure_kv_bytes_per_token(llm::generator& g) {
  llm::completion_request r;
  r.prompt_ids = {g.config().bos_token_id >= 0 ? g.config().bos_token_id : 0};
  r.stop.max_new_tokens = 2;
  r.stop.ignore_eos = true;
  auto b = g.start({r});
  if (!b) return 0;
  std::vector<llm::generated_token> out;
  if (!(*b)->step(&out).is_ok()) return 0;
  int64_t one = (*b)->kv_cache_bytes();
  if (!(*b)->step(&out).is_ok()) return one;
  int64_t two = (*b)->kv_cache_bytes();
  if (two > one) return two - one;
  return std::max<int64_t>(1, one / std::max<int64_t>(1, g.max_length()));
}

class generator_engine : public gen_engine {
 public:
  explicit generator_engine(std::shared_ptr<llm::generator> g) : g_(std::move(g)), kv_(measure_kv_bytes_per_token(*g_)) {}

  expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    return g_->complete(request, sink, cancelled);
  }
  expected<std::vector<float>> score(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) override {
    GG_ASSIGN_OR_RETURN(llm::score_result r, g_->score(prompt, answer));
    return r.logprobs;
  }
  int64_t kv_bytes_per_token() const override { return kv_; }
  int64_t context_length() const override { return g_->max_length(); }
  int64_t vocab_size() const override {
    return g_->config().vocab_size > 0 ? g_->config().vocab_size : static_cast<int64_t>(g_->tok().vocab_size());
  }
  double tokens_per_s() const override { return g_->measured_tokens_per_s(); }

 private:
  std::shared_ptr<llm::generator> g_;
  int64_t kv_ = 0;
};

}  // namespace

std::shared_ptr<gen_engine> wrap_generator(std::shared_ptr<llm::generator> g) {
  return std::make_shared<generator_engine>(std::move(g));
}

gen_engine_loader generator_loader(llm::generator_options options) {
  return [options](const std::string& dir) -> expected<std::shared_ptr<gen_engine>> {
    GG_ASSIGN_OR_RETURN(std::shared_ptr<llm::generator> g, llm::generator::load(dir, options));
    return wrap_generator(std::move(g));
  };
}

}  // namespace gpugrid::grid
