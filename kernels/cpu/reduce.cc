// CPU reductions: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax, CumSum, TopK.
// Einsum lives in einsum.cc and is registered from here.
//
// Reductions view the input as blocks of adjacent dims that are all reduced or all kept (dims
// of size 1 dropped), so every case becomes either "reduce contiguous rows" (the innermost
// block is reduced) or "accumulate contiguous rows into an output row" (it is kept); the
// remaining outer blocks are walked through precomputed offset lists. Both inner loops are
// unit-stride and vectorize. Float sums accumulate in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_RED_AVX2 1
#endif

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {

void register_einsum_op(op_registry& r);  // einsum.cc

namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

using namespace helpers;  // check_inputs, optional_input, parallel, grain_for, normalize_axis, prod

// Double -> integer without UB: NaN -> 0, out of range saturates.
template <typename I>
I sat_cast(double v) {
  if (std::isnan(v)) return I(0);
  if (v <= static_cast<double>(std::numeric_limits<I>::lowest())) return std::numeric_limits<I>::lowest();
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

template <typename T>
T from_double(double v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<T>(v);
  else return sat_cast<T>(v);
}

bool is_half(dtype t) { return t == dtype::f16 || t == dtype::bf16; }

// Copies a half / bfloat16 tensor's elements to floats, and back.
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

// Reads a scalar (or one-element) integer input.
status scalar_int_input(const kernel_context& ctx, size_t i, const char* what, int64_t* out) {
  const tensor* t = ctx.input(i);
  if (!t || !t->defined()) return ctx.fail("input {} ({}) is required but missing", i, what);
  if (t->type() != dtype::i64 && t->type() != dtype::i32)
    return ctx.fail("{} must be int32 or int64, got {}", what, dtype_name(t->type()));
  if (t->numel() != 1) return ctx.fail("{} must have exactly one element, got shape {}", what, shape_str(t->shape()));
  *out = t->as_int64(0);
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Vectorized exp (float): Cephes expf, relative error ~2 ulp on [-87.3, 88.7].
// ---------------------------------------------------------------------------------------------

#ifdef GG_RED_AVX2
inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline double hsum_pd(__m256d v) {
  __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
  lo = _mm_add_pd(lo, hi);
  return _mm_cvtsd_f64(lo) + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
}

// Adds the 8 float lanes of v into the 4 double lanes of acc.
inline __m256d widen_add(__m256d acc, __m256 v) {
  acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
#endif

// Row max of finite-or-not floats; *bad set when the row has a NaN.
inline float row_max_f32(const float* x, int64_t n, bool* has_nan) {
  int64_t i = 0;
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
#ifdef GG_RED_AVX2
  if (n >= 16) {
    __m256 m0 = _mm256_set1_ps(m), m1 = m0;
    __m256 bad = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
      __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
      m0 = _mm256_max_ps(m0, a);
      m1 = _mm256_max_ps(m1, b);
    }
    m0 = _mm256_max_ps(m0, m1);
    alignas(32) float t[8];
    _mm256_store_ps(t, m0);
    for (float v : t) m = std::max(m, v);
    nan = _mm256_movemask_ps(bad) != 0;
  }
#endif
  for (; i < n; ++i) {
    if (x[i] != x[i]) nan = true;
    else m = std::max(m, x[i]);
  }
  *has_nan = nan;
  return m;
}

// y[i] = exp(x[i] - m) (when Store) and returns the sum of those values. m finite.
template <bool Store>
double exp_shift_sum_f32(const float* x, float* y, int64_t n, float m) {
  int64_t i = 0;
  double total = 0;
#ifdef GG_RED_AVX2
  const __m256 vm = _mm256_set1_ps(m);
  __m256d acc = _mm256_setzero_pd();
  while (i + 8 <= n) {
    // Sum a block in float, then add it into double lanes (accurate for very long rows).
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t end = std::min(n, i + 512);
    for (; i + 16 <= end; i += 16) {
      __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
      __m256 e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
      if (Store) {
        _mm256_storeu_ps(y + i, e0);
        _mm256_storeu_ps(y + i + 8, e1);
      }
      s0 = _mm256_add_ps(s0, e0);
      s1 = _mm256_add_ps(s1, e1);
    }
    for (; i + 8 <= end; i += 8) {
      __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
      if (Store) _mm256_storeu_ps(y + i, e0);
      s0 = _mm256_add_ps(s0, e0);
    }
    acc = widen_add(acc, _mm256_add_ps(s0, s1));
  }
  total = hsum_pd(acc);
#endif
  for (; i < n; ++i) {
    float e = std::exp(x[i] - m);
    if (Store) y[i] = e;
    total += e;
  }
  return total;
}

// In-place y[i] = exp(y[i]) for floats (inputs <= 0 or moderate).
void exp_inplace_f32(float* y, int64_t n) {
  int64_t i = 0;
#ifdef GG_RED_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp256(_mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] = std::exp(y[i]);
}

// Softmax's y[i] *= s, with results below the smallest normal float set to zero. Probabilities
// that small change nothing, but as subnormal floats every multiply-add that reads them later
// (attention's product with V) takes a microcode assist on x86: a GPT-2-style model with random
// weights spent 2.1 ms instead of 0.05 in each 12 x 64 x 64 x 64 product.
void scale_flush_f32(float* y, int64_t n, float s) {
  int64_t i = 0;
#ifdef GG_RED_AVX2
  const __m256 vs = _mm256_set1_ps(s), tiny = _mm256_set1_ps(std::numeric_limits<float>::min());
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(y + i), vs);
    _mm256_storeu_ps(y + i, _mm256_and_ps(v, _mm256_cmp_ps(v, tiny, _CMP_GE_OQ)));  // inputs are >= 0
  }
#endif
  for (; i < n; ++i) {
    const float v = y[i] * s;
    y[i] = v >= std::numeric_limits<float>::min() ? v : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------
// Reduce*
// ---------------------------------------------------------------------------------------------

enum class rop { sum, mean, max, min, prod, l1, l2, logsum, logsumexp, sumsquare };

// How the reduction walks a non-empty input (see the file comment).
struct reduce_plan {
  bool inner_reduced = false;
  int64_t inner = 1;            // size of the innermost block
  int64_t count = 1;            // input elements per output element
  int64_t n_out = 0;            // output elements
  std::vector<int64_t> koff;    // offsets of the kept outer index combinations, output order
  std::vector<int64_t> roff;    // offsets of the reduced outer index combinations
};

void make_plan(const shape_t& in, const std::vector<bool>& red, reduce_plan* p) {
  std::vector<int64_t> size;
  std::vector<bool> is_red;
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] == 1) continue;
    if (!size.empty() && is_red.back() == red[d]) {
      size.back() *= in[d];
    } else {
      size.push_back(in[d]);
      is_red.push_back(red[d]);
    }
  }
  if (size.empty()) {
    size.push_back(1);
    is_red.push_back(false);
  }
  const size_t nb = size.size();
  std::vector<int64_t> stride(nb, 1);
  for (size_t b = nb - 1; b-- > 0;) stride[b] = stride[b + 1] * size[b + 1];
  p->inner_reduced = is_red.back();
  p->inner = size.back();
  p->count = 1;
  for (size_t b = 0; b < nb; ++b)
    if (is_red[b]) p->count *= size[b];
  p->koff.assign(1, 0);
  p->roff.assign(1, 0);
  for (size_t b = 0; b + 1 < nb; ++b) {
    std::vector<int64_t>& list = is_red[b] ? p->roff : p->koff;
    std::vector<int64_t> next;
    next.reserve(list.size() * static_cast<size_t>(size[b]));
    for (int64_t off : list)
      for (int64_t i = 0; i < size[b]; ++i) next.push_back(off + i * stride[b]);
    list.swap(next);
  }
  p->n_out = static_cast<int64_t>(p->koff.size()) * (p->inner_reduced ? 1 : p->inner);
}

