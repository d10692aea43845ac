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
