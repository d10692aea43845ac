// The generation engine: a decoder model folder (onnxruntime-genai builder or optimum export,
// see llm/model_config.h) loaded into an engine session, and the sequences generated with it.
//
//   generator       the loaded model, its tokenizer and config. Immutable after load(); start(),
//                   score() and complete() may be called from several threads at once (each run
//                   gets its own engine arena).
//   batch           one or more sequences started together and decoded in one engine run per
//                   step (a batch of one is the usual case). Owns its KV cache. Not thread-safe:
//                   one thread drives it (step, cancel, queries); it may move between threads.
//                   It keeps the generator alive (shared_ptr).
//
// The KV cache never moves per token: the present.* outputs of one step are fed back as the
// past.* inputs of the next. For genai folders with past_present_share_buffer the cache is one
// preallocated buffer of the model's max length (as onnxruntime-genai does) that each step hands
// to the engine (session_options::overwrite_inputs), so GroupQueryAttention writes the new
// positions into it in place; for optimum folders the cache grows by the present outputs. Batched sequences are right-padded with an
// attention mask (optimum folders: one cache length, masked gaps; GroupQueryAttention folders:
// per-sequence lengths), so each sequence's tokens are those it would get alone.
//
// The session runs a copy of the model with one extra input in front of the language-model head
// (a Gather of the positions whose logits are read: each sequence's last one), so a prefill
// multiplies one row per sequence by the vocabulary-sized head; score() asks for every position.
// When the head's input is not [batch, sequence, hidden] the load's warm-up step fails on the
// copy and the model runs as given.
//
// complete() keeps its batch's KV cache afterwards (generator_options::reuse_caches) and the
// next complete() whose tokens share a prefix with a kept cache's takes it and prefills only the
// rest: the cache is cut to the common prefix (optimum folders: a copy of that many positions;
// GroupQueryAttention folders: the mask and seqlens say how many positions count). A kept cache
// is memory the generator holds beyond the running batches'.
//
// Sampling follows generation.h's reproducibility note: the draw for answer token n comes from a
// generator seeded with (seed, n) alone, so a continuation (request.generated_ids) samples as
// if the answer had never moved.
//
// Failures are values: load -> invalid_input naming the file (exit 2: a folder missing its
// config, tokenizer or model, an unsupported model input) or the engine's error; start ->
// invalid_input for a request the model cannot take ("the prompt has N tokens; the model's
// context is M", token ids outside the vocabulary); step -> io when the engine run fails (the
// batch is then finished and should be dropped).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "llm/generation.h"
#include "llm/model_config.h"
#include "llm/tokenizer.h"

namespace gpugrid {
class session;
}

namespace gpugrid::llm {

struct generator_options {
  int threads = 0;              // engine threads; 0: all cores
  std::string device = "cpu";   // "cpu", "cuda", "cuda:N", "auto" (see engine/session.h)
  // Upper bound on prompt + answer tokens of one sequence; 0: the model's context length (or
  // 4096 when the folder states none). A genai share-buffer cache is preallocated this long.
  int64_t max_length = 0;
  // KV caches kept after complete() for a later request whose tokens begin with the same ones
  // (the next turn of a chat: the conversation so far, the answer, then the new message): that
  // request prefills only the tokens after the common prefix. Each kept cache holds its memory
  // (a genai share-buffer cache: the whole max length) until a request takes it or a newer one
  // pushes it out. 0: none kept.
  int reuse_caches = 1;
};

// What a verifier compares: the teacher-forced pass over prompt + answer.
struct score_result {
  std::vector<float> logprobs;    // per answer token: log-softmax of that token (temperature 1)
  std::vector<int32_t> argmax;    // per answer token: the arg-max id at its position
};

class batch;

// --- sampling, exposed for tests and for verifiers that re-sample ---

// Applies repetition penalty (over `seen` ids), temperature and the top-k / top-p / min-p
// filters to `logits` in place; filtered entries become -infinity. Greedy settings
// (temperature 0) leave the logits as they are.
void apply_sampling_filters(std::vector<float>& logits, const sampling_options& s, const std::vector<int32_t>& seen);
// Picks the next token from raw logits: greedy arg-max when temperature is 0, else a draw from
// the filtered distribution seeded by (s.seed, index). Deterministic for equal inputs.
int32_t sample_token(const std::vector<float>& logits, const sampling_options& s, const std::vector<int32_t>& seen,
                     int64_t index);
// log-softmax of logits[id].
float token_logprob(const float* logits, int64_t n, int32_t id);

class generator : public std::enable_shared_from_this<generator> {
 public:
  static expected<std::shared_ptr<generator>> load(const std::string& model_dir, const generator_options& options = {});
  ~generator();