template <typename T>
constexpr bool is_fp_v = std::is_floating_point_v<T>;

// Max / min that propagate NaN (NumPy semantics); plain for integers.
template <typename T>
inline T max_nan(T a, T b) {
  if constexpr (is_fp_v<T>) return (b > a || b != b) ? b : a;
  else return b > a ? b : a;
}
template <typename T>
inline T min_nan(T a, T b) {
  if constexpr (is_fp_v<T>) return (b < a || b != b) ? b : a;
  else return b < a ? b : a;
}

struct max_comb {
  template <typename T>
  T operator()(T a, T b) const { return max_nan(a, b); }
};
struct min_comb {
  template <typename T>
  T operator()(T a, T b) const { return min_nan(a, b); }
};

// Float max / min of a row with NaN propagation, vectorized (the generic fold does not).
template <bool Max>
float row_minmax_f32(const float* x, int64_t n, float init) {
  int64_t i = 0;
  float r = init;
  bool nan = false;
#ifdef GG_RED_AVX2
  if (n >= 32) {
    __m256 m0 = _mm256_set1_ps(init), m1 = m0, m2 = m0, m3 = m0;
    __m256 bad = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
      __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
      __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
      bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
      if (Max) {
        m0 = _mm256_max_ps(m0, a); m1 = _mm256_max_ps(m1, b); m2 = _mm256_max_ps(m2, c); m3 = _mm256_max_ps(m3, d);
      } else {
        m0 = _mm256_min_ps(m0, a); m1 = _mm256_min_ps(m1, b); m2 = _mm256_min_ps(m2, c); m3 = _mm256_min_ps(m3, d);
      }
    }
    __m256 m = Max ? _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3))
                   : _mm256_min_ps(_mm256_min_ps(m0, m1), _mm256_min_ps(m2, m3));
    alignas(32) float t[8];
    _mm256_store_ps(t, m);
    for (float v : t) r = Max ? std::max(r, v) : std::min(r, v);
    nan = _mm256_movemask_ps(bad) != 0;
  }
#endif
  for (; i < n; ++i) {
    if (x[i] != x[i]) nan = true;
    else r = Max ? std::max(r, x[i]) : std::min(r, x[i]);
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : r;
}

// out[j] = max/min(out[j], s[j]) with NaN propagation, vectorized.
template <bool Max>
void col_minmax_f32(float* out, const float* s, int64_t n) {
  int64_t j = 0;
#ifdef GG_RED_AVX2
  for (; j + 8 <= n; j += 8) {
    __m256 o = _mm256_loadu_ps(out + j), v = _mm256_loadu_ps(s + j);
    __m256 m = Max ? _mm256_max_ps(v, o) : _mm256_min_ps(v, o);  // NaN in either -> o
    m = _mm256_blendv_ps(m, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    _mm256_storeu_ps(out + j, m);
  }
#endif
  for (; j < n; ++j) out[j] = Max ? max_nan(out[j], s[j]) : min_nan(out[j], s[j]);
}

template <typename A, typename T, typename C>
constexpr int f32_minmax_kind() {
  if constexpr (std::is_same_v<T, float> && std::is_same_v<A, float>) {
    if constexpr (std::is_same_v<C, max_comb>) return 1;
    if constexpr (std::is_same_v<C, min_comb>) return 2;
  }
  return 0;
}

// Combines 8 independent accumulators over a contiguous row (vectorizes without reassociation).
template <typename A, typename T, typename F, typename C>
inline A row_reduce(const T* x, int64_t n, A init, const F& f, const C& comb) {
  A a[8] = {init, init, init, init, init, init, init, init};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] = comb(a[j], f(x[i + j]));
  for (; i < n; ++i) a[0] = comb(a[0], f(x[i]));
  A r = comb(comb(comb(a[0], a[1]), comb(a[2], a[3])), comb(comb(a[4], a[5]), comb(a[6], a[7])));
  return r;
}

