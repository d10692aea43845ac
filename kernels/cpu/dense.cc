#include "kernels/cpu/dense.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>

#include "engine/thread_pool.h"
#include "kernels/cpu/sgemm.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_DENSE_AVX2 1
#endif

namespace gpugrid::cpu::dense {
namespace {

float dot(const float* x, const float* y, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#ifdef GG_DENSE_AVX2
  __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    v0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), v0);
    v1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), v1);
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(v0, v1));
  for (float x8 : t) s += x8;
#endif
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// c[j] = dot(a, B[j, 0..k)) for j in [j0, j1): rows of B (op(B) transposed) four at a time,
// each vector of a loaded once for the four.
void gemv_trans_rows(const float* a, const float* b, int64_t ldb, int64_t k, float* c, int64_t j0, int64_t j1) {
  int64_t j = j0;
#ifdef GG_DENSE_AVX2
  const int64_t k8 = k & ~int64_t{7};
  auto hsum = [](__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  };
  for (; j + 4 <= j1; j += 4) {
    const float *r0 = b + j * ldb, *r1 = r0 + ldb, *r2 = r1 + ldb, *r3 = r2 + ldb;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t p = 0; p < k8; p += 8) {
      const __m256 x = _mm256_loadu_ps(a + p);
      s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r0 + p), s0);
      s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r1 + p), s1);
      s2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r2 + p), s2);
      s3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r3 + p), s3);
    }
    float t0 = hsum(s0), t1 = hsum(s1), t2 = hsum(s2), t3 = hsum(s3);
    for (int64_t p = k8; p < k; ++p) {
      t0 += a[p] * r0[p];
      t1 += a[p] * r1[p];
      t2 += a[p] * r2[p];
      t3 += a[p] * r3[p];
    }
    c[j] = t0, c[j + 1] = t1, c[j + 2] = t2, c[j + 3] = t3;
  }
#endif
  for (; j < j1; ++j) c[j] = dot(a, b + j * ldb, k);
}

// c[j] = sum_p a[p] * b[p, j] for j in [j0, j1), B float or float16. Tiles of up to 512
// columns whose sums stay in L1; four rows of B at a time, each read contiguously (float16
// converted 8 values at a time).
template <typename T>
void gemv_rows(const float* a, const T* b, int64_t ldb, int64_t k, float* c, int64_t j0, int64_t j1) {
#if defined(GG_DENSE_AVX2) && defined(__F16C__)
  auto ld = [](const T* p) {
    if constexpr (std::is_same_v<T, half>) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    else return _mm256_loadu_ps(p);
  };
  alignas(32) float acc[512];
  for (int64_t t0 = j0; t0 < j1; t0 += 512) {
    const int64_t w = std::min<int64_t>(512, j1 - t0), w8 = w & ~int64_t{7};
    std::fill(acc, acc + w, 0.f);
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const __m256 a0 = _mm256_broadcast_ss(a + p), a1 = _mm256_broadcast_ss(a + p + 1);
      const __m256 a2 = _mm256_broadcast_ss(a + p + 2), a3 = _mm256_broadcast_ss(a + p + 3);
      const T* r0 = b + p * ldb + t0;
      const T *r1 = r0 + ldb, *r2 = r1 + ldb, *r3 = r2 + ldb;
      for (int64_t j = 0; j < w8; j += 8) {
        __m256 v = _mm256_load_ps(acc + j);
        v = _mm256_fmadd_ps(a0, ld(r0 + j), v);
        v = _mm256_fmadd_ps(a1, ld(r1 + j), v);
        v = _mm256_fmadd_ps(a2, ld(r2 + j), v);
        v = _mm256_fmadd_ps(a3, ld(r3 + j), v);
        _mm256_store_ps(acc + j, v);
      }
      for (int64_t j = w8; j < w; ++j)
        acc[j] += a[p] * static_cast<float>(r0[j]) + a[p + 1] * static_cast<float>(r1[j]) +
                  a[p + 2] * static_cast<float>(r2[j]) + a[p + 3] * static_cast<float>(r3[j]);
    }
    for (; p < k; ++p) {
      const __m256 a0 = _mm256_broadcast_ss(a + p);
      const T* r0 = b + p * ldb + t0;
      for (int64_t j = 0; j < w8; j += 8) _mm256_store_ps(acc + j, _mm256_fmadd_ps(a0, ld(r0 + j), _mm256_load_ps(acc + j)));
      for (int64_t j = w8; j < w; ++j) acc[j] += a[p] * static_cast<float>(r0[j]);
    }
    std::copy(acc, acc + w, c + t0);
  }
