// Internals shared by the elementwise kernel files (elementwise*.cc); not for other kernels.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/kernel.h"
#include "kernels/cpu/broadcast.h"

namespace gpugrid::cpu::ew {

// Checks that the node has between lo and hi input slots and that the first `required` are
// present; on failure returns a status naming the op.
status check_inputs(const kernel_context& ctx, size_t lo, size_t hi, size_t required);

// Elements per parallel task: cheap ops (add, compare) and costly ones (exp, erf, libm calls).
constexpr int64_t grain_cheap = 16384;
constexpr int64_t grain_costly = 4096;

// Runs body(begin, end) over [0, n): inline when small, else on the context's pool.
// The body is instantiated once (as the std::function's target) whichever way it runs.
template <typename F>
void parallel(kernel_context& ctx, int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  const std::function<void(int64_t, int64_t)> fn = [&body](int64_t b, int64_t e) { body(b, e); };
  if (n <= grain || ctx.pool().size() <= 1) fn(0, n);
  else ctx.pool().parallel_for(n, grain, fn);
}

// ---- integer arithmetic without undefined behaviour (wraps like NumPy) ----

// The unsigned type arithmetic on T happens in: at least 32 bits so that promotions never
// turn an unsigned multiply into a signed overflow.
template <typename T>
using wide_unsigned = std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>;

template <typename T> inline T wrap_add(T a, T b) {
  using W = wide_unsigned<T>;
  return static_cast<T>(static_cast<W>(a) + static_cast<W>(b));
}
template <typename T> inline T wrap_sub(T a, T b) {
  using W = wide_unsigned<T>;
  return static_cast<T>(static_cast<W>(a) - static_cast<W>(b));
}
template <typename T> inline T wrap_mul(T a, T b) {
  using W = wide_unsigned<T>;
  return static_cast<T>(static_cast<W>(a) * static_cast<W>(b));
}
template <typename T> inline T wrap_neg(T a) {
  using W = wide_unsigned<T>;
  return static_cast<T>(W{0} - static_cast<W>(a));
}

// Float -> integer conversion that truncates toward zero and never invokes UB. Values the
// target cannot hold (and NaN) convert the way x86 and therefore NumPy / onnxruntime do: through
// int32 for 32-bit-and-narrower signed and 8/16-bit targets (out of range -> INT32_MIN, then
// wrapped), through int64 for int64/uint32/uint64 (out of range -> INT64_MIN, then wrapped).
// E.g. 300.0 -> int8 44, -1.0 -> uint8 255, NaN -> int32 INT32_MIN.
template <typename I, typename F>
inline I float_to_int(F v) {
  static_assert(std::is_integral_v<I> && std::is_floating_point_v<F>);
  constexpr F two63 = F(9223372036854775808.0);
  constexpr F two31 = F(2147483648.0);
  if constexpr (sizeof(I) == 8 || std::is_same_v<I, uint32_t>) {
    if constexpr (std::is_same_v<I, uint64_t>) {
      if (v >= two63 && v < two63 * F(2)) return static_cast<uint64_t>(v);
    }
    if (v >= -two63 && v < two63) return static_cast<I>(static_cast<int64_t>(v));
    return static_cast<I>(std::numeric_limits<int64_t>::min());
  } else {
    if (v >= -two31 && v < two31) return static_cast<I>(static_cast<int32_t>(v));
    return static_cast<I>(std::numeric_limits<int32_t>::min());
  }
}

// Converts any element type to any other: what Cast does per element, except that halves go
// through float and doubles to half/bfloat16 round once (see elementwise_cast.cc).
template <typename To, typename From>
inline To convert_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    if constexpr (std::is_same_v<From, half> || std::is_same_v<From, bfloat16>) return static_cast<float>(v) != 0.0f;
    else return v != From(0);
  } else if constexpr (std::is_same_v<From, half> || std::is_same_v<From, bfloat16>) {
    return convert_value<To, float>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, half> || std::is_same_v<To, bfloat16>) {
    return To(static_cast<float>(v));
  } else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<From>) {
    return float_to_int<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

// Bulk conversion between any two supported dtypes (not string). n elements, may run on ctx's
// pool when given. src and dst must not overlap unless they are the same pointer and type.
void convert_elements(const void* src, dtype st, void* dst, dtype dt, int64_t n,
                      kernel_context* ctx = nullptr);
// A float32 copy of a (float16 / bfloat16 / any) tensor.
tensor to_f32(const tensor& t, kernel_context* ctx = nullptr);

// ---- broadcasting plans ----

constexpr size_t max_plan_inputs = 3;

// The output index space of a broadcast, with runs of dims that every input walks the same way
// merged into one (so [N, C, H, W] + [C, 1, 1] becomes [N, C, H*W] with strides [0, 1, 0]).
// The innermost dim has stride 0 or 1 in every input, and 1 in at least one unless numel <= 1.
struct bcast_plan {
  int64_t numel = 0;
  size_t num_inputs = 0;
  std::vector<int64_t> dims;                       // coalesced output dims; never empty
  std::vector<int64_t> strides[max_plan_inputs];   // per input, per coalesced dim
  int64_t inner_stride(size_t k) const { return strides[k].back(); }
};

// Plans inputs (each broadcastable to out: the caller has checked) onto out.
void make_plan(const std::vector<const shape_t*>& ins, const shape_t& out, bcast_plan* p);
// The broadcast of all shapes; false when they do not broadcast.
bool broadcast_all(const std::vector<const shape_t*>& ins, shape_t* out);
// "[2, 3] and [4, 3]" or "[2], [3] and [4]".
std::string shapes_list(const std::vector<const shape_t*>& ins);

// Calls f(out_offset, in_offsets, len) for the contiguous runs of the innermost dim that cover
// output elements [begin, end); input k's elements for the run are at in_offsets[k] with
// stride p.inner_stride(k).
template <typename F>
void for_each_run(const bcast_plan& p, int64_t begin, int64_t end, F&& f) {
  if (begin >= end) return;
  const size_t rank = p.dims.size();
  const size_t nin = p.num_inputs;
  const int64_t inner = p.dims[rank - 1];
  int64_t row = begin / inner;
  int64_t col = begin % inner;
  // Odometer over the outer dims, with each input's offset at the start of the current row.
  int64_t idx_small[8];
  std::vector<int64_t> idx_big;
  int64_t* idx = idx_small;
  if (rank > 8) {
    idx_big.resize(rank);
    idx = idx_big.data();
  }
  int64_t base[max_plan_inputs] = {0, 0, 0};
  int64_t rem = row;
  for (size_t d = rank - 1; d-- > 0;) {
    idx[d] = rem % p.dims[d];
    rem /= p.dims[d];
    for (size_t k = 0; k < nin; ++k) base[k] += idx[d] * p.strides[k][d];
  }
  int64_t pos = begin;
  int64_t off[max_plan_inputs];
  while (pos < end) {
    int64_t len = inner - col;
    if (len > end - pos) len = end - pos;
    for (size_t k = 0; k < nin; ++k) off[k] = base[k] + col * p.strides[k][rank - 1];
    f(pos, static_cast<const int64_t*>(off), len);
    pos += len;
    col = 0;
    if (pos >= end) break;
    for (size_t d = rank - 1; d-- > 0;) {
      ++idx[d];
      for (size_t k = 0; k < nin; ++k) base[k] += p.strides[k][d];
      if (idx[d] < p.dims[d]) break;
      for (size_t k = 0; k < nin; ++k) base[k] -= p.strides[k][d] * idx[d];
      idx[d] = 0;
    }
  }
}

// ---- binary ops over a plan ----

template <typename Op, typename A, typename B, typename O>
inline void loop_vv(const Op& op_in, const A* a, const B* b, O* o, int64_t n) {
  const Op op = op_in;
  for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], b[i]);
}
template <typename Op, typename A, typename B, typename O>
inline void loop_sv(const Op& op_in, A a, const B* b, O* o, int64_t n) {
  const Op op = op_in;
  for (int64_t i = 0; i < n; ++i) o[i] = op(a, b[i]);
}
template <typename Op, typename A, typename B, typename O>
inline void loop_vs(const Op& op_in, const A* a, B b, O* o, int64_t n) {
  const Op op = op_in;
  for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], b);
}

