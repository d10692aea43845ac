// Internals shared by the tensor-manipulation kernel files (tensor_ops*.cc); not for other kernels.
//
// These ops read shapes and indices straight from untrusted models, so every helper here
// validates before it touches memory: an index, axis or size that does not fit fails cleanly
// with a message naming the node.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu::tops {

// ---- registration, one function per file ----
void register_view_ops(op_registry& r);   // tensor_ops.cc: Reshape, Flatten, Squeeze, Shape, Constant, Range, ...
void register_copy_ops(op_registry& r);   // tensor_ops_copy.cc: Transpose, Concat, Split, Slice, Expand, Tile, Pad
void register_index_ops(op_registry& r);  // tensor_ops_index.cc: Gather*, Scatter*, OneHot, NonZero, Trilu, ...
void register_quant_ops(op_registry& r);  // tensor_ops_quant.cc: QuantizeLinear, DequantizeLinear

// A kernel whose attributes are checked once, when the model loads (check may be empty).
kernel_factory checked_kernel(std::function<status(const node&)> check, simple_kernel_fn fn);

// ---- input checks ----

// Input i must be present, in CPU memory, and of a type kernels can hold (not string).
status require_input(const kernel_context& ctx, size_t i, const tensor** out);
// Optional input i: *out is nullptr when omitted (or an empty-named input); else as above.
status optional_input(const kernel_context& ctx, size_t i, const tensor** out);
// The input count must be in [lo, hi].
status check_input_count(const kernel_context& ctx, size_t lo, size_t hi);

// Reads an int32/int64 tensor of rank 0 or 1 as int64 values (shape/axes/pads/starts...).
status read_ints(const kernel_context& ctx, const tensor& t, const char* what, std::vector<int64_t>* out);
// Reads an int32/int64 scalar (or 1-element tensor).
status read_int_scalar(const kernel_context& ctx, const tensor& t, const char* what, int64_t* out);

// Normalizes axis into [0, rank) (accepting [-rank, rank)); fails otherwise.
status normalize_axis(const kernel_context& ctx, int64_t axis, int64_t rank, const char* what, int64_t* out);
// Normalizes a list of axes; fails on out-of-range or repeated axes.
status normalize_axes(const kernel_context& ctx, std::vector<int64_t>* axes, int64_t rank, const char* what);

// Product of dims, failing (instead of overflowing) past max_tensor_bytes worth of elements.
status checked_product(const kernel_context& ctx, const shape_t& shape, int64_t* out);

// Row-major (element) strides of a shape.
std::vector<int64_t> contiguous_strides(const shape_t& shape);

// ---- index tensors ----

// Calls f(const I* data) with I = int32_t or int64_t; fails for other index types.
template <typename F>
status with_index_type(const kernel_context& ctx, const tensor& t, const char* what, F&& f) {
  if (t.type() == dtype::i64) return f(t.data<int64_t>());
  if (t.type() == dtype::i32) return f(t.data<int32_t>());
  return ctx.fail("{} must be int32 or int64, got {}", what, dtype_name(t.type()));
}

// Checks every index in [-dim, dim); reports the first bad one.
template <typename I>
status check_indices(const kernel_context& ctx, const I* idx, int64_t n, int64_t dim, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(idx[i]);
    if (v < -dim || v >= dim)
      return ctx.fail("{} {} (at position {}) is out of range for a dimension of size {}", what, v, i, dim);
  }
  return status::ok();
}

// ---- parallel loops and copies ----

// Runs body(begin, end) over [0, n), inline or on the context's pool (kernel_helpers.h).
using helpers::parallel;

// Items per task so each task moves about `target` bytes.
inline int64_t grain_for(int64_t bytes_per_item, int64_t target = 64 * 1024) {
  if (bytes_per_item <= 0) return target;
  int64_t g = target / bytes_per_item;
  return g < 1 ? 1 : g;
}

// Calls f(U{}) with U an unsigned integer type of the element size (1, 2, 4 or 8 bytes).
template <typename F>
bool dispatch_size(size_t esize, F&& f) {
  switch (esize) {
    case 1: f(uint8_t{}); return true;
    case 2: f(uint16_t{}); return true;
    case 4: f(uint32_t{}); return true;
    case 8: f(uint64_t{}); return true;
    default: return false;
  }
}

// memcpy of n bytes, split over the pool when large.
void parallel_memcpy(kernel_context& ctx, void* dst, const void* src, size_t n);

// Copies `rows` rows of row_bytes each from src (rows src_stride bytes apart) to dst (rows
// dst_stride bytes apart), in parallel when large.
void copy_rows(kernel_context& ctx, std::byte* dst, int64_t dst_stride, const std::byte* src,
               int64_t src_stride, int64_t rows, int64_t row_bytes);

// Writes, in row-major order over `shape`, the elements of src at element offsets
// sum(idx[d] * strides[d]) into contiguous dst. Strides may be zero (broadcast) or negative
// (reversed slices); the caller guarantees every reached offset is in bounds.
void strided_copy(kernel_context& ctx, const std::byte* src, std::byte* dst, size_t esize,
                  const shape_t& shape, const std::vector<int64_t>& strides);

// Fills n elements of esize bytes at dst with the element at value.
void fill_elements(std::byte* dst, int64_t n, const void* value, size_t esize);

}  // namespace gpugrid::cpu::tops
