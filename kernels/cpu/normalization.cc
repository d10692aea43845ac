// CPU normalization ops: BatchNormalization (inference), LayerNormalization,
// InstanceNormalization, GroupNormalization, LpNormalization, MeanVarianceNormalization, LRN.
//
// Statistics are computed in two passes over rows that are contiguous in memory (mean, then the
// mean squared deviation), accumulating in double, so long rows (InstanceNorm over a 224x224
// plane) stay accurate; the hot f32 loops use AVX2 when built with it. float16 / bfloat16
// inputs are computed in float.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_NORM_AVX2 1
#endif

#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {

namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

using namespace helpers;  // check_inputs, optional_input, parallel, grain_for, normalize_axis, prod

bool is_half(dtype t) { return t == dtype::f16 || t == dtype::bf16; }
bool is_float_type(dtype t) { return t == dtype::f32 || t == dtype::f64 || is_half(t); }

std::vector<float> half_to_float(const tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.type() == dtype::f16) {
    const half* p = t.data<half>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(p[i]);
  } else {
    const bfloat16* p = t.data<bfloat16>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(p[i]);
  }
  return v;
}

void float_to_half(const float* src, tensor* t) {
  const int64_t n = t->numel();
  if (t->type() == dtype::f16) {
    half* p = t->data<half>();
    for (int64_t i = 0; i < n; ++i) p[i] = half(src[i]);
  } else {
    bfloat16* p = t->data<bfloat16>();
    for (int64_t i = 0; i < n; ++i) p[i] = bfloat16(src[i]);
  }
}

// A float-typed input's elements as T (a copy, converting any float dtype).
template <typename T>
std::vector<T> values_as(const tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  if (t.type() == dtype_of<T>::value) {
    if (!v.empty()) std::memcpy(v.data(), t.raw(), v.size() * sizeof(T));
  } else {
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(t.as_double(static_cast<int64_t>(i)));
  }
  return v;
}

// Runs f(x, y) on float data: directly for f32/f64 (T = float / double), through float copies
// for float16 / bfloat16. Y must already be allocated with X's type and numel.
template <typename F>
void with_float_data(const tensor& X, tensor* Y, F&& f) {
  if (X.type() == dtype::f64) {
    f(X.data<double>(), Y->data<double>());
  } else if (X.type() == dtype::f32) {
    f(X.data<float>(), Y->data<float>());
  } else {
    std::vector<float> xf = half_to_float(X), yf(xf.size());
    f(static_cast<const float*>(xf.data()), yf.data());
    float_to_half(yf.data(), Y);
  }
}

// ---------------------------------------------------------------------------------------------
// Row statistics
// ---------------------------------------------------------------------------------------------

