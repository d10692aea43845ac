// CPU index-driven tensor ops: Gather, GatherElements, GatherND, ScatterElements (and the old
// Scatter), ScatterND, OneHot, NonZero, Trilu, ReverseSequence, Compress, Unique.
//
// Every index read from a model is checked against its dimension before any memory is touched;
// a bad one fails the node with a message naming it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/tensor_ops_internal.h"

namespace gpugrid::cpu::tops {

namespace {

inline int64_t wrap_index(int64_t v, int64_t dim) { return v < 0 ? v + dim : v; }

// Source offset (elements) of each row of `shape` (all dims but the last), skipping `skip_axis`.
// Calls f(row, base) for rows [b, e).
template <typename F>
void for_rows(const shape_t& shape, const std::vector<int64_t>& strides, int64_t skip_axis, int64_t b, int64_t e,
              F&& f) {
  const size_t m = shape.size() - 1;
  std::vector<int64_t> idx(m, 0);
  int64_t rem = b, base = 0;
  for (size_t k = m; k-- > 0;) {
    idx[k] = rem % shape[k];
    rem /= shape[k];
    if (static_cast<int64_t>(k) != skip_axis) base += idx[k] * strides[k];
  }
  for (int64_t row = b; row < e; ++row) {
    f(row, base);
    for (size_t k = m; k-- > 0;) {
      const int64_t st = static_cast<int64_t>(k) == skip_axis ? 0 : strides[k];
      base += st;
      if (++idx[k] < shape[k]) break;
      base -= st * shape[k];
      idx[k] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gather family

status gather_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *ind;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &ind));
  const int64_t r = static_cast<int64_t>(x->rank());
  if (r == 0) return ctx.fail("data must have rank >= 1");
  int64_t axis;
  GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 0), r, "axis", &axis));
  const size_t a = static_cast<size_t>(axis);
  const int64_t dim = x->dim(a);
  const int64_t N = ind->numel();
  shape_t out_shape(x->shape().begin(), x->shape().begin() + axis);
  out_shape.insert(out_shape.end(), ind->shape().begin(), ind->shape().end());
  out_shape.insert(out_shape.end(), x->shape().begin() + axis + 1, x->shape().end());
  return with_index_type(ctx, *ind, "indices", [&](const auto* idx) -> status {
    GG_RETURN_IF_ERROR(check_indices(ctx, idx, N, dim, "index"));
    GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
    if (out->numel() == 0) return status::ok();
    const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
    int64_t outer = 1, inner = 1;
    for (size_t d = 0; d < a; ++d) outer *= x->dim(d);
    for (size_t d = a + 1; d < x->rank(); ++d) inner *= x->dim(d);
    const int64_t block = inner * es;
    const auto* src = static_cast<const std::byte*>(x->raw());
    auto* dst = static_cast<std::byte*>(out->raw());
    if (inner == 1) {
      dispatch_size(static_cast<size_t>(es), [&](auto tag) {
        using U = decltype(tag);
        const U* s = reinterpret_cast<const U*>(src);
        U* o = reinterpret_cast<U*>(dst);
        parallel(ctx, outer * N, 32768, [&](int64_t b, int64_t e) {
          for (int64_t it = b; it < e; ++it) {
            const int64_t oi = it / N, j = it % N;
            o[it] = s[oi * dim + wrap_index(static_cast<int64_t>(idx[j]), dim)];
          }
        });
      });
      return status::ok();
    }
    parallel(ctx, outer * N, grain_for(block, 64 * 1024), [&](int64_t b, int64_t e) {
      for (int64_t it = b; it < e; ++it) {
        const int64_t oi = it / N, j = it % N;
        const int64_t k = wrap_index(static_cast<int64_t>(idx[j]), dim);
        std::memcpy(dst + it * block, src + (oi * dim + k) * block, static_cast<size_t>(block));
      }
    });
    return status::ok();
  });
}

