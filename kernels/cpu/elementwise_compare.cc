// Comparisons, logic and bitwise ops, Where and Clip.
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_internal.h"

namespace gpugrid::cpu::ew {

namespace {

// ---- comparisons: numeric (and bool for Equal) inputs, bool output ----

struct cmp_base {
  static bool supports(dtype t) { return is_float(t) || is_integer(t); }
  static constexpr bool bool_out = true;
  static constexpr int64_t grain = grain_cheap;
};
struct op_equal : cmp_base {
  static bool supports(dtype t) { return is_float(t) || is_integer(t) || t == dtype::boolean; }
  template <typename T> bool operator()(T a, T b) const { return a == b; }
};
struct op_less : cmp_base {
  template <typename T> bool operator()(T a, T b) const { return a < b; }
};
struct op_greater : cmp_base {
  template <typename T> bool operator()(T a, T b) const { return a > b; }
};
struct op_less_equal : cmp_base {
  template <typename T> bool operator()(T a, T b) const { return a <= b; }
};
struct op_greater_equal : cmp_base {
  template <typename T> bool operator()(T a, T b) const { return a >= b; }
};

// ---- And, Or, Xor: bool only ----

struct logic_base {
  static bool supports(dtype t) { return t == dtype::boolean; }
  static constexpr bool bool_out = true;
  static constexpr int64_t grain = grain_cheap;
};
struct op_and : logic_base {
  template <typename T> bool operator()(T a, T b) const { return (a != T(0)) & (b != T(0)); }
};
struct op_or : logic_base {
  template <typename T> bool operator()(T a, T b) const { return (a != T(0)) | (b != T(0)); }
};
struct op_xor : logic_base {
  template <typename T> bool operator()(T a, T b) const { return (a != T(0)) != (b != T(0)); }
};

// ---- BitwiseAnd/Or/Xor (integers), BitShift (unsigned integers) ----

struct bitwise_base {
  static bool supports(dtype t) { return is_integer(t); }
  static constexpr bool bool_out = false;
  static constexpr int64_t grain = grain_cheap;
};
struct op_bit_and : bitwise_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(a & b);
    else return a;  // never runs: supports() admits integers only
  }
};
struct op_bit_or : bitwise_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(a | b);
    else return a;
  }
};
struct op_bit_xor : bitwise_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(a ^ b);
    else return a;
  }
};
struct shift_base : bitwise_base {
  static bool supports(dtype t) { return is_integer(t) && !is_signed_integer(t); }
};
// Shifting by the bit width or more gives 0 (C would be undefined).
struct op_shift_left : shift_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      using W = wide_unsigned<T>;
      if (b < T(0) || static_cast<uint64_t>(b) >= sizeof(T) * 8) return T(0);
      return static_cast<T>(static_cast<W>(a) << static_cast<W>(b));
    } else {
      return a;
    }
  }
};
struct op_shift_right : shift_base {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      using W = wide_unsigned<T>;
      if (b < T(0) || static_cast<uint64_t>(b) >= sizeof(T) * 8) return T(0);
      return static_cast<T>(static_cast<W>(a) >> static_cast<W>(b));
    } else {
      return a;
    }
  }
};

// ---- Where(cond, X, Y) ----

template <bool C, bool X, bool Y, typename U>
void where_run(const uint8_t* c, const U* x, const U* y, U* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const U m = static_cast<U>(U(0) - static_cast<U>(c[C ? i : 0] != 0));
    o[i] = static_cast<U>((x[X ? i : 0] & m) | (y[Y ? i : 0] & static_cast<U>(~m)));
  }
}