#ifdef GG_NORM_AVX2
inline double hsum_pd(__m256d v) {
  __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
  lo = _mm_add_pd(lo, hi);
  return _mm_cvtsd_f64(lo) + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
}
inline __m256d widen_add(__m256d acc, __m256 v) {
  acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
#endif

// Sum of x (Dev = false) or of (x - m)^2 (Dev = true) over a contiguous row, in double.
template <bool Dev>
double row_sum(const float* x, int64_t n, float m) {
  int64_t i = 0;
  double total = 0;
#ifdef GG_NORM_AVX2
  const __m256 vm = _mm256_set1_ps(m);
  __m256d acc = _mm256_setzero_pd();
  while (i + 8 <= n) {
    // Float partial sums over blocks of at most 1024, widened into double lanes.
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    const int64_t end = std::min(n, i + 1024);
    for (; i + 32 <= end; i += 32) {
      __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
      __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
      if (Dev) {
        a = _mm256_sub_ps(a, vm); b = _mm256_sub_ps(b, vm); c = _mm256_sub_ps(c, vm); d = _mm256_sub_ps(d, vm);
        s0 = _mm256_fmadd_ps(a, a, s0); s1 = _mm256_fmadd_ps(b, b, s1);
        s2 = _mm256_fmadd_ps(c, c, s2); s3 = _mm256_fmadd_ps(d, d, s3);
      } else {
        s0 = _mm256_add_ps(s0, a); s1 = _mm256_add_ps(s1, b); s2 = _mm256_add_ps(s2, c); s3 = _mm256_add_ps(s3, d);
      }
    }
    for (; i + 8 <= end; i += 8) {
      __m256 a = _mm256_loadu_ps(x + i);
      if (Dev) {
        a = _mm256_sub_ps(a, vm);
        s0 = _mm256_fmadd_ps(a, a, s0);
      } else {
        s0 = _mm256_add_ps(s0, a);
      }
    }
    acc = widen_add(acc, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  }
  total = hsum_pd(acc);
#endif
  for (; i < n; ++i) {
    const double d = Dev ? static_cast<double>(x[i]) - static_cast<double>(m) : static_cast<double>(x[i]);
    total += Dev ? d * d : d;
  }
  return total;
}

template <bool Dev>
double row_sum(const double* x, int64_t n, double m) {
  double a[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) {
      const double d = Dev ? x[i + j] - m : x[i + j];
      a[j] += Dev ? d * d : d;
    }
  for (; i < n; ++i) {
    const double d = Dev ? x[i] - m : x[i];
    a[0] += Dev ? d * d : d;
  }
  return (a[0] + a[1]) + (a[2] + a[3]);
}

// Mean and variance (population) of a contiguous row; n > 0.
template <typename T>
inline void row_mean_var(const T* x, int64_t n, double* mean, double* var) {
  const double m = row_sum<false>(x, n, T(0)) / static_cast<double>(n);
  *mean = m;
  *var = row_sum<true>(x, n, static_cast<T>(m)) / static_cast<double>(n);
  // The deviation pass used the mean rounded to T; correct for that rounding exactly.
  const double dm = static_cast<double>(static_cast<T>(m)) - m;
  *var = std::max(0.0, *var - dm * dm);
}

// y = x * a + b over a contiguous row.
template <typename T>
inline void affine_row(const T* x, T* y, int64_t n, T a, T b) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a + b;
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization (inference)
// ---------------------------------------------------------------------------------------------

status run_batchnorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 5, 5, 5));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("X must be a float tensor, got {}", dtype_name(X.type()));
  if (nd.opset >= 14 && nd.attr_int("training_mode", 0) != 0)
    return ctx.fail("training_mode=1 is not supported (inference only)");
  for (size_t i = 1; i < ctx.num_outputs(); ++i)
    if (ctx.output_wanted(i))
      return ctx.fail("output {} (a training-mode statistic) is not supported: inference only", i);
  const int64_t r = static_cast<int64_t>(X.rank());
  if (r < 1) return ctx.fail("X must have rank >= 1, got a scalar");
  const int64_t N = X.dim(0), C = r >= 2 ? X.dim(1) : 1, S = prod(X.shape(), 2, X.rank());
  // Opset < 9 spatial=0: statistics per (channel, position) rather than per channel.
  const bool per_position = nd.opset < 9 && nd.attr_int("spatial", 1) == 0;
  const int64_t P = per_position ? C * S : C;
  const char* names[] = {"", "scale", "B", "mean", "var"};
  for (size_t i = 1; i < 5; ++i) {
    const tensor& p = *ctx.input(i);
    if (!is_float_type(p.type())) return ctx.fail("{} must be a float tensor, got {}", names[i], dtype_name(p.type()));
    if (p.numel() != P)
      return ctx.fail("{} has {} elements (shape {}) but X {} has {} {}", names[i], p.numel(), shape_str(p.shape()),
                      shape_str(X.shape()), P, per_position ? "channel positions" : "channels");
  }
  const double eps = nd.attr_float("epsilon", 1e-5f);
  std::vector<double> scale = values_as<double>(*ctx.input(1)), bias = values_as<double>(*ctx.input(2)),
                      mean = values_as<double>(*ctx.input(3)), var = values_as<double>(*ctx.input(4));
  std::vector<double> a(static_cast<size_t>(P)), b(static_cast<size_t>(P));
  for (int64_t c = 0; c < P; ++c) {
    a[c] = scale[c] / std::sqrt(var[c] + eps);
    b[c] = bias[c] - mean[c] * a[c];
  }
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output_reusing(0, 0, X.type(), X.shape()));
  if (X.numel() == 0) return status::ok();
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    std::vector<T> at(a.begin(), a.end()), bt(b.begin(), b.end());
    if (per_position) {
      parallel(ctx, N, grain_for(C * S), [&](int64_t lo, int64_t hi) {
        for (int64_t n = lo; n < hi; ++n) {
          const T* xr = x + n * P;
          T* yr = y + n * P;
          for (int64_t i = 0; i < P; ++i) yr[i] = xr[i] * at[i] + bt[i];
        }
      });
    } else {
      parallel(ctx, N * C, grain_for(S), [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t c = t % C;
          affine_row<T>(x + t * S, y + t * S, S, at[c], bt[c]);
        }
      });
    }
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// LayerNormalization
// ---------------------------------------------------------------------------------------------

