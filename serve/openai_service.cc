#include "serve/openai_service.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "llm/local_backend.h"
#include "serve/http_common.h"
#include "serve/openai_codec.h"

namespace gpugrid::serve {

namespace fs = std::filesystem;

namespace {

http_response api_error_response(const api_error& e) {
  http_response r;
  r.status = e.status;
  r.body = api_error_json(e);
  if (e.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n[0] == '.') return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

// Sizes and modification times of the files that make a model folder.
std::string folder_signature(const fs::path& dir) {
  std::string sig;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (ec) break;
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    struct stat st {};
    if (::stat((dir / n).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    sig += fmt::format("{}:{}:{}.{};", n, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }
  return sig;
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

}  // namespace

// ---- models ----

status llm_model::load(const completion_opener& open) {
  std::lock_guard<std::mutex> l(load_mu_);
  if (loaded_) return status::ok();
  GG_ASSIGN_OR_RETURN(config, llm::load_model_config(dir));
  GG_ASSIGN_OR_RETURN(tok, llm::tokenizer::load(config.tokenizer_path));
  tmpl.reset();
  if (!config.chat_template.empty()) {
    GG_ASSIGN_OR_RETURN(llm::chat_template t,
                        llm::chat_template::parse(config.chat_template, config.dir + "/tokenizer_config.json chat_template"));
    tmpl = std::move(t);
  }
  if (!open) return status(error_kind::internal, "no completion back end is configured");
  GG_ASSIGN_OR_RETURN(backend, open(dir));
  context = config.context_length;
  if (auto* local = dynamic_cast<llm::local_backend*>(backend.get())) context = local->model()->max_length();
  loaded_ = true;
  return status::ok();
}

void llm_model::run_job(job* j, size_t max_runs, const job_runner& run) {
  std::unique_lock<std::mutex> l(queue_mu_);
  queue_.push_back(j);
  for (;;) {
    if (j->done) return;
    if (!busy_) {
      std::vector<job*> take;
      size_t runs = 0;
      for (auto it = queue_.begin(); it != queue_.end();) {
        job* q = *it;
        if (q->gone && q->gone()) {
          q->done = q->dropped = true;
          it = queue_.erase(it);
          continue;
        }
        if (!take.empty() && runs + q->runs.size() > max_runs) break;
        take.push_back(q);
        runs += q->runs.size();
        it = queue_.erase(it);
      }
      if (!take.empty()) {
        busy_ = true;
        l.unlock();
        run(take);
        l.lock();
        for (job* q : take) q->done = true;
        busy_ = false;
      }
      queue_cv_.notify_all();
      continue;
    }
    // Still waiting (not taken into a running batch, whose thread now owns its sink)?
    auto it = std::find(queue_.begin(), queue_.end(), j);
    if (it != queue_.end() && j->gone && j->gone()) {
      queue_.erase(it);
      j->done = j->dropped = true;
      return;
    }
    queue_cv_.wait_for(l, std::chrono::milliseconds(50));
  }
}

namespace {

// Runs jobs taken together: on the local engine all their runs as one batch; on other back
// ends one run after another.
void run_jobs(llm::completion_backend* backend, std::vector<llm_model::job*>& jobs, size_t max_runs,
              openai_service::counters* counters) {
  counters->running += static_cast<int64_t>(jobs.size());
  ++counters->batches;
  auto* local = dynamic_cast<llm::local_backend*>(backend);
  std::vector<llm::completion_request> all;
  std::vector<std::pair<size_t, size_t>> owner;   // (job, run within it)
  for (size_t k = 0; k < jobs.size(); ++k) {
    jobs[k]->stats.assign(jobs[k]->runs.size(), llm::completion_stats());
    for (size_t i = 0; i < jobs[k]->runs.size(); ++i) {
      all.push_back(jobs[k]->runs[i]);
      owner.emplace_back(k, i);
    }
  }
  if (local && all.size() > 1) {
    // In engine batches of at most max_runs (a job asking for more runs them in turn).
    for (size_t start = 0; start < all.size(); start += max_runs) {
      size_t end = std::min(all.size(), start + max_runs);
      std::vector<llm::completion_request> part(all.begin() + static_cast<std::ptrdiff_t>(start),
                                                all.begin() + static_cast<std::ptrdiff_t>(end));
      auto live = [&](size_t i) {
        const auto* j = jobs[owner[i].first];
        return j->error.is_ok() && !j->gone();
      };
      bool any = false;
      for (size_t i = start; i < end; ++i) any = any || live(i);
      if (!any) continue;
      auto r = local->model()->complete_batch(
          part,
          [&](size_t i, const llm::generated_token& t) {
            return live(start + i) && jobs[owner[start + i].first]->sink(owner[start + i].second, t);
          },
          [&] {
            for (size_t i = start; i < end; ++i)
              if (live(i)) return false;
            return true;
          });
      if (!r) {
        for (size_t i = start; i < end; ++i) jobs[owner[i].first]->error = r.error();
      } else {
        for (size_t i = 0; i < r->size(); ++i) jobs[owner[start + i].first]->stats[owner[start + i].second] = std::move((*r)[i]);
      }
    }
  } else {
    for (auto* j : jobs) {
      for (size_t i = 0; i < j->runs.size() && j->error.is_ok() && !j->gone(); ++i) {
        auto r = backend->complete(j->runs[i], [&, i](const llm::generated_token& t) { return j->sink(i, t); }, j->gone);
        if (!r) j->error = r.error();
        else j->stats[i] = std::move(r).value();
      }
    }
  }
  counters->running -= static_cast<int64_t>(jobs.size());
}

}  // namespace

llm_model_list::llm_model_list(std::string dir, std::chrono::milliseconds interval)
    : dir_(std::move(dir)), interval_(interval) {}

status llm_model_list::refresh(bool force) {
  std::lock_guard<std::mutex> scan(scan_mu_);
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!force && scanned_ && now - last_scan_ < interval_) return status::ok();
  }
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) return io_error("cannot read the model folder '{}': {}", dir_, ec.message());
  std::map<std::string, std::shared_ptr<llm_model>> found;
  for (const auto& e : it) {
    std::error_code ec2;
    if (!e.is_directory(ec2)) continue;
    std::string name = e.path().filename().string();
    if (!valid_name(name)) continue;
    fs::path d = e.path();
    if (!fs::exists(d / "tokenizer.json", ec2) ||
        !(fs::exists(d / "genai_config.json", ec2) || fs::exists(d / "config.json", ec2)))
      continue;
    std::string sig = folder_signature(d);
    {
      std::lock_guard<std::mutex> l(mu_);
      auto old = models_.find(name);
      if (old != models_.end() && old->second->signature == sig) {
        found[name] = old->second;
        continue;
      }
    }
    // A folder llm/ cannot read (e.g. config.json of something else) is not a generation model.
    if (!llm::load_model_config(d.string()).has_value()) continue;
    auto m = std::make_shared<llm_model>();
    m->name = name;
    m->dir = d.string();
    m->signature = sig;
    struct stat st {};
    m->created = ::stat(d.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtim.tv_sec) : now_seconds();
    found[name] = std::move(m);
  }
  std::lock_guard<std::mutex> l(mu_);
  models_ = std::move(found);
  scanned_ = true;
  last_scan_ = now;
  return status::ok();
}

std::shared_ptr<llm_model> llm_model_list::find(const std::string& name) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<llm_model>> llm_model_list::list() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<llm_model>> out;
  for (const auto& [k, v] : models_) out.push_back(v);
  return out;
}

// ---- the service ----

openai_service::openai_service(llm_model_list* models, openai_options options)
    : models_(models), options_(std::move(options)) {}

http_response openai_service::error(int status, const std::string& message) const {
  return api_error_response(make_api_error(status, message));
}

std::string openai_service::metrics_text() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, int64_t v, const char* type = "counter") {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {3}\n{0} {2}\n", name, help, v, type);
  };
  const counters& c = *stats_;
  counter("gpugrid_serve_completions_total", "/v1 answers generated and sent", c.completions.load());
  counter("gpugrid_serve_completions_cancelled_total", "/v1 answers stopped because the client went away", c.cancelled.load());
  counter("gpugrid_serve_completions_failed_total", "/v1 answers that failed after they were accepted", c.failed.load());
  counter("gpugrid_serve_prompt_tokens_total", "prompt tokens of /v1 requests", c.prompt_tokens.load());
  counter("gpugrid_serve_generated_tokens_total", "tokens generated for /v1 requests (cancelled ones included)",
          c.generated_tokens.load());
  counter("gpugrid_serve_completions_running", "/v1 answers being generated now", c.running.load(), "gauge");
  counter("gpugrid_serve_completion_batches_total", "/v1 batches run (requests that wait together share one)",
          c.batches.load());
  return out;
}

