#include "engine/tensor_compare.h"

#include <cmath>

#include <fmt/format.h>

namespace gpugrid {

tolerance default_tolerance(dtype t) {
  switch (t) {
    case dtype::f16: case dtype::bf16: return {1e-2, 1e-3};
    case dtype::f32: return {1e-3, 1e-5};
    case dtype::f64: return {1e-6, 1e-9};
    default: return {0, 0};
  }
}

bool tensors_close(const tensor& actual, const tensor& expected, const tolerance& tol, std::string* why) {
  if (actual.is_none() || expected.is_none()) {
    if (actual.is_none() && expected.is_none()) return true;
    if (why) *why = actual.is_none() ? "an empty optional but expected a value" : "a value but expected an empty optional";
    return false;
  }
  if (actual.is_sequence() || expected.is_sequence()) {
    if (!actual.is_sequence() || !expected.is_sequence()) {
      if (why) *why = actual.is_sequence() ? "a sequence but expected a tensor" : "a tensor but expected a sequence";
      return false;
    }
    if (actual.items().size() != expected.items().size()) {
      if (why) *why = fmt::format("a sequence of {} but expected {}", actual.items().size(), expected.items().size());
      return false;
    }
    for (size_t k = 0; k < actual.items().size(); ++k) {
      std::string item_why;
      if (!tensors_close(actual.items()[k], expected.items()[k], tol, &item_why)) {
        if (why) *why = fmt::format("sequence item {}: {}", k, item_why);
        return false;
      }
    }
    return true;
  }
  if (actual.type() != expected.type()) {
    if (why) *why = fmt::format("dtype {} but expected {}", dtype_name(actual.type()), dtype_name(expected.type()));
    return false;
  }
  if (actual.shape() != expected.shape()) {
    if (why) *why = fmt::format("shape {} but expected {}", shape_str(actual.shape()), shape_str(expected.shape()));
    return false;
  }
  const int64_t n = actual.numel();
  if (is_float(actual.type())) {
    for (int64_t i = 0; i < n; ++i) {
      double a = actual.as_double(i), e = expected.as_double(i);
      if (std::isnan(a) && std::isnan(e)) continue;
      if (std::isinf(e) || std::isinf(a)) {
        if (a == e) continue;
      } else if (std::fabs(a - e) <= tol.atol + tol.rtol * std::fabs(e)) {
        continue;
      }
      if (why) *why = fmt::format("element {} is {} but expected {} (|diff| {:.3g})", i, a, e, std::fabs(a - e));
      return false;
    }
    return true;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (actual.as_int64(i) != expected.as_int64(i)) {
      if (why) *why = fmt::format("element {} is {} but expected {}", i, actual.as_int64(i), expected.as_int64(i));
      return false;
    }
  }
  return true;
}

}  // namespace gpugrid
