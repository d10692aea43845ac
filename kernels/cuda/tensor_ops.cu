// Data-movement ops on the device. Views (Reshape & co) share bytes; everything that moves
// data goes through one strided-copy kernel (Transpose, Slice, Concat, Split, Expand), plus
// Gather, Where and Cast. Shape arguments are read on the host (registered host inputs).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>

#include "kernels/cpu/broadcast.h"
#include "kernels/cuda/cuda_common.h"

namespace gpugrid::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxRank = 8;

inline unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b > 65535 * 32 ? 65535 * 32 : (b < 1 ? 1 : b));
}

struct strided {
  int rank;
  int64_t dims[kMaxRank];
  int64_t src[kMaxRank];  // element strides into the source
  int64_t dst[kMaxRank];  // element strides into the destination
};

template <typename T>
__global__ void strided_copy_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t n, strided s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = s.rank - 1; d >= 0; --d) {
      int64_t q = rem % s.dims[d];
      rem /= s.dims[d];
      so += q * s.src[d];
      dof += q * s.dst[d];
    }
    out[dof] = in[so];
  }
}

std::vector<int64_t> contiguous_strides(const shape_t& shape) {
  std::vector<int64_t> st(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) st[i - 1] = st[i] * shape[i];
  return st;
}

// Copies elements over `dims`: dst[sum q*dst_strides] = src[sum q*src_strides]; pointers in bytes.
status strided_copy(void* dst, const void* src, size_t esize, const shape_t& dims,
                    const std::vector<int64_t>& src_strides, const std::vector<int64_t>& dst_strides, cudaStream_t s) {
  int64_t n = num_elements(dims);
  if (n == 0) return status::ok();
  if (dims.size() > kMaxRank) return internal_error("rank {} is above the CUDA limit of {}", dims.size(), kMaxRank);
  strided st{};
  st.rank = static_cast<int>(std::max<size_t>(dims.size(), 1));
  if (dims.empty()) { st.dims[0] = 1; st.src[0] = 0; st.dst[0] = 0; }
  for (size_t d = 0; d < dims.size(); ++d) { st.dims[d] = dims[d]; st.src[d] = src_strides[d]; st.dst[d] = dst_strides[d]; }
  switch (esize) {
    case 1: strided_copy_kernel<uint8_t><<<blocks_for(n), kThreads, 0, s>>>(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n, st); break;
    case 2: strided_copy_kernel<uint16_t><<<blocks_for(n), kThreads, 0, s>>>(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), n, st); break;
    case 4: strided_copy_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), n, st); break;
    case 8: strided_copy_kernel<uint64_t><<<blocks_for(n), kThreads, 0, s>>>(static_cast<uint64_t*>(dst), static_cast<const uint64_t*>(src), n, st); break;
    default: return internal_error("element size {} is not supported", esize);
  }
  return cuda_status(cudaGetLastError(), "strided copy");
}

int64_t norm_axis(int64_t axis, int64_t rank, bool* ok) {
  if (axis < 0) axis += rank;
  *ok = axis >= 0 && axis < std::max<int64_t>(rank, 1);
  return axis;
}

// ---- views ----

status make_view(kernel_context& ctx, const shape_t& shape) {
  const tensor* x = ctx.input(0);
  if (num_elements(shape) != x->numel())
    return ctx.fail("cannot view {} elements as {}", x->numel(), shape_str(shape));
  ctx.set_output(0, x->reshaped(shape));
  return status::ok();
}

