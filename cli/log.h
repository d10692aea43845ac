// The program's log lines on stderr: notes ("no peers configured; ..."), warnings, debug
// detail (-v) and a provider's event lines (timestamped), written through spdlog.
//
//   note     "gpugrid: TEXT"                           silenced by -q
//   warning  "gpugrid: warning: TEXT"                  always
//   debug    "gpugrid: debug: TEXT"                    only with -v
//   event    "2026-12-02T14:20:45.123Z gpugrid: TEXT"  a provider's events; silenced by -q
//
// Lines go to the stream given to configure() (stderr by default) whatever it is: a terminal,
// a pipe, a file under nohup or systemd. Errors are not logged here: a command prints its one
// error line itself and returns the exit code.
//
// configure() is called by dispatch() before a command runs, from the main thread; the
// logging functions may be called from any thread afterwards (spdlog's sinks lock).
#pragma once

#include <cstdio>
#include <string>

#include <fmt/format.h>

namespace gpugrid::cli::log {

enum class verbosity { quiet, normal, verbose };

// Points every log line at `err` with the given verbosity. `err` must outlive the next
// configure() call.
void configure(std::FILE* err, verbosity v);
verbosity current();

void note_line(const std::string& text);
void warning_line(const std::string& text);
void debug_line(const std::string& text);
void event_line(const std::string& text);

template <typename... Args>
void note(fmt::format_string<Args...> f, Args&&... args) {
  note_line(fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warning(fmt::format_string<Args...> f, Args&&... args) {
  warning_line(fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  debug_line(fmt::format(f, std::forward<Args>(args)...));
}

// "2026-12-02T14:20:45.123Z": the UTC time now, as event lines and JSON events carry it.
std::string utc_timestamp();

}  // namespace gpugrid::cli::log