// Shared checks for GatherElements / ScatterElements: same rank, indices within data off axis.
status check_elements_shapes(const kernel_context& ctx, const tensor& data, const tensor& ind, int64_t* axis) {
  const int64_t r = static_cast<int64_t>(data.rank());
  if (r == 0) return ctx.fail("data must have rank >= 1");
  if (ind.rank() != data.rank())
    return ctx.fail("indices {} must have the rank of data {}", shape_str(ind.shape()), shape_str(data.shape()));
  GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 0), r, "axis", axis));
  for (size_t d = 0; d < data.rank(); ++d)
    if (static_cast<int64_t>(d) != *axis && ind.dim(d) > data.dim(d))
      return ctx.fail("indices {} exceed data {} along axis {}", shape_str(ind.shape()), shape_str(data.shape()), d);
  return status::ok();
}

status gather_elements_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *ind;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &ind));
  int64_t axis;
  GG_RETURN_IF_ERROR(check_elements_shapes(ctx, *x, *ind, &axis));
  const int64_t dim = x->dim(static_cast<size_t>(axis));
  return with_index_type(ctx, *ind, "indices", [&](const auto* idx) -> status {
    GG_RETURN_IF_ERROR(check_indices(ctx, idx, ind->numel(), dim, "index"));
    GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), ind->shape()));
    if (out->numel() == 0) return status::ok();
    const auto xs = contiguous_strides(x->shape());
    const int64_t sa = xs[static_cast<size_t>(axis)];
    const size_t last = x->rank() - 1;
    const int64_t W = ind->dim(last);
    const int64_t rows = out->numel() / W;
    const bool axis_last = axis == static_cast<int64_t>(last);
    dispatch_size(dtype_size(x->type()), [&](auto tag) {
      using U = decltype(tag);
      const U* s = static_cast<const U*>(x->raw());
      U* o = static_cast<U*>(out->raw());
      parallel(ctx, rows, grain_for(W * 8, 32 * 1024), [&](int64_t b, int64_t e) {
        for_rows(ind->shape(), xs, axis, b, e, [&](int64_t row, int64_t base) {
          const auto* ip = idx + row * W;
          U* op = o + row * W;
          for (int64_t j = 0; j < W; ++j) {
            const int64_t k = wrap_index(static_cast<int64_t>(ip[j]), dim);
            op[j] = s[base + (axis_last ? 0 : j) + k * sa];
          }
        });
      });
    });
    return status::ok();
  });
}

status gather_nd_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *ind;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &ind));
  const int64_t r = static_cast<int64_t>(x->rank()), q = static_cast<int64_t>(ind->rank());
  const int64_t b = ctx.op().attr_int("batch_dims", 0);
  if (r < 1 || q < 1) return ctx.fail("data and indices must have rank >= 1");
  if (b < 0 || b >= std::min(r, q)) return ctx.fail("batch_dims {} must be in [0, {})", b, std::min(r, q));
  const int64_t k = ind->dim(static_cast<size_t>(q - 1));
  if (k < 1 || k > r - b)
    return ctx.fail("indices' last dim {} must be in [1, {}] for data {}", k, r - b, shape_str(x->shape()));
  for (int64_t d = 0; d < b; ++d)
    if (x->dim(static_cast<size_t>(d)) != ind->dim(static_cast<size_t>(d)))
      return ctx.fail("batch dims of data {} and indices {} differ", shape_str(x->shape()), shape_str(ind->shape()));
  shape_t out_shape(ind->shape().begin(), ind->shape().end() - 1);
  out_shape.insert(out_shape.end(), x->shape().begin() + b + k, x->shape().end());
  int64_t batches = 1, tuples = 1, slice = 1;
  for (int64_t d = 0; d < b; ++d) batches *= x->dim(static_cast<size_t>(d));
  for (int64_t d = b; d < q - 1; ++d) tuples *= ind->dim(static_cast<size_t>(d));
  for (int64_t d = b + k; d < r; ++d) slice *= x->dim(static_cast<size_t>(d));
  const auto xs = contiguous_strides(x->shape());
  const int64_t batch_stride = b > 0 ? xs[static_cast<size_t>(b - 1)] : 0;
  return with_index_type(ctx, *ind, "indices", [&](const auto* idx) -> status {
    const int64_t n_tuples = batches * tuples;
    for (int64_t t = 0; t < n_tuples; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t v = static_cast<int64_t>(idx[t * k + j]);
        const int64_t dim = x->dim(static_cast<size_t>(b + j));
        if (v < -dim || v >= dim)
          return ctx.fail("index {} (tuple {}, entry {}) is out of range for a dimension of size {}", v, t, j, dim);
      }
    GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
    if (out->numel() == 0) return status::ok();
    const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
    const int64_t block = slice * es;
    const auto* src = static_cast<const std::byte*>(x->raw());
    auto* dst = static_cast<std::byte*>(out->raw());
    parallel(ctx, n_tuples, grain_for(block, 64 * 1024), [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t off = (t / tuples) * batch_stride;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t dim = x->dim(static_cast<size_t>(b + j));
          off += wrap_index(static_cast<int64_t>(idx[t * k + j]), dim) * xs[static_cast<size_t>(b + j)];
        }
        std::memcpy(dst + t * block, src + off * es, static_cast<size_t>(block));
      }
    });
    return status::ok();
  });
}