status reshape_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  const tensor* s = ctx.input(1);
  if (!x || !s) return ctx.fail("needs data and shape");
  std::vector<int64_t> want = s->to_int64_vector();
  bool allowzero = ctx.op().attr_int("allowzero", 0) != 0;
  shape_t out;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    int64_t d = want[i];
    if (d == 0 && !allowzero) {
      if (i >= x->rank()) return ctx.fail("shape {} copies dim {} of a rank-{} input", shape_str(want), i, x->rank());
      d = x->dim(i);
    }
    if (d == -1) {
      if (infer >= 0) return ctx.fail("shape {} has more than one -1", shape_str(want));
      infer = static_cast<int>(i);
      d = 1;
    } else if (d < 0) {
      return ctx.fail("shape {} has a negative dim", shape_str(want));
    } else {
      known *= d;
    }
    out.push_back(d);
  }
  if (infer >= 0) {
    if (known == 0 || x->numel() % known != 0) return ctx.fail("cannot reshape {} into {}", shape_str(x->shape()), shape_str(want));
    out[infer] = x->numel() / known;
  }
  return make_view(ctx, out);
}

status flatten_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  int64_t r = static_cast<int64_t>(x->rank());
  int64_t axis = ctx.op().attr_int("axis", 1);
  if (axis < 0) axis += r;
  if (axis < 0 || axis > r) return ctx.fail("axis {} is out of range for rank {}", ctx.op().attr_int("axis", 1), r);
  int64_t a = 1;
  for (int64_t i = 0; i < axis; ++i) a *= x->dim(i);
  return make_view(ctx, {a, a == 0 ? 0 : x->numel() / std::max<int64_t>(a, 1)});
}

status squeeze_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  int64_t r = static_cast<int64_t>(x->rank());
  std::vector<bool> drop(r, false);
  if (ctx.input(1)) {
    for (int64_t a : ctx.input(1)->to_int64_vector()) {
      bool ok;
      int64_t ax = norm_axis(a, r, &ok);
      if (!ok || x->dim(ax) != 1) return ctx.fail("cannot squeeze axis {} of {}", a, shape_str(x->shape()));
      drop[ax] = true;
    }
  } else {
    for (int64_t i = 0; i < r; ++i) drop[i] = x->dim(i) == 1;
  }
  shape_t out;
  for (int64_t i = 0; i < r; ++i) if (!drop[i]) out.push_back(x->dim(i));
  return make_view(ctx, out);
}

status unsqueeze_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x || !ctx.input(1)) return ctx.fail("needs data and axes");
  auto axes = ctx.input(1)->to_int64_vector();
  int64_t r = static_cast<int64_t>(x->rank() + axes.size());
  std::vector<bool> ins(r, false);
  for (int64_t a : axes) {
    bool ok;
    int64_t ax = norm_axis(a, r, &ok);
    if (!ok || ins[ax]) return ctx.fail("bad or repeated axis {}", a);
    ins[ax] = true;
  }
  shape_t out;
  size_t k = 0;
  for (int64_t i = 0; i < r; ++i) out.push_back(ins[i] ? 1 : x->dim(k++));
  return make_view(ctx, out);
}

status identity_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  ctx.set_output(0, *x);
  return status::ok();
}

// ---- copies ----

status transpose_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  size_t r = x->rank();
  std::vector<int64_t> perm = ctx.op().attr_ints("perm");
  if (perm.empty()) for (size_t i = 0; i < r; ++i) perm.push_back(static_cast<int64_t>(r - 1 - i));
  if (perm.size() != r) return ctx.fail("perm has {} entries for rank {}", perm.size(), r);
  std::vector<bool> seen(r, false);
  for (auto& p : perm) {
    if (p < 0) p += static_cast<int64_t>(r);
    if (p < 0 || p >= static_cast<int64_t>(r) || seen[p]) return ctx.fail("perm is not a permutation");
    seen[p] = true;
  }
  shape_t out(r);
  auto in_st = contiguous_strides(x->shape());
  std::vector<int64_t> src(r);
  for (size_t i = 0; i < r; ++i) { out[i] = x->dim(perm[i]); src[i] = in_st[perm[i]]; }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, x->type(), out));
  return strided_copy(y->raw(), x->raw(), dtype_size(x->type()), out, src, contiguous_strides(out), state(ctx).stream);
}

