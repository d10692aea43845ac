// CPU copying tensor ops: Transpose, Concat, Split, Slice, Expand, Tile, Pad.
//
// All are dtype-generic: they move elements by size (memcpy for contiguous runs, 1/2/4/8-byte
// loads otherwise) and never look at values.
#include <algorithm>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/tensor_ops_internal.h"

namespace gpugrid::cpu::tops {

namespace {

// ---------------------------------------------------------------------------------------------
// Transpose

#if defined(__AVX2__)
// out row k (k < 8) = column k of the 8x8 block whose rows are in + r * in_col (4-byte elements,
// moved as bits: no arithmetic touches them).
inline void transpose8x8_32(const uint32_t* in, int64_t in_col, uint32_t* out, int64_t out_row) {
  const float* p = reinterpret_cast<const float*>(in);
  float* o = reinterpret_cast<float*>(out);
  __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + in_col), r2 = _mm256_loadu_ps(p + 2 * in_col),
         r3 = _mm256_loadu_ps(p + 3 * in_col), r4 = _mm256_loadu_ps(p + 4 * in_col),
         r5 = _mm256_loadu_ps(p + 5 * in_col), r6 = _mm256_loadu_ps(p + 6 * in_col),
         r7 = _mm256_loadu_ps(p + 7 * in_col);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
         s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
         s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
         s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(o, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(o + out_row, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(o + 2 * out_row, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(o + 3 * out_row, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(o + 4 * out_row, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(o + 5 * out_row, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(o + 6 * out_row, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(o + 7 * out_row, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

// Tiled copy of one 2-D plane: out[i * out_row + j] = in[i + j * in_col] for j < C, restricted
// to rows i in [i0, i1).
template <typename U>
void transpose_plane(const U* in, U* out, int64_t i0, int64_t i1, int64_t C, int64_t in_col, int64_t out_row) {
  constexpr int64_t T = 32;
  for (int64_t j0 = 0; j0 < C; j0 += T) {
    const int64_t j1 = std::min(C, j0 + T);
    int64_t i = i0;
#if defined(__AVX2__)
    if constexpr (sizeof(U) == 4) {
      const int64_t i8 = i0 + (i1 - i0) / 8 * 8;
      int64_t j = j0;
      for (; j + 8 <= j1; j += 8)
        for (int64_t ii = i0; ii < i8; ii += 8)
          transpose8x8_32(in + j * in_col + ii, in_col, out + ii * out_row + j, out_row);
      for (int64_t ii = i0; ii < i8; ++ii)
        for (int64_t jj = j; jj < j1; ++jj) out[ii * out_row + jj] = in[ii + jj * in_col];
      i = i8;
    }
#endif
    for (; i < i1; ++i) {
      U* o = out + i * out_row;
      const U* p = in + i;
      for (int64_t j = j0; j < j1; ++j) o[j] = p[j * in_col];
    }
  }
}

status transpose_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  const size_t r = x->rank();
  std::vector<int64_t> perm = ctx.op().attr_ints("perm");
  if (!ctx.op().has_attr("perm")) {
    perm.resize(r);
    for (size_t i = 0; i < r; ++i) perm[i] = static_cast<int64_t>(r - 1 - i);
  }
  if (perm.size() != r)
    return ctx.fail("perm has {} entries but the input {} has rank {}", perm.size(), shape_str(x->shape()), r);
  std::vector<bool> seen(r, false);
  for (int64_t& p : perm) {
    if (p < -static_cast<int64_t>(r) || p >= static_cast<int64_t>(r))
      return ctx.fail("perm entry {} is out of range for rank {}", p, r);
    if (p < 0) p += static_cast<int64_t>(r);
    if (seen[static_cast<size_t>(p)]) return ctx.fail("perm repeats axis {}", p);
    seen[static_cast<size_t>(p)] = true;
  }
  shape_t out_shape(r);
  for (size_t i = 0; i < r; ++i) out_shape[i] = x->dim(static_cast<size_t>(perm[i]));

  // Drop size-1 dims, then merge runs of axes that stay adjacent and in order.
  std::vector<int64_t> keep(r, -1);
  shape_t dims;
  for (size_t i = 0; i < r; ++i)
    if (x->dim(i) != 1) {
      keep[i] = static_cast<int64_t>(dims.size());
      dims.push_back(x->dim(i));
    }
  std::vector<int64_t> p1;
  for (int64_t p : perm)
    if (keep[static_cast<size_t>(p)] >= 0) p1.push_back(keep[static_cast<size_t>(p)]);
  std::vector<std::vector<int64_t>> groups;  // in output order; each a run of input axes
  for (int64_t p : p1) {
    if (!groups.empty() && groups.back().back() + 1 == p) groups.back().push_back(p);
    else groups.push_back({p});
  }
  const size_t m = groups.size();
  if (m <= 1) {  // the data order does not change
    ctx.set_output(0, x->reshaped(std::move(out_shape)));
    return status::ok();
  }
  // New input axes: groups sorted by their first input axis.
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return groups[a][0] < groups[b][0]; });
  std::vector<int64_t> new_axis(m);
  shape_t in_dims(m);
  for (size_t k = 0; k < m; ++k) {
    new_axis[order[k]] = static_cast<int64_t>(k);
    int64_t prod = 1;
    for (int64_t a : groups[order[k]]) prod *= dims[static_cast<size_t>(a)];
    in_dims[k] = prod;
  }
  std::vector<int64_t> P(m);
  for (size_t j = 0; j < m; ++j) P[j] = new_axis[j];

  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, x->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  const size_t es = dtype_size(x->type());
  const auto in_strides = contiguous_strides(in_dims);
  shape_t o_dims(m);
  std::vector<int64_t> o_in_strides(m);
  for (size_t j = 0; j < m; ++j) {
    o_dims[j] = in_dims[static_cast<size_t>(P[j])];
    o_in_strides[j] = in_strides[static_cast<size_t>(P[j])];
  }
  const auto* src = static_cast<const std::byte*>(x->raw());
  auto* dst = static_cast<std::byte*>(out->raw());
  if (P[m - 1] == static_cast<int64_t>(m - 1)) {  // the innermost block stays contiguous
    strided_copy(ctx, src, dst, es, o_dims, o_in_strides);
    return status::ok();
  }

  // Tiled 2-D transposes: the plane is (output axis q, which reads the input's contiguous last
  // axis) x (output's last axis, which reads input stride sa); other axes are outer loops.
  const auto o_strides = contiguous_strides(o_dims);
  size_t q = 0;
  for (size_t j = 0; j < m; ++j)
    if (P[j] == static_cast<int64_t>(m - 1)) q = j;
  const int64_t R = o_dims[q], C = o_dims[m - 1], sa = o_in_strides[m - 1], osq = o_strides[q];
  std::vector<int64_t> od, ois, oos;  // outer dims with input / output strides
  for (size_t j = 0; j + 1 < m; ++j) {
    if (j == q) continue;
    od.push_back(o_dims[j]);
    ois.push_back(o_in_strides[j]);
    oos.push_back(o_strides[j]);
  }
  int64_t outer = 1;
  for (int64_t d : od) outer *= d;
  constexpr int64_t tile = 32;
  const int64_t tiles_r = (R + tile - 1) / tile;
  const int64_t items = outer * tiles_r;
  dispatch_size(es, [&](auto tag) {
    using U = decltype(tag);
    const U* in = reinterpret_cast<const U*>(src);
    U* o = reinterpret_cast<U*>(dst);
    parallel(ctx, items, grain_for(tile * C * static_cast<int64_t>(sizeof(U)), 32 * 1024),
             [&](int64_t b, int64_t e) {
               for (int64_t it = b; it < e; ++it) {
                 int64_t oi = it / tiles_r, t = it % tiles_r;
                 int64_t in_base = 0, out_base = 0;
                 for (size_t k = od.size(); k-- > 0;) {
                   int64_t c = oi % od[k];
                   oi /= od[k];
                   in_base += c * ois[k];
                   out_base += c * oos[k];
                 }
                 transpose_plane<U>(in + in_base, o + out_base, t * tile, std::min(R, (t + 1) * tile), C, sa, osq);
               }
             });
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Concat / Split

// Concatenations of at least this many bytes (and at most 64 outer rows) copy in pieces of
// kConcatPiece bytes spread over the engine's threads.
constexpr int64_t kConcatParallelBytes = 256 * 1024, kConcatPiece = 64 * 1024;

status concat_run(kernel_context& ctx) {
  const size_t n = ctx.num_inputs();
  if (n == 0) return ctx.fail("needs at least one input");
  std::vector<const tensor*> xs(n);
  for (size_t i = 0; i < n; ++i) GG_RETURN_IF_ERROR(require_input(ctx, i, &xs[i]));
  const tensor& x0 = *xs[0];
  const int64_t r = static_cast<int64_t>(x0.rank());
  if (r == 0) return ctx.fail("cannot concatenate scalars");
  if (!ctx.op().has_attr("axis")) return ctx.fail("missing required attribute axis");
  int64_t axis;
  GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 0), r, "axis", &axis));
  const size_t a = static_cast<size_t>(axis);
  shape_t out_shape = x0.shape();
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const tensor& x = *xs[i];
    if (x.type() != x0.type())
      return ctx.fail("input {} has type {} but input 0 has {}", i, dtype_name(x.type()), dtype_name(x0.type()));
    if (static_cast<int64_t>(x.rank()) != r)
      return ctx.fail("input {} has shape {} but input 0 has {}", i, shape_str(x.shape()), shape_str(x0.shape()));
    for (size_t d = 0; d < x.rank(); ++d)
      if (d != a && x.dim(d) != x0.dim(d))
        return ctx.fail("input {} has shape {}, which does not match input 0's {} off axis {}", i,
                        shape_str(x.shape()), shape_str(x0.shape()), axis);
    if (x.dim(a) > std::numeric_limits<int64_t>::max() - total) return ctx.fail("concatenated size overflows");
    total += x.dim(a);
  }
  out_shape[a] = total;
  if (n == 1) {
    ctx.set_output(0, x0);
    return status::ok();
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, x0.type(), out_shape));
  if (out->numel() == 0) return status::ok();
  const int64_t es = static_cast<int64_t>(dtype_size(x0.type()));
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < a; ++d) outer *= out_shape[d];
  for (size_t d = a + 1; d < out_shape.size(); ++d) inner *= out_shape[d];
  const int64_t out_row = total * inner * es;
  auto* dst = static_cast<std::byte*>(out->raw());
  const int64_t out_bytes = out_row * outer;
  if (out_bytes >= kConcatParallelBytes && ctx.pool().size() > 1 && outer <= 64) {
    // One loop over every input's rows, cut into pieces of at most kConcatPiece bytes (the
    // inputs one after the other, each copied whole when small, left most threads idle:
    // SqueezeNet's 55x55 concatenations are two 774 KB copies).
    struct piece {
      std::byte* d;
      const std::byte* s;
      int64_t bytes;
    };
    std::vector<piece> pieces;
    int64_t off = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t chunk = xs[i]->dim(a) * inner * es;
      const auto* src = static_cast<const std::byte*>(xs[i]->raw());
      if (outer == 1 && src == dst + off) {  // written in place (the memory plan's in-place Concat)
        off += chunk;
        continue;
      }
      for (int64_t r = 0; r < outer; ++r)
        for (int64_t b = 0; b < chunk; b += kConcatPiece)
          pieces.push_back({dst + r * out_row + off + b, src + r * chunk + b, std::min(kConcatPiece, chunk - b)});
      off += chunk;
    }
    ctx.pool().parallel_for(static_cast<int64_t>(pieces.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        std::memcpy(pieces[static_cast<size_t>(p)].d, pieces[static_cast<size_t>(p)].s,
                    static_cast<size_t>(pieces[static_cast<size_t>(p)].bytes));
    });
    return status::ok();
  }
  int64_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t chunk = xs[i]->dim(a) * inner * es;
    if (chunk == 0) continue;
    const auto* src = static_cast<const std::byte*>(xs[i]->raw());
    if (!(outer == 1 && src == dst + off)) copy_rows(ctx, dst + off, out_row, src, chunk, outer, chunk);
    off += chunk;
  }
  return status::ok();
}

status split_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 2));
  const node& nd = ctx.op();
  const tensor *x, *split_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(optional_input(ctx, 1, &split_in));
  const int64_t r = static_cast<int64_t>(x->rank());
  if (r == 0) return ctx.fail("cannot split a scalar");
  int64_t axis;
  GG_RETURN_IF_ERROR(normalize_axis(ctx, nd.attr_int("axis", 0), r, "axis", &axis));
  const size_t a = static_cast<size_t>(axis);
  const int64_t n_out = static_cast<int64_t>(ctx.num_outputs());
  const int64_t dim = x->dim(a);
  std::vector<int64_t> sizes;
  if (split_in && split_in->numel() > 0) {
    GG_RETURN_IF_ERROR(read_ints(ctx, *split_in, "split", &sizes));
    if (static_cast<int64_t>(sizes.size()) != n_out)
      return ctx.fail("split has {} entries but the node has {} outputs", sizes.size(), n_out);
    int64_t sum = 0;
    for (int64_t s : sizes) {
      if (s < 0) return ctx.fail("split {} has a negative size", shape_str(sizes));
      if (s > dim - sum) return ctx.fail("split {} does not add up to the axis size {}", shape_str(sizes), dim);
      sum += s;
    }
    if (sum != dim) return ctx.fail("split {} does not add up to the axis size {}", shape_str(sizes), dim);
  } else if (nd.opset >= 18 && nd.has_attr("num_outputs")) {
    const int64_t k = nd.attr_int("num_outputs", 0);
    if (k != n_out) return ctx.fail("num_outputs is {} but the node has {} outputs", k, n_out);
    if (k <= 0) return ctx.fail("num_outputs must be positive");
    const int64_t chunk = dim / k + (dim % k != 0 ? 1 : 0);
    int64_t left = dim;
    for (int64_t i = 0; i < k; ++i) {
      sizes.push_back(std::min(chunk, left));
      left -= sizes.back();
    }
  } else {
    if (n_out <= 0) return ctx.fail("has no outputs");
    if (dim % n_out != 0)
      return ctx.fail("axis {} of size {} cannot be split evenly into {} outputs", axis, dim, n_out);
    sizes.assign(static_cast<size_t>(n_out), dim / n_out);
  }
  const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < a; ++d) outer *= x->dim(d);
  for (size_t d = a + 1; d < x->rank(); ++d) inner *= x->dim(d);
  const int64_t in_row = dim * inner * es;
  const auto* src = static_cast<const std::byte*>(x->raw());
  int64_t off = 0;
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t s = sizes[static_cast<size_t>(i)];
    const int64_t chunk = s * inner * es;
    if (ctx.output_wanted(static_cast<size_t>(i))) {
      shape_t os = x->shape();
      os[a] = s;
      if (n_out == 1) {
        ctx.set_output(0, *x);
      } else {
        GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(static_cast<size_t>(i), x->type(), os));
        if (out->numel() > 0)
          copy_rows(ctx, static_cast<std::byte*>(out->raw()), chunk, src + off, in_row, outer, chunk);
      }
    }
    off += chunk;
  }
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Slice

