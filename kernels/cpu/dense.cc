#include "kernels/cpu/dense.h"

#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/sgemm.h"

namespace gpugrid::cpu::dense {

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
  // A few rows: matrix-vector products (no packing), then the bias.
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    if (b_trans)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)k, alpha, b, (blasint)ldb, a + i * lda, 1, 0.f,
                  crow, 1);
    else
      cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)k, (blasint)n, alpha, b, (blasint)ldb, a + i * lda, 1, 0.f,
                  crow, 1);
    if (bias)
      for (int64_t j = 0; j < n; ++j) crow[j] += bias[j];
  }
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

bool is_float_like(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }

const float* as_float(const tensor& t, std::vector<float>* buf) {
  if (t.type() == dtype::f32) return t.data<float>();
  const int64_t n = t.numel();
  buf->resize(static_cast<size_t>(n));
  if (t.type() == dtype::f16) {
    const half* p = t.data<half>();
    for (int64_t i = 0; i < n; ++i) (*buf)[i] = static_cast<float>(p[i]);
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
    half* p = t.data<half>() + offset;
    for (int64_t i = 0; i < n; ++i) p[i] = half(src[i]);
  } else if (t.type() == dtype::bf16) {
    bfloat16* p = t.data<bfloat16>() + offset;
    for (int64_t i = 0; i < n; ++i) p[i] = bfloat16(src[i]);
  }
}

}  // namespace gpugrid::cpu::dense