#else
  for (int64_t j = j0; j < j1; ++j) {
    float s = 0.f;
    for (int64_t p = 0; p < k; ++p) s += a[p] * static_cast<float>(b[p * ldb + j]);
    c[j] = s;
  }
#endif
}

// acc[0, n) += sum over p in [p0, p1) of a[p] * b[p, 0..n): whole rows of B streamed in order
// (four at a time), so a range of rows is one contiguous read.
template <typename T>
void rows_into(const float* a, const T* b, int64_t ldb, int64_t p0, int64_t p1, int64_t n, float* acc) {
  int64_t p = p0;
#if defined(GG_DENSE_AVX2) && defined(__F16C__)
  auto ld = [](const T* q) {
    if constexpr (std::is_same_v<T, half>) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    else return _mm256_loadu_ps(q);
  };
  const int64_t n8 = n & ~int64_t{7};
  for (; p + 4 <= p1; p += 4) {
    const __m256 a0 = _mm256_broadcast_ss(a + p), a1 = _mm256_broadcast_ss(a + p + 1);
    const __m256 a2 = _mm256_broadcast_ss(a + p + 2), a3 = _mm256_broadcast_ss(a + p + 3);
    const T* r0 = b + p * ldb;
    const T *r1 = r0 + ldb, *r2 = r1 + ldb, *r3 = r2 + ldb;
    for (int64_t j = 0; j < n8; j += 8) {
      __m256 v = _mm256_loadu_ps(acc + j);
      v = _mm256_fmadd_ps(a0, ld(r0 + j), v);
      v = _mm256_fmadd_ps(a1, ld(r1 + j), v);
      v = _mm256_fmadd_ps(a2, ld(r2 + j), v);
      v = _mm256_fmadd_ps(a3, ld(r3 + j), v);
      _mm256_storeu_ps(acc + j, v);
    }
    for (int64_t j = n8; j < n; ++j)
      acc[j] += a[p] * static_cast<float>(r0[j]) + a[p + 1] * static_cast<float>(r1[j]) +
                a[p + 2] * static_cast<float>(r2[j]) + a[p + 3] * static_cast<float>(r3[j]);
  }
#endif
  for (; p < p1; ++p)
    for (int64_t j = 0; j < n; ++j) acc[j] += a[p] * static_cast<float>(b[p * ldb + j]);
}

// c[0, n) = a[0, k) * B[k, n] for one row: the rows of B split among tasks (each streams its
// contiguous range of rows into its own sums, added up at the end) instead of the columns
// (each task reading a narrow strip of every row).
template <typename T>
void gemv_split_rows(thread_pool* pool, const float* a, const T* b, int64_t ldb, int64_t k, int64_t n, float* c) {
  const int64_t threads = pool ? pool->size() : 1;
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(threads > 1 ? 2 * threads : 1, k / 16));
  if (tasks == 1) {
    std::fill(c, c + n, 0.f);
    rows_into(a, b, ldb, 0, k, n, c);
    return;
  }
  const int64_t per = (k / tasks + 3) / 4 * 4;
  std::vector<float> part(static_cast<size_t>((tasks - 1) * n), 0.f);
  std::fill(c, c + n, 0.f);
  pool->parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p0 = std::min(k, t * per), p1 = t + 1 == tasks ? k : std::min(k, (t + 1) * per);
      rows_into(a, b, ldb, p0, p1, n, t == 0 ? c : part.data() + (t - 1) * n);
    }
  });
  for (int64_t t = 1; t < tasks; ++t) {
    const float* q = part.data() + (t - 1) * n;
    for (int64_t j = 0; j < n; ++j) c[j] += q[j];
  }
}