  const model_config& config() const { return config_; }
  const tokenizer& tok() const { return tokenizer_; }
  int64_t max_length() const { return max_length_; }
  std::string device_name() const;

  // Starts sequences (one per request); nothing runs until the batch's first step (the prefill).
  expected<std::unique_ptr<batch>> start(const std::vector<completion_request>& requests);

  // One pass over prompt_ids + answer_ids without cache; needs answer_ids non-empty.
  expected<score_result> score(const std::vector<int32_t>& prompt_ids, const std::vector<int32_t>& answer_ids);

  // A whole completion on a batch of one: tokens go to sink on the calling thread as they come.
  // Takes the kept KV cache (generator_options::reuse_caches) that shares the longest prefix
  // with the request's tokens, if any (completion_stats::cached_prompt_tokens), and keeps this
  // completion's cache after it.
  expected<completion_stats> complete(const completion_request& request, const token_sink& sink,
                                      const cancel_check& cancelled);

  // Several completions decoded together, one engine run per step; sink(i, token) gets sequence
  // i's tokens. Each answer equals what complete() gives for its request alone (greedy), up to
  // float rounding in the padded runs.
  using batch_sink = std::function<bool(size_t, const generated_token&)>;
  expected<std::vector<completion_stats>> complete_batch(const std::vector<completion_request>& requests,
                                                         const batch_sink& sink, const cancel_check& cancelled);

  // Decode tokens/s of the last finished completion on this generator (0 before the first).
  double measured_tokens_per_s() const;

  struct model_io;  // the model's inputs and outputs by role (generator.cc)
  struct kept_cache;  // a finished completion's KV cache and the tokens it holds (generator.cc)

 private:
  friend class batch;
  generator() = default;
  // Moves the kept cache sharing the longest prefix with b's one sequence into b.
  void adopt_kept_cache(batch& b);
  // Keeps b's cache for a later request (b is done with it).
  void keep_cache(batch& b);
  int reuse_caches_ = 0;
  std::mutex kept_mu_;
  std::vector<std::unique_ptr<kept_cache>> kept_;  // most recent last
  model_config config_;
  tokenizer tokenizer_;
  std::unique_ptr<session> session_;
  std::unique_ptr<model_io> io_;
  int64_t max_length_ = 0;
  mutable std::atomic<double> measured_tps_{0.0};
};

class batch {
 public:
  ~batch();
  size_t size() const;
  bool done() const;  // every sequence finished

  // One engine run: the prefill on the first call, then one token for every unfinished sequence.
  // out[i] receives what sequence i produced this step (id -1 when it produced nothing, being
  // finished). A cancelled check (asked before the run) finishes every sequence with
  // finish_reason::cancelled. After an io error the batch is done.
  status step(std::vector<generated_token>* out, const cancel_check& cancelled = {});

  // Finishes sequence i now (finish_reason::cancelled); the others go on.
  void cancel(size_t i);

  finish_reason reason(size_t i) const;
  // Stats so far: token ids, text, timings (the providers and cost fields are left empty).
  const completion_stats& stats(size_t i) const;
  // Bytes of KV cache this batch holds now (for memory accounting).
  int64_t kv_cache_bytes() const;

  struct state;

 private:
  friend class generator;
  explicit batch(std::unique_ptr<state> s);
  std::unique_ptr<state> s_;
};

}  // namespace gpugrid::llm
