// CPU QuantizeLinear / DequantizeLinear: per-tensor and per-axis (not blocked) quantization to
// and from 8- and 16-bit integers (and int32 for DequantizeLinear); DynamicQuantizeLinear.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/tensor_ops_internal.h"

namespace gpugrid::cpu::tops {

namespace {

status quant_check(const node& n) {
  if (n.attr_int("block_size", 0) != 0)
    return invalid_input("{}: blocked quantization (block_size {}) is not supported", n.describe(),
                         n.attr_int("block_size", 0));
  if (n.has_attr("output_dtype") && n.attr_int("output_dtype", 0) != 0) {
    dtype t;
    const int64_t code = n.attr_int("output_dtype", 0);
    if (!dtype_from_onnx(static_cast<int32_t>(code), &t) ||
        (t != dtype::u8 && t != dtype::i8 && t != dtype::u16 && t != dtype::i16))
      return invalid_input("{}: unsupported output_dtype {}", n.describe(), code);
  }
  return status::ok();
}

// Scale (and zero point) layout: per tensor, or per channel along axis. Sets outer/dim/inner so
// element (o, c, i) uses scale[c] (dim == 1 and inner == numel for per-tensor).
status quant_layout(const kernel_context& ctx, const tensor& x, const tensor& scale, const tensor* zp,
                    int64_t* outer, int64_t* dim, int64_t* inner) {
  if (zp && zp->shape() != scale.shape())
    return ctx.fail("zero point shape {} differs from scale shape {}", shape_str(zp->shape()), shape_str(scale.shape()));
  if (scale.rank() == 0 || (scale.rank() == 1 && scale.numel() == 1)) {
    *outer = 1;
    *dim = 1;
    *inner = x.numel();
    return status::ok();
  }
  if (scale.rank() != 1)
    return ctx.fail("scale must be a scalar or 1-D (blocked quantization is not supported), got shape {}",
                    shape_str(scale.shape()));
  int64_t axis;
  GG_RETURN_IF_ERROR(normalize_axis(ctx, ctx.op().attr_int("axis", 1), static_cast<int64_t>(x.rank()), "axis", &axis));
  const size_t a = static_cast<size_t>(axis);
  if (scale.numel() != x.dim(a))
    return ctx.fail("scale has {} entries but axis {} of input {} has size {}", scale.numel(), axis,
                    shape_str(x.shape()), x.dim(a));
  *outer = 1;
  *inner = 1;
  for (size_t d = 0; d < a; ++d) *outer *= x.dim(d);
  for (size_t d = a + 1; d < x.rank(); ++d) *inner *= x.dim(d);
  *dim = x.dim(a);
  return status::ok();
}

float scale_at(const tensor& s, int64_t c) { return static_cast<float>(s.as_double(c)); }

template <typename F>
bool dispatch_quant_int(dtype t, F&& f) {
  switch (t) {
    case dtype::u8: f(uint8_t{}); return true;
    case dtype::i8: f(int8_t{}); return true;
    case dtype::u16: f(uint16_t{}); return true;
    case dtype::i16: f(int16_t{}); return true;
    case dtype::i32: f(int32_t{}); return true;
    default: return false;
  }
}

template <typename F>
bool dispatch_quant_float(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: f(float{}); return true;
    case dtype::f16: f(half{}); return true;
    case dtype::bf16: f(bfloat16{}); return true;
    default: return false;
  }
}

status dequantize_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 3));
  const tensor *x, *scale, *zp;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &scale));
  GG_RETURN_IF_ERROR(optional_input(ctx, 2, &zp));
  if (!is_float(scale->type()) || scale->type() == dtype::f64)
    return ctx.fail("scale must be float32, float16 or bfloat16, got {}", dtype_name(scale->type()));
  if (zp && zp->type() != x->type())
    return ctx.fail("zero point type {} differs from input type {}", dtype_name(zp->type()), dtype_name(x->type()));
  int64_t outer, dim, inner;
  GG_RETURN_IF_ERROR(quant_layout(ctx, *x, *scale, zp, &outer, &dim, &inner));
  const dtype out_type = scale->type();
  status st = status::ok();
  bool ok = dispatch_quant_int(x->type(), [&](auto xtag) {
    using X = decltype(xtag);
    dispatch_quant_float(out_type, [&](auto ytag) {
      using Y = decltype(ytag);
      auto out = ctx.output(0, out_type, x->shape());
      if (!out) { st = out.error(); return; }
      const X* in = x->data<X>();
      Y* o = out.value()->template data<Y>();
      parallel(ctx, outer * dim, grain_for(inner * 4, 64 * 1024), [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; ++it) {
          const int64_t c = it % dim;
          const float s = scale_at(*scale, c);
          const int64_t z = zp ? static_cast<int64_t>(zp->data<X>()[c]) : 0;
          const X* pi = in + it * inner;
          Y* po = o + it * inner;
          for (int64_t i = 0; i < inner; ++i)
            po[i] = static_cast<Y>(static_cast<float>(static_cast<int64_t>(pi[i]) - z) * s);
        }
      });
    });
  });
  if (!ok) return ctx.fail("unsupported input type {}", dtype_name(x->type()));
  return st;
}

