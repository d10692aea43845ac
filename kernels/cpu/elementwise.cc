// CPU elementwise ops: registration, shared helpers, and the unary ops.
//
// Binary ops live in elementwise_binary.cc, comparisons/logic/Where/Clip in
// elementwise_compare.cc, Cast in elementwise_cast.cc.
#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/elementwise_internal.h"

namespace gpugrid::cpu {

namespace ew {

status check_inputs(const kernel_context& ctx, size_t lo, size_t hi, size_t required) {
  const std::string& op = ctx.op().op_type;
  size_t n = ctx.num_inputs();
  if (n < lo || n > hi) {
    if (lo == hi) return ctx.fail("{} takes {} input{}, got {}", op, lo, lo == 1 ? "" : "s", n);
    if (hi == SIZE_MAX) return ctx.fail("{} takes at least {} input{}, got {}", op, lo, lo == 1 ? "" : "s", n);
    return ctx.fail("{} takes {} to {} inputs, got {}", op, lo, hi, n);
  }
  for (size_t i = 0; i < required && i < n; ++i)
    if (!ctx.input(i)) return ctx.fail("{}: required input {} is missing", op, i);
  return status::ok();
}

bool broadcast_all(const std::vector<const shape_t*>& ins, shape_t* out) {
  shape_t r;
  for (const shape_t* s : ins) {
    shape_t next;
    if (!broadcast_shapes(r, *s, &next)) return false;
    r = std::move(next);
  }
  *out = std::move(r);
  return true;
}

std::string shapes_list(const std::vector<const shape_t*>& ins) {
  std::string s;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (i > 0) s += (i + 1 == ins.size()) ? " and " : ", ";
    s += shape_str(*ins[i]);
  }
  return s;
}

void make_plan(const std::vector<const shape_t*>& ins, const shape_t& out, bcast_plan* p) {
  const size_t nin = ins.size();
  p->num_inputs = nin;
  p->numel = num_elements(out);
  p->dims.clear();
  std::vector<int64_t> full[max_plan_inputs];
  for (size_t k = 0; k < nin; ++k) {
    full[k] = broadcast_strides(*ins[k], out);
    p->strides[k].clear();
  }
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == 1) continue;
    bool merge = !p->dims.empty();
    for (size_t k = 0; k < nin && merge; ++k)
      merge = p->strides[k].back() == full[k][d] * out[d];
    if (merge) {
      p->dims.back() *= out[d];
      for (size_t k = 0; k < nin; ++k) p->strides[k].back() = full[k][d];
    } else {
      p->dims.push_back(out[d]);
      for (size_t k = 0; k < nin; ++k) p->strides[k].push_back(full[k][d]);
    }
  }
  if (p->dims.empty()) {  // a single element (or rank 0)
    p->dims.push_back(1);
    for (size_t k = 0; k < nin; ++k) p->strides[k].push_back(1);
  }
}

}  // namespace ew

namespace {

using namespace ew;

// ---- unary op functors: T operator()(T) for float/double (and integers where `ints`) ----

struct cheap { static constexpr int64_t grain = grain_cheap; static constexpr bool ints = false; };
struct costly { static constexpr int64_t grain = grain_costly; static constexpr bool ints = false; };
struct cheap_int { static constexpr int64_t grain = grain_cheap; static constexpr bool ints = true; };

struct op_abs : cheap_int {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>) return std::fabs(x);
    else if constexpr (std::is_signed_v<T>) return x < 0 ? wrap_neg(x) : x;
    else return x;
  }
};
struct op_neg : cheap_int {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>) return -x;
    else return wrap_neg(x);
  }
};
struct op_sign : cheap_int {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>)
      return detail::select(x > T(0), T(1), detail::select(x < T(0), T(-1), x));  // keeps 0, NaN
    else return static_cast<T>((x > T(0)) - (x < T(0)));
  }
};
struct op_relu : cheap_int {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return x < T(0) ? T(0) : x; }
  activation_spec act() const { return {activation_kind::relu, 0.f, 0.f}; }
};
struct op_exp : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return fast_exp(x); }
};
struct op_log : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return fast_log(x); }
};
struct op_sqrt : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return std::sqrt(x); }
  // libm's sqrt sets errno, which keeps GCC from vectorizing a plain loop.
  template <typename T> static void bulk(const T* x, T* y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX__)
    if constexpr (std::is_same_v<T, float>) {
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
    } else {
      for (; i + 4 <= n; i += 4) _mm256_storeu_pd(y + i, _mm256_sqrt_pd(_mm256_loadu_pd(x + i)));
    }