// Column blocks of 64 to 512 for a matrix-vector product of n columns, at least two per thread.
int64_t gemv_block(thread_pool* pool, int64_t n) {
  return std::clamp<int64_t>((n / (2 * pool->size()) + 63) / 64 * 64, 64, 512);
}

}  // namespace

bool matmul(thread_pool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, bool b_trans, float* c, int64_t ldc, float alpha, const float* bias) {
  if (m <= 0 || n <= 0) return true;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? bias[j] : 0.f;
    return true;
  }
  if (m > 2 && sgemm::available()) {
    sgemm::problem q;
    q.m = m;
    q.n = n;
    q.k = k;
    q.a.v = sgemm::view{a, lda, 1};
    q.b.v = b_trans ? sgemm::view{b, 1, ldb} : sgemm::view{b, ldb, 1};
    q.c = c;
    q.ldc = ldc;
    q.ep.alpha = alpha;
    q.ep.bias = bias;
    return sgemm::run(pool, q);
  }
  if (m > 2) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k,
                alpha, a, (blasint)lda, b, (blasint)ldb, 0.f, c, (blasint)ldc);
    if (bias)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += bias[j];
    return true;
  }
  // One or two rows: matrix-vector products on the engine's threads (no packing, and no BLAS
  // threads started from inside the engine's own parallel loops), then the bias.
  if (m == 1 && !b_trans && n * k >= (int64_t{1} << 15)) {
    gemv_split_rows(pool, a, b, ldb, k, n, c);
    for (int64_t j = 0; j < n; ++j) c[j] = alpha * c[j] + (bias ? bias[j] : 0.f);
    return true;
  }
  auto columns = [&](int64_t j0, int64_t j1) {
    for (int64_t i = 0; i < m; ++i) {
      const float* arow = a + i * lda;
      float* crow = c + i * ldc;
      if (b_trans) {
        gemv_trans_rows(arow, b, ldb, k, crow, j0, j1);
        if (alpha != 1.f)
          for (int64_t j = j0; j < j1; ++j) crow[j] *= alpha;
      } else {
        gemv_rows(arow, b, ldb, k, crow, j0, j1);
        if (alpha != 1.f)
          for (int64_t j = j0; j < j1; ++j) crow[j] *= alpha;
      }
      if (bias)
        for (int64_t j = j0; j < j1; ++j) crow[j] += bias[j];
    }
  };
  if (pool && pool->size() > 1 && n * k >= (int64_t{1} << 17) && n >= 64 && !b_trans) {
    const int64_t w = gemv_block(pool, n), blocks = (n + w - 1) / w;
    pool->parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) { columns(b0 * w, std::min(n, b1 * w)); });
  } else if (pool && pool->size() > 1 && b_trans && n * k >= (int64_t{1} << 15) && n >= 16)
    // Rows of B read in place, a few KiB each: worth a second thread from 32K products on.
    pool->parallel_for(n, std::max<int64_t>(8, (int64_t{1} << 14) / std::max<int64_t>(1, k)), columns);
  else
    columns(0, n);
  return true;
}

right_matrix::right_matrix(const float* b_, int64_t ldb_, bool trans_, int64_t k_, int64_t n_, bool pack)
    : b(b_), ldb(ldb_), trans(trans_), k(k_), n(n_) {
  if (pack && k > 0 && n > 0 && sgemm::available())
    pk = sgemm::packed::right(trans ? sgemm::view{b, 1, ldb} : sgemm::view{b, ldb, 1}, k, n);
}

bool matmul(thread_pool* pool, int64_t m, const float* a, int64_t lda, const right_matrix& b, float* c,
            int64_t ldc, const float* bias) {
  if (m > 2 && b.pk) {
    sgemm::problem q;
    q.m = m;
    q.n = b.n;
    q.k = b.k;
    q.a.v = sgemm::view{a, lda, 1};
    q.b.pk = b.pk.get();
    q.c = c;
    q.ldc = ldc;
    q.ep.bias = bias;
    return sgemm::run(pool, q);
  }
  return matmul(pool, m, b.n, b.k, a, lda, b.b, b.ldb, b.trans, c, ldc, 1.f, bias);
}