http_response openai_service::models_route(const http_request& r, const std::vector<std::string>& p) {
  if (r.method != "GET" && r.method != "HEAD")
    return api_error_response(make_api_error(405, "method " + r.method + " is not allowed here"));
  status st = models_->refresh();
  if (!st.is_ok()) return api_error_response(make_api_error(503, st.message()));
  http_response resp;
  if (p.size() == 2) {
    std::vector<std::pair<std::string, int64_t>> list;
    for (const auto& m : models_->list()) list.emplace_back(m->name, m->created);
    resp.body = api_model_list_json(list);
    return resp;
  }
  // Model ids may hold '/' (OpenAI's "org/model" style); ours are folder names without one.
  std::string id;
  for (size_t i = 2; i < p.size(); ++i) id += (i > 2 ? "/" : "") + p[i];
  auto m = models_->find(id);
  if (!m)
    return api_error_response(make_api_error(404, fmt::format("The model '{}' does not exist", id.substr(0, 200)), "model",
                                             "model_not_found"));
  resp.body = api_model_json(m->name, m->created);
  return resp;
}

namespace {

struct run_context {
  std::shared_ptr<openai_service::counters> stats;
  api_request req;
  std::shared_ptr<llm_model> model;
  size_t max_batch = 32;
  std::string id;
  int64_t created = 0;
};

// The prompt ids of a chat request: the messages through the chat template (with the
// generation prompt), or, for a folder without one, their contents joined by blank lines.
expected<std::vector<int32_t>> chat_prompt_ids(const llm_model& m, const std::vector<llm::chat_message>& messages) {
  if (!m.tmpl) {
    std::string text;
    for (size_t i = 0; i < messages.size(); ++i) text += (i ? "\n\n" : "") + messages[i].content;
    return m.tok.encode(text, true);
  }
  GG_ASSIGN_OR_RETURN(std::string text, m.tmpl->apply(messages, true, m.config.bos_token, m.config.eos_token));
  GG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, m.tok.encode(text, false));
  if (m.config.add_bos_token && m.config.bos_token_id >= 0 &&
      (m.config.bos_token.empty() || text.compare(0, m.config.bos_token.size(), m.config.bos_token) != 0))
    ids.insert(ids.begin(), m.config.bos_token_id);
  return ids;
}