// ---------------------------------------------------------------------------------------------
// Scatter family

enum class reduction { none, add, mul, max, min };

bool parse_reduction(const std::string& s, reduction* r) {
  if (s == "none") *r = reduction::none;
  else if (s == "add") *r = reduction::add;
  else if (s == "mul") *r = reduction::mul;
  else if (s == "max") *r = reduction::max;
  else if (s == "min") *r = reduction::min;
  else return false;
  return true;
}

status reduction_check(const node& n) {
  reduction r;
  std::string s = n.attr_string("reduction", "none");
  if (!parse_reduction(s, &r)) return invalid_input("{}: unsupported reduction '{}'", n.describe(), s);
  return status::ok();
}

template <typename T>
inline void combine(reduction k, T& dst, T v) {
  if constexpr (std::is_same_v<T, bool>) {
    switch (k) {
      case reduction::none: dst = v; break;
      case reduction::add: case reduction::max: dst = dst || v; break;
      case reduction::mul: case reduction::min: dst = dst && v; break;
    }
  } else if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
    const float a = static_cast<float>(dst), c = static_cast<float>(v);
    switch (k) {
      case reduction::none: dst = v; break;
      case reduction::add: dst = T(a + c); break;
      case reduction::mul: dst = T(a * c); break;
      case reduction::max: dst = T(std::max(a, c)); break;
      case reduction::min: dst = T(std::min(a, c)); break;
    }
  } else if constexpr (std::is_integral_v<T>) {
    using W = std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>;
    switch (k) {
      case reduction::none: dst = v; break;
      case reduction::add: dst = static_cast<T>(static_cast<W>(dst) + static_cast<W>(v)); break;
      case reduction::mul: dst = static_cast<T>(static_cast<W>(dst) * static_cast<W>(v)); break;
      case reduction::max: dst = std::max(dst, v); break;
      case reduction::min: dst = std::min(dst, v); break;
    }
  } else {
    switch (k) {
      case reduction::none: dst = v; break;
      case reduction::add: dst = dst + v; break;
      case reduction::mul: dst = dst * v; break;
      case reduction::max: dst = std::max(dst, v); break;
      case reduction::min: dst = std::min(dst, v); break;
    }
  }
}

// The output of a scatter starts as a copy of data (or is data itself when the executor lets
// the kernel overwrite it).
expected<tensor*> scatter_output(kernel_context& ctx, const tensor& data) {
  auto out = ctx.output_reusing(0, 0, data.type(), data.shape());
  if (!out) return out;
  tensor* o = out.value();
  if (o->raw() != data.raw() && data.bytes() > 0) parallel_memcpy(ctx, o->raw(), data.raw(), data.bytes());
  return o;
}

