// Comparing tensors within a dtype-aware tolerance: used by selftest, the model-family tests
// and the grid's result verification.
#pragma once

#include <string>

#include "engine/tensor.h"

namespace gpugrid {

struct tolerance {
  double rtol = 1e-3;
  double atol = 1e-7;
};

// True when a and b have the same dtype and shape and every element satisfies
// |a - b| <= atol + rtol * |b| (floats; NaN equals NaN, infinities must match) or is equal
// (integers, bool). Sequences match item by item; empty optionals match each other only.
// On false, *why says where and by how much (first bad element).
bool tensors_close(const tensor& actual, const tensor& expected, const tolerance& tol, std::string* why);

// The tolerance to use when comparing results of dtype t from two different machines.
tolerance default_tolerance(dtype t);

}  // namespace gpugrid
