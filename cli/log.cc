#include "cli/log.h"

#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

namespace gpugrid::cli::log {

namespace {

// Writes formatted lines to a FILE* and flushes each (a log read live under `tail -f`).
class file_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit file_sink(std::FILE* f) : f_(f) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    std::fwrite(line.data(), 1, line.size(), f_);
    std::fflush(f_);
  }
  void flush_() override { std::fflush(f_); }

 private:
  std::FILE* f_;
};

// %* : "warning: " / "debug: " / "error: " before the text; nothing for notes.
class level_word final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    std::string_view word;
    switch (msg.level) {
      case spdlog::level::warn: word = "warning: "; break;
      case spdlog::level::debug:
      case spdlog::level::trace: word = "debug: "; break;
      case spdlog::level::err:
      case spdlog::level::critical: word = "error: "; break;
      default: break;
    }
    dest.append(word.data(), word.data() + word.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<level_word>(); }
};

std::shared_ptr<spdlog::logger> make_logger(const char* name, std::FILE* f, const std::string& pattern) {
  auto sink = std::make_shared<file_sink>(f);
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<level_word>('*').set_pattern(pattern);
  sink->set_formatter(std::move(formatter));
  return std::make_shared<spdlog::logger>(name, std::move(sink));
}

struct loggers {
  std::mutex mu;
  verbosity v = verbosity::normal;
  std::shared_ptr<spdlog::logger> notes;
  std::shared_ptr<spdlog::logger> events;
};

loggers& state() {
  static loggers* s = [] {
    auto* l = new loggers;  // never destroyed: detached threads may log during exit
    l->notes = make_logger("notes", stderr, "gpugrid: %*%v");
    l->events = make_logger("events", stderr, "%Y-%m-%dT%H:%M:%S.%eZ gpugrid: %*%v");
    return l;
  }();
  return *s;
}

std::shared_ptr<spdlog::logger> notes() {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.notes;
}

std::shared_ptr<spdlog::logger> events() {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.events;
}

}  // namespace

void configure(std::FILE* err, verbosity v) {
  auto& s = state();
  auto level = v == verbosity::quiet ? spdlog::level::warn
               : v == verbosity::verbose ? spdlog::level::debug
                                         : spdlog::level::info;
  auto n = make_logger("notes", err, "gpugrid: %*%v");
  auto e = make_logger("events", err, "%Y-%m-%dT%H:%M:%S.%eZ gpugrid: %*%v");
  n->set_level(level);
  e->set_level(level);
  std::lock_guard<std::mutex> lock(s.mu);
  s.v = v;
  s.notes = std::move(n);
  s.events = std::move(e);
}

verbosity current() {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.v;
}

void note_line(const std::string& text) { notes()->info(text); }
void warning_line(const std::string& text) { notes()->warn(text); }
void debug_line(const std::string& text) { notes()->debug(text); }
void event_line(const std::string& text) { events()->info(text); }

std::string utc_timestamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(ms % 1000));
}

}  // namespace gpugrid::cli::log
