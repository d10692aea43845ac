// TEMPORARY: weak stand-ins for commands whose cmd_*.cc is not in the tree yet, so that the
// binary links and the command says plainly that it is missing. A real definition in
// cli/cmd_<name>.cc overrides these at link time (this file sorts after every cmd_<name>.cc
// in the gpugrid_cli archive, so the linker meets the strong definition first); delete each
// stub when its command lands. They never pretend to work: one line on stderr, exit 2.
#include <fmt/format.h>

#include "cli/commands.h"

namespace gpugrid::cli {

namespace {

int not_built(const char* name, const char* why) {
  fmt::print(stderr, "gpugrid: '{}' is not built yet{}\n", name, why);
  return 2;
}

constexpr const char* kGridMissing = " (the grid layer is under construction)";

}  // namespace

__attribute__((weak)) int run_command(const run_options&) { return not_built("run", ""); }
__attribute__((weak)) int inspect_command(const inspect_options&) { return not_built("inspect", ""); }
__attribute__((weak)) int bench_command(const bench_options&) { return not_built("bench", ""); }
__attribute__((weak)) int selftest_command(const selftest_options&) { return not_built("selftest", ""); }

__attribute__((weak)) int offer_command(const offer_options&) { return not_built("offer", kGridMissing); }
__attribute__((weak)) int peers_command(const peers_options&) { return not_built("peers", kGridMissing); }
__attribute__((weak)) int ledger_command(const ledger_options&) { return not_built("ledger", kGridMissing); }
__attribute__((weak)) int identity_command(const identity_options&) { return not_built("identity", kGridMissing); }

}  // namespace gpugrid::cli