// A parameter (Scale / B) unidirectionally broadcast to `target`, as n = numel(target) values.
// Returns a pointer to the data: p's own bytes when it already has n elements of type T laid
// out as target, else `buf`. Empty string on success, else why it does not broadcast.
template <typename T>
std::string expand_param(const tensor& p, const shape_t& target, std::vector<T>* buf, const T** out) {
  const shape_t& ps = p.shape();
  if (ps.size() > target.size()) return "has more dims than the normalized shape " + shape_str(target);
  for (size_t i = 0; i < ps.size(); ++i) {
    const int64_t pd = ps[ps.size() - 1 - i], td = target[target.size() - 1 - i];
    if (pd != td && pd != 1) return "does not broadcast to the normalized shape " + shape_str(target);
  }
  const int64_t n = num_elements(target);
  if (p.numel() == n && p.type() == dtype_of<T>::value) {
    *out = p.data<T>();
    return "";
  }
  std::vector<T> src = values_as<T>(p);
  buf->resize(static_cast<size_t>(n));
  if (p.numel() == n) {
    *buf = std::move(src);
  } else {
    std::vector<int64_t> st = broadcast_strides(ps, target);
    broadcast_walker w(target, {st});
    w.for_range(0, n, [&](int64_t i, const int64_t* off) { (*buf)[static_cast<size_t>(i)] = src[static_cast<size_t>(off[0])]; });
  }
  *out = buf->data();
  return "";
}

status run_layernorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  const tensor& Sc = *ctx.input(1);
  const tensor* Bp = optional_input(ctx, 2);
  if (!is_float_type(X.type())) return ctx.fail("X must be a float tensor, got {}", dtype_name(X.type()));
  if (!is_float_type(Sc.type())) return ctx.fail("Scale must be a float tensor, got {}", dtype_name(Sc.type()));
  if (Bp && !is_float_type(Bp->type())) return ctx.fail("B must be a float tensor, got {}", dtype_name(Bp->type()));
  const int64_t r = static_cast<int64_t>(X.rank());
  int64_t axis;
  const int64_t a_attr = nd.attr_int("axis", -1);
  if (!normalize_axis(a_attr, r, &axis)) return ctx.fail("axis {} is out of range for input of rank {}", a_attr, r);
  const double eps = nd.attr_float("epsilon", 1e-5f);
  const int64_t stash = nd.attr_int("stash_type", 1);
  const dtype stat_type = stash == 11 ? dtype::f64 : dtype::f32;
  const int64_t outer = prod(X.shape(), 0, axis), n = prod(X.shape(), axis, r);
  const shape_t norm_shape(X.shape().begin() + axis, X.shape().end());
  shape_t stat_shape(X.shape().begin(), X.shape().begin() + axis);
  stat_shape.resize(static_cast<size_t>(r), 1);

  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output_reusing(0, 0, X.type(), X.shape()));
  tensor* Mean = nullptr;
  tensor* Inv = nullptr;
  if (ctx.output_wanted(1)) { GG_ASSIGN_OR_RETURN(Mean, ctx.output(1, stat_type, stat_shape)); }
  if (ctx.output_wanted(2)) { GG_ASSIGN_OR_RETURN(Inv, ctx.output(2, stat_type, stat_shape)); }
  std::string err;
  auto store_stat = [](tensor* t, int64_t i, double v) {
    if (!t) return;
    if (t->type() == dtype::f64) t->data<double>()[i] = v;
    else t->data<float>()[i] = static_cast<float>(v);
  };
  bool failed = false;
  std::string which;
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    std::vector<T> sbuf, bbuf;
    const T* s = nullptr;
    const T* b = nullptr;
    err = expand_param<T>(Sc, norm_shape, &sbuf, &s);
    if (!err.empty()) { failed = true; which = "Scale"; return; }
    if (Bp) {
      err = expand_param<T>(*Bp, norm_shape, &bbuf, &b);
      if (!err.empty()) { failed = true; which = "B"; return; }
    }
    if (n == 0) {
      for (int64_t o = 0; o < outer; ++o) {
        store_stat(Mean, o, std::numeric_limits<double>::quiet_NaN());
        store_stat(Inv, o, 1.0 / std::sqrt(std::numeric_limits<double>::quiet_NaN()));
      }
      return;
    }
    parallel(ctx, outer, grain_for(n * 3), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* xr = x + o * n;
        T* yr = y + o * n;
        double mean, var;
        row_mean_var<T>(xr, n, &mean, &var);
        const double inv = 1.0 / std::sqrt(var + eps);
        store_stat(Mean, o, mean);
        store_stat(Inv, o, inv);
        const T m = static_cast<T>(mean), iv = static_cast<T>(inv);
        if (b) {
          for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * iv * s[i] + b[i];
        } else {
          for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * iv * s[i];
        }
      }
    });
  });
  if (failed) return ctx.fail("{} (shape {}) {}", which, shape_str(which == "B" ? Bp->shape() : Sc.shape()), err);
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// InstanceNormalization / GroupNormalization
// ---------------------------------------------------------------------------------------------