// acc[o] = comb over the reduced elements e of output o of f(x[e], o), starting from init.
template <typename A, typename T, typename F, typename C>
void reduce_core(kernel_context& ctx, const reduce_plan& p, const T* x, A* acc, A init, const F& f,
                 const C& comb) {
  const int64_t nk = static_cast<int64_t>(p.koff.size());
  const int64_t nr = static_cast<int64_t>(p.roff.size());
  const int64_t* koff = p.koff.data();
  const int64_t* roff = p.roff.data();
  const int64_t inner = p.inner;
  if (p.inner_reduced) {
    parallel(ctx, nk, grain_for(p.count), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        auto fo = [&](T v) { return f(v, o); };
        (void)fo;
        A a = init;
        for (int64_t r = 0; r < nr; ++r) {
          const T* row = x + koff[o] + roff[r];
          constexpr int mm = f32_minmax_kind<A, T, C>();
          if constexpr (mm == 1) a = comb(a, row_minmax_f32<true>(row, inner, init));
          else if constexpr (mm == 2) a = comb(a, row_minmax_f32<false>(row, inner, init));
          else a = comb(a, row_reduce<A>(row, inner, init, fo, comb));
        }
        acc[o] = a;
      }
    });
  } else {
    const int64_t chunk = 2048;
    const int64_t nchunks = (inner + chunk - 1) / chunk;
    parallel(ctx, nk * nchunks, grain_for(std::min(inner, chunk) * nr), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / nchunks;
        const int64_t j0 = (t % nchunks) * chunk, j1 = std::min(inner, j0 + chunk);
        A* out = acc + o * inner;
        const int64_t obase = o * inner;
        for (int64_t j = j0; j < j1; ++j) out[j] = init;
        for (int64_t r = 0; r < nr; ++r) {
          const T* s = x + koff[o] + roff[r];
          constexpr int mm = f32_minmax_kind<A, T, C>();
          if constexpr (mm == 1) col_minmax_f32<true>(out + j0, s + j0, j1 - j0);
          else if constexpr (mm == 2) col_minmax_f32<false>(out + j0, s + j0, j1 - j0);
          else for (int64_t j = j0; j < j1; ++j) out[j] = comb(out[j], f(s[j], obase + j));
        }
      }
    });
  }
}

// Integer sums wrap (as NumPy's fixed-width arithmetic) through uint64.
template <typename T>
inline uint64_t to_u64(T v) { return static_cast<uint64_t>(v); }
template <typename T>
inline T from_u64(uint64_t v) { return static_cast<T>(v); }

// Runs reduction k on a non-empty input x with plan p, writing p.n_out elements to y.
// MinMaxOnly instantiates only ReduceMax / ReduceMin (the 8-bit and bool types).
template <typename T, bool MinMaxOnly = false>
void reduce_typed(kernel_context& ctx, rop k, const T* x, const reduce_plan& p, T* y) {
  const int64_t n = p.n_out;
  const int64_t count = p.count;
  auto each = [&](auto&& fn) {
    parallel(ctx, n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) fn(o);
    });
  };
  if (k == rop::max || k == rop::min) {
    std::vector<T> acc(static_cast<size_t>(n));
    if (k == rop::max) {
      T init = is_fp_v<T> ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
      reduce_core<T>(ctx, p, x, acc.data(), init, [](T v, int64_t) { return v; }, max_comb{});
    } else {
      T init = is_fp_v<T> ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
      reduce_core<T>(ctx, p, x, acc.data(), init, [](T v, int64_t) { return v; }, min_comb{});
    }
    std::memcpy(y, acc.data(), static_cast<size_t>(n) * sizeof(T));
    return;
  }
  if constexpr (MinMaxOnly) {
    return;
  } else if constexpr (is_fp_v<T>) {
    std::vector<double> acc(static_cast<size_t>(n));
    double* a = acc.data();
    auto plus = [](double u, double v) { return u + v; };
    switch (k) {
      case rop::sum:
      case rop::mean:
      case rop::logsum:
        reduce_core<double>(ctx, p, x, a, 0.0, [](T v, int64_t) { return static_cast<double>(v); }, plus);
        break;
      case rop::l1:
        reduce_core<double>(ctx, p, x, a, 0.0, [](T v, int64_t) { return std::fabs(static_cast<double>(v)); }, plus);
        break;
      case rop::l2:
      case rop::sumsquare:
        reduce_core<double>(ctx, p, x, a, 0.0, [](T v, int64_t) { double d = v; return d * d; }, plus);
        break;
      case rop::prod:
        reduce_core<double>(ctx, p, x, a, 1.0, [](T v, int64_t) { return static_cast<double>(v); },
                            [](double u, double v) { return u * v; });
        break;
      case rop::logsumexp: {
        std::vector<T> mx(static_cast<size_t>(n));
        reduce_core<T>(ctx, p, x, mx.data(), -std::numeric_limits<T>::infinity(), [](T v, int64_t) { return v; },
                       max_comb{});
        std::vector<double> shift(static_cast<size_t>(n));
        for (int64_t o = 0; o < n; ++o) shift[o] = std::isfinite(mx[o]) ? static_cast<double>(mx[o]) : 0.0;
        const double* sh = shift.data();
        reduce_core<double>(ctx, p, x, a, 0.0, [sh](T v, int64_t o) { return std::exp(static_cast<double>(v) - sh[o]); }, plus);
        each([&](int64_t o) { y[o] = static_cast<T>(std::log(a[o]) + sh[o]); });
        return;
      }
      default: break;
    }
    each([&](int64_t o) {
      double v = a[o];
      switch (k) {
        case rop::mean: v = v / static_cast<double>(count); break;
        case rop::l2: v = std::sqrt(v); break;
        case rop::logsum: v = std::log(v); break;
        default: break;
      }
      y[o] = static_cast<T>(v);
    });
  } else {
    if (k == rop::l2 || k == rop::logsum || k == rop::logsumexp) {
      std::vector<double> acc(static_cast<size_t>(n));
      double* a = acc.data();
      auto plus = [](double u, double v) { return u + v; };
      if (k == rop::l2) {
        reduce_core<double>(ctx, p, x, a, 0.0, [](T v, int64_t) { double d = static_cast<double>(v); return d * d; }, plus);
        each([&](int64_t o) { y[o] = sat_cast<T>(std::sqrt(a[o])); });
      } else if (k == rop::logsum) {
        reduce_core<double>(ctx, p, x, a, 0.0, [](T v, int64_t) { return static_cast<double>(v); }, plus);
        each([&](int64_t o) { y[o] = sat_cast<T>(std::log(a[o])); });
      } else {
        std::vector<T> mx(static_cast<size_t>(n));
        reduce_core<T>(ctx, p, x, mx.data(), std::numeric_limits<T>::lowest(), [](T v, int64_t) { return v; },
                       max_comb{});
        const T* m = mx.data();
        reduce_core<double>(ctx, p, x, a, 0.0,
                            [m](T v, int64_t o) { return std::exp(static_cast<double>(v) - static_cast<double>(m[o])); }, plus);
        each([&](int64_t o) { y[o] = sat_cast<T>(std::log(a[o]) + static_cast<double>(m[o])); });
      }
      return;
    }
    std::vector<uint64_t> acc(static_cast<size_t>(n));
    uint64_t* a = acc.data();
    auto plus = [](uint64_t u, uint64_t v) { return u + v; };
    switch (k) {
      case rop::sum:
      case rop::mean:
        reduce_core<uint64_t>(ctx, p, x, a, 0, [](T v, int64_t) { return to_u64(v); }, plus);
        break;
      case rop::l1:
        reduce_core<uint64_t>(ctx, p, x, a, 0, [](T v, int64_t) {
          uint64_t u = to_u64(v);
          if constexpr (std::is_signed_v<T>) return v < 0 ? uint64_t{0} - u : u;
          else return u;
        }, plus);
        break;
      case rop::sumsquare:
        reduce_core<uint64_t>(ctx, p, x, a, 0, [](T v, int64_t) { uint64_t u = to_u64(v); return u * u; }, plus);
        break;
      case rop::prod:
        reduce_core<uint64_t>(ctx, p, x, a, 1, [](T v, int64_t) { return to_u64(v); },
                              [](uint64_t u, uint64_t v) { return u * v; });
        break;
      default: break;
    }
    if (k == rop::mean) {
      each([&](int64_t o) {
        if constexpr (std::is_signed_v<T>) y[o] = static_cast<T>(static_cast<int64_t>(a[o]) / count);
        else y[o] = static_cast<T>(a[o] / static_cast<uint64_t>(count));
      });
    } else {
      each([&](int64_t o) { y[o] = from_u64<T>(a[o]); });
    }
  }
}

