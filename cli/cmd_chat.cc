// gpugrid chat: an interactive conversation with a model. Each answer streams to stdout; the
// history is kept and re-rendered through the chat template for every turn.
//
// Input: one line per message; a line ending with \ continues on the next line, and a line of
// """ opens a block that the next """ line closes. Commands: /reset, /system TEXT, /stats,
// /exit. Ctrl-C (SIGINT) stops the answer being generated, not the program; EOF exits 0.
// Works with stdin not a terminal (no prompt is printed then).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/llm_common.h"
#include "cli/log.h"

namespace gpugrid::cli {

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

// Installs the SIGINT handler for the chat's lifetime and restores the old one after.
class sigint_guard {
 public:
  sigint_guard() {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_);
  }
  ~sigint_guard() { sigaction(SIGINT, &old_, nullptr); }

 private:
  struct sigaction old_ {};
};

bool read_line(std::FILE* in, std::string* line) {
  line->clear();
  int c;
  bool any = false;
  while ((c = std::fgetc(in)) != EOF) {
    any = true;
    if (c == '\n') return true;
    line->push_back(static_cast<char>(c));
    if (line->size() > (16u << 20)) return true;
  }
  return any;
}

// One message from the user: false at EOF (with nothing read).
bool read_message(std::FILE* in, std::FILE* err, bool tty, std::string* msg) {
  msg->clear();
  std::string line;
  if (tty) fmt::print(err, "> "), std::fflush(err);
  if (!read_line(in, &line)) return false;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line == "\"\"\"") {
    bool first = true;
    while (true) {
      if (tty) fmt::print(err, ". "), std::fflush(err);
      if (!read_line(in, &line)) break;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line == "\"\"\"") break;
      if (!first) *msg += '\n';
      *msg += line;
      first = false;
    }
    return true;
  }
  while (!line.empty() && line.back() == '\\') {
    line.pop_back();
    *msg += line + '\n';
    if (tty) fmt::print(err, ". "), std::fflush(err);
    if (!read_line(in, &line)) return true;
    if (!line.empty() && line.back() == '\r') line.pop_back();
  }
  *msg += line;
  return true;
}

}  // namespace

int chat_command(const generate_options& o, std::FILE* in, std::FILE* out, std::FILE* err) {
  auto p = llm_prompter::load(o.model);
  if (!p) {
    fmt::print(err, "gpugrid: {}\n", p.error().message());
    return exit_code_for(p.error().kind());
  }
  std::string note;
  auto backend = make_completion_backend(o, &note);
  if (!backend) {
    fmt::print(err, "gpugrid: {}\n", backend.error().message());
    return exit_code_for(backend.error().kind());
  }
  if (!note.empty()) log::debug("{}", note);
  const bool tty = isatty(fileno(in));
  if (tty)
    fmt::print(err, "chatting with {} (/reset, /system TEXT, /stats, /exit; Ctrl-C stops an answer)\n", o.model);
  sigint_guard guard;
  std::string system = o.system;
  bool show_stats = o.stats;
  std::vector<llm::chat_message> history;
  std::string msg;
  while (read_message(in, err, tty, &msg)) {
    if (msg.empty()) continue;
    if (msg[0] == '/') {
      const std::string cmd = msg.substr(0, msg.find(' '));
      const std::string arg = msg.find(' ') == std::string::npos ? "" : msg.substr(msg.find(' ') + 1);
      if (cmd == "/exit" || cmd == "/quit") break;
      if (cmd == "/reset") {
        history.clear();
        fmt::print(err, "(conversation cleared)\n");
      } else if (cmd == "/system") {
        system = arg;
        history.clear();
        fmt::print(err, "(system prompt set; conversation cleared)\n");
      } else if (cmd == "/stats") {
        show_stats = !show_stats;
        fmt::print(err, "(tokens/s display {})\n", show_stats ? "on" : "off");
      } else {
        fmt::print(err, "gpugrid: unknown chat command '{}' (try /reset, /system TEXT, /stats, /exit)\n", cmd);
      }
      continue;
    }
    std::vector<llm::chat_message> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.insert(messages.end(), history.begin(), history.end());
    messages.push_back({"user", msg});
    auto ids = p->prompt_ids(messages, o.no_template);
    if (!ids) {
      fmt::print(err, "gpugrid: {}\n", ids.error().message());
      continue;
    }
    llm::completion_request req = make_request(o, p->config);
    req.prompt_ids = std::move(*ids);
    g_interrupted.store(false);
    llm::token_sink sink = [&](const llm::generated_token& t) {
      if (!t.text.empty()) {
        std::fwrite(t.text.data(), 1, t.text.size(), out);
        std::fflush(out);
      }
      return true;
    };
    llm::cancel_check stop = [] { return g_interrupted.load(); };
    auto stats = (*backend)->complete(req, sink, stop);
    if (!stats) {
      fmt::print(err, "gpugrid: {}\n", stats.error().message());
      if (stats.error().kind() != error_kind::invalid_input) return exit_code_for(stats.error().kind());
      continue;
    }
    fmt::print(out, "\n");
    std::fflush(out);
    if (stats->reason == llm::finish_reason::cancelled) fmt::print(err, "(stopped)\n");
    if (show_stats) fmt::print(err, "{}\n", stats_line(*stats));
    history.push_back({"user", msg});
    history.push_back({"assistant", stats->text});
  }
  return 0;
}

}  // namespace gpugrid::cli