// Normalizes groups of `gsize` contiguous elements (each made of `per` channels of S elements);
// channel c of the whole [N, C] gets y = (x - mean) * inv * scale[c] + bias[c].
template <typename T>
void group_normalize(kernel_context& ctx, const T* x, T* y, int64_t groups_total, int64_t chans_per_group,
                     int64_t C, int64_t S, double eps, const std::vector<double>& scale,
                     const std::vector<double>& bias) {
  const int64_t gsize = chans_per_group * S;
  parallel(ctx, groups_total, grain_for(gsize * 3), [&](int64_t lo, int64_t hi) {
    for (int64_t g = lo; g < hi; ++g) {
      const T* xg = x + g * gsize;
      T* yg = y + g * gsize;
      double mean = 0, var = 0;
      if (gsize > 0) row_mean_var<T>(xg, gsize, &mean, &var);
      const double inv = 1.0 / std::sqrt(var + eps);
      for (int64_t k = 0; k < chans_per_group; ++k) {
        const int64_t c = (g * chans_per_group + k) % C;
        const double a = inv * scale[c];
        affine_row<T>(xg + k * S, yg + k * S, S, static_cast<T>(a), static_cast<T>(bias[c] - mean * a));
      }
    }
  });
}

status run_instancenorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 3, 3, 3));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("X must be a float tensor, got {}", dtype_name(X.type()));
  if (X.rank() < 2) return ctx.fail("X must have rank >= 2 (N, C, ...), got shape {}", shape_str(X.shape()));
  const int64_t N = X.dim(0), C = X.dim(1), S = prod(X.shape(), 2, X.rank());
  const char* names[] = {"", "scale", "B"};
  for (size_t i = 1; i < 3; ++i) {
    const tensor& p = *ctx.input(i);
    if (!is_float_type(p.type())) return ctx.fail("{} must be a float tensor, got {}", names[i], dtype_name(p.type()));
    if (p.numel() != C)
      return ctx.fail("{} has {} elements (shape {}) but X {} has {} channels", names[i], p.numel(),
                      shape_str(p.shape()), shape_str(X.shape()), C);
  }
  const double eps = nd.attr_float("epsilon", 1e-5f);
  std::vector<double> scale = values_as<double>(*ctx.input(1)), bias = values_as<double>(*ctx.input(2));
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output_reusing(0, 0, X.type(), X.shape()));
  if (X.numel() == 0) return status::ok();
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    group_normalize<T>(ctx, x, y, N * C, 1, C, S, eps, scale, bias);
  });
  return status::ok();
}