// The value a reduction of zero elements has.
template <typename T>
T empty_reduction(rop k) {
  constexpr bool fp = is_fp_v<T>;
  const double inf = std::numeric_limits<double>::infinity();
  switch (k) {
    case rop::max: return fp ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
    case rop::min: return fp ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
    case rop::prod: return T(1);
    case rop::mean: return fp ? from_double<T>(std::numeric_limits<double>::quiet_NaN()) : T(0);
    case rop::logsum:
    case rop::logsumexp: return fp ? from_double<T>(-inf) : std::numeric_limits<T>::lowest();
    default: return T(0);
  }
}

template <typename T, bool MinMaxOnly = false>
void reduce_dispatch(kernel_context& ctx, rop k, const tensor& X, const reduce_plan& p, bool empty, tensor* Y) {
  T* y = Y->data<T>();
  if (empty) {
    T v = empty_reduction<T>(k);
    for (int64_t i = 0; i < Y->numel(); ++i) y[i] = v;
    return;
  }
  reduce_typed<T, MinMaxOnly>(ctx, k, X.data<T>(), p, y);
}

status run_reduce(kernel_context& ctx, rop k) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 2, 1));
  const tensor& X = *ctx.input(0);
  const node& nd = ctx.op();
  const bool keepdims = nd.attr_int("keepdims", 1) != 0;
  const bool noop = nd.attr_int("noop_with_empty_axes", 0) != 0;
  std::vector<int64_t> axes;
  if (const tensor* a = optional_input(ctx, 1)) {
    if (a->type() != dtype::i64 && a->type() != dtype::i32)
      return ctx.fail("axes must be int64, got {}", dtype_name(a->type()));
    if (a->rank() > 1) return ctx.fail("axes must be 1-D, got shape {}", shape_str(a->shape()));
    axes = a->to_int64_vector();
  }
  const int64_t r = static_cast<int64_t>(X.rank());
  std::vector<bool> red(static_cast<size_t>(r), false);
  if (axes.empty()) {
    if (!noop) std::fill(red.begin(), red.end(), true);
  } else {
    for (int64_t ax : axes) {
      int64_t a;
      if (!normalize_axis(ax, r, &a))
        return ctx.fail("axis {} is out of range for input of rank {} (shape {})", ax, r, shape_str(X.shape()));
      red[static_cast<size_t>(a)] = true;
    }
  }
  shape_t out_shape;
  for (int64_t d = 0; d < r; ++d) {
    if (!red[d]) out_shape.push_back(X.dim(d));
    else if (keepdims) out_shape.push_back(1);
  }
  const dtype t = X.type();
  const bool minmax = k == rop::max || k == rop::min;
  bool ok_type = false;
  switch (t) {
    case dtype::f32: case dtype::f64: case dtype::f16: case dtype::bf16:
    case dtype::i32: case dtype::i64: case dtype::u32: case dtype::u64:
      ok_type = true;
      break;
    case dtype::i8: case dtype::u8: case dtype::boolean: ok_type = minmax; break;
    default: break;
  }
  if (!ok_type) return ctx.fail("does not support input type {}", dtype_name(t));
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, t, out_shape));
  if (Y->numel() == 0) return status::ok();
  const bool empty = X.numel() == 0;
  if (empty && t == dtype::boolean) {
    // All of nothing is true, any of nothing is false.
    std::fill(Y->data<uint8_t>(), Y->data<uint8_t>() + Y->numel(), k == rop::min ? 1 : 0);
    return status::ok();
  }
  reduce_plan p;
  if (!empty) make_plan(X.shape(), red, &p);
  if (is_half(t)) {
    std::vector<float> xf = empty ? std::vector<float>() : half_to_float(X);
    std::vector<float> yf(static_cast<size_t>(Y->numel()));
    if (empty) std::fill(yf.begin(), yf.end(), empty_reduction<float>(k));
    else reduce_typed<float>(ctx, k, xf.data(), p, yf.data());
    float_to_half(yf.data(), Y);
    return status::ok();
  }
  switch (t) {
    case dtype::f32: reduce_dispatch<float>(ctx, k, X, p, empty, Y); break;
    case dtype::f64: reduce_dispatch<double>(ctx, k, X, p, empty, Y); break;
    case dtype::i32: reduce_dispatch<int32_t>(ctx, k, X, p, empty, Y); break;
    case dtype::i64: reduce_dispatch<int64_t>(ctx, k, X, p, empty, Y); break;
    case dtype::u32: reduce_dispatch<uint32_t>(ctx, k, X, p, empty, Y); break;
    case dtype::u64: reduce_dispatch<uint64_t>(ctx, k, X, p, empty, Y); break;
    case dtype::i8: reduce_dispatch<int8_t, true>(ctx, k, X, p, empty, Y); break;
    case dtype::u8: case dtype::boolean: reduce_dispatch<uint8_t, true>(ctx, k, X, p, empty, Y); break;
    default: break;
  }
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// ArgMax / ArgMin
// ---------------------------------------------------------------------------------------------

