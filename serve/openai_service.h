// The OpenAI-compatible API of `serve` (routes under /v1, handed over by v2_service after the
// access checks):
//   GET  /v1/models, /v1/models/{id}      the generation model folders of the repository
//   POST /v1/chat/completions             messages -> the model's chat template -> tokens
//   POST /v1/completions                  prompt(s) -> tokens
// with streaming as server-sent events (stream, stream_options.include_usage), n choices,
// stop strings, seed, temperature and top_p (a request setting neither gets the model's
// generation_config sampling: temperature, top-k, top-p, repetition penalty),
// usage counted in the model's tokens. Responses, chunks and errors are in OpenAI's shapes
// (serve/openai_codec.h); where the answer came from goes in the X-Gpugrid-Cost and
// X-Gpugrid-Providers headers (for a stream: at its start when known then, and as "x_gpugrid"
// in its last chunk).
//
// Models: the subfolders of the repository folder that hold a generation model folder as
// llm/model_config.h reads it (genai_config.json, or config.json, with tokenizer.json), named
// by the folder's name; rescanned like the .onnx files (at most once per interval). A folder's
// tokenizer, chat template and completion back end are loaded on its first request and again
// after its files change.
//
// Threads: handle() runs on an HTTP worker and only parses; the generation runs in the
// response's `deferred` function on the server's pool for long requests. A client that hangs
// up stops its generation at the next token (the back end's cancel check), or leaves the queue.
// Requests for different models, and every other route, run concurrently. On the grid a
// model's requests run concurrently too (each is sessions of its own with the providers, which
// queue prompts beyond their slots). On the local engine one batch runs at a time per model:
// the requests waiting when it starts (and each request's choices and prompts) are decoded
// together, one engine run per step for all of them. A batch's sinks run on the thread of the
// request that started it, so a client that reads slowly holds up its batch until the write
// timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "llm/chat_template.h"
#include "llm/generation.h"
#include "llm/model_config.h"
#include "llm/tokenizer.h"
#include "serve/v2_service.h"

namespace gpugrid::serve {

// Opens the completion back end of one model folder (the local engine, the embedded grid or the
// grid; cli/cmd_serve.cc chooses). Called on first use of a folder, from a long-pool thread.
using completion_opener = std::function<expected<std::shared_ptr<llm::completion_backend>>(const std::string& dir)>;

struct llm_model {
  std::string name;
  std::string dir;
  std::string signature;   // sizes and modification times of its files
  int64_t created = 0;     // seconds since the epoch (the folder's modification time)

  // Loads the prompt side and the back end once (concurrent callers wait); a failure is not
  // kept, the next request tries again.
  status load(const completion_opener& open);

  // Set by load():
  llm::model_config config;
  llm::tokenizer tok;
  std::optional<llm::chat_template> tmpl;
  std::shared_ptr<llm::completion_backend> backend;
  int64_t context = 0;     // longest prompt + answer; 0: unknown (the back end decides)

  // One request's answers waiting for, or running on, the model.
  struct job {
    std::vector<llm::completion_request> runs;
    std::function<bool(size_t run, const llm::generated_token&)> sink;   // false: stop that run
    std::function<bool()> gone;                                          // the client left
    // Set when done:
    bool done = false;
    bool dropped = false;        // its client left while it waited: nothing ran
    status error = status::ok();
    std::vector<llm::completion_stats> stats;
  };
  using job_runner = std::function<void(std::vector<job*>& jobs)>;
  // Runs `j` with the requests that wait for this model at the same time: one batch at a time
  // runs on the model; the request that finds it free takes every waiting job in order (the
  // first always, the rest while their runs total at most max_runs) and runs them as one with
  // `run`, on its own thread, sinks included. Returns when `j` is done or dropped (asked every
  // 50 ms while it waits).
  void run_job(job* j, size_t max_runs, const job_runner& run);

 private:
  std::mutex load_mu_;
  bool loaded_ = false;
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<job*> queue_;
  bool busy_ = false;
};

class llm_model_list {
 public:
  llm_model_list(std::string dir, std::chrono::milliseconds interval);
  // Rescans when the last scan is older than the interval (force: always). Fails (io) only when
  // the folder cannot be read.
  status refresh(bool force = false);
  std::shared_ptr<llm_model> find(const std::string& name) const;
  std::vector<std::shared_ptr<llm_model>> list() const;

 private:
  std::string dir_;
  std::chrono::milliseconds interval_;
  mutable std::mutex mu_;
  std::mutex scan_mu_;
  std::chrono::steady_clock::time_point last_scan_{};
  bool scanned_ = false;
  std::map<std::string, std::shared_ptr<llm_model>> models_;
};

struct openai_options {
  completion_opener open;
  // Answers (sequences) decoded in one batch on the local engine, requests that arrive while
  // the model is busy merged into the next batch up to this many (and up to 64k tokens of
  // context among them: a KV cache may be held for each sequence's whole context; a request
  // asking for more runs in turns). Back ends that take completions at once (the grid) run
  // every request as it comes.
  size_t max_batch = 32;
};

class openai_service : public route_handler {
 public:
  // `models` must outlive the service.
  openai_service(llm_model_list* models, openai_options options);
  http_response handle(const http_request& request, const std::vector<std::string>& path) override;
  http_response error(int status, const std::string& message) const override;
  std::string metrics_text() const override;

  // Counters (also on /metrics).
  struct counters {
    std::atomic<int64_t> completions{0};        // answers finished and sent
    std::atomic<int64_t> cancelled{0};          // stopped because the client went away
    std::atomic<int64_t> failed{0};             // failed after being accepted
    std::atomic<int64_t> prompt_tokens{0};
    std::atomic<int64_t> generated_tokens{0};   // every token decoded, also for cancelled answers
    std::atomic<int64_t> running{0};
    std::atomic<int64_t> batches{0};            // batches run (requests waiting together share one)
  };
  const counters& stats() const { return *stats_; }

 private:
  http_response models_route(const http_request& r, const std::vector<std::string>& path);

  llm_model_list* models_;
  openai_options options_;
  std::shared_ptr<counters> stats_ = std::make_shared<counters>();
};

}  // namespace gpugrid::serve
