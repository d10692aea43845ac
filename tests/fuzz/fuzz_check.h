// Helpers shared by the libFuzzer targets: an invariant that fails aborts, so libFuzzer
// records the input as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#define GG_FUZZ_CHECK(cond)                                                         \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Every error is one non-empty line that starts with the name the caller gave.
inline bool good_message(const std::string& m, const std::string& what) {
  return !m.empty() && m.find('\n') == std::string::npos && (what.empty() || m.compare(0, what.size(), what) == 0);
}