// True when v should replace the current best b (NaN wins and stays, as NumPy).
template <typename T, bool Max, bool Last>
inline bool arg_better(T v, T b) {
  if constexpr (is_fp_v<T>) {
    if (b != b) return Last && v != v;  // select_last_index: the last NaN
    if (v != v) return true;
  }
  if constexpr (Max) return Last ? v >= b : v > b;
  else return Last ? v <= b : v < b;
}

template <typename T, bool Max, bool Last>
void arg_typed(kernel_context& ctx, const T* x, int64_t outer, int64_t n, int64_t inner, int64_t* y) {
  parallel(ctx, outer, grain_for(n * inner), [&](int64_t b, int64_t e) {
    std::vector<T> best(static_cast<size_t>(inner));
    for (int64_t o = b; o < e; ++o) {
      const T* base = x + o * n * inner;
      int64_t* out = y + o * inner;
      if (inner == 1) {
        T bv = base[0];
        int64_t bi = 0;
        for (int64_t i = 1; i < n; ++i)
          if (arg_better<T, Max, Last>(base[i], bv)) { bv = base[i]; bi = i; }
        out[0] = bi;
        continue;
      }
      for (int64_t j = 0; j < inner; ++j) { best[j] = base[j]; out[j] = 0; }
      for (int64_t i = 1; i < n; ++i) {
        const T* row = base + i * inner;
        for (int64_t j = 0; j < inner; ++j)
          if (arg_better<T, Max, Last>(row[j], best[j])) { best[j] = row[j]; out[j] = i; }
      }
    }
  });
}

template <typename T>
void arg_dispatch(kernel_context& ctx, bool is_max, bool last, const T* x, int64_t outer, int64_t n,
                  int64_t inner, int64_t* y) {
  if (is_max) {
    if (last) arg_typed<T, true, true>(ctx, x, outer, n, inner, y);
    else arg_typed<T, true, false>(ctx, x, outer, n, inner, y);
  } else {
    if (last) arg_typed<T, false, true>(ctx, x, outer, n, inner, y);
    else arg_typed<T, false, false>(ctx, x, outer, n, inner, y);
  }
}

status run_arg(kernel_context& ctx, bool is_max) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& X = *ctx.input(0);
  const node& nd = ctx.op();
  const int64_t r = static_cast<int64_t>(X.rank());
  int64_t axis;
  if (r == 0) return ctx.fail("input must have rank >= 1, got a scalar");
  if (!normalize_axis(nd.attr_int("axis", 0), r, &axis))
    return ctx.fail("axis {} is out of range for input of rank {}", nd.attr_int("axis", 0), r);
  const bool keepdims = nd.attr_int("keepdims", 1) != 0;
  const bool last = nd.attr_int("select_last_index", 0) != 0;
  shape_t out_shape;
  for (int64_t d = 0; d < r; ++d) {
    if (d != axis) out_shape.push_back(X.dim(d));
    else if (keepdims) out_shape.push_back(1);
  }
  const int64_t outer = prod(X.shape(), 0, axis), n = X.dim(axis), inner = prod(X.shape(), axis + 1, r);
  const dtype t = X.type();
  bool ok_type = t == dtype::f32 || t == dtype::f64 || is_half(t) || is_integer(t) || t == dtype::boolean;
  if (!ok_type) return ctx.fail("does not support input type {}", dtype_name(t));
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, dtype::i64, out_shape));
  if (Y->numel() == 0) return status::ok();
  if (n == 0) return ctx.fail("cannot take the arg{} of an empty axis (input shape {})", is_max ? "max" : "min", shape_str(X.shape()));
  int64_t* y = Y->data<int64_t>();
  if (is_half(t)) {
    std::vector<float> xf = half_to_float(X);
    arg_dispatch<float>(ctx, is_max, last, xf.data(), outer, n, inner, y);
    return status::ok();
  }
  if (t == dtype::boolean) {
    arg_dispatch<uint8_t>(ctx, is_max, last, X.data<uint8_t>(), outer, n, inner, y);
    return status::ok();
  }
  dispatch_numeric(t, [&](auto tag) {
    using T = decltype(tag);
    arg_dispatch<T>(ctx, is_max, last, X.data<T>(), outer, n, inner, y);
  });
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Softmax / LogSoftmax / Hardmax
// ---------------------------------------------------------------------------------------------