status run_groupnorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 3, 3, 3));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("X must be a float tensor, got {}", dtype_name(X.type()));
  if (X.rank() < 2) return ctx.fail("X must have rank >= 2 (N, C, ...), got shape {}", shape_str(X.shape()));
  if (!nd.has_attr("num_groups")) return ctx.fail("missing the required attribute num_groups");
  const int64_t G = nd.attr_int("num_groups", 1);
  const int64_t N = X.dim(0), C = X.dim(1), S = prod(X.shape(), 2, X.rank());
  if (G <= 0) return ctx.fail("num_groups must be positive, got {}", G);
  if (C % G != 0) return ctx.fail("the channel count {} of X {} is not divisible by num_groups {}", C,
                                  shape_str(X.shape()), G);
  const int64_t cpg = C / G;
  const char* names[] = {"", "scale", "bias"};
  std::vector<double> params[3];
  for (size_t i = 1; i < 3; ++i) {
    const tensor& p = *ctx.input(i);
    if (!is_float_type(p.type())) return ctx.fail("{} must be a float tensor, got {}", names[i], dtype_name(p.type()));
    std::vector<double> v = values_as<double>(p);
    // Opset 18: one value per group; opset 21: one per channel.
    const bool per_group_ok = nd.opset < 21 || G == C;
    if (p.numel() == G && per_group_ok) {
      params[i].resize(static_cast<size_t>(C));
      for (int64_t c = 0; c < C; ++c) params[i][c] = v[c / cpg];
    } else if (p.numel() == C) {
      params[i] = std::move(v);
    } else {
      return ctx.fail("{} has {} elements (shape {}) but needs {} ({} for X {} with num_groups {})", names[i],
                      p.numel(), shape_str(p.shape()), nd.opset < 21 ? G : C,
                      nd.opset < 21 ? "one per group" : "one per channel", shape_str(X.shape()), G);
    }
  }
  const double eps = nd.attr_float("epsilon", 1e-5f);
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output_reusing(0, 0, X.type(), X.shape()));
  if (X.numel() == 0) return status::ok();
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    group_normalize<T>(ctx, x, y, N * G, cpg, C, S, eps, params[1], params[2]);
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// LpNormalization
// ---------------------------------------------------------------------------------------------

status run_lpnorm(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("input must be a float tensor, got {}", dtype_name(X.type()));
  const int64_t r = static_cast<int64_t>(X.rank());
  int64_t axis;
  const int64_t a_attr = nd.attr_int("axis", -1);
  if (!normalize_axis(a_attr, r, &axis)) return ctx.fail("axis {} is out of range for input of rank {}", a_attr, r);
  const int64_t p = nd.attr_int("p", 2);
  if (p != 1 && p != 2) return ctx.fail("p must be 1 or 2, got {}", p);
  const int64_t outer = prod(X.shape(), 0, axis), n = X.dim(axis), inner = prod(X.shape(), axis + 1, r);
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, X.type(), X.shape()));
  if (X.numel() == 0) return status::ok();
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    parallel(ctx, outer, grain_for(n * inner * 2), [&](int64_t lo, int64_t hi) {
      std::vector<double> norm(static_cast<size_t>(inner));
      for (int64_t o = lo; o < hi; ++o) {
        const T* xb = x + o * n * inner;
        T* yb = y + o * n * inner;
        std::fill(norm.begin(), norm.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
          const T* row = xb + i * inner;
          for (int64_t j = 0; j < inner; ++j) {
            const double v = row[j];
            norm[j] += p == 1 ? std::fabs(v) : v * v;
          }
        }
        for (int64_t j = 0; j < inner; ++j) {
          const double nv = p == 1 ? norm[j] : std::sqrt(norm[j]);
          norm[j] = nv == 0 ? 0.0 : 1.0 / nv;  // a zero vector stays zero (as onnxruntime)
        }
        for (int64_t i = 0; i < n; ++i) {
          const T* row = xb + i * inner;
          T* yr = yb + i * inner;
          for (int64_t j = 0; j < inner; ++j) yr[j] = static_cast<T>(row[j] * norm[j]);
        }
      }
    });
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// MeanVarianceNormalization: y = (x - mean) / (sqrt(var) + 1e-9) over `axes`.
// ---------------------------------------------------------------------------------------------