// o = op(a, b) over a two-input plan. o may be a or b when that input is not broadcast.
template <typename Op, typename A, typename B, typename O>
void binary_apply(kernel_context& ctx, const bcast_plan& p, const A* a, const B* b, O* o,
                  const Op& op, int64_t grain) {
  const bool va = p.inner_stride(0) != 0, vb = p.inner_stride(1) != 0;
  parallel(ctx, p.numel, grain, [&](int64_t begin, int64_t end) {
    for_each_run(p, begin, end, [&](int64_t oo, const int64_t* off, int64_t len) {
      if (va && vb) loop_vv(op, a + off[0], b + off[1], o + oo, len);
      else if (vb) loop_sv(op, a[off[0]], b + off[1], o + oo, len);
      else if (va) loop_vs(op, a + off[0], b[off[1]], o + oo, len);
      else for (int64_t i = 0; i < len; ++i) o[oo + i] = op(a[off[0]], b[off[1]]);
    });
  });
}

// Picks which input an elementwise output may overwrite: the first of `candidates` with the
// output's dtype and element count, or -1.
inline int reusable_input(const kernel_context& ctx, std::initializer_list<size_t> candidates,
                          dtype type, int64_t numel) {
  for (size_t j : candidates) {
    const tensor* t = ctx.input(j);
    if (t && t->type() == type && t->numel() == numel) return static_cast<int>(j);
  }
  return -1;
}
inline expected<tensor*> elementwise_output(kernel_context& ctx, int reuse, dtype type,
                                            const shape_t& shape) {
  if (reuse >= 0) return ctx.output_reusing(0, static_cast<size_t>(reuse), type, shape);
  return ctx.output(0, type, shape);
}

