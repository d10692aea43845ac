// onnxruntime's normalisation and GELU-family operators, as exported transformers and
// onnxruntime-genai's model builder write them:
//   SimplifiedLayerNormalization (RMSNorm; onnxruntime keeps it in the ONNX domain, also
//     accepted as com.microsoft): Y = X / sqrt(mean(X^2) + epsilon) * scale over the axes from
//     `axis` on; optional output 1 is the inverse standard deviation.
//   com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization: the same over
//     the last axis of input + skip (+ bias), skip either the input's shape or broadcast over
//     the leading axes; optional outputs mean (LayerNorm only), inv_std_var and the sum.
//   com.microsoft Gelu (exact), FastGelu (tanh form, optional bias), BiasGelu (exact, with
//     bias), QuickGelu (x * sigmoid(alpha x), alpha 1.702).
// Inputs may be float, float16 or bfloat16; sums and statistics are computed in float and
// outputs take the input's type.
#include <cmath>
#include <vector>

#include "kernels/cpu/contrib_ops.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/kernel_helpers.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_CNORM_AVX2 1
#endif

namespace gpugrid::cpu {
namespace {

// sum_j (x[j] - shift)^2 with eight lanes (float).
float sum_sq(const float* x, int64_t n, float shift) {
  int64_t j = 0;
  float s = 0.f;
#ifdef GG_CNORM_AVX2
  const __m256 vs = _mm256_set1_ps(shift);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), vs), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vs);
    a0 = _mm256_fmadd_ps(d0, d0, a0);
    a1 = _mm256_fmadd_ps(d1, d1, a1);
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(a0, a1));
  for (float v : t) s += v;
#endif
  for (; j < n; ++j) s += (x[j] - shift) * (x[j] - shift);
  return s;
}

float sum_of(const float* x, int64_t n) {
  int64_t j = 0;
  float s = 0.f;
#ifdef GG_CNORM_AVX2
  __m256 a0 = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + j));
  alignas(32) float t[8];
  _mm256_store_ps(t, a0);
  for (float v : t) s += v;
#endif
  for (; j < n; ++j) s += x[j];
  return s;
}

status check_float(kernel_context& ctx, const tensor* t, const char* what) {
  if (t && !dense::is_float_like(t->type()))
    return ctx.fail("{} must be float, float16 or bfloat16, got {}", what, dtype_name(t->type()));
  return status::ok();
}

// Output shape for a per-row statistic: the input's shape with the normalised axes set to 1.
shape_t stat_shape(const shape_t& s, size_t axis) {
  shape_t out = s;
  for (size_t i = axis; i < out.size(); ++i) out[i] = 1;
  return out;
}

status simplified_layernorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 2, 3, 2));
  const tensor& X = *ctx.input(0);
  const tensor& scale = *ctx.input(1);
  GG_RETURN_IF_ERROR(check_float(ctx, &X, "X"));
  GG_RETURN_IF_ERROR(check_float(ctx, &scale, "scale"));
  int64_t axis = 0;
  if (X.rank() == 0 || !helpers::normalize_axis(ctx.op().attr_int("axis", -1), X.rank(), &axis))
    return ctx.fail("axis {} is out of range for X of shape {}", ctx.op().attr_int("axis", -1), shape_str(X.shape()));
  const int64_t cols = helpers::prod(X.shape(), axis, X.rank());
  const int64_t rows = helpers::prod(X.shape(), 0, axis);
  if (scale.numel() != cols) return ctx.fail("scale has {} values, the normalised axes {}", scale.numel(), cols);
  const float eps = ctx.op().attr_float("epsilon", 1e-5f);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, X.type(), X.shape()));
  tensor* inv = nullptr;
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(inv, ctx.output_for_overwrite(1, dtype::f32, stat_shape(X.shape(), axis)));
  }
  std::vector<float> xb, sb;
  const float* x = dense::as_float(X, &xb);
  const float* g = dense::as_float(scale, &sb);
  helpers::parallel(ctx, rows, helpers::grain_for(cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      const float is = 1.f / std::sqrt(sum_sq(xr, cols, 0.f) / static_cast<float>(cols) + eps);
      for (int64_t j = 0; j < cols; ++j) row[j] = xr[j] * is * g[j];
      dense::store_float(*Y, r * cols, row.data(), cols);
      if (inv) inv->data<float>()[r] = is;
    }
  });
  return status::ok();
}