#endif
    for (; i < n; ++i) y[i] = std::sqrt(x[i]);
  }
};
struct op_reciprocal : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return T(1) / x; }
};
struct op_sigmoid : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return sigmoid(x); }
  activation_spec act() const { return {activation_kind::sigmoid, 0.f, 0.f}; }
};
struct op_tanh : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return fast_tanh(x); }
  activation_spec act() const { return {activation_kind::tanh, 0.f, 0.f}; }
};
struct op_silu : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return silu(x); }
  activation_spec act() const { return {activation_kind::silu, 0.f, 0.f}; }
};
struct op_leaky_relu : cheap {
  float alpha = 0.01f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return leaky_relu(x, T(alpha)); }
  activation_spec act() const { return {activation_kind::leaky_relu, alpha, 0.f}; }
};
struct op_elu : costly {
  float alpha = 1.0f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return x > T(0) ? x : T(alpha) * std::expm1(x); }
};
struct op_selu : costly {
  float alpha = 1.67326319217681884765625f;
  float gamma = 1.05070102214050292968750f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    return x > T(0) ? T(gamma) * x : T(gamma) * T(alpha) * std::expm1(x);
  }
};
struct op_celu : costly {
  float alpha = 1.0f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    return x > T(0) ? x : T(alpha) * std::expm1(x / T(alpha));
  }
};
struct op_hard_sigmoid : cheap {
  float alpha = 0.2f, beta = 0.5f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return hard_sigmoid(x, T(alpha), T(beta)); }
  activation_spec act() const { return {activation_kind::hard_sigmoid, alpha, beta}; }
};
struct op_hard_swish : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return hard_swish(x); }
  activation_spec act() const { return {activation_kind::hard_swish, 0.f, 0.f}; }
};
struct op_softplus : costly {
  // log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    return (x > T(0) ? x : T(0)) + fast_log1p(fast_exp(-std::fabs(x)));
  }
};
struct op_softsign : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return x / (T(1) + std::fabs(x)); }
};
struct op_thresholded_relu : cheap {
  float alpha = 1.0f;
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return detail::select(x > T(alpha), x, T(0)); }
};
struct op_mish : costly {
  // x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2); x itself beyond 20.
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const {
    T e = fast_exp(detail::select(x > T(20), T(20), x));
    T n = e * (e + T(2));
    T y = detail::select(x > T(20), x, x * n / (n + T(2)));
    return detail::select(x < -std::numeric_limits<T>::max(), T(-0.0), y);  // -inf: -0
  }
};
struct op_gelu : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return gelu(x); }
};
struct op_gelu_tanh : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return gelu_tanh(x); }
};
struct op_erf : costly {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return fast_erf(x); }
};
struct op_floor : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return std::floor(x); }
};
struct op_ceil : cheap {
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return std::ceil(x); }
};
struct op_round : cheap {  // half to even (the default rounding mode)
  template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return std::nearbyint(x); }
};
#define GG_LIBM_OP(name, fn)                                              \
  struct name : costly {                                                  \
    template <typename T> GG_ALWAYS_INLINE T operator()(T x) const { return std::fn(x); } \
  };
GG_LIBM_OP(op_sin, sin)
GG_LIBM_OP(op_cos, cos)
GG_LIBM_OP(op_tan, tan)
GG_LIBM_OP(op_asin, asin)
GG_LIBM_OP(op_acos, acos)
GG_LIBM_OP(op_atan, atan)
GG_LIBM_OP(op_sinh, sinh)
GG_LIBM_OP(op_cosh, cosh)
GG_LIBM_OP(op_asinh, asinh)
GG_LIBM_OP(op_acosh, acosh)
GG_LIBM_OP(op_atanh, atanh)
#undef GG_LIBM_OP

template <typename Op, typename T, typename = void>
struct has_bulk : std::false_type {};
// Activations that the fused ops apply too: on float, their vector code (activation.h); the
// scalar loops branch per element and do not vectorize.
template <typename Op, typename = void>
struct has_act : std::false_type {};
template <typename Op>
struct has_act<Op, std::void_t<decltype(std::declval<const Op&>().act())>> : std::true_type {};
template <typename Op, typename T>
struct has_bulk<Op, T, std::void_t<decltype(Op::template bulk<T>(nullptr, nullptr, 0))>> : std::true_type {};

// Not inlined: one copy per (op, type), small enough that the op inlines and vectorizes.
template <typename T, typename Op>
__attribute__((noinline)) void unary_loop(const T* x, T* y, int64_t n, const Op& op_in) {
  if constexpr (std::is_same_v<T, float> && has_act<Op>::value) {
    apply_activation(op_in.act(), x, y, n);
  } else if constexpr (has_bulk<Op, T>::value) {
    Op::template bulk<T>(x, y, n);
  } else {
    const Op op = op_in;
    for (int64_t i = 0; i < n; ++i) y[i] = op(x[i]);
  }
}

