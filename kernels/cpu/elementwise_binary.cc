// Binary arithmetic with NumPy broadcasting: Add, Sub, Mul, Div, Mod, Pow, PRelu, and the
// variadic Sum, Mean, Max, Min.
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_internal.h"

namespace gpugrid::cpu::ew {

namespace {

struct arith_base {
  static bool supports(dtype t) { return is_float(t) || is_integer(t); }
  static constexpr bool bool_out = false;
  static constexpr int64_t grain = grain_cheap;
};

struct op_add : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_add(a, b);
    else return a + b;
  }
};
struct op_sub : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_sub(a, b);
    else return a - b;
  }
};
struct op_mul : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_mul(a, b);
    else return a * b;
  }
};
// Integer division truncates toward zero like C; x / 0 gives 0 and MIN / -1 wraps (instead of
// the hardware trap).
struct op_div : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == T(0)) return T(0);
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return wrap_neg(a);
      }
      return static_cast<T>(a / b);
    } else {
      return a / b;
    }
  }
};
// Mod with fmod=0: the result takes the divisor's sign (Python / NumPy); x mod 0 gives 0.
struct op_mod_floor : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == T(0)) return T(0);
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return T(0);
        T r = static_cast<T>(a % b);
        if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
        return r;
      } else {
        return static_cast<T>(a % b);
      }
    } else {
      T r = std::fmod(a, b);
      if (r != T(0) && ((r < T(0)) != (b < T(0)))) r += b;
      return r;
    }
  }
};
// Mod with fmod=1: the result takes the dividend's sign (C fmod / %).
struct op_mod_trunc : arith_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == T(0)) return T(0);
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return T(0);
      }
      return static_cast<T>(a % b);
    } else {
      return std::fmod(a, b);
    }
  }
};
// PRelu(x, slope): x < 0 ? slope * x : x.
struct op_prelu : arith_base {
  template <typename T> T operator()(T x, T slope) const {
    if constexpr (std::is_floating_point_v<T>) return detail::select(x < T(0), slope * x, x);
    else if constexpr (std::is_signed_v<T>) return x < T(0) ? wrap_mul(x, slope) : x;
    else return x;
  }
};
// Max/Min propagate NaN like NumPy's maximum/minimum.
struct op_max : arith_base {
  template <typename T> T operator()(T a, T b) const {
    T r = a < b ? b : a;
    if constexpr (std::is_floating_point_v<T>) r = b != b ? b : r;
    return r;
  }
};
struct op_min : arith_base {
  template <typename T> T operator()(T a, T b) const {
    T r = b < a ? b : a;
    if constexpr (std::is_floating_point_v<T>) r = b != b ? b : r;
    return r;
  }
};

// ---- Pow ----

// Integer power by squaring, wrapping like NumPy; negative exponents give 1 / x^-e truncated
// (so 0 unless |x| == 1; 0 for x == 0).
template <typename T>
struct op_ipow {
  T operator()(T x, int64_t e) const {
    if (e < 0) {
      if (x == T(1)) return T(1);
      if constexpr (std::is_signed_v<T>) {
        if (x == T(-1)) return (e & 1) ? T(-1) : T(1);
      }
      return T(0);
    }
    using W = wide_unsigned<T>;
    W r = 1, b = static_cast<W>(x);
    uint64_t u = static_cast<uint64_t>(e);
    while (u) {
      if (u & 1u) r *= b;
      b *= b;
      u >>= 1;
    }
    return static_cast<T>(r);
  }
};
// Integer base, float exponent: computed in double, truncated toward zero.
template <typename T>
struct op_ipow_float {
  T operator()(T x, double e) const { return float_to_int<T>(std::pow(static_cast<double>(x), e)); }
};
struct op_fpow {
  template <typename T> T operator()(T x, T e) const { return std::pow(x, e); }
};
struct op_square {
  template <typename T> T operator()(T x, T) const { return x * x; }
};
struct op_cube {  // what onnxruntime does for x^3 too
  template <typename T> T operator()(T x, T) const { return x * x * x; }
};
struct op_pow_half {  // x^0.5: sqrt, with pow's +0 for -0 and +inf for -inf
  template <typename T> T operator()(T x, T) const {
    return x == -T(INFINITY) ? T(INFINITY) : std::sqrt(x) + T(0);
  }
};

