// gpugrid generate: one completion for pipelines. The prompt comes from --prompt, or stdin
// ("-", or no --prompt with stdin not a terminal); the text goes to stdout as it arrives, or
// with --json as one document at the end.
#include <unistd.h>

#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "base/json.h"
#include "cli/commands.h"
#include "cli/llm_common.h"
#include "cli/log.h"
#include "llm/local_backend.h"

namespace gpugrid::cli {

namespace {

int fail(std::FILE* err, const status& s) {
  fmt::print(err, "gpugrid: {}\n", s.message());
  return exit_code_for(s.kind());
}

std::string read_all(std::FILE* in) {
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) {
    s.append(buf, n);
    if (s.size() > (64u << 20)) break;
  }
  return s;
}

json stats_json(const llm::completion_stats& s, bool local) {
  json j;
  j["text"] = s.text;
  j["token_ids"] = s.token_ids;
  j["prompt_tokens"] = s.prompt_tokens;
  j["cached_prompt_tokens"] = s.cached_prompt_tokens;
  j["generated_tokens"] = s.generated_tokens;
  j["finish_reason"] = llm::finish_reason_name(s.reason);
  j["time_to_first_token_ms"] = s.time_to_first_token_ms;
  j["total_ms"] = s.total_ms;
  j["decode_tokens_per_s"] = s.decode_tokens_per_s;
  j["providers"] = s.providers;
  j["cost"] = s.cost;
  if (!s.payments.empty()) {
    json pays = json::array();
    for (const auto& p : s.payments) {
      json e{{"node", p.node}, {"role", p.role}, {"settlement", p.settlement}, {"cost", p.cost}, {"paid", p.paid}};
      if (p.settlement == "chain") e["paid_wei"] = p.paid_wei;
      pays.push_back(std::move(e));
    }
    j["payments"] = std::move(pays);
  }
  j["backend"] = local ? "local" : "grid";
  return j;
}

}  // namespace

int generate_command(const generate_options& o, std::FILE* in, std::FILE* out, std::FILE* err) {
  std::vector<std::string> prompts = o.prompts;
  const bool from_stdin = (prompts.size() == 1 && prompts[0] == "-") || (prompts.empty() && !isatty(fileno(in)));
  if (from_stdin) {
    std::string text = read_all(in);
    if (text.size() > (64u << 20)) return fail(err, invalid_input("the prompt on stdin is over 64 MiB"));
    prompts = {text};
  } else if (prompts.empty()) {
    return fail(err, status(error_kind::usage, "generate needs --prompt TEXT, or the prompt on stdin (--prompt -)"));
  }
  for (const std::string& p : prompts)
    if (prompts.size() > 1 && p == "-") return fail(err, status(error_kind::usage, "--prompt - (stdin) cannot be batched"));
  auto p = llm_prompter::load(o.model);
  if (!p) return fail(err, p.error());
  std::vector<llm::completion_request> requests;
  for (const std::string& text : prompts) {
    std::vector<llm::chat_message> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", text});
    auto ids = p->prompt_ids(messages, o.no_template);
    if (!ids) return fail(err, ids.error());
    llm::completion_request req = make_request(o, p->config);
    req.prompt_ids = std::move(*ids);
    requests.push_back(std::move(req));
  }
  std::string note;
  auto backend = make_completion_backend(o, &note);
  if (!backend) return fail(err, backend.error());
  if (!note.empty()) log::debug("{}", note);
  // The backend is local only with --local; without peers it is the embedded grid.
  auto* lb = dynamic_cast<llm::local_backend*>(backend->get());
  const bool local = lb != nullptr;
  if (requests.size() > 1) {
    if (!lb) return fail(err, status(error_kind::usage, "several --prompt flags (a batch) need --local"));
    auto all = lb->model()->complete_batch(requests, {}, {});
    if (!all) return fail(err, all.error());
    if (o.json) {
      json answers = json::array();
      for (auto& s : *all) answers.push_back(stats_json(s, true));
      fmt::print(out, "{}\n", dump_json(json{{"answers", answers}}));
    } else {
      for (size_t i = 0; i < all->size(); ++i) fmt::print(out, "{}{}\n", i ? "\n" : "", (*all)[i].text);
    }
    return 0;
  }
  llm::token_sink sink = [&](const llm::generated_token& t) {
    if (!o.json && !t.text.empty()) {
      std::fwrite(t.text.data(), 1, t.text.size(), out);
      std::fflush(out);
    }
    return true;
  };
  auto stats = (*backend)->complete(requests[0], sink, {});
  if (!stats) return fail(err, stats.error());
  const llm::completion_stats& s = *stats;
  if (o.json) {
    fmt::print(out, "{}\n", dump_json(stats_json(s, local)));
  } else {
    if (!s.text.empty() && s.text.back() != '\n') std::fputc('\n', out);
    log::debug("{}", stats_line(s));
  }
  return 0;
}

}  // namespace gpugrid::cli
