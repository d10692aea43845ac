// The gpugrid command line as one table (after ninja's tool table): each entry names a
// command, says in one line what it does, adds its flags to a CLI11 subcommand bound to the
// option structs of cli/commands.h, and runs it. Help, the "did you mean" suggestions and the
// shell completions (cli/completion.h) are all generated from this table, so they cannot
// disagree with what the parser accepts.
//
// This is the only header that includes CLI11. dispatch() is the whole program behind main():
// it never throws, prints every error as one line on `err`, and returns the exit code of
// DESIGN.md (2 for bad usage; a handler's own code otherwise; 1 for an escaped exception).
// Not thread-safe: call it from one thread (the main thread).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/settings.h"
#include "cli/commands.h"
#include "cli/completion.h"

namespace gpugrid::cli {

// Where parsed flags land: one options struct per command (cli/commands.h).
struct parsed_options {
  run_options run;
  inspect_options inspect;
  bench_options bench;
  selftest_options selftest;
  offer_options offer;
  peers_options peers;
  ledger_options ledger;
  identity_options identity;
  serve_options serve;
  config_options config;
  version_options version;
  generate_options generate;  // generate and chat
  std::string shell;   // completion SHELL
  std::string topic;   // help COMMAND
  bool man = false;    // help --man: the manual page (roff)
  bool quiet = false;  // -q on any command: no notes, only warnings and errors
  bool verbose = false;  // -v on any command: debug lines too
};

// One parsed command line, as a handler sees it. Everything is borrowed from dispatch().
struct invocation {
  parsed_options& options;
  const CLI::App& root;
  const CLI::App& command;     // the subcommand that was chosen
  const settings* config;      // loaded settings; non-null exactly for commands that read them
  std::FILE* out;
  std::FILE* err;

  // True when the flag (e.g. "--device") was given on the command line.
  bool given(const std::string& flag) const;
};

struct command {
  const char* name;
  const char* summary;          // one line, shown by --help and in completions
  bool reads_settings;          // config.toml and GPUGRID_PEERS; a malformed file exits 2
  void (*add_flags)(CLI::App& sub, parsed_options& o);
  int (*run)(const invocation& inv);
};

// Every command, in the order --help lists them.
const std::vector<command>& command_table();
const command* find_command(std::string_view name);

// The parser for the whole table. Flags are bound into *o, which must outlive the app.
// Every command also takes -q/--quiet and -v/--verbose (cli/log.h). Help is wrapped to
// `width` columns (0: the terminal's width, else $COLUMNS, else 80).
std::unique_ptr<CLI::App> make_app(parsed_options* o, int width = 0);

// The completion description of an app made by make_app. What a value completes to comes
// from the positional's name (MODEL, INPUT, COMMAND) or the option's type name (DIR, FILE,
// FILE|-, or choices written "a|b|c[:N]"); anything else is free text.
cli_spec describe_cli(const CLI::App& app);

// Optimal string alignment distance (an adjacent transposition costs 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate `typed` most likely meant to be (a unique prefix, or a small edit distance),
// or "" when none is close.
std::string closest_match(std::string_view typed, const std::vector<std::string>& candidates);

// Runs fn and returns its exit code; an exception escaping it is printed as one line on err
// and becomes exit code 1.
int guarded(const std::function<int()>& fn, std::FILE* err);

// The program: parses argv[1..argc), runs the command, returns the exit code. Help and
// --version go to `out` (exit 0); usage errors are one line on `err` (exit 2).
int dispatch(int argc, const char* const* argv, std::FILE* out = stdout, std::FILE* err = stderr);

}  // namespace gpugrid::cli