status concat_op(kernel_context& ctx) {
  const tensor* first = nullptr;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) if (ctx.input(i)) { first = ctx.input(i); break; }
  if (!first) return ctx.fail("needs inputs");
  int64_t r = static_cast<int64_t>(first->rank());
  bool ok;
  int64_t axis = norm_axis(ctx.op().attr_int("axis", 0), r, &ok);
  if (!ok) return ctx.fail("axis {} is out of range for rank {}", ctx.op().attr_int("axis", 0), r);
  shape_t out = first->shape();
  out[axis] = 0;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const tensor* t = ctx.input(i);
    if (!t) continue;
    if (t->rank() != first->rank() || t->type() != first->type()) return ctx.fail("input {} does not match input 0", i);
    for (int64_t d = 0; d < r; ++d)
      if (d != axis && t->dim(d) != first->dim(d)) return ctx.fail("input {} has shape {}, input 0 {}", i, shape_str(t->shape()), shape_str(first->shape()));
    out[axis] += t->dim(axis);
  }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, first->type(), out));
  auto ost = contiguous_strides(out);
  size_t es = dtype_size(first->type());
  int64_t off = 0;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const tensor* t = ctx.input(i);
    if (!t || t->numel() == 0) { if (t) off += t->dim(axis); continue; }
    GG_RETURN_IF_ERROR(strided_copy(static_cast<char*>(y->raw()) + off * ost[axis] * es, t->raw(), es, t->shape(),
                                    contiguous_strides(t->shape()), ost, state(ctx).stream));
    off += t->dim(axis);
  }
  return status::ok();
}

status split_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  int64_t r = static_cast<int64_t>(x->rank());
  bool ok;
  int64_t axis = norm_axis(ctx.op().attr_int("axis", 0), r, &ok);
  if (!ok) return ctx.fail("axis is out of range");
  size_t n_out = ctx.num_outputs();
  std::vector<int64_t> sizes;
  if (ctx.input(1)) {
    sizes = ctx.input(1)->to_int64_vector();
  } else {
    int64_t parts = ctx.op().attr_int("num_outputs", static_cast<int64_t>(n_out));
    if (parts <= 0) return ctx.fail("bad number of outputs");
    int64_t chunk = (x->dim(axis) + parts - 1) / parts;
    for (int64_t i = 0; i < parts; ++i) sizes.push_back(std::max<int64_t>(0, std::min(chunk, x->dim(axis) - i * chunk)));
  }
  if (sizes.size() != n_out) return ctx.fail("{} split sizes for {} outputs", sizes.size(), n_out);
  int64_t total = 0;
  for (int64_t s : sizes) { if (s < 0) return ctx.fail("negative split size"); total += s; }
  if (total != x->dim(axis)) return ctx.fail("split sizes add up to {}, the axis has {}", total, x->dim(axis));
  auto ist = contiguous_strides(x->shape());
  size_t es = dtype_size(x->type());
  int64_t off = 0;
  for (size_t i = 0; i < n_out; ++i) {
    shape_t os = x->shape();
    os[axis] = sizes[i];
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(i, x->type(), os));
    GG_RETURN_IF_ERROR(strided_copy(y->raw(), static_cast<const char*>(x->raw()) + off * ist[axis] * es, es, os, ist,
                                    contiguous_strides(os), state(ctx).stream));
    off += sizes[i];
  }
  return status::ok();
}