status scatter_elements_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 3, 3));
  const tensor *x, *ind, *upd;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &ind));
  GG_RETURN_IF_ERROR(require_input(ctx, 2, &upd));
  reduction red;
  if (!parse_reduction(ctx.op().attr_string("reduction", "none"), &red))
    return ctx.fail("unsupported reduction '{}'", ctx.op().attr_string("reduction", "none"));
  if (upd->type() != x->type())
    return ctx.fail("updates type {} differs from data type {}", dtype_name(upd->type()), dtype_name(x->type()));
  if (upd->shape() != ind->shape())
    return ctx.fail("updates {} must have the shape of indices {}", shape_str(upd->shape()), shape_str(ind->shape()));
  int64_t axis;
  GG_RETURN_IF_ERROR(check_elements_shapes(ctx, *x, *ind, &axis));
  const int64_t dim = x->dim(static_cast<size_t>(axis));
  return with_index_type(ctx, *ind, "indices", [&](const auto* idx) -> status {
    GG_RETURN_IF_ERROR(check_indices(ctx, idx, ind->numel(), dim, "index"));
    GG_ASSIGN_OR_RETURN(tensor * out, scatter_output(ctx, *x));
    if (ind->numel() == 0) return status::ok();
    const auto xs = contiguous_strides(x->shape());
    const int64_t sa = xs[static_cast<size_t>(axis)];
    const size_t last = x->rank() - 1;
    const int64_t W = ind->dim(last);
    const int64_t rows = ind->numel() / W;
    const bool axis_last = axis == static_cast<int64_t>(last);
    dispatch_all(x->type(), [&](auto tag) {
      using T = decltype(tag);
      const T* u = upd->data<T>();
      T* o = out->data<T>();
      for_rows(ind->shape(), xs, axis, 0, rows, [&](int64_t row, int64_t base) {
        for (int64_t j = 0; j < W; ++j) {
          const int64_t k = wrap_index(static_cast<int64_t>(idx[row * W + j]), dim);
          combine<T>(red, o[base + (axis_last ? 0 : j) + k * sa], u[row * W + j]);
        }
      });
    });
    return status::ok();
  });
}

status scatter_nd_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 3, 3));
  const tensor *x, *ind, *upd;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &ind));
  GG_RETURN_IF_ERROR(require_input(ctx, 2, &upd));
  reduction red;
  if (!parse_reduction(ctx.op().attr_string("reduction", "none"), &red))
    return ctx.fail("unsupported reduction '{}'", ctx.op().attr_string("reduction", "none"));
  if (upd->type() != x->type())
    return ctx.fail("updates type {} differs from data type {}", dtype_name(upd->type()), dtype_name(x->type()));
  const int64_t r = static_cast<int64_t>(x->rank()), q = static_cast<int64_t>(ind->rank());
  if (r < 1 || q < 1) return ctx.fail("data and indices must have rank >= 1");
  const int64_t k = ind->dim(static_cast<size_t>(q - 1));
  if (k < 1 || k > r) return ctx.fail("indices' last dim {} must be in [1, {}]", k, r);
  shape_t want(ind->shape().begin(), ind->shape().end() - 1);
  want.insert(want.end(), x->shape().begin() + k, x->shape().end());
  if (upd->shape() != want)
    return ctx.fail("updates {} must have shape {} (indices {}, data {})", shape_str(upd->shape()), shape_str(want),
                    shape_str(ind->shape()), shape_str(x->shape()));
  const int64_t n_tuples = ind->numel() / k;
  int64_t slice = 1;
  for (int64_t d = k; d < r; ++d) slice *= x->dim(static_cast<size_t>(d));
  const auto xs = contiguous_strides(x->shape());
  return with_index_type(ctx, *ind, "indices", [&](const auto* idx) -> status {
    for (int64_t t = 0; t < n_tuples; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t v = static_cast<int64_t>(idx[t * k + j]);
        const int64_t dim = x->dim(static_cast<size_t>(j));
        if (v < -dim || v >= dim)
          return ctx.fail("index {} (tuple {}, entry {}) is out of range for a dimension of size {}", v, t, j, dim);
      }
    GG_ASSIGN_OR_RETURN(tensor * out, scatter_output(ctx, *x));
    if (slice == 0 || n_tuples == 0) return status::ok();
    auto offset = [&](int64_t t) {
      int64_t off = 0;
      for (int64_t j = 0; j < k; ++j)
        off += wrap_index(static_cast<int64_t>(idx[t * k + j]), x->dim(static_cast<size_t>(j))) * xs[static_cast<size_t>(j)];
      return off;
    };
    const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
    if (red == reduction::none) {
      auto* dst = static_cast<std::byte*>(out->raw());
      const auto* src = static_cast<const std::byte*>(upd->raw());
      for (int64_t t = 0; t < n_tuples; ++t)
        std::memcpy(dst + offset(t) * es, src + t * slice * es, static_cast<size_t>(slice * es));
      return status::ok();
    }
    dispatch_all(x->type(), [&](auto tag) {
      using T = decltype(tag);
      const T* u = upd->data<T>();
      T* o = out->data<T>();
      for (int64_t t = 0; t < n_tuples; ++t) {
        T* dst = o + offset(t);
        const T* src = u + t * slice;
        for (int64_t j = 0; j < slice; ++j) combine<T>(red, dst[j], src[j]);
      }
    });
    return status::ok();
  });
}

