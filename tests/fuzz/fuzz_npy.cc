// libFuzzer target: read_npy on arbitrary bytes. A file that reads must survive
// write_npy -> read_npy unchanged, and never yield more data than the input held.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/tensor_io.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpugrid;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto t = read_npy(bytes, "fuzz.npy");
  if (!t) {
    GG_FUZZ_CHECK(t.error().kind() == error_kind::invalid_input);
    GG_FUZZ_CHECK(good_message(t.error().message(), "fuzz.npy: "));
    return 0;
  }
  GG_FUZZ_CHECK(t->bytes() <= size);
  GG_FUZZ_CHECK(t->type() != dtype::bf16);
  if (t->type() == dtype::boolean) {
    const auto* p = static_cast<const uint8_t*>(t->raw());
    for (size_t i = 0; i < t->bytes(); ++i) GG_FUZZ_CHECK(p[i] <= 1);
  }
  const std::string again = write_npy(*t);
  GG_FUZZ_CHECK(again.size() % 64 == t->bytes() % 64);
  auto u = read_npy(again, "again.npy");
  GG_FUZZ_CHECK(u.has_value());
  GG_FUZZ_CHECK(u->type() == t->type() && u->shape() == t->shape());
  GG_FUZZ_CHECK(t->bytes() == 0 || std::memcmp(u->raw(), t->raw(), t->bytes()) == 0);
  return 0;
}