status slice_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x || !ctx.input(1) || !ctx.input(2)) return ctx.fail("needs data, starts and ends");
  auto starts = ctx.input(1)->to_int64_vector();
  auto ends = ctx.input(2)->to_int64_vector();
  int64_t r = static_cast<int64_t>(x->rank());
  std::vector<int64_t> axes, steps;
  if (ctx.input(3)) axes = ctx.input(3)->to_int64_vector();
  else for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (ctx.input(4)) steps = ctx.input(4)->to_int64_vector();
  else steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return ctx.fail("starts, ends, axes and steps differ in length");
  shape_t out = x->shape();
  std::vector<int64_t> begin(r, 0), step(r, 1);
  for (size_t i = 0; i < starts.size(); ++i) {
    bool ok;
    int64_t a = norm_axis(axes[i], r, &ok);
    if (!ok) return ctx.fail("axis {} is out of range", axes[i]);
    int64_t dim = x->dim(a), s = steps[i];
    if (s == 0) return ctx.fail("step is 0");
    int64_t st = starts[i], en = ends[i];
    if (st < 0) st += dim;
    if (en < 0) en += dim;
    if (s > 0) {
      st = std::clamp<int64_t>(st, 0, dim);
      en = std::clamp<int64_t>(en, 0, dim);
      out[a] = en > st ? (en - st + s - 1) / s : 0;
    } else {
      st = std::clamp<int64_t>(st, -1, dim - 1);
      en = std::clamp<int64_t>(en, -1, dim - 1);
      out[a] = st > en ? (st - en + (-s) - 1) / (-s) : 0;
    }
    begin[a] = st;
    step[a] = s;
  }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, x->type(), out));
  if (y->numel() == 0) return status::ok();
  auto ist = contiguous_strides(x->shape());
  int64_t off = 0;
  std::vector<int64_t> src(r);
  for (int64_t d = 0; d < r; ++d) { off += begin[d] * ist[d]; src[d] = step[d] * ist[d]; }
  size_t es = dtype_size(x->type());
  return strided_copy(y->raw(), static_cast<const char*>(x->raw()) + off * static_cast<int64_t>(es), es, out, src,
                      contiguous_strides(out), state(ctx).stream);
}

status expand_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x || !ctx.input(1)) return ctx.fail("needs data and shape");
  shape_t want = ctx.input(1)->to_int64_vector(), out;
  if (!cpu::broadcast_shapes(x->shape(), want, &out))
    return ctx.fail("{} does not expand to {}", shape_str(x->shape()), shape_str(want));
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, x->type(), out));
  return strided_copy(y->raw(), x->raw(), dtype_size(x->type()), out, cpu::broadcast_strides(x->shape(), out),
                      contiguous_strides(out), state(ctx).stream);
}

// ---- gather, where, cast ----

template <typename I>
__global__ void gather_kernel(char* out, const char* in, const I* idx, int64_t outer, int64_t n_idx, int64_t axis_dim,
                              int64_t inner_bytes, int* bad) {
  int64_t total = outer * n_idx;
  for (int64_t i = blockIdx.x; i < total; i += gridDim.x) {
    int64_t o = i / n_idx, k = i % n_idx;
    int64_t j = static_cast<int64_t>(idx[k]);
    if (j < 0) j += axis_dim;
    if (j < 0 || j >= axis_dim) { if (threadIdx.x == 0) atomicExch(bad, 1); continue; }
    const char* src = in + (o * axis_dim + j) * inner_bytes;
    char* dst = out + i * inner_bytes;
    for (int64_t b = threadIdx.x; b < inner_bytes; b += blockDim.x) dst[b] = src[b];
  }
}