status slice_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 3, 5));
  const tensor *x, *starts_in, *ends_in, *axes_in, *steps_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &starts_in));
  GG_RETURN_IF_ERROR(require_input(ctx, 2, &ends_in));
  GG_RETURN_IF_ERROR(optional_input(ctx, 3, &axes_in));
  GG_RETURN_IF_ERROR(optional_input(ctx, 4, &steps_in));
  std::vector<int64_t> starts, ends, axes, steps;
  GG_RETURN_IF_ERROR(read_ints(ctx, *starts_in, "starts", &starts));
  GG_RETURN_IF_ERROR(read_ints(ctx, *ends_in, "ends", &ends));
  if (starts.size() != ends.size())
    return ctx.fail("starts has {} entries but ends has {}", starts.size(), ends.size());
  const int64_t r = static_cast<int64_t>(x->rank());
  if (axes_in) {
    GG_RETURN_IF_ERROR(read_ints(ctx, *axes_in, "axes", &axes));
    if (axes.size() != starts.size())
      return ctx.fail("axes has {} entries but starts has {}", axes.size(), starts.size());
  } else {
    if (static_cast<int64_t>(starts.size()) > r)
      return ctx.fail("starts has {} entries but the input has rank {}", starts.size(), r);
    axes.resize(starts.size());
    std::iota(axes.begin(), axes.end(), int64_t{0});
  }
  GG_RETURN_IF_ERROR(normalize_axes(ctx, &axes, r, "axes"));
  if (steps_in) {
    GG_RETURN_IF_ERROR(read_ints(ctx, *steps_in, "steps", &steps));
    if (steps.size() != starts.size())
      return ctx.fail("steps has {} entries but starts has {}", steps.size(), starts.size());
  } else {
    steps.assign(starts.size(), 1);
  }
  shape_t out_shape = x->shape();
  std::vector<int64_t> start_of(static_cast<size_t>(r), 0), step_of(static_cast<size_t>(r), 1);
  for (size_t i = 0; i < axes.size(); ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    const int64_t dim = x->dim(a);
    int64_t step = steps[i];
    if (step == 0) return ctx.fail("steps must not be zero (axis {})", a);
    if (step == std::numeric_limits<int64_t>::min()) step = -std::numeric_limits<int64_t>::max();
    int64_t s = starts[i], e = ends[i];
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    int64_t len;
    if (dim == 0) {
      len = 0;
      s = 0;
    } else if (step > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      len = e > s ? (e - s - 1) / step + 1 : 0;
    } else {
      s = std::clamp<int64_t>(s, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      len = s > e ? (s - e - 1) / (-step) + 1 : 0;
    }
    out_shape[a] = len;
    start_of[a] = s;
    step_of[a] = len > 1 ? step : 1;
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, x->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  const auto in_strides = contiguous_strides(x->shape());
  const int64_t es = static_cast<int64_t>(dtype_size(x->type()));
  int64_t base = 0;
  std::vector<int64_t> strides(static_cast<size_t>(r));
  for (size_t d = 0; d < static_cast<size_t>(r); ++d) {
    base += start_of[d] * in_strides[d];
    strides[d] = step_of[d] * in_strides[d];
  }
  strided_copy(ctx, static_cast<const std::byte*>(x->raw()) + base * es, static_cast<std::byte*>(out->raw()),
               static_cast<size_t>(es), out_shape, strides);
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Expand / Tile

status expand_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *shape_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &shape_in));
  std::vector<int64_t> dims;
  GG_RETURN_IF_ERROR(read_ints(ctx, *shape_in, "shape", &dims));
  for (int64_t d : dims)
    if (d < 0) return ctx.fail("shape {} has a negative dim", shape_str(dims));
  shape_t out_shape;
  if (!broadcast_shapes(x->shape(), dims, &out_shape))
    return ctx.fail("cannot expand {} to {}", shape_str(x->shape()), shape_str(dims));
  if (out_shape == x->shape()) {
    ctx.set_output(0, *x);
    return status::ok();
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  strided_copy(ctx, static_cast<const std::byte*>(x->raw()), static_cast<std::byte*>(out->raw()),
               dtype_size(x->type()), out_shape, broadcast_strides(x->shape(), out_shape));
  return status::ok();
}

