// gpugrid: the whole program is the command table (cli/command_table.h).
#include <cerrno>
#include <cstdio>
#include <exception>

#include "cli/command_table.h"

int main(int argc, char** argv) {
  int code = 1;
  try {
    code = gpugrid::cli::dispatch(argc, argv);
  } catch (const std::exception& e) {  // dispatch does not throw; this is the last line of defence
    std::fprintf(stderr, "gpugrid: internal error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "gpugrid: internal error: unknown exception\n");
    return 1;
  }
  if (std::fflush(stdout) != 0 && errno != EPIPE) {
    std::fprintf(stderr, "gpugrid: cannot write to stdout\n");
    return code == 0 ? 1 : code;
  }
  return code;
}