// ---------------------------------------------------------------------------------------------
// OneHot, NonZero, Trilu

status onehot_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 3, 3));
  const tensor *ind, *depth_in, *values;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &ind));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &depth_in));
  GG_RETURN_IF_ERROR(require_input(ctx, 2, &values));
  if (depth_in->numel() != 1) return ctx.fail("depth must be a scalar, got shape {}", shape_str(depth_in->shape()));
  if (values->numel() != 2) return ctx.fail("values must have 2 elements, got shape {}", shape_str(values->shape()));
  if (!is_float(ind->type()) && !is_integer(ind->type()))
    return ctx.fail("indices must be numeric, got {}", dtype_name(ind->type()));
  const double dd = depth_in->as_double(0);
  if (!(dd >= 1) || dd > static_cast<double>(max_tensor_bytes)) return ctx.fail("depth {} is invalid", dd);
  const int64_t depth = static_cast<int64_t>(dd);
  const int64_t r = static_cast<int64_t>(ind->rank());
  int64_t axis = ctx.op().attr_int("axis", -1);
  if (axis < -(r + 1) || axis > r) return ctx.fail("axis {} is out of range for output rank {}", axis, r + 1);
  if (axis < 0) axis += r + 1;
  shape_t out_shape = ind->shape();
  out_shape.insert(out_shape.begin() + axis, depth);
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, values->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  const size_t es = dtype_size(values->type());
  const auto* vals = static_cast<const std::byte*>(values->raw());
  auto* dst = static_cast<std::byte*>(out->raw());
  fill_elements(dst, out->numel(), vals, es);
  int64_t inner = 1;
  for (int64_t d = axis; d < r; ++d) inner *= ind->dim(static_cast<size_t>(d));
  const int64_t n = ind->numel();
  dispatch_all(ind->type(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = ind->data<T>();
    for (int64_t i = 0; i < n; ++i) {
      int64_t v;
      if constexpr (std::is_same_v<T, bool>) {
        v = p[i] ? 1 : 0;
      } else if constexpr (std::is_integral_v<T>) {
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (p[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) continue;
        }
        v = static_cast<int64_t>(p[i]);
      } else {
        const double f = static_cast<double>(static_cast<float>(p[i]));
        if (!(f > -9.0e18 && f < 9.0e18)) continue;
        v = static_cast<int64_t>(f);
      }
      if (v < -depth || v >= depth) continue;  // out of range: all "off"
      if (v < 0) v += depth;
      const int64_t o = i / inner, in = i % inner;
      std::memcpy(dst + ((o * depth + v) * inner + in) * static_cast<int64_t>(es), vals + es, es);
    }
  });
  return status::ok();
}

