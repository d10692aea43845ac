// Text generation: the types shared by the generation engine (llm/generator.*), the local and
// grid completion back ends, and the commands built on them (`gpugrid generate`, `gpugrid chat`).
//
// A completion is asked for as token ids (the caller renders the chat template and tokenizes),
// with sampling and stop settings; tokens come back one at a time through a sink, in order, each
// with the text it completes. Where the tokens are made (this process, or a provider on the
// grid) is the back end's business.
//
// Reproducibility: the random draw that picks generated token number n (0-based, counted over
// the whole answer) depends only on the seed and n, never on how many steps ran before in this
// process. So an answer continued elsewhere (a failover re-sends the prompt plus the tokens
// generated so far, with first_index set to their count) samples exactly as if it had not moved.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid::llm {

struct sampling_options {
  // 0 (or do_sample false in the model's generation_config) means greedy: the arg-max token.
  double temperature = 0.0;
  int64_t top_k = 0;        // 0: no top-k cut
  double top_p = 1.0;       // nucleus cut; 1: none
  double min_p = 0.0;       // drop tokens below min_p * p(best); 0: none
  double repetition_penalty = 1.0;  // as in transformers (logit/pen when > 0, logit*pen when < 0)
  uint64_t seed = 0;        // see the reproducibility note above
};

struct stop_options {
  int64_t max_new_tokens = 256;         // generated tokens, not counting the prompt
  std::vector<std::string> stop_strings;  // the answer ends before the first one; never emitted
  std::vector<int32_t> stop_token_ids;    // in addition to the model's EOS ids
  bool ignore_eos = false;
};

enum class finish_reason {
  none,          // still running
  length,        // max_new_tokens reached
  stop_token,    // an EOS or stop token came (not emitted as text)
  stop_string,   // a stop string was found (the text before it was emitted)
  context_full,  // the model's context length was reached
  cancelled,     // the caller stopped it
};
const char* finish_reason_name(finish_reason r);  // "length", "stop", ...

struct completion_request {
  std::vector<int32_t> prompt_ids;  // rendered and tokenized, BOS included when the model wants it
  // Tokens of this answer already generated (a continuation after failover): fed with the prompt,
  // counted in max_new_tokens, not streamed again. Their count is the index of the next token.
  std::vector<int32_t> generated_ids;
  sampling_options sampling;
  stop_options stop;
};

struct generated_token {
  int32_t id = -1;
  int64_t index = 0;     // number of this token in the answer (0-based)
  std::string text;      // the text this token completes; may be empty (held back: a partial
                         // UTF-8 character or a possible start of a stop string)
  float logprob = 0.0f;  // log-softmax of the chosen token under the (unpenalised, temperature 1)
                         // logits: what a verifier recomputes in a teacher-forced pass
};

struct completion_stats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double time_to_first_token_ms = 0;
  double total_ms = 0;
  double decode_tokens_per_s = 0;  // generated tokens after the first, per second
  finish_reason reason = finish_reason::none;
  std::string text;                     // the whole answer (stop string excluded)
  std::vector<int32_t> token_ids;       // the whole answer's ids
  // Prompt tokens whose KV cache was kept from an earlier completion that began with the same
  // tokens (a chat's previous turns), so only the rest was prefilled; 0 when none was reused.
  int64_t cached_prompt_tokens = 0;
  std::vector<std::string> providers;   // node ids that produced it (grid); empty for local
  double cost = 0;                      // in the grid's price unit; 0 for local
  // Grid: how each provider that worked on it was paid: "unsettled" credits, or "chain" with
  // the wei its vouchers added (decimal).
  struct payment {
    std::string node, role, settlement, paid_wei;
    double cost = 0;
    bool paid = false;
  };
  std::vector<payment> payments;
};

// Called once per generated token, in order, on the caller's thread or the back end's (the back
// end says which); returning false cancels the completion (finish_reason::cancelled).
using token_sink = std::function<bool(const generated_token&)>;
// Asked between steps; true stops the completion (Ctrl-C in `gpugrid chat`).
using cancel_check = std::function<bool()>;

class completion_backend {
 public:
  virtual ~completion_backend() = default;
  // Runs one completion to its end. Failures: invalid_input for a request the model cannot take
  // (prompt longer than the context: "the prompt has N tokens; the model's context is M"), io
  // for a run that failed. A cancelled completion is not a failure: it returns its stats with
  // finish_reason::cancelled.
  virtual expected<completion_stats> complete(const completion_request& request, const token_sink& sink,
                                              const cancel_check& cancelled) = 0;
  // Whether complete() may run on several threads at once (the grid's client: each completion
  // has sessions of its own); otherwise callers take turns.
  virtual bool concurrent() const { return false; }
};

}  // namespace gpugrid::llm