template <typename U>
void where_apply(kernel_context& ctx, const bcast_plan& p, const uint8_t* c, const U* x, const U* y, U* o) {
  const int mode = (p.inner_stride(0) ? 4 : 0) | (p.inner_stride(1) ? 2 : 0) | (p.inner_stride(2) ? 1 : 0);
  parallel(ctx, p.numel, grain_cheap, [&](int64_t begin, int64_t end) {
    for_each_run(p, begin, end, [&](int64_t oo, const int64_t* off, int64_t len) {
      const uint8_t* pc = c + off[0];
      const U* px = x + off[1];
      const U* py = y + off[2];
      U* po = o + oo;
      switch (mode) {
        case 0: where_run<false, false, false>(pc, px, py, po, len); break;
        case 1: where_run<false, false, true>(pc, px, py, po, len); break;
        case 2: where_run<false, true, false>(pc, px, py, po, len); break;
        case 3: where_run<false, true, true>(pc, px, py, po, len); break;
        case 4: where_run<true, false, false>(pc, px, py, po, len); break;
        case 5: where_run<true, false, true>(pc, px, py, po, len); break;
        case 6: where_run<true, true, false>(pc, px, py, po, len); break;
        default: where_run<true, true, true>(pc, px, py, po, len); break;
      }
    });
  });
}

class where_kernel final : public kernel {
 public:
  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 3, 3, 3));
    const tensor& c = *ctx.input(0);
    const tensor& x = *ctx.input(1);
    const tensor& y = *ctx.input(2);
    if (c.type() != dtype::boolean)
      return ctx.fail("Where: condition has type {}, but it must be bool", dtype_name(c.type()));
    if (x.type() != y.type())
      return ctx.fail("Where: X has type {} and Y has type {}, which differ", dtype_name(x.type()),
                      dtype_name(y.type()));
    const size_t esize = dtype_size(x.type());
    if (esize == 0) return ctx.fail("Where does not support type {}", dtype_name(x.type()));
    std::vector<const shape_t*> shapes = {&c.shape(), &x.shape(), &y.shape()};
    shape_t out_shape;
    if (!broadcast_all(shapes, &out_shape))
      return ctx.fail("Where: inputs have shapes {}, which do not broadcast", shapes_list(shapes));
    const int64_t numel = num_elements(out_shape);
    GG_ASSIGN_OR_RETURN(tensor* out, elementwise_output(ctx, reusable_input(ctx, {1, 2}, x.type(), numel),
                                                        x.type(), out_shape));
    if (numel == 0) return status::ok();
    bcast_plan p;
    make_plan(shapes, out_shape, &p);
    const uint8_t* cp = static_cast<const uint8_t*>(c.raw());
    switch (esize) {
      case 1: where_apply(ctx, p, cp, static_cast<const uint8_t*>(x.raw()), static_cast<const uint8_t*>(y.raw()), static_cast<uint8_t*>(out->raw())); break;
      case 2: where_apply(ctx, p, cp, static_cast<const uint16_t*>(x.raw()), static_cast<const uint16_t*>(y.raw()), static_cast<uint16_t*>(out->raw())); break;
      case 4: where_apply(ctx, p, cp, static_cast<const uint32_t*>(x.raw()), static_cast<const uint32_t*>(y.raw()), static_cast<uint32_t*>(out->raw())); break;
      default: where_apply(ctx, p, cp, static_cast<const uint64_t*>(x.raw()), static_cast<const uint64_t*>(y.raw()), static_cast<uint64_t*>(out->raw())); break;
    }
    return status::ok();
  }
};

// ---- Clip(X, min?, max?) ----