status nonzero_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  const int64_t n = x->numel();
  std::vector<int64_t> hits;
  dispatch_all(x->type(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x->data<T>();
    for (int64_t i = 0; i < n; ++i) {
      bool nz;
      if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) nz = static_cast<float>(p[i]) != 0.0f;
      else nz = p[i] != T{};
      if (nz) hits.push_back(i);
    }
  });
  const int64_t rank = static_cast<int64_t>(x->rank());
  const int64_t rows = rank == 0 ? 1 : rank;
  const int64_t nnz = static_cast<int64_t>(hits.size());
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, dtype::i64, {rows, nnz}));
  int64_t* o = out->data<int64_t>();
  if (rank == 0) return status::ok();  // the single coordinate of a scalar is 0 (zero-filled)
  for (int64_t j = 0; j < nnz; ++j) {
    int64_t rem = hits[static_cast<size_t>(j)];
    for (int64_t d = rank; d-- > 0;) {
      const int64_t dim = x->dim(static_cast<size_t>(d));
      o[d * nnz + j] = rem % dim;
      rem /= dim;
    }
  }
  return status::ok();
}

status trilu_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 2));
  const tensor *x, *k_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(optional_input(ctx, 1, &k_in));
  if (x->rank() < 2) return ctx.fail("input must have rank >= 2, got shape {}", shape_str(x->shape()));
  int64_t k = 0;
  if (k_in) GG_RETURN_IF_ERROR(read_int_scalar(ctx, *k_in, "k", &k));
  const bool upper = ctx.op().attr_int("upper", 1) != 0;
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_reusing(0, 0, x->type(), x->shape()));
  if (x->numel() == 0) return status::ok();
  const int64_t R = x->dim(x->rank() - 2), C = x->dim(x->rank() - 1);
  const int64_t rows = x->numel() / C;
  const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
  k = std::clamp<int64_t>(k, -(R + C + 1), R + C + 1);
  const auto* src = static_cast<const std::byte*>(x->raw());
  auto* dst = static_cast<std::byte*>(out->raw());
  const bool same = src == dst;
  parallel(ctx, rows, grain_for(C * es, 64 * 1024), [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      const int64_t i = row % R;
      // Kept columns: [lo, hi).
      int64_t lo, hi;
      if (upper) { lo = std::clamp<int64_t>(i + k, 0, C); hi = C; }
      else { lo = 0; hi = std::clamp<int64_t>(i + k + 1, 0, C); }
      std::byte* o = dst + row * C * es;
      const std::byte* s = src + row * C * es;
      if (lo > 0) std::memset(o, 0, static_cast<size_t>(lo * es));
      if (hi < C) std::memset(o + hi * es, 0, static_cast<size_t>((C - hi) * es));
      if (!same && hi > lo) std::memcpy(o + lo * es, s + lo * es, static_cast<size_t>((hi - lo) * es));
    }
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// ReverseSequence, Compress, Unique

status reverse_sequence_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *lens_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &lens_in));
  if (x->rank() < 2) return ctx.fail("input must have rank >= 2, got shape {}", shape_str(x->shape()));
  const int64_t batch_axis = ctx.op().attr_int("batch_axis", 1), time_axis = ctx.op().attr_int("time_axis", 0);
  if (!((batch_axis == 0 && time_axis == 1) || (batch_axis == 1 && time_axis == 0)))
    return ctx.fail("batch_axis {} and time_axis {} must be 0 and 1 in some order", batch_axis, time_axis);
  std::vector<int64_t> lens;
  GG_RETURN_IF_ERROR(read_ints(ctx, *lens_in, "sequence_lens", &lens));
  const int64_t B = x->dim(static_cast<size_t>(batch_axis)), T = x->dim(static_cast<size_t>(time_axis));
  if (static_cast<int64_t>(lens.size()) != B)
    return ctx.fail("sequence_lens has {} entries but the batch size is {}", lens.size(), B);
  for (size_t i = 0; i < lens.size(); ++i)
    if (lens[i] < 0 || lens[i] > T)
      return ctx.fail("sequence length {} (batch {}) is out of range [0, {}]", lens[i], i, T);
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), x->shape()));
  if (out->numel() == 0) return status::ok();
  int64_t inner = 1;
  for (size_t d = 2; d < x->rank(); ++d) inner *= x->dim(d);
  const int64_t block = inner * static_cast<int64_t>(dtype_size(x->type()));
  const auto* src = static_cast<const std::byte*>(x->raw());
  auto* dst = static_cast<std::byte*>(out->raw());
  auto at = [&](int64_t t, int64_t b) { return (time_axis == 0 ? t * B + b : b * T + t) * block; };
  parallel(ctx, T * B, grain_for(block, 64 * 1024), [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t t = it / B, b = it % B;
      const int64_t L = lens[static_cast<size_t>(b)];
      const int64_t st = t < L ? L - 1 - t : t;
      std::memcpy(dst + at(t, b), src + at(st, b), static_cast<size_t>(block));
    }
  });
  return status::ok();
}