status tile_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *rep_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &rep_in));
  std::vector<int64_t> reps;
  GG_RETURN_IF_ERROR(read_ints(ctx, *rep_in, "repeats", &reps));
  const size_t r = x->rank();
  if (reps.size() != r)
    return ctx.fail("repeats has {} entries but the input {} has rank {}", reps.size(), shape_str(x->shape()), r);
  shape_t out_shape(r), ext_shape, ext_strides;
  const auto in_strides = contiguous_strides(x->shape());
  for (size_t d = 0; d < r; ++d) {
    const int64_t rep = reps[d], dim = x->dim(d);
    if (rep < 0) return ctx.fail("repeats {} has a negative entry", shape_str(reps));
    if (dim != 0 && rep > std::numeric_limits<int64_t>::max() / dim)
      return ctx.fail("tiling {} by {} overflows", shape_str(x->shape()), shape_str(reps));
    out_shape[d] = dim * rep;
    ext_shape.push_back(rep);
    ext_strides.push_back(0);
    ext_shape.push_back(dim);
    ext_strides.push_back(in_strides[d]);
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
  if (out->numel() == 0) return status::ok();
  strided_copy(ctx, static_cast<const std::byte*>(x->raw()), static_cast<std::byte*>(out->raw()),
               dtype_size(x->type()), ext_shape, ext_strides);
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Pad

enum class pad_mode { constant, reflect, edge, wrap };

bool parse_pad_mode(const std::string& s, pad_mode* m) {
  if (s == "constant") *m = pad_mode::constant;
  else if (s == "reflect") *m = pad_mode::reflect;
  else if (s == "edge") *m = pad_mode::edge;
  else if (s == "wrap") *m = pad_mode::wrap;
  else return false;
  return true;
}

status pad_check(const node& n) {
  pad_mode m;
  std::string s = n.attr_string("mode", "constant");
  if (!parse_pad_mode(s, &m)) return invalid_input("{}: unsupported mode '{}'", n.describe(), s);
  return status::ok();
}

// The input coordinate output coordinate o reads along one axis, or -1 for the constant.
int64_t pad_source(pad_mode mode, int64_t o, int64_t before, int64_t dim) {
  const int64_t i = o - before;
  if (i >= 0 && i < dim) return i;
  switch (mode) {
    case pad_mode::constant: return -1;
    case pad_mode::edge: return i < 0 ? 0 : dim - 1;
    case pad_mode::wrap: return ((i % dim) + dim) % dim;
    case pad_mode::reflect: {
      if (dim == 1) return 0;
      const int64_t period = 2 * (dim - 1);
      int64_t k = ((i % period) + period) % period;
      return k < dim ? k : period - k;
    }
  }
  return -1;
}

status pad_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 4));
  const tensor *x, *pads_in, *value_in, *axes_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &pads_in));
  GG_RETURN_IF_ERROR(optional_input(ctx, 2, &value_in));
  GG_RETURN_IF_ERROR(optional_input(ctx, 3, &axes_in));
  pad_mode mode = pad_mode::constant;
  if (!parse_pad_mode(ctx.op().attr_string("mode", "constant"), &mode))
    return ctx.fail("unsupported mode '{}'", ctx.op().attr_string("mode", "constant"));
  const int64_t r = static_cast<int64_t>(x->rank());
  std::vector<int64_t> pads, axes;
  GG_RETURN_IF_ERROR(read_ints(ctx, *pads_in, "pads", &pads));
  if (axes_in) {
    GG_RETURN_IF_ERROR(read_ints(ctx, *axes_in, "axes", &axes));
    GG_RETURN_IF_ERROR(normalize_axes(ctx, &axes, r, "axes"));
  } else {
    axes.resize(static_cast<size_t>(r));
    std::iota(axes.begin(), axes.end(), int64_t{0});
  }
  if (pads.size() != 2 * axes.size())
    return ctx.fail("pads has {} entries; expected {} (2 per padded axis)", pads.size(), 2 * axes.size());
  std::vector<int64_t> before(static_cast<size_t>(r), 0), after(static_cast<size_t>(r), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    before[static_cast<size_t>(axes[i])] = pads[i];
    after[static_cast<size_t>(axes[i])] = pads[i + axes.size()];
  }
  constexpr int64_t lim = int64_t{1} << 40;
  shape_t out_shape(static_cast<size_t>(r));
  for (size_t d = 0; d < static_cast<size_t>(r); ++d) {
    if (before[d] < -lim || before[d] > lim || after[d] < -lim || after[d] > lim)
      return ctx.fail("pads {} are out of range", shape_str(pads));
    out_shape[d] = x->dim(d) + before[d] + after[d];
    if (out_shape[d] < 0)
      return ctx.fail("pads {} make axis {} of {} negative", shape_str(pads), d, shape_str(x->shape()));
  }
  const size_t es = dtype_size(x->type());
  std::byte value[8] = {};
  if (value_in && value_in->numel() > 0 && mode == pad_mode::constant) {
    if (value_in->numel() != 1) return ctx.fail("constant_value must be a scalar");
    if (value_in->type() == x->type()) {
      std::memcpy(value, value_in->raw(), es);
    } else {
      // Old models (Pad-2 canonicalized) carry a float value for any float input type.
      dispatch_all(x->type(), [&](auto tag) {
        using T = decltype(tag);
        T v;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) v = static_cast<T>(value_in->as_int64(0));
        else v = static_cast<T>(static_cast<float>(value_in->as_double(0)));
        std::memcpy(value, &v, sizeof(T));
      });
    }
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, x->type(), out_shape));
  const int64_t total = out->numel();
  if (total == 0) return status::ok();
  auto* dst = static_cast<std::byte*>(out->raw());
  const auto* src = static_cast<const std::byte*>(x->raw());
  if (r == 0) {
    std::memcpy(dst, src, es);
    return status::ok();
  }
  for (size_t d = 0; d < static_cast<size_t>(r); ++d)
    if (x->dim(d) == 0 && mode != pad_mode::constant)
      return ctx.fail("cannot pad an empty axis {} of {} in {} mode", d, shape_str(x->shape()),
                      ctx.op().attr_string("mode", "constant"));
  // Per-axis source maps (each output dim is bounded: the output was allocated).
  std::vector<std::vector<int64_t>> maps(static_cast<size_t>(r));
  for (size_t d = 0; d < static_cast<size_t>(r); ++d) {
    maps[d].resize(static_cast<size_t>(out_shape[d]));
    for (int64_t o = 0; o < out_shape[d]; ++o)
      maps[d][static_cast<size_t>(o)] = pad_source(mode, o, before[d], x->dim(d));
  }
  const auto in_strides = contiguous_strides(x->shape());
  const size_t last = static_cast<size_t>(r - 1);
  const int64_t W = out_shape[last], in_w = x->dim(last), pb = before[last];
  const int64_t lo = std::clamp<int64_t>(pb, 0, W), hi = std::clamp<int64_t>(pb + in_w, lo, W);
  const int64_t rows = total / W;
  const int64_t row_bytes = W * static_cast<int64_t>(es);
  const std::vector<int64_t>& lmap = maps[last];
  parallel(ctx, rows, grain_for(row_bytes, 32 * 1024), [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(last, 0);
    int64_t rem = b;
    for (size_t k = last; k-- > 0;) {
      idx[k] = rem % out_shape[k];
      rem /= out_shape[k];
    }
    for (int64_t row = b; row < e; ++row) {
      std::byte* o = dst + row * row_bytes;
      int64_t off = 0;
      bool inside = true;
      for (size_t k = 0; k < last; ++k) {
        int64_t s = maps[k][static_cast<size_t>(idx[k])];
        if (s < 0) { inside = false; break; }
        off += s * in_strides[k];
      }
      if (!inside) {
        fill_elements(o, W, value, es);
      } else {
        const std::byte* in = src + off * static_cast<int64_t>(es);
        if (hi > lo) std::memcpy(o + lo * static_cast<int64_t>(es), in + (lo - pb) * static_cast<int64_t>(es),
                                 static_cast<size_t>((hi - lo) * static_cast<int64_t>(es)));
        auto edge = [&](int64_t j0, int64_t j1) {
          for (int64_t j = j0; j < j1; ++j) {
            int64_t s = lmap[static_cast<size_t>(j)];
            std::memcpy(o + j * static_cast<int64_t>(es), s < 0 ? value : in + s * static_cast<int64_t>(es), es);
          }
        };
        edge(0, lo);
        edge(hi, W);
      }
      for (size_t k = last; k-- > 0;) {
        if (++idx[k] < out_shape[k]) break;
        idx[k] = 0;
      }
    }
  });
  return status::ok();
}

}  // namespace

void register_copy_ops(op_registry& r) {
  r.add("Transpose", simple_kernel(transpose_run));
  r.add("Concat", simple_kernel(concat_run));
  r.add("Split", simple_kernel(split_run));
  r.add("Slice", simple_kernel(slice_run));
  r.add("Expand", simple_kernel(expand_run));
  r.add("Tile", simple_kernel(tile_run));
  r.add("Pad", checked_kernel(pad_check, pad_run));
}

}  // namespace gpugrid::cpu::tops