// v as a T, saturating at T's range (NaN -> 0 for integer T).
template <typename T, typename S>
T saturate(S v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<S>) {
    if (!(v == v)) return T(0);
    if (v <= static_cast<S>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (v >= static_cast<S>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  } else {
    if constexpr (std::is_signed_v<S>) {
      if (v < 0) {
        if constexpr (!std::is_signed_v<T>) return T(0);
        else if (static_cast<int64_t>(v) < static_cast<int64_t>(std::numeric_limits<T>::lowest()))
          return std::numeric_limits<T>::lowest();
        return static_cast<T>(v);
      }
    }
    if (static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))
      return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

template <typename T>
T scalar_as(const tensor& s) {
  T out{};
  dispatch_all(s.type(), [&](auto tag) {
    using S = decltype(tag);
    if constexpr (std::is_same_v<S, bool>) out = saturate<T>(static_cast<const uint8_t*>(s.raw())[0] != 0 ? 1 : 0);
    else if constexpr (std::is_same_v<S, half> || std::is_same_v<S, bfloat16>) out = saturate<T>(static_cast<float>(s.data<S>()[0]));
    else out = saturate<T>(s.data<S>()[0]);
  });
  return out;
}

template <typename T>
void clip_range(const T* x, T* y, int64_t n, T lo, T hi) {
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    v = v < lo ? lo : v;  // NaN stays NaN
    v = v > hi ? hi : v;
    y[i] = v;
  }
}

class clip_kernel final : public kernel {
 public:
  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 3, 1));
    const tensor& x = *ctx.input(0);
    const dtype t = x.type();
    if (!is_float(t) && !is_integer(t)) return ctx.fail("Clip does not support input type {}", dtype_name(t));
    const tensor* bounds[2] = {ctx.input(1), ctx.input(2)};
    for (int k = 0; k < 2; ++k) {
      if (!bounds[k]) continue;
      if (bounds[k]->numel() != 1)
        return ctx.fail("Clip: {} must be a scalar, but it has shape {}", k == 0 ? "min" : "max",
                        shape_str(bounds[k]->shape()));
      if (!is_float(bounds[k]->type()) && !is_integer(bounds[k]->type()))
        return ctx.fail("Clip: {} has unsupported type {}", k == 0 ? "min" : "max", dtype_name(bounds[k]->type()));
    }
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, t, x.shape()));
    const int64_t n = x.numel();
    if (n == 0) return status::ok();
    auto go = [&](auto tag, const void* src, void* dst) {
      using T = decltype(tag);
      T lo = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
      T hi = std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
      if (bounds[0]) lo = scalar_as<T>(*bounds[0]);
      if (bounds[1]) hi = scalar_as<T>(*bounds[1]);
      const T* xs = static_cast<const T*>(src);
      T* ys = static_cast<T*>(dst);
      parallel(ctx, n, grain_cheap, [&](int64_t b, int64_t e) { clip_range(xs + b, ys + b, e - b, lo, hi); });
    };
    if (t == dtype::f16 || t == dtype::bf16) {
      tensor x32 = to_f32(x, &ctx);
      go(float{}, x32.raw(), x32.raw());
      convert_elements(x32.raw(), dtype::f32, y->raw(), t, n, &ctx);
      return status::ok();
    }
    dispatch_numeric(t, [&](auto tag) { go(tag, x.raw(), y->raw()); });
    return status::ok();
  }
};

template <typename K>
kernel_factory plain_factory() {
  return [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<K>());
  };
}

}  // namespace

void register_compare(op_registry& r) {
  r.add("Equal", binary_factory<op_equal>());
  r.add("Less", binary_factory<op_less>());
  r.add("Greater", binary_factory<op_greater>());
  r.add("LessOrEqual", binary_factory<op_less_equal>());
  r.add("GreaterOrEqual", binary_factory<op_greater_equal>());
  r.add("And", binary_factory<op_and>());
  r.add("Or", binary_factory<op_or>());
  r.add("Xor", binary_factory<op_xor>());
  r.add("BitwiseAnd", binary_factory<op_bit_and>());
  r.add("BitwiseOr", binary_factory<op_bit_or>());
  r.add("BitwiseXor", binary_factory<op_bit_xor>());
  r.add("BitShift", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    std::string dir = n.attr_string("direction", "");
    if (dir == "LEFT") return std::unique_ptr<kernel>(std::make_unique<binary_kernel<op_shift_left>>());
    if (dir == "RIGHT") return std::unique_ptr<kernel>(std::make_unique<binary_kernel<op_shift_right>>());
    return invalid_input("{}: BitShift's direction must be \"LEFT\" or \"RIGHT\", not \"{}\"", n.describe(), dir);
  });
  r.add("Where", plain_factory<where_kernel>());
  r.add("Clip", plain_factory<clip_kernel>());
}

}  // namespace gpugrid::cpu::ew