enum class smx { softmax, logsoftmax, hardmax };

// One contiguous row, NumPy semantics for any input (the slow, exact path).
template <typename T>
void softmax_row_generic(const T* x, T* y, int64_t n, int64_t stride, smx mode) {
  T m = -std::numeric_limits<T>::infinity();
  bool nan = false;
  int64_t arg = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i * stride];
    if (v != v) nan = true;
    else if (v > m) m = v;
  }
  if (mode == smx::hardmax) {
    // First index of the maximum (a NaN row has no maximum: first NaN, as NumPy's argmax).
    if (nan) {
      for (int64_t i = 0; i < n; ++i)
        if (x[i * stride] != x[i * stride]) { arg = i; break; }
    } else {
      arg = 0;
      for (int64_t i = 0; i < n; ++i)
        if (x[i * stride] == m) { arg = i; break; }
    }
    for (int64_t i = 0; i < n; ++i) y[i * stride] = T(i == arg ? 1 : 0);
    return;
  }
  if (nan) m = std::numeric_limits<T>::quiet_NaN();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i * stride]) - static_cast<double>(m));
  if (mode == smx::softmax) {
    for (int64_t i = 0; i < n; ++i)
      y[i * stride] = static_cast<T>(std::exp(static_cast<double>(x[i * stride]) - static_cast<double>(m)) / sum);
  } else {
    const double ls = std::log(sum);
    for (int64_t i = 0; i < n; ++i)
      y[i * stride] = static_cast<T>(static_cast<double>(x[i * stride]) - static_cast<double>(m) - ls);
  }
}

// Contiguous rows of length n: the hot path (attention scores, logits).
void softmax_rows_f32(kernel_context& ctx, const float* x, float* y, int64_t rows, int64_t n, smx mode) {
  parallel(ctx, rows, grain_for(n * 4), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      bool nan = false;
      const float m = row_max_f32(xr, n, &nan);
      if (nan || !std::isfinite(m) || mode == smx::hardmax) {
        softmax_row_generic<float>(xr, yr, n, 1, mode);
        continue;
      }
      if (mode == smx::softmax) {
        const double s = exp_shift_sum_f32<true>(xr, yr, n, m);
        scale_flush_f32(yr, n, static_cast<float>(1.0 / s));
      } else {
        // (x - m) - log(s): x - m is exact for nearby values, so outputs near 0 stay accurate.
        const float ls = static_cast<float>(std::log(exp_shift_sum_f32<false>(xr, nullptr, n, m)));
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) - ls;
      }
    }
  });
}

// Softmax along the middle axis of [outer, n, inner] with inner > 1 (float).
void softmax_strided_f32(kernel_context& ctx, const float* x, float* y, int64_t outer, int64_t n, int64_t inner,
                         smx mode) {
  parallel(ctx, outer, grain_for(n * inner * 4), [&](int64_t b, int64_t e) {
    std::vector<float> m(static_cast<size_t>(inner));
    std::vector<double> s(static_cast<size_t>(inner));  // double: tiny terms still count
    std::vector<uint8_t> bad(static_cast<size_t>(inner));
    std::vector<float> tmp;
    for (int64_t o = b; o < e; ++o) {
      const float* xb = x + o * n * inner;
      float* yb = y + o * n * inner;
      if (mode == smx::hardmax) {
        for (int64_t j = 0; j < inner; ++j) softmax_row_generic<float>(xb + j, yb + j, n, inner, mode);
        continue;
      }
      std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
      std::fill(bad.begin(), bad.end(), 0);
      for (int64_t i = 0; i < n; ++i) {
        const float* row = xb + i * inner;
        for (int64_t j = 0; j < inner; ++j) {
          bad[j] |= row[j] != row[j];
          m[j] = std::max(m[j], row[j]);
        }
      }
      bool any_bad = false;
      for (int64_t j = 0; j < inner; ++j) {
        if (!std::isfinite(m[j])) bad[j] = 1;
        if (bad[j]) { any_bad = true; m[j] = 0; }
      }
      if (mode == smx::softmax) {
        std::fill(s.begin(), s.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
          const float* row = xb + i * inner;
          float* yr = yb + i * inner;
          for (int64_t j = 0; j < inner; ++j) yr[j] = row[j] - m[j];
          exp_inplace_f32(yr, inner);
          for (int64_t j = 0; j < inner; ++j) s[j] += yr[j];
        }
        for (int64_t j = 0; j < inner; ++j) s[j] = 1.0 / s[j];
        for (int64_t i = 0; i < n; ++i) {
          float* yr = yb + i * inner;
          for (int64_t j = 0; j < inner; ++j) yr[j] *= static_cast<float>(s[j]);
        }
      } else {
        tmp.resize(static_cast<size_t>(inner));
        std::fill(s.begin(), s.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
          const float* row = xb + i * inner;
          for (int64_t j = 0; j < inner; ++j) tmp[j] = row[j] - m[j];
          exp_inplace_f32(tmp.data(), inner);
          for (int64_t j = 0; j < inner; ++j) s[j] += tmp[j];
        }
        for (int64_t j = 0; j < inner; ++j) s[j] = std::log(s[j]);
        for (int64_t i = 0; i < n; ++i) {
          const float* row = xb + i * inner;
          float* yr = yb + i * inner;
          for (int64_t j = 0; j < inner; ++j) yr[j] = (row[j] - m[j]) - static_cast<float>(s[j]);
        }
      }
      if (any_bad) {
        // Columns with NaN or infinite maxima: redo exactly (x and y never alias here).
        for (int64_t j = 0; j < inner; ++j)
          if (bad[j]) softmax_row_generic<float>(xb + j, yb + j, n, inner, mode);
      }
    }
  });
}

