// Shell completion scripts (bash, zsh, fish) generated from a plain description of the
// command line. The description is built from the command table (cli/command_table.h,
// describe_cli), so a flag added to a command shows up in help, suggestions and completions
// at once. The committed scripts in completions/ are this module's output; tests fail when
// they are stale (tests/completions_test.sh).
//
// Pure functions; no I/O. Safe to call from any thread.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid::cli {

// What a flag's value or a positional argument completes to.
enum class value_kind {
  none,       // a flag without a value
  text,       // free text (numbers, URLs, HOST:PORT): nothing to offer
  file,       // any file
  directory,  // folders only
  model,      // files, preferring *.onnx
  input,      // files, preferring *.npy, *.pb, *.bin; also NAME=FILE (files after the '=')
  url,        // a peer URL: ws:// or wss://, and the peers `gpugrid config show` reports
  choice,     // one of `choices`
};

struct flag_spec {
  std::vector<std::string> names;   // as typed: "-o", "--output"
  std::string help;                 // one line
  std::string value_name;           // "DIR", "N", ... (empty for plain flags)
  value_kind kind = value_kind::none;
  std::vector<std::string> choices; // for value_kind::choice
  bool repeatable = false;          // may be given more than once (--peer)
};

struct positional_spec {
  std::string name;                 // "MODEL", "INPUT", "ACTION"
  std::string help;
  value_kind kind = value_kind::text;
  std::vector<std::string> choices;
  bool repeats = false;             // takes every remaining argument
};

struct command_spec {
  std::string name;
  std::string summary;
  std::vector<flag_spec> flags;
  std::vector<positional_spec> positionals;
};

struct cli_spec {
  std::string program;              // "gpugrid"
  std::vector<flag_spec> global_flags;
  std::vector<command_spec> commands;
};

// The file name patterns a kind prefers ("onnx" for model); empty for the others.
std::vector<std::string> preferred_extensions(value_kind kind);

std::string bash_completion(const cli_spec& spec);
std::string zsh_completion(const cli_spec& spec);
std::string fish_completion(const cli_spec& spec);

// The shells completion_script knows, in the order help lists them.
const std::vector<std::string>& completion_shells();

// The script for `shell` (bash | zsh | fish); fails (usage) for any other shell.
expected<std::string> completion_script(const cli_spec& spec, const std::string& shell);

}  // namespace gpugrid::cli
