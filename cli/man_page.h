// The manual page gpugrid(1), generated from the command table's description (describe_cli in
// cli/command_table.h) like the completion scripts, so it cannot disagree with the parser.
// `gpugrid help --man` prints it; the build writes it to gpugrid.1 and `cmake --install`
// installs it under share/man/man1.
//
// Pure function; no I/O. Safe to call from any thread.
#pragma once

#include <string>

#include "cli/completion.h"

namespace gpugrid::cli {

// roff source (man(7) macros) for `spec`, stamped with `version`.
std::string man_page(const cli_spec& spec, const std::string& version);

}  // namespace gpugrid::cli