http_response run_generation(run_context& c, response_stream& stream) {
  const api_request& req = c.req;
  llm_model& m = *c.model;
  api_kind kind = req.kind;
  const char* prompt_param = kind == api_kind::chat ? "messages" : "prompt";

  // Prompts -> ids, checked against the context.
  std::vector<std::vector<int32_t>> prompts;
  if (kind == api_kind::chat) {
    auto ids = chat_prompt_ids(m, req.messages);
    if (!ids) return api_error_response(make_api_error(400, ids.error().message(), "messages"));
    prompts.push_back(std::move(ids).value());
  } else {
    for (const auto& p : req.prompts) {
      auto ids = m.tok.encode(p, true);
      if (!ids) return api_error_response(make_api_error(400, ids.error().message(), "prompt"));
      prompts.push_back(std::move(ids).value());
    }
  }
  int64_t prompt_tokens = 0;
  for (const auto& p : prompts) {
    prompt_tokens += static_cast<int64_t>(p.size());
    int64_t n = static_cast<int64_t>(p.size());
    if (m.context > 0 && n >= m.context)
      return api_error_response(make_api_error(
          400, fmt::format("the prompt has {} tokens; the model's context is {} tokens (prompt and answer together)", n, m.context),
          prompt_param, "context_length_exceeded"));
    if (m.context > 0 && req.max_tokens > 0 && n + req.max_tokens > m.context)
      return api_error_response(make_api_error(
          400,
          fmt::format("the model's context is {} tokens, but {} were asked for ({} in the prompt, {} in the answer); "
                      "lower max_tokens",
                      m.context, n + req.max_tokens, n, req.max_tokens),
          "max_tokens", "context_length_exceeded"));
  }

  // Completion requests: one per prompt and choice, index = prompt * n + choice.
  const llm::generation_defaults& d = m.config.generation;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t seed = req.seed ? static_cast<uint64_t>(*req.seed) : rng();
  std::vector<llm::completion_request> runs;
  for (const auto& p : prompts) {
    for (int j = 0; j < req.n; ++j) {
      llm::completion_request r;
      r.prompt_ids = p;
      // Sampling as the client asked (OpenAI's defaults: temperature 1, top_p 1, no top-k, no
      // penalty); a request that sets neither gets the model's generation_config sampling.
      auto& s = r.sampling;
      if (req.temperature || req.top_p) {
        s.temperature = req.temperature.value_or(1.0);
        s.top_p = req.top_p.value_or(1.0);
      } else {
        s.temperature = d.do_sample ? d.temperature : 0.0;
        s.top_p = d.do_sample ? d.top_p : 1.0;
        s.top_k = d.do_sample ? d.top_k : 0;
        s.repetition_penalty = d.repetition_penalty;
      }
      s.seed = seed + static_cast<uint64_t>(j);
      int64_t room = m.context > 0 ? m.context - static_cast<int64_t>(p.size()) : int64_t{1} << 30;
      int64_t want = req.max_tokens > 0 ? req.max_tokens : (kind == api_kind::chat ? room : 16);
      r.stop.max_new_tokens = std::max<int64_t>(1, std::min(want, room));
      r.stop.stop_strings = req.stop;
      r.stop.ignore_eos = req.ignore_eos;
      runs.push_back(std::move(r));
    }
  }

  auto* local = dynamic_cast<llm::local_backend*>(m.backend.get());
  api_billing billing;
  bool stream_mode = req.stream;
  std::vector<std::string> texts(runs.size());
  std::vector<llm::completion_stats> stats(runs.size());

  // Streaming: the head goes out with the first token (so a request that fails before it is
  // answered with its status), then role chunks for every choice (chat), then text.
  auto chunk = [&](const api_chunk& ch, const api_billing* b) {
    return stream.write(api_sse(api_chunk_json(kind, c.id, c.created, req.model, ch, req.include_usage, b)));
  };
  bool started = false;
  auto start_stream = [&]() -> bool {
    if (started) return !stream.gone();
    started = true;
    http_response head;
    head.content_type = "text/event-stream";
    if (local) {
      head.headers.emplace_back("X-Gpugrid-Cost", "0");
      head.headers.emplace_back("X-Gpugrid-Providers", "local");
    }
    if (!stream.begin(head)) return false;
    for (size_t i = 0; i < runs.size(); ++i) {
      api_chunk ch;
      ch.index = static_cast<int>(i);
      if (kind == api_kind::chat) ch.role = "assistant";
      else if (req.echo) ch.text = req.prompts[i / req.n];
      else continue;
      if (!chunk(ch, nullptr)) return false;
    }
    return true;
  };
  auto on_token = [&](size_t i, const llm::generated_token& t) -> bool {
    ++c.stats->generated_tokens;
    if (!stream_mode) return !stream.gone();
    if (!start_stream()) return false;
    if (t.text.empty()) return !stream.gone();
    api_chunk ch;
    ch.index = static_cast<int>(i);
    ch.text = t.text;
    return chunk(ch, nullptr);
  };
  llm_model::job job;
  job.runs = runs;
  job.sink = on_token;
  job.gone = [&stream] { return stream.gone(); };
  c.stats->prompt_tokens += prompt_tokens;
  // Sequences per engine batch: at most max_batch, and at most 64k tokens of context among them
  // (a KV cache may be allocated for the whole context of each sequence).
  size_t max_runs = 1;
  if (local) {
    max_runs = c.max_batch;
    if (m.context > 0) max_runs = std::min<size_t>(max_runs, static_cast<size_t>(std::max<int64_t>(1, (int64_t{1} << 16) / m.context)));
  }
  auto run = [backend = m.backend.get(), counters = c.stats.get(), max_runs](std::vector<llm_model::job*>& jobs) {
    run_jobs(backend, jobs, max_runs, counters);
  };
  if (m.backend->concurrent()) {  // the grid: every request is sessions of its own, on its own thread
    std::vector<llm_model::job*> alone{&job};
    if (job.gone()) job.dropped = true;  // its client left before it started: nothing runs
    else run(alone);
    job.done = true;
  } else {
    m.run_job(&job, max_runs, run);
  }
  if (job.dropped) {
    ++c.stats->cancelled;
    return api_error_response(make_api_error(499, "the client closed the connection"));
  }
  status failed = job.error;
  if (failed.is_ok()) stats = std::move(job.stats);
  for (const auto& s : stats) {
    billing.cost += s.cost;
    for (const auto& p : s.providers)
      if (std::find(billing.providers.begin(), billing.providers.end(), p) == billing.providers.end())
        billing.providers.push_back(p);
  }
  if (billing.providers.empty() && local) billing.providers.push_back("local");

  if (stream.gone()) {
    ++c.stats->cancelled;
    return api_error_response(make_api_error(499, "the client closed the connection"));
  }
  if (!failed.is_ok()) {
    ++c.stats->failed;
    api_error e = make_api_error(http_status_for(failed.kind()), failed.message(),
                                 failed.kind() == error_kind::invalid_input ? prompt_param : "");
    if (!started) return api_error_response(e);
    // Mid-stream: OpenAI's clients raise an error event as an APIError.
    (void)stream.write(api_sse(api_error_json(e)));
    return {};
  }
  ++c.stats->completions;
  api_usage usage;
  usage.prompt_tokens = prompt_tokens;
  for (const auto& s : stats) usage.completion_tokens += s.generated_tokens;

  if (stream_mode) {
    if (!start_stream()) return {};
    for (size_t i = 0; i < runs.size(); ++i) {
      api_chunk ch;
      ch.index = static_cast<int>(i);
      ch.finish_reason = api_finish_reason(stats[i].reason);
      if (kind == api_kind::completion) ch.text = "";
      bool last = i + 1 == runs.size() && !req.include_usage;
      if (!chunk(ch, last ? &billing : nullptr)) return {};
    }
    if (req.include_usage &&
        !stream.write(api_sse(api_usage_chunk_json(kind, c.id, c.created, req.model, usage, &billing))))
      return {};
    (void)stream.write(api_sse_done);
    return {};
  }

  std::vector<api_choice> choices(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    choices[i].text = (kind == api_kind::completion && req.echo ? req.prompts[i / req.n] : "") + stats[i].text;
    choices[i].finish_reason = api_finish_reason(stats[i].reason);
  }
  http_response resp;
  resp.body = api_response_json(kind, c.id, c.created, req.model, choices, usage, &billing);
  resp.headers.emplace_back("X-Gpugrid-Cost", fmt::format("{}", billing.cost));
  resp.headers.emplace_back("X-Gpugrid-Providers", join(billing.providers));
  return resp;
}

}  // namespace