template <typename T>
void softmax_generic(kernel_context& ctx, const T* x, T* y, int64_t outer, int64_t n, int64_t inner, smx mode) {
  parallel(ctx, outer * inner, grain_for(n * 8), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / inner, j = t % inner;
      softmax_row_generic<T>(x + o * n * inner + j, y + o * n * inner + j, n, inner, mode);
    }
  });
}

status run_softmax(kernel_context& ctx, smx mode) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& X = *ctx.input(0);
  const node& nd = ctx.op();
  const int64_t r = static_cast<int64_t>(X.rank());
  const dtype t = X.type();
  if (t != dtype::f32 && t != dtype::f64 && !is_half(t))
    return ctx.fail("does not support input type {} (float types only)", dtype_name(t));
  int64_t outer, n, inner;
  if (nd.opset >= 13) {
    const int64_t a = nd.attr_int("axis", -1);
    int64_t axis;
    if (!normalize_axis(a, r, &axis)) return ctx.fail("axis {} is out of range for input of rank {}", a, r);
    outer = prod(X.shape(), 0, axis);
    n = X.dim(axis);
    inner = prod(X.shape(), axis + 1, r);
  } else {
    // Before opset 13: the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])].
    int64_t a = nd.attr_int("axis", 1);
    if (a < -r || a > r) return ctx.fail("axis {} is out of range for input of rank {}", a, r);
    if (a < 0) a += r;
    outer = prod(X.shape(), 0, a);
    n = prod(X.shape(), a, r);
    inner = 1;
  }
  // The fast strided path reads x after writing y for bad columns; keep x separate then.
  GG_ASSIGN_OR_RETURN(tensor* Y, (inner > 1 ? ctx.output(0, t, X.shape()) : ctx.output_reusing(0, 0, t, X.shape())));
  if (X.numel() == 0) return status::ok();
  if (t == dtype::f64) {
    softmax_generic<double>(ctx, X.data<double>(), Y->data<double>(), outer, n, inner, mode);
    return status::ok();
  }
  std::vector<float> xf, yf;
  const float* x;
  float* y;
  if (is_half(t)) {
    xf = half_to_float(X);
    yf.resize(xf.size());
    x = xf.data();
    y = yf.data();
  } else {
    x = X.data<float>();
    y = Y->data<float>();
  }
  if (inner == 1) softmax_rows_f32(ctx, x, y, outer, n, mode);
  else softmax_strided_f32(ctx, x, y, outer, n, inner, mode);
  if (is_half(t)) float_to_half(yf.data(), Y);
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// CumSum
// ---------------------------------------------------------------------------------------------

template <typename T>
inline T add_wrap(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}

template <typename T>
void cumsum_typed(kernel_context& ctx, const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool exclusive,
                  bool reverse) {
  parallel(ctx, outer, grain_for(n * inner), [&](int64_t b, int64_t e) {
    std::vector<T> acc(static_cast<size_t>(inner));
    for (int64_t o = b; o < e; ++o) {
      const T* xb = x + o * n * inner;
      T* yb = y + o * n * inner;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t s = 0; s < n; ++s) {
        const int64_t i = reverse ? n - 1 - s : s;
        const T* xr = xb + i * inner;
        T* yr = yb + i * inner;
        if (exclusive) {
          for (int64_t j = 0; j < inner; ++j) {
            yr[j] = acc[j];
            acc[j] = add_wrap(acc[j], xr[j]);
          }
        } else {
          for (int64_t j = 0; j < inner; ++j) {
            acc[j] = add_wrap(acc[j], xr[j]);
            yr[j] = acc[j];
          }
        }
      }
    }
  });
}

status run_cumsum(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 2, 2));
  const tensor& X = *ctx.input(0);
  const node& nd = ctx.op();
  int64_t a;
  GG_RETURN_IF_ERROR(scalar_int_input(ctx, 1, "axis", &a));
  const int64_t r = static_cast<int64_t>(X.rank());
  int64_t axis;
  if (!normalize_axis(a, r, &axis)) return ctx.fail("axis {} is out of range for input of rank {}", a, r);
  const bool exclusive = nd.attr_int("exclusive", 0) != 0, reverse = nd.attr_int("reverse", 0) != 0;
  const dtype t = X.type();
  const int64_t outer = prod(X.shape(), 0, axis), n = X.dim(axis), inner = prod(X.shape(), axis + 1, r);
  bool ok_type = t == dtype::f32 || t == dtype::f64 || is_half(t) || t == dtype::i32 || t == dtype::i64 ||
                 t == dtype::u32 || t == dtype::u64;
  if (!ok_type) return ctx.fail("does not support input type {}", dtype_name(t));
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, t, X.shape()));
  if (X.numel() == 0) return status::ok();
  if (is_half(t)) {
    std::vector<float> xf = half_to_float(X), yf(xf.size());
    cumsum_typed<float>(ctx, xf.data(), yf.data(), outer, n, inner, exclusive, reverse);
    float_to_half(yf.data(), Y);
    return status::ok();
  }
  switch (t) {
    case dtype::f32: cumsum_typed<float>(ctx, X.data<float>(), Y->data<float>(), outer, n, inner, exclusive, reverse); break;
    case dtype::f64: cumsum_typed<double>(ctx, X.data<double>(), Y->data<double>(), outer, n, inner, exclusive, reverse); break;
    case dtype::i32: case dtype::u32:
      cumsum_typed<uint32_t>(ctx, X.data<uint32_t>(), Y->data<uint32_t>(), outer, n, inner, exclusive, reverse);
      break;
    case dtype::i64: case dtype::u64:
      cumsum_typed<uint64_t>(ctx, X.data<uint64_t>(), Y->data<uint64_t>(), outer, n, inner, exclusive, reverse);
      break;
    default: break;
  }
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// TopK
// ---------------------------------------------------------------------------------------------