class gather_kernel_op final : public kernel {
 public:
  status run(kernel_context& ctx) override {
    const tensor* x = ctx.input(0);
    const tensor* idx = ctx.input(1);
    if (!x || !idx) return ctx.fail("needs data and indices");
    if (idx->type() != dtype::i64 && idx->type() != dtype::i32) return ctx.fail("indices must be int32 or int64");
    int64_t r = static_cast<int64_t>(x->rank());
    bool ok;
    int64_t axis = norm_axis(ctx.op().attr_int("axis", 0), r, &ok);
    if (!ok || r == 0) return ctx.fail("axis is out of range");
    shape_t out(x->shape().begin(), x->shape().begin() + axis);
    out.insert(out.end(), idx->shape().begin(), idx->shape().end());
    out.insert(out.end(), x->shape().begin() + axis + 1, x->shape().end());
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, x->type(), out));
    if (y->numel() == 0) return status::ok();
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x->dim(d);
    for (int64_t d = axis + 1; d < r; ++d) inner *= x->dim(d);
    run_state& rs = state(ctx);
    int* bad = rs.error_flag;  // checked when the run synchronises
    int64_t total = outer * idx->numel();
    unsigned blocks = static_cast<unsigned>(std::min<int64_t>(total, 65535 * 16));
    int64_t inner_bytes = inner * static_cast<int64_t>(dtype_size(x->type()));
    int threads = inner_bytes >= 256 ? 256 : 64;
    if (idx->type() == dtype::i64)
      gather_kernel<int64_t><<<blocks, threads, 0, rs.stream>>>(static_cast<char*>(y->raw()), static_cast<const char*>(x->raw()),
                                                                idx->data<int64_t>(), outer, idx->numel(), x->dim(axis), inner_bytes, bad);
    else
      gather_kernel<int32_t><<<blocks, threads, 0, rs.stream>>>(static_cast<char*>(y->raw()), static_cast<const char*>(x->raw()),
                                                                idx->data<int32_t>(), outer, idx->numel(), x->dim(axis), inner_bytes, bad);
    return cuda_status(cudaGetLastError(), "Gather");
  }
};

struct where_meta { int64_t v[4 * kMaxRank]; };

template <typename T>
__global__ void where_kernel_v(T* out, const bool* c, const T* a, const T* b, int64_t n, int rank, where_meta m) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, co = 0, ao = 0, bo = 0;
    for (int d = rank - 1; d >= 0; --d) {
      int64_t q = rem % m.v[d];
      rem /= m.v[d];
      co += q * m.v[kMaxRank + d];
      ao += q * m.v[2 * kMaxRank + d];
      bo += q * m.v[3 * kMaxRank + d];
    }
    out[i] = c[co] ? a[ao] : b[bo];
  }
}

status where_op(kernel_context& ctx) {
  const tensor* c = ctx.input(0);
  const tensor* a = ctx.input(1);
  const tensor* b = ctx.input(2);
  if (!c || !a || !b) return ctx.fail("needs condition, X and Y");
  if (c->type() != dtype::boolean) return ctx.fail("condition must be bool");
  if (a->type() != b->type()) return ctx.fail("X is {} but Y is {}", dtype_name(a->type()), dtype_name(b->type()));
  shape_t ab, out;
  if (!cpu::broadcast_shapes(a->shape(), b->shape(), &ab) || !cpu::broadcast_shapes(c->shape(), ab, &out))
    return ctx.fail("shapes {}, {} and {} do not broadcast", shape_str(c->shape()), shape_str(a->shape()), shape_str(b->shape()));
  if (out.size() > kMaxRank) return ctx.unsupported("rank is above the CUDA limit");
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, a->type(), out));
  int64_t n = y->numel();
  if (n == 0) return status::ok();
  where_meta m{};
  int rank = static_cast<int>(std::max<size_t>(out.size(), 1));
  auto cs = cpu::broadcast_strides(c->shape(), out), as = cpu::broadcast_strides(a->shape(), out),
       bs = cpu::broadcast_strides(b->shape(), out);
  if (out.empty()) m.v[0] = 1;
  for (size_t d = 0; d < out.size(); ++d) {
    m.v[d] = out[d]; m.v[kMaxRank + d] = cs[d]; m.v[2 * kMaxRank + d] = as[d]; m.v[3 * kMaxRank + d] = bs[d];
  }
  cudaStream_t s = state(ctx).stream;
  switch (dtype_size(a->type())) {
    case 1: where_kernel_v<uint8_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<uint8_t>(), c->data<bool>(), a->data<uint8_t>(), b->data<uint8_t>(), n, rank, m); break;
    case 2: where_kernel_v<uint16_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<uint16_t>(), c->data<bool>(), a->data<uint16_t>(), b->data<uint16_t>(), n, rank, m); break;
    case 4: where_kernel_v<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<uint32_t>(), c->data<bool>(), a->data<uint32_t>(), b->data<uint32_t>(), n, rank, m); break;
    case 8: where_kernel_v<uint64_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<uint64_t>(), c->data<bool>(), a->data<uint64_t>(), b->data<uint64_t>(), n, rank, m); break;
    default: return ctx.fail("unsupported type {}", dtype_name(a->type()));
  }
  return cuda_status(cudaGetLastError(), "Where");
}