// float16 / bfloat16: through a float buffer, a block at a time.
template <typename H, typename Op>
__attribute__((noinline)) void unary_loop_half(const H* x, H* y, int64_t n, const Op& op) {
  constexpr int64_t block = 512;
  float in[block], out[block];
  for (int64_t b = 0; b < n; b += block) {
    int64_t m = std::min(block, n - b);
    convert_elements(x + b, dtype_of<H>::value, in, dtype::f32, m);
    unary_loop<float>(in, out, m, op);
    convert_elements(out, dtype::f32, y + b, dtype_of<H>::value, m);
  }
}

template <typename Op>
class unary_kernel final : public kernel {
 public:
  explicit unary_kernel(Op op) : op_(op) {}

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
    const tensor& x = *ctx.input(0);
    const dtype t = x.type();
    const bool ok = is_float(t) || (Op::ints && is_integer(t));
    if (!ok)
      return ctx.fail("{} does not support input type {} (it takes {})", ctx.op().op_type,
                      dtype_name(t), Op::ints ? "float and integer tensors" : "float tensors");
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, t, x.shape()));
    const int64_t n = x.numel();
    const void* src = x.raw();
    void* dst = y->raw();
    const Op& op = op_;
    auto run_typed = [&](auto tag) {
      using T = decltype(tag);
      const T* xs = static_cast<const T*>(src);
      T* ys = static_cast<T*>(dst);
      parallel(ctx, n, Op::grain, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>)
          unary_loop_half(xs + b, ys + b, e - b, op);
        else
          unary_loop(xs + b, ys + b, e - b, op);
      });
    };
    if (is_float(t)) {
      switch (t) {
        case dtype::f32: run_typed(float{}); break;
        case dtype::f64: run_typed(double{}); break;
        case dtype::f16: run_typed(half{}); break;
        default: run_typed(bfloat16{}); break;
      }
    } else if constexpr (Op::ints) {
      dispatch_numeric(t, run_typed);
    }
    return status::ok();
  }

 private:
  Op op_;
};

template <typename Op>
kernel_factory unary_factory(Op op = Op{}) {
  return [op](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<unary_kernel<Op>>(op));
  };
}

// Ops whose functor takes attributes: the factory reads them from the node.
template <typename Op, typename Configure>
kernel_factory unary_factory_with(Configure configure) {
  return [configure](const node& n) -> expected<std::unique_ptr<kernel>> {
    Op op;
    GG_RETURN_IF_ERROR(configure(n, op));
    return std::unique_ptr<kernel>(std::make_unique<unary_kernel<Op>>(op));
  };
}

// ---- predicate ops with bool output ----

// IsNaN, IsInf: float input, bool output.
class isnan_isinf_kernel final : public kernel {
 public:
  isnan_isinf_kernel(bool nan, bool pos, bool neg) : nan_(nan), pos_(pos), neg_(neg) {}
  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
    const tensor& x = *ctx.input(0);
    if (!is_float(x.type()))
      return ctx.fail("{} does not support input type {} (it takes float tensors)", ctx.op().op_type,
                      dtype_name(x.type()));
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::boolean, x.shape()));
    const int64_t n = x.numel();
    bool* out = y->data<bool>();
    auto run_typed = [&](auto tag) {
      using T = decltype(tag);
      const T* in = x.data<T>();
      parallel(ctx, n, grain_cheap, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const float v = static_cast<float>(in[i]);  // exact for every float type but double
          if constexpr (std::is_same_v<T, double>) {
            const double d = in[i];
            out[i] = nan_ ? d != d : ((pos_ && d == HUGE_VAL) || (neg_ && d == -HUGE_VAL));
          } else {
            out[i] = nan_ ? v != v : ((pos_ && v == HUGE_VALF) || (neg_ && v == -HUGE_VALF));
          }
        }
      });
    };
    switch (x.type()) {
      case dtype::f32: run_typed(float{}); break;
      case dtype::f64: run_typed(double{}); break;
      case dtype::f16: run_typed(half{}); break;
      default: run_typed(bfloat16{}); break;
    }
    return status::ok();
  }

 private:
  bool nan_, pos_, neg_;
};

// Not (bool) and BitwiseNot (integers).
status run_not(kernel_context& ctx, bool bitwise) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& x = *ctx.input(0);
  const dtype t = x.type();
  if (bitwise ? !is_integer(t) : t != dtype::boolean)
    return ctx.fail("{} does not support input type {} (it takes {})", ctx.op().op_type, dtype_name(t),
                    bitwise ? "integer tensors" : "bool tensors");
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, t, x.shape()));
  const int64_t n = x.numel();
  if (!bitwise) {
    const uint8_t* in = static_cast<const uint8_t*>(x.raw());
    uint8_t* out = static_cast<uint8_t*>(y->raw());
    parallel(ctx, n, grain_cheap, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = in[i] == 0;
    });
    return status::ok();
  }
  dispatch_numeric(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      const T* in = x.data<T>();
      T* out = y->data<T>();
      parallel(ctx, n, grain_cheap, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = static_cast<T>(~static_cast<wide_unsigned<T>>(in[i]));
      });
    }
  });
  return status::ok();
}