// SkipLayerNormalization (simplified = false) and SkipSimplifiedLayerNormalization.
status skip_layernorm(kernel_context& ctx, bool simplified) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 3, simplified ? 4 : 5, 3));
  const tensor& X = *ctx.input(0);
  const tensor& skip = *ctx.input(1);
  const tensor& gamma = *ctx.input(2);
  const tensor* beta = simplified ? nullptr : helpers::optional_input(ctx, 3);
  const tensor* bias = helpers::optional_input(ctx, simplified ? 3 : 4);
  for (const tensor* t : {&X, &skip, &gamma, beta, bias}) GG_RETURN_IF_ERROR(check_float(ctx, t, "every input"));
  if (X.rank() < 2) return ctx.fail("input must have at least 2 dimensions, got {}", shape_str(X.shape()));
  const int64_t cols = X.shape().back(), rows = X.numel() / std::max<int64_t>(1, cols);
  const int64_t skip_rows = skip.numel() / std::max<int64_t>(1, cols);
  if (skip.rank() == 0 || skip.shape().back() != cols || skip_rows == 0 || rows % skip_rows != 0 ||
      skip.numel() > X.numel())
    return ctx.fail("skip of shape {} does not match input {}", shape_str(skip.shape()), shape_str(X.shape()));
  if (gamma.numel() != cols) return ctx.fail("gamma has {} values for a hidden size of {}", gamma.numel(), cols);
  if (beta && beta->numel() != cols) return ctx.fail("beta has {} values for a hidden size of {}", beta->numel(), cols);
  if (bias && bias->numel() != cols) return ctx.fail("bias has {} values for a hidden size of {}", bias->numel(), cols);
  const float eps = ctx.op().attr_float("epsilon", 1e-12f);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, X.type(), X.shape()));
  shape_t st = stat_shape(X.shape(), X.rank() - 1);
  tensor *mean_out = nullptr, *inv_out = nullptr, *sum_out = nullptr;
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1) && !simplified) {
    GG_ASSIGN_OR_RETURN(mean_out, ctx.output_for_overwrite(1, dtype::f32, st));
  }
  if (ctx.num_outputs() > 2 && ctx.output_wanted(2)) {
    GG_ASSIGN_OR_RETURN(inv_out, ctx.output_for_overwrite(2, dtype::f32, st));
  }
  if (ctx.num_outputs() > 3 && ctx.output_wanted(3)) {
    GG_ASSIGN_OR_RETURN(sum_out, ctx.output_for_overwrite(3, X.type(), X.shape()));
  }
  std::vector<float> xb, sb, gb, bb, cb;
  const float* x = dense::as_float(X, &xb);
  const float* s = dense::as_float(skip, &sb);
  const float* g = dense::as_float(gamma, &gb);
  const float* be = beta ? dense::as_float(*beta, &bb) : nullptr;
  const float* bi = bias ? dense::as_float(*bias, &cb) : nullptr;
  // Float outputs are written in place; other types go through a row of floats.
  float* yf = Y->type() == dtype::f32 ? Y->data<float>() : nullptr;
  float* sf = sum_out && sum_out->type() == dtype::f32 ? sum_out->data<float>() : nullptr;
  helpers::parallel(ctx, rows, helpers::grain_for(cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> sum_buf(sf ? 0 : static_cast<size_t>(cols)), row_buf(yf ? 0 : static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      const float* sr = s + (r % skip_rows) * cols;
      float* sum = sf ? sf + r * cols : sum_buf.data();
      float* row = yf ? yf + r * cols : row_buf.data();
      if (bi) {
        for (int64_t j = 0; j < cols; ++j) sum[j] = xr[j] + sr[j] + bi[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) sum[j] = xr[j] + sr[j];
      }
      // Mean first, then the squares about it (RMS: about 0).
      const float mf = simplified ? 0.f : sum_of(sum, cols) / static_cast<float>(cols);
      const float var = sum_sq(sum, cols, mf) / static_cast<float>(cols);
      const float is = 1.f / std::sqrt(var + eps);
      if (be) {
        for (int64_t j = 0; j < cols; ++j) row[j] = (sum[j] - mf) * is * g[j] + be[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) row[j] = (sum[j] - mf) * is * g[j];
      }
      if (!yf) dense::store_float(*Y, r * cols, row, cols);
      if (sum_out && !sf) dense::store_float(*sum_out, r * cols, sum, cols);
      if (mean_out) mean_out->data<float>()[r] = mf;
      if (inv_out) inv_out->data<float>()[r] = is;
    }
  });
  return status::ok();
}

