// Small helpers shared by the CPU reduction and normalisation kernels: input checks,
// parallel loops sized by work, axis normalisation.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/kernel.h"

namespace gpugrid::cpu::helpers {

// Between lo and hi inputs, the first `required` present, all in CPU memory.
inline status check_inputs(const kernel_context& ctx, size_t lo, size_t hi, size_t required) {
  size_t n = ctx.num_inputs();
  if (n < lo || n > hi) {
    if (lo == hi) return ctx.fail("expects {} input{}, got {}", lo, lo == 1 ? "" : "s", n);
    return ctx.fail("expects {} to {} inputs, got {}", lo, hi, n);
  }
  for (size_t i = 0; i < required; ++i)
    if (!ctx.input(i) || !ctx.input(i)->defined()) return ctx.fail("input {} is required but missing", i);
  for (size_t i = 0; i < n; ++i)
    if (ctx.input(i) && ctx.input(i)->defined() && ctx.input(i)->device() != device_kind::cpu)
      return ctx.fail("input {} is not in CPU memory", i);
  return status::ok();
}

// A present, non-empty optional input.
inline const tensor* optional_input(const kernel_context& ctx, size_t i) {
  const tensor* t = ctx.input(i);
  return (t && t->defined() && t->numel() > 0) ? t : nullptr;
}

// Runs body(begin, end) over [0, n): inline when small or single-threaded, else on the pool;
// `grain` is the least number of items per task.
template <typename F>
void parallel(kernel_context& ctx, int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (n <= grain || ctx.pool().size() <= 1) {
    body(int64_t{0}, n);
    return;
  }
  ctx.pool().parallel_for(n, grain, [&](int64_t b, int64_t e) { body(b, e); });
}

// Items per task so that one task does about `target` elements of work.
inline int64_t grain_for(int64_t work_per_item, int64_t target = 32768) {
  return std::max<int64_t>(1, target / std::max<int64_t>(1, work_per_item));
}

// Normalizes axis into [0, rank); false when out of range.
inline bool normalize_axis(int64_t axis, int64_t rank, int64_t* out) {
  if (axis < -rank || axis >= rank) return false;
  *out = axis < 0 ? axis + rank : axis;
  return true;
}

inline int64_t prod(const shape_t& s, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < e && i < s.size(); ++i) p *= s[i];
  return p;
}

}  // namespace gpugrid::cpu::helpers