status compress_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *cond;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &cond));
  if (cond->type() != dtype::boolean) return ctx.fail("condition must be bool, got {}", dtype_name(cond->type()));
  if (cond->rank() != 1) return ctx.fail("condition must be 1-D, got shape {}", shape_str(cond->shape()));
  const bool has_axis = ctx.op().has_attr("axis");
  int64_t axis = 0;
  shape_t shape = x->shape();
  if (has_axis) {
    GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 0), static_cast<int64_t>(x->rank()), "axis", &axis));
  } else {
    shape = {x->numel()};
  }
  const size_t a = static_cast<size_t>(axis);
  const int64_t dim = shape[a];
  const bool* c = cond->data<bool>();
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < cond->numel(); ++i) {
    if (!c[i]) continue;
    if (i >= dim) return ctx.fail("condition selects index {} but the axis has size {}", i, dim);
    keep.push_back(i);
  }
  shape_t out_shape = shape;
  out_shape[a] = static_cast<int64_t>(keep.size());
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < a; ++d) outer *= shape[d];
  for (size_t d = a + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t block = inner * static_cast<int64_t>(dtype_size(x->type()));
  const int64_t K = static_cast<int64_t>(keep.size());
  const auto* src = static_cast<const std::byte*>(x->raw());
  auto* dst = static_cast<std::byte*>(out->raw());
  parallel(ctx, outer * K, grain_for(block, 64 * 1024), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / K, j = it % K;
      std::memcpy(dst + it * block, src + (o * dim + keep[static_cast<size_t>(j)]) * block, static_cast<size_t>(block));
    }
  });
  return status::ok();
}

// Three-way comparison with a total order: NaNs sort last and equal each other, so sorting
// untrusted data never sees an inconsistent comparator.
template <typename T>
inline int compare3(T a, T b) {
  if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
    return compare3<float>(static_cast<float>(a), static_cast<float>(b));
  } else if constexpr (std::is_floating_point_v<T>) {
    const bool na = std::isnan(a), nb = std::isnan(b);
    if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
    return a < b ? -1 : (b < a ? 1 : 0);
  } else {
    return a < b ? -1 : (b < a ? 1 : 0);
  }
}