template <typename Op>
void add_alpha_op(op_registry& r, const char* name, float dflt) {
  r.add(name, unary_factory_with<Op>([dflt](const node& n, Op& op) {
          op.alpha = n.attr_float("alpha", dflt);
          return status::ok();
        }));
}

}  // namespace

namespace ew {

void register_unary(op_registry& r) {
  r.add("Abs", unary_factory<op_abs>());
  r.add("Neg", unary_factory<op_neg>());
  r.add("Sign", unary_factory<op_sign>());
  r.add("Relu", unary_factory<op_relu>());
  r.add("Exp", unary_factory<op_exp>());
  r.add("Log", unary_factory<op_log>());
  r.add("Sqrt", unary_factory<op_sqrt>());
  r.add("Reciprocal", unary_factory<op_reciprocal>());
  r.add("Sigmoid", unary_factory<op_sigmoid>());
  r.add("Tanh", unary_factory<op_tanh>());
  r.add("Silu", unary_factory<op_silu>(), "com.gpugrid");
  add_alpha_op<op_leaky_relu>(r, "LeakyRelu", 0.01f);
  add_alpha_op<op_elu>(r, "Elu", 1.0f);
  add_alpha_op<op_thresholded_relu>(r, "ThresholdedRelu", 1.0f);
  r.add("Celu", unary_factory_with<op_celu>([](const node& n, op_celu& op) {
          op.alpha = n.attr_float("alpha", 1.0f);
          if (op.alpha == 0.0f) return invalid_input("{}: Celu's alpha must not be 0", n.describe());
          return status::ok();
        }));
  r.add("Selu", unary_factory_with<op_selu>([](const node& n, op_selu& op) {
          op.alpha = n.attr_float("alpha", op.alpha);
          op.gamma = n.attr_float("gamma", op.gamma);
          return status::ok();
        }));
  r.add("HardSigmoid", unary_factory_with<op_hard_sigmoid>([](const node& n, op_hard_sigmoid& op) {
          op.alpha = n.attr_float("alpha", 0.2f);
          op.beta = n.attr_float("beta", 0.5f);
          return status::ok();
        }));
  r.add("HardSwish", unary_factory<op_hard_swish>());
  r.add("Softplus", unary_factory<op_softplus>());
  r.add("Softsign", unary_factory<op_softsign>());
  r.add("Mish", unary_factory<op_mish>());
  r.add("Gelu", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    std::string a = n.attr_string("approximate", "none");
    if (a == "none") return std::unique_ptr<kernel>(std::make_unique<unary_kernel<op_gelu>>(op_gelu{}));
    if (a == "tanh") return std::unique_ptr<kernel>(std::make_unique<unary_kernel<op_gelu_tanh>>(op_gelu_tanh{}));
    return invalid_input("{}: Gelu's approximate must be \"none\" or \"tanh\", not \"{}\"", n.describe(), a);
  });
  r.add("Erf", unary_factory<op_erf>());
  r.add("Floor", unary_factory<op_floor>());
  r.add("Ceil", unary_factory<op_ceil>());
  r.add("Round", unary_factory<op_round>());
  r.add("Sin", unary_factory<op_sin>());
  r.add("Cos", unary_factory<op_cos>());
  r.add("Tan", unary_factory<op_tan>());
  r.add("Asin", unary_factory<op_asin>());
  r.add("Acos", unary_factory<op_acos>());
  r.add("Atan", unary_factory<op_atan>());
  r.add("Sinh", unary_factory<op_sinh>());
  r.add("Cosh", unary_factory<op_cosh>());
  r.add("Asinh", unary_factory<op_asinh>());
  r.add("Acosh", unary_factory<op_acosh>());
  r.add("Atanh", unary_factory<op_atanh>());
  r.add("IsNaN", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<isnan_isinf_kernel>(true, false, false));
  });
  r.add("IsInf", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    bool pos = n.attr_int("detect_positive", 1) != 0, neg = n.attr_int("detect_negative", 1) != 0;
    return std::unique_ptr<kernel>(std::make_unique<isnan_isinf_kernel>(false, pos, neg));
  });
  r.add("Not", simple_kernel([](kernel_context& ctx) { return run_not(ctx, false); }));
  r.add("BitwiseNot", simple_kernel([](kernel_context& ctx) { return run_not(ctx, true); }));
}

}  // namespace ew

void register_elementwise_ops(op_registry& r) {
  ew::register_unary(r);
  ew::register_binary(r);
  ew::register_compare(r);
  ew::register_cast(r);
}

}  // namespace gpugrid::cpu