class pow_kernel final : public kernel {
 public:
  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 2, 2));
    const tensor& x = *ctx.input(0);
    const tensor& y = *ctx.input(1);
    const dtype bt = x.type(), et = y.type();
    if (!is_float(bt) && !is_integer(bt))
      return ctx.fail("Pow does not support base type {}", dtype_name(bt));
    if (!is_float(et) && !is_integer(et))
      return ctx.fail("Pow does not support exponent type {}", dtype_name(et));
    shape_t out_shape;
    if (!broadcast_shapes(x.shape(), y.shape(), &out_shape))
      return ctx.fail("Pow: inputs have shapes {} and {}, which do not broadcast", shape_str(x.shape()),
                      shape_str(y.shape()));
    const int64_t numel = num_elements(out_shape);
    GG_ASSIGN_OR_RETURN(tensor* out, elementwise_output(ctx, reusable_input(ctx, {0}, bt, numel), bt, out_shape));
    if (numel == 0) return status::ok();
    bcast_plan p;
    make_plan({&x.shape(), &y.shape()}, out_shape, &p);

    // The exponent in the type the computation uses.
    auto exponent_as = [&](dtype want) -> tensor {
      if (y.type() == want) return y;
      tensor t = tensor::zeros(want, y.shape());
      convert_elements(y.raw(), y.type(), t.raw(), want, y.numel(), &ctx);
      return t;
    };

    if (is_float(bt)) {
      const bool dbl = bt == dtype::f64;
      const dtype ct = dbl ? dtype::f64 : dtype::f32;
      tensor e = exponent_as(ct);
      tensor base = (bt == dtype::f16 || bt == dtype::bf16) ? to_f32(x, &ctx) : x;
      tensor res = (bt == dtype::f16 || bt == dtype::bf16) ? tensor::zeros(dtype::f32, out_shape) : *out;
      auto go = [&](auto tag) {
        using T = decltype(tag);
        const T* xs = base.data<T>();
        const T* es = e.data<T>();
        T* os = res.data<T>();
        if (e.numel() == 1 && es[0] == T(2)) binary_apply(ctx, p, xs, es, os, op_square{}, grain_cheap);
        else if (e.numel() == 1 && es[0] == T(3)) binary_apply(ctx, p, xs, es, os, op_cube{}, grain_cheap);
        else if (e.numel() == 1 && es[0] == T(0.5)) binary_apply(ctx, p, xs, es, os, op_pow_half{}, grain_cheap);
        else binary_apply(ctx, p, xs, es, os, op_fpow{}, grain_costly);
      };
      if (dbl) go(double{});
      else go(float{});
      if (res.raw() != out->raw()) convert_elements(res.raw(), dtype::f32, out->raw(), bt, numel, &ctx);
      return status::ok();
    }
    if (is_integer(et)) {
      tensor e = exponent_as(dtype::i64);
      dispatch_numeric(bt, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_integral_v<T>)
          binary_apply(ctx, p, x.data<T>(), e.data<int64_t>(), out->data<T>(), op_ipow<T>{}, grain_cheap);
      });
    } else {
      tensor e = exponent_as(dtype::f64);
      dispatch_numeric(bt, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_integral_v<T>)
          binary_apply(ctx, p, x.data<T>(), e.data<double>(), out->data<T>(), op_ipow_float<T>{}, grain_costly);
      });
    }
    return status::ok();
  }
};

// ---- Sum, Mean, Max, Min over 1..N broadcast inputs ----

template <typename Op>
class variadic_kernel final : public kernel {
 public:
  explicit variadic_kernel(bool mean) : mean_(mean) {}