status quantize_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 3));
  const tensor *x, *scale, *zp;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &scale));
  GG_RETURN_IF_ERROR(optional_input(ctx, 2, &zp));
  if (!is_float(scale->type()) || scale->type() == dtype::f64)
    return ctx.fail("scale must be float32, float16 or bfloat16, got {}", dtype_name(scale->type()));
  dtype out_type = dtype::u8;
  if (zp) {
    out_type = zp->type();
  } else if (ctx.op().attr_int("output_dtype", 0) != 0) {
    if (!dtype_from_onnx(static_cast<int32_t>(ctx.op().attr_int("output_dtype", 0)), &out_type))
      return ctx.fail("unsupported output_dtype {}", ctx.op().attr_int("output_dtype", 0));
  }
  if (out_type != dtype::u8 && out_type != dtype::i8 && out_type != dtype::u16 && out_type != dtype::i16)
    return ctx.fail("unsupported quantized type {}", dtype_name(out_type));
  if (x->type() != dtype::f32 && x->type() != dtype::f16 && x->type() != dtype::bf16 && x->type() != dtype::i32)
    return ctx.fail("unsupported input type {}", dtype_name(x->type()));
  int64_t outer, dim, inner;
  GG_RETURN_IF_ERROR(quant_layout(ctx, *x, *scale, zp, &outer, &dim, &inner));
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, out_type, x->shape()));
  dispatch_quant_int(out_type, [&](auto qtag) {
    using Q = decltype(qtag);
    constexpr float lo = static_cast<float>(std::numeric_limits<Q>::min());
    constexpr float hi = static_cast<float>(std::numeric_limits<Q>::max());
    Q* o = out->data<Q>();
    auto run = [&](auto xtag) {
      using X = decltype(xtag);
      const X* in = x->data<X>();
      parallel(ctx, outer * dim, grain_for(inner * 4, 64 * 1024), [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; ++it) {
          const int64_t c = it % dim;
          const float s = scale_at(*scale, c);
          const float z = zp ? static_cast<float>(zp->data<Q>()[c]) : 0.0f;
          const X* pi = in + it * inner;
          Q* po = o + it * inner;
          for (int64_t i = 0; i < inner; ++i) {
            float v = std::nearbyint(static_cast<float>(pi[i]) / s);
            if (std::isnan(v)) v = 0;
            v = std::min(std::max(v + z, lo), hi);
            po[i] = static_cast<Q>(v);
          }
        }
      });
    };
    switch (x->type()) {
      case dtype::f32: run(float{}); break;
      case dtype::f16: run(half{}); break;
      case dtype::bf16: run(bfloat16{}); break;
      default: run(int32_t{}); break;
    }
  });
  return status::ok();
}

// DynamicQuantizeLinear: uint8 quantization with the scale and zero point computed from the
// data's range (extended to include 0).
status dynamic_quantize_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  if (x->type() != dtype::f32) return ctx.fail("input must be float32, got {}", dtype_name(x->type()));
  const int64_t n = x->numel();
  const float* in = x->data<float>();
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(in[i])) return ctx.fail("input contains NaN");
    lo = std::min(lo, in[i]);
    hi = std::max(hi, in[i]);
  }
  const float scale = (hi - lo) / 255.0f;
  float zp = 0;
  if (scale > 0 && std::isfinite(scale)) zp = std::nearbyint(std::min(std::max(0.0f - lo / scale, 0.0f), 255.0f));
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, dtype::u8, x->shape()));
  uint8_t* o = y->data<uint8_t>();
  if (scale > 0 && std::isfinite(scale)) {
    parallel(ctx, n, 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float v = std::nearbyint(in[i] / scale) + zp;
        o[i] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), 255.0f));
      }
    });
  }
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(tensor * s, ctx.output(1, dtype::f32, {}));
    s->data<float>()[0] = scale;
  }
  if (ctx.num_outputs() > 2 && ctx.output_wanted(2)) {
    GG_ASSIGN_OR_RETURN(tensor * z, ctx.output(2, dtype::u8, {}));
    z->data<uint8_t>()[0] = static_cast<uint8_t>(zp);
  }
  return status::ok();
}

}  // namespace

void register_quant_ops(op_registry& r) {
  r.add("DequantizeLinear", checked_kernel(quant_check, dequantize_run));
  r.add("QuantizeLinear", checked_kernel(quant_check, quantize_run));
  r.add("DynamicQuantizeLinear", simple_kernel(dynamic_quantize_run));
}

}  // namespace gpugrid::cpu::tops