template <typename From, typename To>
__global__ void cast_kernel(To* out, const From* in, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<To, bool>) out[i] = in[i] != From(0);
    else out[i] = static_cast<To>(in[i]);
  }
}

template <typename From>
status cast_from(kernel_context& ctx, const tensor* x, tensor* y) {
  int64_t n = x->numel();
  cudaStream_t s = state(ctx).stream;
  const From* in = x->data<From>();
  switch (y->type()) {
    case dtype::f32: cast_kernel<From, float><<<blocks_for(n), kThreads, 0, s>>>(y->data<float>(), in, n); break;
    case dtype::f64: cast_kernel<From, double><<<blocks_for(n), kThreads, 0, s>>>(y->data<double>(), in, n); break;
    case dtype::i64: cast_kernel<From, int64_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<int64_t>(), in, n); break;
    case dtype::i32: cast_kernel<From, int32_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<int32_t>(), in, n); break;
    case dtype::u8: cast_kernel<From, uint8_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<uint8_t>(), in, n); break;
    case dtype::i8: cast_kernel<From, int8_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<int8_t>(), in, n); break;
    case dtype::boolean: cast_kernel<From, bool><<<blocks_for(n), kThreads, 0, s>>>(y->data<bool>(), in, n); break;
    default: return ctx.unsupported("cast to {} is not supported on CUDA", dtype_name(y->type()));
  }
  return cuda_status(cudaGetLastError(), "Cast");
}

status cast_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  dtype to;
  if (!dtype_from_onnx(static_cast<int32_t>(ctx.op().attr_int("to", 0)), &to)) return ctx.fail("bad 'to' type");
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, to, x->shape()));
  if (y->numel() == 0) return status::ok();
  if (to == x->type()) {
    GG_CUDA(cudaMemcpyAsync(y->raw(), x->raw(), x->bytes(), cudaMemcpyDeviceToDevice, state(ctx).stream));
    return status::ok();
  }
  switch (x->type()) {
    case dtype::f32: return cast_from<float>(ctx, x, y);
    case dtype::f64: return cast_from<double>(ctx, x, y);
    case dtype::i64: return cast_from<int64_t>(ctx, x, y);
    case dtype::i32: return cast_from<int32_t>(ctx, x, y);
    case dtype::u8: return cast_from<uint8_t>(ctx, x, y);
    case dtype::i8: return cast_from<int8_t>(ctx, x, y);
    case dtype::boolean: return cast_from<bool>(ctx, x, y);
    default: return ctx.unsupported("cast from {} is not supported on CUDA", dtype_name(x->type()));
  }
}

}  // namespace

void register_tensor_ops(op_registry& r) {
  r.add("Reshape", simple_kernel(reshape_op), "", {1});
  r.add("Flatten", simple_kernel(flatten_op));
  r.add("Squeeze", simple_kernel(squeeze_op), "", {1});
  r.add("Unsqueeze", simple_kernel(unsqueeze_op), "", {1});
  r.add("Identity", simple_kernel(identity_op));
  r.add("Transpose", simple_kernel(transpose_op));
  r.add("Concat", simple_kernel(concat_op));
  r.add("Split", simple_kernel(split_op), "", {1});
  r.add("Slice", simple_kernel(slice_op), "", {1, 2, 3, 4});
  r.add("Expand", simple_kernel(expand_op), "", {1});
  r.add("Gather", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<gather_kernel_op>());
  });
  r.add("Where", simple_kernel(where_op));
  r.add("Cast", simple_kernel(cast_op));
}

}  // namespace gpugrid::cuda