http_response openai_service::handle(const http_request& r, const std::vector<std::string>& p) {
  if (p.size() >= 2 && p[1] == "models") return models_route(r, p);
  api_kind kind;
  if (p.size() == 3 && p[1] == "chat" && p[2] == "completions") kind = api_kind::chat;
  else if (p.size() == 2 && p[1] == "completions") kind = api_kind::completion;
  else return api_error_response(make_api_error(404, "no such route: /" + join(p).substr(0, 200)));
  if (r.method != "POST") return api_error_response(make_api_error(405, "method " + r.method + " is not allowed here"));

  auto c = std::make_shared<run_context>();
  api_error e;
  if (!parse_api_request(r.body, kind, &c->req, &e)) return api_error_response(e);
  status st = models_->refresh();
  if (!st.is_ok()) return api_error_response(make_api_error(503, st.message()));
  c->model = models_->find(c->req.model);
  if (!c->model)
    return api_error_response(make_api_error(
        404, fmt::format("The model '{}' does not exist", c->req.model.substr(0, 200)), "model", "model_not_found"));
  c->max_batch = std::max<size_t>(1, options_.max_batch);
  c->stats = stats_;
  c->id = random_id(kind == api_kind::chat ? "chatcmpl-" : "cmpl-");
  c->created = now_seconds();
  http_response deferred;
  deferred.deferred = [c, open = options_.open](response_stream& stream) -> http_response {
    status loaded = c->model->load(open);
    if (!loaded.is_ok())
      return api_error_response(make_api_error(http_status_for(loaded.kind()) == 400 ? 503 : http_status_for(loaded.kind()),
                                               fmt::format("model '{}' cannot be loaded: {}", c->model->name, loaded.message())));
    return run_generation(*c, stream);
  };
  return deferred;
}

}  // namespace gpugrid::serve