status unique_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  const bool sorted = ctx.op().attr_int("sorted", 1) != 0;
  const bool has_axis = ctx.op().has_attr("axis");
  shape_t shape = x->shape();
  int64_t axis = 0;
  if (has_axis) {
    GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 0), static_cast<int64_t>(x->rank()), "axis", &axis));
  } else {
    shape = {x->numel()};
  }
  const size_t a = static_cast<size_t>(axis);
  const int64_t n = shape[a];
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < a; ++d) outer *= shape[d];
  for (size_t d = a + 1; d < shape.size(); ++d) inner *= shape[d];
  // Slice s is the elements (o, s, i) in (o, i) order; groups of equal slices in sorted order.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::vector<int64_t> group_of(static_cast<size_t>(n), 0);  // position -> group (in sort order)
  std::vector<int64_t> group_first;                          // group -> first occurrence
  std::vector<int64_t> group_count;
  dispatch_all(x->type(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x->data<T>();
    auto cmp = [&](int64_t s1, int64_t s2) -> int {
      for (int64_t o = 0; o < outer; ++o) {
        const T* r1 = p + (o * n + s1) * inner;
        const T* r2 = p + (o * n + s2) * inner;
        for (int64_t i = 0; i < inner; ++i)
          if (int c = compare3<T>(r1[i], r2[i])) return c;
      }
      return 0;
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t s1, int64_t s2) { return cmp(s1, s2) < 0; });
    for (int64_t j = 0; j < n; ++j) {
      const int64_t s = order[static_cast<size_t>(j)];
      if (j == 0 || cmp(order[static_cast<size_t>(j - 1)], s) != 0) {
        group_first.push_back(s);
        group_count.push_back(0);
      }
      group_of[static_cast<size_t>(s)] = static_cast<int64_t>(group_first.size()) - 1;
      group_count.back()++;
    }
  });
  const int64_t U = static_cast<int64_t>(group_first.size());
  // Output position of each group.
  std::vector<int64_t> rank_of(static_cast<size_t>(U));
  std::vector<int64_t> groups(static_cast<size_t>(U));
  std::iota(groups.begin(), groups.end(), int64_t{0});
  if (!sorted)
    std::sort(groups.begin(), groups.end(), [&](int64_t g1, int64_t g2) {
      return group_first[static_cast<size_t>(g1)] < group_first[static_cast<size_t>(g2)];
    });
  for (int64_t u = 0; u < U; ++u) rank_of[static_cast<size_t>(groups[static_cast<size_t>(u)])] = u;

  shape_t y_shape = shape;
  y_shape[a] = U;
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, x->type(), y_shape));
  const int64_t block = inner * static_cast<int64_t>(dtype_size(x->type()));
  if (y->numel() > 0) {
    const auto* src = static_cast<const std::byte*>(x->raw());
    auto* dst = static_cast<std::byte*>(y->raw());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t u = 0; u < U; ++u) {
        const int64_t s = group_first[static_cast<size_t>(groups[static_cast<size_t>(u)])];
        std::memcpy(dst + (o * U + u) * block, src + (o * n + s) * block, static_cast<size_t>(block));
      }
  }
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(tensor * t, ctx.output(1, dtype::i64, {U}));
    for (int64_t u = 0; u < U; ++u)
      t->data<int64_t>()[u] = group_first[static_cast<size_t>(groups[static_cast<size_t>(u)])];
  }
  if (ctx.num_outputs() > 2 && ctx.output_wanted(2)) {
    GG_ASSIGN_OR_RETURN(tensor * t, ctx.output(2, dtype::i64, {n}));
    for (int64_t s = 0; s < n; ++s)
      t->data<int64_t>()[s] = rank_of[static_cast<size_t>(group_of[static_cast<size_t>(s)])];
  }
  if (ctx.num_outputs() > 3 && ctx.output_wanted(3)) {
    GG_ASSIGN_OR_RETURN(tensor * t, ctx.output(3, dtype::i64, {U}));
    for (int64_t u = 0; u < U; ++u)
      t->data<int64_t>()[u] = group_count[static_cast<size_t>(groups[static_cast<size_t>(u)])];
  }
  return status::ok();
}

}  // namespace

void register_index_ops(op_registry& r) {
  r.add("Gather", simple_kernel(gather_run));
  r.add("GatherElements", simple_kernel(gather_elements_run));
  r.add("GatherND", simple_kernel(gather_nd_run));
  r.add("ScatterElements", checked_kernel(reduction_check, scatter_elements_run));
  r.add("Scatter", checked_kernel(reduction_check, scatter_elements_run));
  r.add("ScatterND", checked_kernel(reduction_check, scatter_nd_run));
  r.add("OneHot", simple_kernel(onehot_run));
  r.add("NonZero", simple_kernel(nonzero_run));
  r.add("Trilu", simple_kernel(trilu_run));
  r.add("ReverseSequence", simple_kernel(reverse_sequence_run));
  r.add("Compress", simple_kernel(compress_run));
  r.add("Unique", simple_kernel(unique_run));
}

}  // namespace gpugrid::cpu::tops