// Bool tensors are read as bytes (any nonzero byte is true) and handed to Op as bool.
template <typename Op>
struct bool_adapter {
  Op op;
  bool operator()(uint8_t a, uint8_t b) const { return op(a != 0, b != 0); }
};

// A two-input broadcasting op. Op provides:
//   static bool supports(dtype)          which input types it takes (both inputs the same)
//   static constexpr bool bool_out       output is bool (else the input type)
//   static constexpr int64_t grain
//   template <class T> auto operator()(T a, T b) const   for T in the dispatch_numeric types
//     and bool (bool_out ops only); float16/bfloat16 run as float.
template <typename Op>
class binary_kernel final : public kernel {
 public:
  explicit binary_kernel(Op op = Op{}) : op_(op) {}

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 2, 2));
    const tensor& a = *ctx.input(0);
    const tensor& b = *ctx.input(1);
    const std::string& name = ctx.op().op_type;
    if (a.type() != b.type())
      return ctx.fail("{}: inputs have types {} and {}, which differ", name, dtype_name(a.type()),
                      dtype_name(b.type()));
    const dtype t = a.type();
    if (!Op::supports(t)) return ctx.fail("{} does not support input type {}", name, dtype_name(t));
    shape_t out_shape;
    if (!broadcast_shapes(a.shape(), b.shape(), &out_shape))
      return ctx.fail("{}: inputs have shapes {} and {}, which do not broadcast", name,
                      shape_str(a.shape()), shape_str(b.shape()));
    const dtype out_type = Op::bool_out ? dtype::boolean : t;
    const int64_t numel = num_elements(out_shape);
    GG_ASSIGN_OR_RETURN(tensor* y, elementwise_output(ctx, reusable_input(ctx, {0, 1}, out_type, numel),
                                                      out_type, out_shape));
    if (numel == 0) return status::ok();
    bcast_plan p;
    make_plan({&a.shape(), &b.shape()}, out_shape, &p);
    if (t == dtype::f16 || t == dtype::bf16) {
      tensor a32 = to_f32(a, &ctx), b32 = to_f32(b, &ctx);
      if constexpr (Op::bool_out) {
        binary_apply(ctx, p, a32.data<float>(), b32.data<float>(), y->data<bool>(), op_, Op::grain);
      } else {
        tensor o32 = tensor::zeros(dtype::f32, out_shape);
        binary_apply(ctx, p, a32.data<float>(), b32.data<float>(), o32.data<float>(), op_, Op::grain);
        convert_elements(o32.raw(), dtype::f32, y->raw(), t, numel, &ctx);
      }
      return status::ok();
    }
    if (t == dtype::boolean) {
      if constexpr (Op::bool_out)
        binary_apply(ctx, p, static_cast<const uint8_t*>(a.raw()), static_cast<const uint8_t*>(b.raw()),
                     y->data<bool>(), bool_adapter<Op>{op_}, Op::grain);
      return status::ok();
    }
    dispatch_numeric(t, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (Op::bool_out)
        binary_apply(ctx, p, a.data<T>(), b.data<T>(), y->data<bool>(), op_, Op::grain);
      else
        binary_apply(ctx, p, a.data<T>(), b.data<T>(), y->data<T>(), op_, Op::grain);
    });
    return status::ok();
  }

 private:
  Op op_;
};

template <typename Op>
kernel_factory binary_factory(Op op = Op{}) {
  return [op](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<binary_kernel<Op>>(op));
  };
}

// ---- registration, one function per source file ----
void register_unary(op_registry& r);    // elementwise.cc
void register_binary(op_registry& r);   // elementwise_binary.cc: arithmetic, Pow, Mod, PRelu, Sum/Mean/Max/Min
void register_compare(op_registry& r);  // elementwise_compare.cc: comparisons, logic, bitwise, Where, Clip
void register_cast(op_registry& r);     // elementwise_cast.cc: Cast, CastLike

}  // namespace gpugrid::cpu::ew
