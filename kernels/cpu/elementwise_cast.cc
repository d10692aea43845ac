// Cast, CastLike, and the bulk dtype conversion the other elementwise kernels use for
// float16/bfloat16 (computed in float32).
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_internal.h"

namespace gpugrid::cpu::ew {

namespace {

// double -> float rounding to odd: when inexact, the last mantissa bit is forced to 1. Rounding
// that result again to half or bfloat16 (at most 11 significant bits) then equals rounding the
// double directly, which a plain double -> float -> half would not (double rounding).
inline float round_to_odd_float(double d) {
  float f = static_cast<float>(d);
  if (d != d || static_cast<double>(f) == d) return f;
  uint32_t u = detail::float_bits(f);
  if ((u & 1u) == 0) {
    if (std::fabs(static_cast<double>(f)) > std::fabs(d)) u -= 1;  // toward zero (inf -> max)
    else u += 1;
  }
  return detail::bits_float(u);
}

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x = detail::float_bits(f);
  uint32_t nan_bits = (x >> 16) | 0x40u;
  uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? nan_bits : rounded);
}

void f32_to_f16(const float* s, half* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
  }
#endif
  for (; i < n; ++i) d[i] = half(s[i]);
}

void f16_to_f32(const half* s, float* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
  for (; i < n; ++i) d[i] = static_cast<float>(s[i]);
}

void f32_to_bf16(const float* s, bfloat16* d, int64_t n) {
  uint16_t* out = reinterpret_cast<uint16_t*>(d);
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16_bits(s[i]);
}

void bf16_to_f32(const bfloat16* s, float* d, int64_t n) {
  const uint16_t* in = reinterpret_cast<const uint16_t*>(s);
  for (int64_t i = 0; i < n; ++i) d[i] = detail::bits_float(static_cast<uint32_t>(in[i]) << 16);
}

template <typename To, typename From>
void convert_range(const From* s, To* d, int64_t n) {
  if constexpr (std::is_same_v<From, float> && std::is_same_v<To, half>) {
    f32_to_f16(s, d, n);
  } else if constexpr (std::is_same_v<From, half> && std::is_same_v<To, float>) {
    f16_to_f32(s, d, n);
  } else if constexpr (std::is_same_v<From, float> && std::is_same_v<To, bfloat16>) {
    f32_to_bf16(s, d, n);
  } else if constexpr (std::is_same_v<From, bfloat16> && std::is_same_v<To, float>) {
    bf16_to_f32(s, d, n);
  } else if constexpr (std::is_same_v<From, bool>) {
    // Read bools as bytes: any nonzero byte is true (and never UB).
    const uint8_t* in = reinterpret_cast<const uint8_t*>(s);
    for (int64_t i = 0; i < n; ++i) d[i] = convert_value<To, uint8_t>(in[i] != 0 ? 1 : 0);
  } else if constexpr ((std::is_same_v<To, half> || std::is_same_v<To, bfloat16>) &&
                       (std::is_same_v<From, double> || std::is_same_v<From, int64_t> ||
                        std::is_same_v<From, uint64_t> || std::is_same_v<From, int32_t> ||
                        std::is_same_v<From, uint32_t>)) {
    // Through double and a round-to-odd float, so that the value is rounded only once (int32
    // and smaller are exact in double; 64-bit integers beyond 2^53 round twice at most).
    for (int64_t i = 0; i < n; ++i) d[i] = To(round_to_odd_float(static_cast<double>(s[i])));
  } else if constexpr (std::is_same_v<To, half> || std::is_same_v<To, bfloat16>) {
    // int8/16, uint8/16: exact in float.
    constexpr int64_t block = 256;
    float buf[block];
    for (int64_t b = 0; b < n; b += block) {
      int64_t m = n - b < block ? n - b : block;
      for (int64_t i = 0; i < m; ++i) buf[i] = static_cast<float>(s[b + i]);
      convert_range<To, float>(buf, d + b, m);
    }
  } else if constexpr (std::is_same_v<From, half> || std::is_same_v<From, bfloat16>) {
    constexpr int64_t block = 256;
    float buf[block];
    for (int64_t b = 0; b < n; b += block) {
      int64_t m = n - b < block ? n - b : block;
      convert_range<float, From>(s + b, buf, m);
      for (int64_t i = 0; i < m; ++i) d[b + i] = convert_value<To, float>(buf[i]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = convert_value<To, From>(s[i]);
  }
}

// Cast and CastLike: `to` is the target type (CastLike: undefined, taken from input 1).
class cast_kernel final : public kernel {
 public:
  explicit cast_kernel(dtype to) : to_(to) {}
  status run(kernel_context& ctx) override {
    const bool like = to_ == dtype::undefined;
    GG_RETURN_IF_ERROR(check_inputs(ctx, like ? 2 : 1, like ? 2 : 1, like ? 2 : 1));
    const tensor& x = *ctx.input(0);
    const dtype to = like ? ctx.input(1)->type() : to_;
    if (dtype_size(x.type()) == 0)
      return ctx.fail("{} does not support input type {}", ctx.op().op_type, dtype_name(x.type()));
    if (dtype_size(to) == 0)
      return ctx.fail("{} does not support target type {}", ctx.op().op_type, dtype_name(to));
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, to, x.shape()));
    convert_elements(x.raw(), x.type(), y->raw(), to, x.numel(), &ctx);
    return status::ok();
  }

 private:
  dtype to_;
};

}  // namespace

void convert_elements(const void* src, dtype st, void* dst, dtype dt, int64_t n, kernel_context* ctx) {
  if (n <= 0) return;
  if (st == dt) {
    if (src != dst) std::memmove(dst, src, static_cast<size_t>(n) * dtype_size(st));
    return;
  }
  auto body = [&](int64_t b, int64_t e) {
    dispatch_all(st, [&](auto from_tag) {
      using From = decltype(from_tag);
      dispatch_all(dt, [&](auto to_tag) {
        using To = decltype(to_tag);
        if constexpr (!std::is_same_v<To, From>)
          convert_range<To, From>(static_cast<const From*>(src) + b, static_cast<To*>(dst) + b, e - b);
      });
    });
  };
  if (ctx) parallel(*ctx, n, grain_cheap, body);
  else body(0, n);
}

tensor to_f32(const tensor& t, kernel_context* ctx) {
  tensor out = tensor::zeros(dtype::f32, t.shape());
  convert_elements(t.raw(), t.type(), out.raw(), dtype::f32, t.numel(), ctx);
  return out;
}

void register_cast(op_registry& r) {
  r.add("Cast", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    if (!n.has_attr("to")) return invalid_input("{}: Cast needs the 'to' attribute", n.describe());
    int64_t code = n.attr_int("to", 0);
    dtype to = dtype::undefined;
    if (code < INT32_MIN || code > INT32_MAX || !dtype_from_onnx(static_cast<int32_t>(code), &to) ||
        dtype_size(to) == 0)
      return invalid_input("{}: Cast to type code {} ({}) is not supported", n.describe(), code,
                           code == 8 ? "string" : "unknown or unsupported type");
    return std::unique_ptr<kernel>(std::make_unique<cast_kernel>(to));
  });
  r.add("CastLike", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<cast_kernel>(dtype::undefined));
  });
}

}  // namespace gpugrid::cpu::ew
