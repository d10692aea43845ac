// libFuzzer target: load_model_from_bytes (engine/onnx_loader.h) on arbitrary bytes. It must
// either load or fail with an error message; never crash, hang or allocate wildly.
//
// Error messages should be one line, but names taken from the model can carry newlines; that
// is reported once on stderr and only aborts with GG_FUZZ_STRICT=1, so that a long run keeps
// looking for memory errors instead of stopping at the first such name.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/onnx_loader.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool strict = std::getenv("GG_FUZZ_STRICT") && std::getenv("GG_FUZZ_STRICT")[0] == '1';
  static bool reported = false;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto g = gpugrid::load_model_from_bytes(bytes, "fuzz.onnx");
  if (!g) {
    const std::string& m = g.error().message();
    GG_FUZZ_CHECK(!m.empty());
    if (!good_message(m, "fuzz.onnx") && (strict || !reported)) {
      std::fprintf(stderr, "note: error message is not one line naming the model: [%s]\n", m.c_str());
      reported = true;
      GG_FUZZ_CHECK(!strict);
    }
  }
  return 0;
}