enum class gelu_kind { exact, fast, bias_exact, quick };

status gelu_family(kernel_context& ctx, gelu_kind kind) {
  const bool needs_bias = kind == gelu_kind::bias_exact;
  const bool may_bias = kind == gelu_kind::fast || needs_bias;
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 1 + needs_bias, may_bias ? 2 : 1, 1 + needs_bias));
  const tensor& X = *ctx.input(0);
  const tensor* bias = may_bias ? helpers::optional_input(ctx, 1) : nullptr;
  GG_RETURN_IF_ERROR(check_float(ctx, &X, "X"));
  GG_RETURN_IF_ERROR(check_float(ctx, bias, "bias"));
  const int64_t n = X.numel();
  const int64_t cols = X.rank() ? X.shape().back() : 1;
  if (bias && (bias->numel() != cols || cols == 0))
    return ctx.fail("bias has {} values, the last axis of {} has {}", bias->numel(), shape_str(X.shape()), cols);
  const float alpha = ctx.op().attr_float("alpha", 1.702f);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, X.type(), X.shape()));
  std::vector<float> xb, bb;
  const float* x = dense::as_float(X, &xb);
  const float* b = bias ? dense::as_float(*bias, &bb) : nullptr;
  const int64_t chunk = 4096;
  helpers::parallel(ctx, (n + chunk - 1) / chunk, 4, [&](int64_t c0, int64_t c1) {
    std::vector<float> out(chunk);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t lo = c * chunk, hi = std::min(n, lo + chunk);
      for (int64_t i = lo; i < hi; ++i) {
        const float v = x[i] + (b ? b[i % cols] : 0.f);
        float y;
        switch (kind) {
          case gelu_kind::fast: {
            const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            y = 0.5f * v * (1.f + std::tanh(inner));
            break;
          }
          case gelu_kind::quick: y = v / (1.f + std::exp(-alpha * v)); break;
          default: y = 0.5f * v * (1.f + std::erf(v * 0.70710678118654752f)); break;
        }
        out[i - lo] = y;
      }
      dense::store_float(*Y, lo, out.data(), hi - lo);
    }
  });
  return status::ok();
}

}  // namespace

void register_contrib_norm_ops(op_registry& r) {
  const std::string ms = "com.microsoft";
  r.add("SimplifiedLayerNormalization", simple_kernel(simplified_layernorm));
  r.add("SimplifiedLayerNormalization", simple_kernel(simplified_layernorm), ms);
  r.add("SkipLayerNormalization", simple_kernel([](kernel_context& c) { return skip_layernorm(c, false); }), ms);
  r.add("SkipSimplifiedLayerNormalization", simple_kernel([](kernel_context& c) { return skip_layernorm(c, true); }), ms);
  r.add("Gelu", simple_kernel([](kernel_context& c) { return gelu_family(c, gelu_kind::exact); }), ms);
  r.add("FastGelu", simple_kernel([](kernel_context& c) { return gelu_family(c, gelu_kind::fast); }), ms);
  r.add("BiasGelu", simple_kernel([](kernel_context& c) { return gelu_family(c, gelu_kind::bias_exact); }), ms);
  r.add("QuickGelu", simple_kernel([](kernel_context& c) { return gelu_family(c, gelu_kind::quick); }), ms);
}

}  // namespace gpugrid::cpu