void f16_to_f32(const half* s, float* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
  for (; i < n; ++i) d[i] = static_cast<float>(s[i]);
}

void f32_to_f16(const float* s, half* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) d[i] = half(s[i]);
}


bool matmul_f16b(thread_pool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const half* b,
                 int64_t ldb, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return true;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return true;
  }
  const bool threaded = pool && pool->size() > 1;
  if (m == 1 && n * k >= (int64_t{1} << 15)) {
    gemv_split_rows(pool, a, b, ldb, k, n, c);
    return true;
  }
  if (m <= 4 || !sgemm::available()) {
    auto columns = [&](int64_t j0, int64_t j1) {
      for (int64_t i = 0; i < m; ++i) gemv_rows(a + i * lda, b, ldb, k, c + i * ldc, j0, j1);
    };
    // Column blocks of 64 to 512, at least two per thread.
    if (threaded && n * k >= (int64_t{1} << 15)) {
      const int64_t w = gemv_block(pool, n);
      const int64_t blocks = (n + w - 1) / w;
      pool->parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) { columns(b0 * w, std::min(n, b1 * w)); });
    } else {
      columns(0, n);
    }
    return true;
  }
  // Strips of columns converted to float, each multiplied by A (packed once) with sgemm.
  constexpr int64_t strip = 128;
  const int64_t strips = (n + strip - 1) / strip;
  std::shared_ptr<const sgemm::packed> apk = sgemm::packed::left(sgemm::view{a, lda, 1}, m, k);
  if (!apk) return false;
  std::atomic<bool> failed{false};
  auto run_strips = [&](int64_t s0, int64_t s1) {
    std::vector<float> deq(static_cast<size_t>(strip * k));
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t j0 = s * strip, nn = std::min(strip, n - j0);
      for (int64_t p = 0; p < k; ++p) f16_to_f32(b + p * ldb + j0, deq.data() + p * nn, nn);
      sgemm::problem q;
      q.m = m;
      q.n = nn;
      q.k = k;
      q.a.pk = apk.get();
      q.b.v = sgemm::view{deq.data(), nn, 1};
      q.c = c + j0;
      q.ldc = ldc;
      if (!sgemm::run(nullptr, q)) failed = true;
    }
  };
  if (threaded) pool->parallel_for(strips, 1, run_strips);
  else run_strips(0, strips);
  return !failed;
}

bool is_float_like(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }

const float* as_float(const tensor& t, std::vector<float>* buf) {
  if (t.type() == dtype::f32) return t.data<float>();
  const int64_t n = t.numel();
  buf->resize(static_cast<size_t>(n));
  if (t.type() == dtype::f16) {
    f16_to_f32(t.data<half>(), buf->data(), n);
  } else if (t.type() == dtype::bf16) {
    const bfloat16* p = t.data<bfloat16>();
    for (int64_t i = 0; i < n; ++i) (*buf)[i] = static_cast<float>(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) (*buf)[i] = static_cast<float>(t.as_double(i));
  }
  return buf->data();
}

void store_float(tensor& t, int64_t offset, const float* src, int64_t n) {
  if (t.type() == dtype::f32) {
    std::copy(src, src + n, t.data<float>() + offset);
  } else if (t.type() == dtype::f16) {
    f32_to_f16(src, t.data<half>() + offset, n);
  } else if (t.type() == dtype::bf16) {
    bfloat16* p = t.data<bfloat16>() + offset;
    for (int64_t i = 0; i < n; ++i) p[i] = bfloat16(src[i]);
  }
}

void load_float(const tensor& t, int64_t offset, float* dst, int64_t n) {
  if (t.type() == dtype::f32) {
    std::copy(t.data<float>() + offset, t.data<float>() + offset + n, dst);
  } else if (t.type() == dtype::f16) {
    f16_to_f32(t.data<half>() + offset, dst, n);
  } else if (t.type() == dtype::bf16) {
    const bfloat16* p = t.data<bfloat16>() + offset;
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(t.as_double(offset + i));
  }
}

}  // namespace gpugrid::cpu::dense