// Strict total order for TopK: NaN counts as the largest value; ties go to the lower index.
template <typename T, bool Largest>
struct topk_less {
  const T* v;
  bool operator()(int64_t a, int64_t b) const {
    T x = v[a], y = v[b];
    if constexpr (is_fp_v<T>) {
      const bool xn = x != x, yn = y != y;
      if (xn || yn) {
        if (xn && yn) return a < b;
        return Largest ? xn : yn;
      }
    }
    if (x != y) return Largest ? x > y : x < y;
    return a < b;
  }
};

template <typename T, bool Largest>
void topk_typed(kernel_context& ctx, const T* x, T* vals, int64_t* idx, int64_t outer, int64_t n, int64_t inner,
                int64_t k) {
  parallel(ctx, outer * inner, grain_for(n * 4), [&](int64_t b, int64_t e) {
    std::vector<T> row(static_cast<size_t>(n));
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / inner, j = t % inner;
      const T* src = x + o * n * inner + j;
      for (int64_t i = 0; i < n; ++i) row[i] = src[i * inner];
      std::iota(order.begin(), order.end(), int64_t{0});
      topk_less<T, Largest> less{row.data()};
      if (k < n) {
        std::nth_element(order.begin(), order.begin() + k, order.end(), less);
        std::sort(order.begin(), order.begin() + k, less);
      } else {
        std::sort(order.begin(), order.end(), less);
      }
      T* vo = vals + o * k * inner + j;
      int64_t* io = idx + o * k * inner + j;
      for (int64_t i = 0; i < k; ++i) {
        vo[i * inner] = row[order[i]];
        io[i * inner] = order[i];
      }
    }
  });
}

status run_topk(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 2, 2));
  const tensor& X = *ctx.input(0);
  const node& nd = ctx.op();
  int64_t k;
  GG_RETURN_IF_ERROR(scalar_int_input(ctx, 1, "K", &k));
  const int64_t r = static_cast<int64_t>(X.rank());
  int64_t axis;
  if (!normalize_axis(nd.attr_int("axis", -1), r, &axis))
    return ctx.fail("axis {} is out of range for input of rank {}", nd.attr_int("axis", -1), r);
  const bool largest = nd.attr_int("largest", 1) != 0;
  const int64_t n = X.dim(axis);
  if (k < 0) return ctx.fail("K must be non-negative, got {}", k);
  if (k > n) return ctx.fail("K ({}) is larger than the axis dimension ({}) of input shape {}", k, n, shape_str(X.shape()));
  const dtype t = X.type();
  bool ok_type = t == dtype::f32 || t == dtype::f64 || is_half(t) || is_integer(t);
  if (!ok_type) return ctx.fail("does not support input type {}", dtype_name(t));
  shape_t out_shape = X.shape();
  out_shape[static_cast<size_t>(axis)] = k;
  GG_ASSIGN_OR_RETURN(tensor* V, ctx.output(0, t, out_shape));
  tensor idx_tmp;
  int64_t* idx;
  if (ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(tensor* I, ctx.output(1, dtype::i64, out_shape));
    idx = I->data<int64_t>();
  } else {
    idx_tmp = tensor::zeros(dtype::i64, out_shape);
    idx = idx_tmp.data<int64_t>();
  }
  if (V->numel() == 0) return status::ok();
  const int64_t outer = prod(X.shape(), 0, axis), inner = prod(X.shape(), axis + 1, r);
  auto go = [&](auto tag, const auto* x, auto* v) {
    using T = decltype(tag);
    if (largest) topk_typed<T, true>(ctx, x, v, idx, outer, n, inner, k);
    else topk_typed<T, false>(ctx, x, v, idx, outer, n, inner, k);
  };
  if (is_half(t)) {
    std::vector<float> xf = half_to_float(X), vf(static_cast<size_t>(V->numel()));
    go(float{}, xf.data(), vf.data());
    float_to_half(vf.data(), V);
    return status::ok();
  }
  dispatch_numeric(t, [&](auto tag) {
    using T = decltype(tag);
    go(tag, X.data<T>(), V->data<T>());
  });
  return status::ok();
}

}  // namespace

void register_reduce_ops(op_registry& r) {
  const std::pair<const char*, rop> reductions[] = {
      {"ReduceSum", rop::sum},       {"ReduceMean", rop::mean},     {"ReduceMax", rop::max},
      {"ReduceMin", rop::min},       {"ReduceProd", rop::prod},     {"ReduceL1", rop::l1},
      {"ReduceL2", rop::l2},         {"ReduceLogSum", rop::logsum}, {"ReduceLogSumExp", rop::logsumexp},
      {"ReduceSumSquare", rop::sumsquare}};
  for (const auto& [name, k] : reductions) {
    rop kk = k;
    r.add(name, simple_kernel([kk](kernel_context& ctx) { return run_reduce(ctx, kk); }));
  }
  r.add("ArgMax", simple_kernel([](kernel_context& ctx) { return run_arg(ctx, true); }));
  r.add("ArgMin", simple_kernel([](kernel_context& ctx) { return run_arg(ctx, false); }));
  r.add("Softmax", simple_kernel([](kernel_context& ctx) { return run_softmax(ctx, smx::softmax); }));
  r.add("LogSoftmax", simple_kernel([](kernel_context& ctx) { return run_softmax(ctx, smx::logsoftmax); }));
  r.add("Hardmax", simple_kernel([](kernel_context& ctx) { return run_softmax(ctx, smx::hardmax); }));
  r.add("CumSum", simple_kernel(run_cumsum));
  r.add("TopK", simple_kernel(run_topk));
  register_einsum_op(r);
}

}  // namespace gpugrid::cpu