status run_mvn(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("input must be a float tensor, got {}", dtype_name(X.type()));
  const int64_t r = static_cast<int64_t>(X.rank());
  std::vector<int64_t> axes = nd.attr_ints("axes", {0, 2, 3});
  shape_t stat_shape = X.shape();
  for (int64_t a : axes) {
    int64_t ax;
    if (!normalize_axis(a, r, &ax))
      return ctx.fail("axis {} is out of range for input of rank {} (shape {})", a, r, shape_str(X.shape()));
    stat_shape[static_cast<size_t>(ax)] = 1;
  }
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, X.type(), X.shape()));
  const int64_t total = X.numel();
  if (total == 0) return status::ok();
  const int64_t groups = num_elements(stat_shape);
  const double count = static_cast<double>(total) / static_cast<double>(groups);
  broadcast_walker w(X.shape(), {broadcast_strides(stat_shape, X.shape())});
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    std::vector<double> mean(static_cast<size_t>(groups), 0.0), dev(static_cast<size_t>(groups), 0.0);
    w.for_range(0, total, [&](int64_t i, const int64_t* off) { mean[off[0]] += x[i]; });
    for (double& m : mean) m /= count;
    w.for_range(0, total, [&](int64_t i, const int64_t* off) {
      const double d = x[i] - mean[off[0]];
      dev[off[0]] += d * d;
    });
    for (double& d : dev) d = 1.0 / (std::sqrt(d / count) + 1e-9);
    w.for_range(0, total, [&](int64_t i, const int64_t* off) {
      y[i] = static_cast<T>((x[i] - mean[off[0]]) * dev[off[0]]);
    });
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// LRN (across channels)
// ---------------------------------------------------------------------------------------------

status run_lrn(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  if (!is_float_type(X.type())) return ctx.fail("input must be a float tensor, got {}", dtype_name(X.type()));
  if (X.rank() < 2) return ctx.fail("input must have rank >= 2 (N, C, ...), got shape {}", shape_str(X.shape()));
  if (!nd.has_attr("size")) return ctx.fail("missing the required attribute size");
  const int64_t size = nd.attr_int("size", 1);
  if (size <= 0) return ctx.fail("size must be positive, got {}", size);
  const double alpha = nd.attr_float("alpha", 1e-4f), beta = nd.attr_float("beta", 0.75f),
               bias = nd.attr_float("bias", 1.0f);
  const int64_t N = X.dim(0), C = X.dim(1), S = prod(X.shape(), 2, X.rank());
  const int64_t before = (size - 1) / 2, after = size - 1 - before;  // floor / ceil of (size-1)/2
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, X.type(), X.shape()));
  if (X.numel() == 0) return status::ok();
  with_float_data(X, Y, [&](const auto* x, auto* y) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    parallel(ctx, N * C, grain_for(S * std::min(size, C)), [&](int64_t lo, int64_t hi) {
      std::vector<double> sq(static_cast<size_t>(S));
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t n = t / C, c = t % C;
        std::fill(sq.begin(), sq.end(), 0.0);
        const int64_t c0 = std::max<int64_t>(0, c - before), c1 = std::min<int64_t>(C - 1, c + after);
        for (int64_t k = c0; k <= c1; ++k) {
          const T* xr = x + (n * C + k) * S;
          for (int64_t s = 0; s < S; ++s) sq[s] += static_cast<double>(xr[s]) * xr[s];
        }
        const T* xr = x + t * S;
        T* yr = y + t * S;
        for (int64_t s = 0; s < S; ++s)
          yr[s] = static_cast<T>(xr[s] / std::pow(bias + alpha / static_cast<double>(size) * sq[s], beta));
      }
    });
  });
  return status::ok();
}

}  // namespace

void register_norm_ops(op_registry& r) {
  r.add("BatchNormalization", simple_kernel(run_batchnorm));
  r.add("LayerNormalization", simple_kernel(run_layernorm));
  r.add("InstanceNormalization", simple_kernel(run_instancenorm));
  r.add("GroupNormalization", simple_kernel(run_groupnorm));
  r.add("LpNormalization", simple_kernel(run_lpnorm));
  r.add("MeanVarianceNormalization", simple_kernel(run_mvn));
  r.add("LRN", simple_kernel(run_lrn));
}

}  // namespace gpugrid::cpu