  status run(kernel_context& ctx) override {
    const std::string& name = ctx.op().op_type;
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, SIZE_MAX, ctx.num_inputs()));
    const size_t n = ctx.num_inputs();
    const dtype t = ctx.input(0)->type();
    std::vector<const shape_t*> shapes;
    for (size_t i = 0; i < n; ++i) {
      if (ctx.input(i)->type() != t)
        return ctx.fail("{}: input {} has type {} but input 0 has type {}", name, i,
                        dtype_name(ctx.input(i)->type()), dtype_name(t));
      shapes.push_back(&ctx.input(i)->shape());
    }
    if (!Op::supports(t)) return ctx.fail("{} does not support input type {}", name, dtype_name(t));
    shape_t out_shape;
    if (!broadcast_all(shapes, &out_shape))
      return ctx.fail("{}: inputs have shapes {}, which do not broadcast", name, shapes_list(shapes));
    const int64_t numel = num_elements(out_shape);
    // Only inputs 0 and 1 may be overwritten: the first step reads both before writing.
    int reuse = n >= 2 ? reusable_input(ctx, {0, 1}, t, numel) : reusable_input(ctx, {0}, t, numel);
    for (size_t k = 2; k < n && reuse >= 0; ++k)  // the same bytes passed again later: no reuse
      if (ctx.input(k)->raw() == ctx.input(static_cast<size_t>(reuse))->raw()) reuse = -1;
    GG_ASSIGN_OR_RETURN(tensor* out, elementwise_output(ctx, reuse, t, out_shape));
    if (numel == 0) return status::ok();

    std::vector<const tensor*> ins;
    for (size_t i = 0; i < n; ++i) ins.push_back(ctx.input(i));
    if (t == dtype::f16 || t == dtype::bf16) {
      std::vector<tensor> f32s;
      f32s.reserve(n);
      for (const tensor* in : ins) f32s.push_back(to_f32(*in, &ctx));
      std::vector<const tensor*> ptrs;
      for (const tensor& f : f32s) ptrs.push_back(&f);
      tensor o32 = tensor::zeros(dtype::f32, out_shape);
      compute<float>(ctx, ptrs, out_shape, o32.data<float>());
      convert_elements(o32.raw(), dtype::f32, out->raw(), t, numel, &ctx);
      return status::ok();
    }
    dispatch_numeric(t, [&](auto tag) {
      using T = decltype(tag);
      compute<T>(ctx, ins, out_shape, out->data<T>());
    });
    return status::ok();
  }

 private:
  template <typename T>
  void compute(kernel_context& ctx, const std::vector<const tensor*>& ins, const shape_t& out_shape, T* out) {
    const int64_t numel = num_elements(out_shape);
    const Op op;
    if (ins.size() == 1) {
      // One input: a copy (it may only differ from the output in shape).
      if (static_cast<const void*>(ins[0]->data<T>()) != static_cast<void*>(out))
        std::memcpy(out, ins[0]->data<T>(), static_cast<size_t>(numel) * sizeof(T));
    } else {
      bcast_plan p;
      make_plan({&ins[0]->shape(), &ins[1]->shape()}, out_shape, &p);
      binary_apply(ctx, p, ins[0]->data<T>(), ins[1]->data<T>(), out, op, Op::grain);
      for (size_t k = 2; k < ins.size(); ++k) {
        make_plan({&out_shape, &ins[k]->shape()}, out_shape, &p);
        binary_apply(ctx, p, static_cast<const T*>(out), ins[k]->data<T>(), out, op, Op::grain);
      }
    }
    if (mean_ && ins.size() > 1) {
      const T count = static_cast<T>(ins.size());
      parallel(ctx, numel, grain_cheap, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = static_cast<T>(out[i] / count);
      });
    }
  }

  bool mean_;
};

template <typename Op>
kernel_factory variadic_factory(bool mean) {
  return [mean](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<variadic_kernel<Op>>(mean));
  };
}

}  // namespace

void register_binary(op_registry& r) {
  r.add("Add", binary_factory<op_add>());
  r.add("Sub", binary_factory<op_sub>());
  r.add("Mul", binary_factory<op_mul>());
  r.add("Div", binary_factory<op_div>());
  r.add("PRelu", binary_factory<op_prelu>());
  r.add("Mod", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    if (n.attr_int("fmod", 0) != 0) return std::unique_ptr<kernel>(std::make_unique<binary_kernel<op_mod_trunc>>());
    return std::unique_ptr<kernel>(std::make_unique<binary_kernel<op_mod_floor>>());
  });
  r.add("Pow", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<pow_kernel>());
  });
  r.add("Sum", variadic_factory<op_add>(false));
  r.add("Mean", variadic_factory<op_add>(true));
  r.add("Max", variadic_factory<op_max>(false));
  r.add("Min", variadic_factory<op_min>(false));
}

}  // namespace gpugrid::cpu::ew
