// libFuzzer target: read_tensor_proto on arbitrary bytes. A tensor that reads must survive
// write_tensor_proto -> read_tensor_proto unchanged (name included), and its element count must
// be backed by the input (raw_data or typed values), so it never holds more bytes than
// 8 x the input (the widest element from the narrowest encoding: a varint byte per value).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/tensor_io.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpugrid;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  std::string name;
  auto t = read_tensor_proto(bytes, "fuzz.pb", &name);
  if (!t) {
    GG_FUZZ_CHECK(t.error().kind() == error_kind::invalid_input);
    GG_FUZZ_CHECK(good_message(t.error().message(), "fuzz.pb"));
    return 0;
  }
  GG_FUZZ_CHECK(t->numel() <= static_cast<int64_t>(size));
  if (t->type() == dtype::boolean) {
    const auto* p = static_cast<const uint8_t*>(t->raw());
    for (size_t i = 0; i < t->bytes(); ++i) GG_FUZZ_CHECK(p[i] <= 1);
  }
  std::string name2;
  auto u = read_tensor_proto(write_tensor_proto(*t, name), "again.pb", &name2);
  GG_FUZZ_CHECK(u.has_value());
  GG_FUZZ_CHECK(name2 == name);
  GG_FUZZ_CHECK(u->type() == t->type() && u->shape() == t->shape());
  GG_FUZZ_CHECK(t->bytes() == 0 || std::memcmp(u->raw(), t->raw(), t->bytes()) == 0);
  // Also a .npy round trip, for every type numpy has.
  if (t->type() != dtype::bf16) {
    auto v = read_npy(write_npy(*t), "again.npy");
    GG_FUZZ_CHECK(v.has_value() && v->shape() == t->shape());
    GG_FUZZ_CHECK(t->bytes() == 0 || std::memcmp(v->raw(), t->raw(), t->bytes()) == 0);
  }
  return 0;
}
