// onnxruntime's matrix products (domain com.microsoft):
//   MatMulNBits: Y = A x dequant(B)^T (+ bias) with B [N, k_blocks, blob] holding `bits`-bit
//     weights (2, 4 or 8) in blocks of block_size along K, as onnxruntime-genai's model builder
//     writes them; scales [N * k_blocks]; zero points packed like the weights (uint8) or one
//     float per block, default 2^(bits-1); g_idx (act-order) names each k's block. The
//     weights stay quantized in memory: a few rows of A are multiplied block by block as each
//     block is dequantized; more rows dequantize a strip of 128 columns at a time for the float
//     product (A packed once for all strips). With accuracy_level 4 (the model builder's
//     setting for CPU), few rows are quantized to int8 per block and multiplied in integers
//     as onnxruntime's MLAS does on AVX2; otherwise the math is float.
//   GatherBlockQuantized: rows of a blockwise-quantized table (uint8 holding 4- or 8-bit
//     values), dequantized; gather_axis 0 and quantize_axis last (the embedding layout).
//   FusedMatMul: alpha * op(A) op(B) with numpy batch broadcasting (transBatch* 0 only).
//   DynamicQuantizeMatMul: A quantized to uint8 per tensor as DynamicQuantizeLinear does, times
//     an int8/uint8 B, scaled back to float (+ bias). MatMulIntegerToFloat: the same from an
//     already quantized A.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "kernels/cpu/contrib_ops.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/kernel_helpers.h"
#include "kernels/cpu/sgemm.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_NBITS_AVX2 1
#endif

namespace gpugrid::cpu {
namespace {

status check_float(kernel_context& ctx, const tensor* t, const char* what) {
  if (t && !dense::is_float_like(t->type()))
    return ctx.fail("{} must be float, float16 or bfloat16, got {}", what, dtype_name(t->type()));
  return status::ok();
}

// The `bits`-bit unsigned value number i of a little-endian packed byte string.
inline int unpack(const uint8_t* p, int64_t i, int bits) {
  if (bits == 8) return p[i];
  const int64_t bit = i * bits;
  return (p[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

// out[i] = (q_i - zp) * scale for the `len` values of one block (len <= block size).
inline void dequant_block(const uint8_t* q, int bits, int64_t len, float scale, float zp, float* out) {
  int64_t i = 0;
#ifdef GG_NBITS_AVX2
  if (bits == 4) {
    const __m128i mask = _mm_set1_epi8(15);
    const __m256 vs = _mm256_set1_ps(scale), vzs = _mm256_set1_ps(-zp * scale);
    for (; i + 32 <= len; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i / 2));
      const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
      const __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);
      const __m128i parts[4] = {v0, _mm_srli_si128(v0, 8), v1, _mm_srli_si128(v1, 8)};
      for (int k = 0; k < 4; ++k) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]));
        _mm256_storeu_ps(out + i + 8 * k, _mm256_fmadd_ps(f, vs, vzs));
      }
    }
  } else if (bits == 8) {
    const __m256 vs = _mm256_set1_ps(scale), vzs = _mm256_set1_ps(-zp * scale);
    for (; i + 8 <= len; i += 8) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
      _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), vs, vzs));
    }
  }
#endif
  for (; i < len; ++i) out[i] = (static_cast<float>(unpack(q, i, bits)) - zp) * scale;
}

// acc[m] += sum_i w[i] * a[m * lda + i] for i < len, m < M.
inline void accumulate_rows(const float* w, int64_t len, const float* a, int64_t lda, int64_t M, float* acc) {
  for (int64_t m = 0; m < M; ++m) {
    const float* am = a + m * lda;
    int64_t i = 0;
    float s = 0.f;
#ifdef GG_NBITS_AVX2
    __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
    for (; i + 16 <= len; i += 16) {
      v0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(am + i), v0);
      v1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(am + i + 8), v1);
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, _mm256_add_ps(v0, v1));
    for (float x : t) s += x;
#endif
    for (; i < len; ++i) s += w[i] * am[i];
    acc[m] += s;
  }
}

#ifdef GG_NBITS_AVX2
// acc[m] += sum over the first `whole` blocks of one column of (q - zp) * scale * A[m]: per
// block the integer values' dot product with A in float lanes, then scale * (dot - zp * sum(A)).
// MR rows of A (a compile-time count, so the sums stay in registers).
template <int MR, typename ZP>
void q4_column(const uint8_t* q, const float* scales, const ZP& zp_of, const float* asum, int64_t kb, int64_t whole,
               int64_t block, const float* a, int64_t K, float* acc) {
  const __m128i mask = _mm_set1_epi8(15);
  __m256 vacc[MR];
  for (int m = 0; m < MR; ++m) vacc[m] = _mm256_setzero_ps();
  float corr[MR] = {};
  const int64_t blob = block / 2;
  for (int64_t b = 0; b < whole; ++b) {
    const uint8_t* qb = q + b * blob;
    const float* ab = a + b * block;
    __m256 vdot[MR];
    for (int m = 0; m < MR; ++m) vdot[m] = _mm256_setzero_ps();
    for (int64_t i = 0; i < block; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qb + i / 2));
      const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
      const __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);
      const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v0));
      const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v0, 8)));
      const __m256 f2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v1));
      const __m256 f3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v1, 8)));
      for (int m = 0; m < MR; ++m) {
        const float* am = ab + m * K + i;
        __m256 t = _mm256_fmadd_ps(f0, _mm256_loadu_ps(am), vdot[m]);
        t = _mm256_fmadd_ps(f1, _mm256_loadu_ps(am + 8), t);
        t = _mm256_fmadd_ps(f2, _mm256_loadu_ps(am + 16), t);
        vdot[m] = _mm256_fmadd_ps(f3, _mm256_loadu_ps(am + 24), t);
      }
    }
    const float sc = scales[b], z = zp_of(b);
    const __m256 vs = _mm256_set1_ps(sc);
    for (int m = 0; m < MR; ++m) {
      vacc[m] = _mm256_fmadd_ps(vdot[m], vs, vacc[m]);
      corr[m] += sc * z * asum[m * kb + b];
    }
  }
  for (int m = 0; m < MR; ++m) {
    alignas(32) float t[8];
    _mm256_store_ps(t, vacc[m]);
    float sum = 0.f;
    for (float x : t) sum += x;
    acc[m] += sum - corr[m];
  }
}

// accuracy_level 4 (what onnxruntime's MLAS does on AVX2): each row of A quantized to int8 per
// weight block (scale = max |a| / 127), each block's dot product with the 4-bit weights taken in
// integers (maddubs: unsigned 4-bit weights times signed 8-bit activations), then
//   y = sum_b wscale_b * (ascale_b * dot_b - zp_b * ascale_b * sum(qa_b)).
// The int8 row is stored in the weights' nibble order: per 32 values, the 16 even ones (the low
// nibbles of 16 bytes) then the 16 odd ones (the high nibbles).
struct q8_rows {
  int64_t M = 0, kb = 0, block = 0;
  std::vector<int8_t> q;      // [M, kb * block]
  std::vector<float> scale;   // [M, kb]
  std::vector<float> zsum;    // [M, kb]: scale * sum of the block's int8 values
};

void quantize_rows_q8(const float* a, int64_t M, int64_t K, int64_t block, q8_rows* r) {
  const int64_t kb = (K + block - 1) / block;
  r->M = M, r->kb = kb, r->block = block;
  r->q.assign(static_cast<size_t>(M * kb * block), 0);
  r->scale.assign(static_cast<size_t>(M * kb), 0.f);
  r->zsum.assign(static_cast<size_t>(M * kb), 0.f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < kb; ++b) {
      const float* x = a + m * K + b * block;
      const int64_t len = std::min(block, K - b * block);
      float amax = 0.f;
      for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float sc = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
      int8_t* q = r->q.data() + (m * kb + b) * block;
      int sum = 0;
      for (int64_t i = 0; i < len; ++i) {
        const int v = static_cast<int>(std::nearbyint(x[i] * inv));
        const int64_t g = i & ~int64_t{31}, j = i & 31;
        q[g + (j & 1 ? 16 + j / 2 : j / 2)] = static_cast<int8_t>(v);
        sum += v;
      }
      r->scale[m * kb + b] = sc;
      r->zsum[m * kb + b] = sc * static_cast<float>(sum);
    }
}

// out[m] = sum over blocks of one column's dot products with MR quantized rows, before the
// zero-point term.
template <int MR>
void q4_column_q8(const uint8_t* q, const float* ws, const q8_rows& a, float* out) {
  const __m256i mask = _mm256_set1_epi8(15);
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t kb = a.kb, block = a.block, row = kb * block;
  __m256 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < kb; ++b) {
    __m256i dot[MR];
    for (int m = 0; m < MR; ++m) dot[m] = _mm256_setzero_si256();
    const uint8_t* qb = q + b * block / 2;
    for (int64_t i = 0; i < block; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qb + i / 2));
      const __m256i w = _mm256_and_si256(_mm256_srlv_epi32(_mm256_broadcastsi128_si256(bytes), shift), mask);
      for (int m = 0; m < MR; ++m) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + m * row + b * block + i));
        dot[m] = _mm256_add_epi32(dot[m], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones));
      }
    }
    for (int m = 0; m < MR; ++m)
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[m]), _mm256_set1_ps(ws[b] * a.scale[m * kb + b]), acc[m]);
  }
  for (int m = 0; m < MR; ++m) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[m]), _mm256_extractf128_ps(acc[m], 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    out[m] = _mm_cvtss_f32(s);
  }
}

// One row of A (a decode step) against NC columns at once: the activation loads are shared.
template <int NC>
void q4_columns_q8_row(const uint8_t* const* q, const float* const* ws, const q8_rows& a, float* out) {
  const __m256i mask = _mm256_set1_epi8(15);
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t kb = a.kb, block = a.block;
  __m256 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < kb; ++b) {
    __m256i dot[NC];
    for (int c = 0; c < NC; ++c) dot[c] = _mm256_setzero_si256();
    for (int64_t i = 0; i < block; i += 32) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + b * block + i));
      for (int c = 0; c < NC; ++c) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q[c] + (b * block + i) / 2));
        const __m256i w = _mm256_and_si256(_mm256_srlv_epi32(_mm256_broadcastsi128_si256(bytes), shift), mask);
        dot[c] = _mm256_add_epi32(dot[c], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones));
      }
    }
    const float as = a.scale[b];
    for (int c = 0; c < NC; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[c]), _mm256_set1_ps(ws[c][b] * as), acc[c]);
  }
  for (int c = 0; c < NC; ++c) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[c]), _mm256_extractf128_ps(acc[c], 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    out[c] = _mm_cvtss_f32(s);
  }
}

// One row of A against NC columns, taking two 32-value chunks of a column's weights per
// 32-byte load: the low nibbles of the load are the even values of both chunks, the high
// nibbles the odd ones, so `pairs` holds the int8 row as, per chunk pair, the 16 even values of
// each chunk then the 16 odd values of each (pair_row_q8). No variable shifts, half the loads
// of q4_columns_q8_row. Block 32: each chunk has its own scale (one vector of two); larger
// blocks (a multiple of 64): the integer sums of a block's pairs, then its scale. K is a whole
// number of chunk pairs (the caller checks).
template <int NC>
void q4_columns_q8_pairs(const uint8_t* const* q, const float* const* ws, const q8_rows& a, const int8_t* pairs,
                         float* out) {
  const __m256i mask = _mm256_set1_epi8(15);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t kb = a.kb, block = a.block, chunks = kb * block / 32;
  const int64_t ahead = 2 * NC * kb * block / 2;  // two groups of NC columns on
  __m256 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
  auto pair_dot = [&](const uint8_t* wp, __m256i xe, __m256i xo) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
    const __m256i lo = _mm256_and_si256(w, mask), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, xe), _mm256_maddubs_epi16(hi, xo)), ones);
  };
  if (block == 32) {
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    for (int64_t j = 0; j < chunks; j += 2) {
      const __m256i xe = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j * 32));
      const __m256i xo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j * 32 + 32));
      const __m256 as = _mm256_permutevar8x32_ps(
          _mm256_castpd_ps(_mm256_castpd128_pd256(_mm_load_sd(reinterpret_cast<const double*>(a.scale.data() + j)))), spread);
      for (int c = 0; c < NC; ++c) {
        // The columns after these lie right behind them: fetch ahead into them (a column of
        // a few hundred bytes is too short a stream for the hardware prefetcher).
        _mm_prefetch(reinterpret_cast<const char*>(q[c] + j * 16 + ahead), _MM_HINT_T0);
        const __m256i d = pair_dot(q[c] + j * 16, xe, xo);
        const __m256 wsv = _mm256_permutevar8x32_ps(
            _mm256_castpd_ps(_mm256_castpd128_pd256(_mm_load_sd(reinterpret_cast<const double*>(ws[c] + j)))), spread);
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(wsv, as), acc[c]);
      }
    }
  } else {
    const int64_t per = block / 64;  // chunk pairs per block
    for (int64_t b = 0; b < kb; ++b) {
      __m256i dot[NC];
      for (int c = 0; c < NC; ++c) dot[c] = _mm256_setzero_si256();
      for (int64_t p = 0; p < per; ++p) {
        const int64_t j = (b * per + p) * 2;
        const __m256i xe = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j * 32));
        const __m256i xo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + j * 32 + 32));
        for (int c = 0; c < NC; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(q[c] + j * 16 + ahead), _MM_HINT_T0);
          dot[c] = _mm256_add_epi32(dot[c], pair_dot(q[c] + j * 16, xe, xo));
        }
      }
      const float as = a.scale[b];
      for (int c = 0; c < NC; ++c)
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[c]), _mm256_set1_ps(ws[c][b] * as), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[c]), _mm256_extractf128_ps(acc[c], 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    out[c] = _mm_cvtss_f32(s);
  }
}

// Row 0 of a quantized A in q4_columns_q8_pairs' order (the chunk count must be even).
void pair_row_q8(const q8_rows& a, std::vector<int8_t>* pairs) {
  const int64_t chunks = a.kb * a.block / 32;
  pairs->resize(static_cast<size_t>(chunks * 32));
  const int8_t* x = a.q.data();
  int8_t* d = pairs->data();
  for (int64_t j = 0; j + 1 < chunks; j += 2) {
    std::copy(x + j * 32, x + j * 32 + 16, d + j * 32);
    std::copy(x + (j + 1) * 32, x + (j + 1) * 32 + 16, d + j * 32 + 16);
    std::copy(x + j * 32 + 16, x + j * 32 + 32, d + j * 32 + 32);
    std::copy(x + (j + 1) * 32 + 16, x + (j + 1) * 32 + 32, d + j * 32 + 48);
  }
}

// sum_b x[b] * y[b] over n values.
inline float dot_f32(const float* x, const float* y, int64_t n) {
  int64_t i = 0;
  __m256 v = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), v);
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  float s = 0.f;
  for (float f : t) s += f;
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
#endif

class matmul_nbits_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n) {
    auto k = std::make_unique<matmul_nbits_kernel>();
    k->K_ = n.attr_int("K", -1);
    k->N_ = n.attr_int("N", -1);
    k->bits_ = static_cast<int>(n.attr_int("bits", 4));
    k->block_ = n.attr_int("block_size", -1);
    k->accuracy_ = n.attr_int("accuracy_level", 0);
    if (k->K_ <= 0 || k->N_ <= 0 || k->K_ > (int64_t{1} << 31) || k->N_ > (int64_t{1} << 31))
      return invalid_input("{}: attributes K and N must be in [1, 2^31], got {} and {}", n.describe(), k->K_, k->N_);
    if (k->bits_ != 2 && k->bits_ != 4 && k->bits_ != 8)
      return invalid_input("{}: bits must be 2, 4 or 8, got {}", n.describe(), k->bits_);
    if (k->block_ < 16 || (k->block_ & (k->block_ - 1)) != 0)
      return invalid_input("{}: block_size must be a power of 2 and at least 16, got {}", n.describe(), k->block_);
    return std::unique_ptr<kernel>(std::move(k));
  }

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 3, 6, 3));
    const tensor& A = *ctx.input(0);
    const tensor& B = *ctx.input(1);
    const tensor& S = *ctx.input(2);
    const tensor* zp = helpers::optional_input(ctx, 3);
    const tensor* gidx = helpers::optional_input(ctx, 4);
    const tensor* bias = helpers::optional_input(ctx, 5);
    GG_RETURN_IF_ERROR(check_float(ctx, &A, "A"));
    GG_RETURN_IF_ERROR(check_float(ctx, &S, "scales"));
    GG_RETURN_IF_ERROR(check_float(ctx, bias, "bias"));
    const int64_t K = K_, N = N_, kb = (K + block_ - 1) / block_, blob = block_ * bits_ / 8;
    if (A.rank() == 0 || A.shape().back() != K)
      return ctx.fail("A's last axis is {}, attribute K is {}", A.rank() ? A.shape().back() : 0, K);
    if (B.type() != dtype::u8) return ctx.fail("B must be uint8, got {}", dtype_name(B.type()));
    if (B.numel() != N * kb * blob || B.dim(0) != N || (B.rank() == 3 && (B.dim(1) != kb || B.dim(2) != blob)))
      return ctx.fail("B {} does not hold N={} columns of {} blocks of {} bytes (K={} in blocks of {})",
                      shape_str(B.shape()), N, kb, blob, K, block_);
    if (S.numel() != N * kb) return ctx.fail("scales has {} values, expected N * blocks = {}", S.numel(), N * kb);
    const int64_t zp_row = (kb * bits_ + 7) / 8;
    const bool zp_packed = zp && zp->type() == dtype::u8;
    if (zp && !zp_packed && !dense::is_float_like(zp->type()))
      return ctx.fail("zero_points must be uint8 or the scales' type, got {}", dtype_name(zp->type()));
    if (zp && zp->numel() != (zp_packed ? N * zp_row : N * kb))
      return ctx.fail("zero_points has {} values, expected {}", zp->numel(), zp_packed ? N * zp_row : N * kb);
    if (bias && bias->numel() != N) return ctx.fail("bias has {} values, N is {}", bias->numel(), N);
    // g_idx (act-order weights): the quantization block of each k, instead of k / block_size.
    std::vector<int32_t> group;
    if (gidx) {
      if (gidx->type() != dtype::i32 || (gidx->numel() != K && gidx->numel() != kb * block_))
        return ctx.fail("g_idx must be {} int32 values", K);
      group.resize(static_cast<size_t>(K));
      for (int64_t k = 0; k < K; ++k) {
        group[k] = gidx->data<int32_t>()[k];
        if (group[k] < 0 || group[k] >= kb) return ctx.fail("g_idx[{}] = {} is not a block in [0, {})", k, group[k], kb);
      }
    }
    shape_t out_shape = A.shape();
    out_shape.back() = N;
    GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, A.type(), out_shape));
    const int64_t M = A.numel() / K;
    if (M == 0) return status::ok();

    std::vector<float> ab, sb, zb, bb;
    const float* a = dense::as_float(A, &ab);
    const float* scales = dense::as_float(S, &sb);
    const float* zf = zp && !zp_packed ? dense::as_float(*zp, &zb) : nullptr;
    const uint8_t* zq = zp_packed ? zp->data<uint8_t>() : nullptr;
    const float* bi = bias ? dense::as_float(*bias, &bb) : nullptr;
    const uint8_t* w_q = B.data<uint8_t>();
    const float default_zp = static_cast<float>(1 << (bits_ - 1));
    auto zero_point = [&](int64_t n, int64_t b) -> float {
      if (zq) return static_cast<float>(unpack(zq + n * zp_row, b, bits_));
      if (zf) return zf[n * kb + b];
      return default_zp;
    };
    float* yf = Y->type() == dtype::f32 ? Y->data<float>() : nullptr;
    std::vector<float> ybuf;
    if (!yf) {
      ybuf.resize(static_cast<size_t>(M * N));
      yf = ybuf.data();
    }

    if (!group.empty()) {
      // Act-order weights: dequantize each column with its per-k blocks, then multiply.
      helpers::parallel(ctx, N, helpers::grain_for(K * M, 65536), [&](int64_t n0, int64_t n1) {
        std::vector<float> col(static_cast<size_t>(K));
        for (int64_t n = n0; n < n1; ++n) {
          const uint8_t* q = w_q + n * kb * blob;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t g = group[k];
            col[k] = (static_cast<float>(unpack(q, k, bits_)) - zero_point(n, g)) * scales[n * kb + g];
          }
          for (int64_t m = 0; m < M; ++m) {
            float acc = 0.f;
            accumulate_rows(col.data(), K, a + m * K, K, 1, &acc);
            yf[m * N + n] = acc + (bi ? bi[n] : 0.f);
          }
        }
      });
#ifdef GG_NBITS_AVX2
    } else if (M <= 4 && accuracy_ == 4 && bits_ == 4 && block_ % 32 == 0) {
      q8_rows qa;
      quantize_rows_q8(a, M, K, block_, &qa);
      // One row with whole chunk pairs (K a multiple of 64; blocks of 32 or a multiple of 64):
      // the paired kernel.
      std::vector<int8_t> pairs;
      const bool paired = M == 1 && K % 64 == 0 && (block_ == 32 || block_ % 64 == 0);
      if (paired) pair_row_q8(qa, &pairs);
      // Tasks of whole groups of 4 columns, at least 4 per thread (N = 256 in 3 tasks left
      // one of two threads idle a third of the time).
      const int64_t threads = ctx.pool().size();
      const int64_t grain = std::max<int64_t>(4, (N / (4 * threads)) / 4 * 4);
      helpers::parallel(ctx, (N + grain - 1) / grain, 1, [&](int64_t t0, int64_t t1) {
        float acc[4];
        const int64_t n_end = std::min(N, t1 * grain);
        for (int64_t n = t0 * grain; n < n_end; ++n) {
          const uint8_t* q = w_q + n * kb * blob;
          const float* ws = scales + n * kb;
          if (M == 1 && n + 4 <= n_end) {
            const uint8_t* qs[4] = {q, q + kb * blob, q + 2 * kb * blob, q + 3 * kb * blob};
            const float* wss[4] = {ws, ws + kb, ws + 2 * kb, ws + 3 * kb};
            if (paired) q4_columns_q8_pairs<4>(qs, wss, qa, pairs.data(), acc);
            else q4_columns_q8_row<4>(qs, wss, qa, acc);
            for (int c = 0; c < 4; ++c) {
              float corr;
              if (zq || zf) {
                corr = 0.f;
                for (int64_t b = 0; b < kb; ++b) corr += wss[c][b] * zero_point(n + c, b) * qa.zsum[b];
              } else {
                corr = default_zp * dot_f32(wss[c], qa.zsum.data(), kb);
              }
              yf[n + c] = acc[c] - corr + (bi ? bi[n + c] : 0.f);
            }
            n += 3;
            continue;
          }
          switch (M) {
            case 1: q4_column_q8<1>(q, ws, qa, acc); break;
            case 2: q4_column_q8<2>(q, ws, qa, acc); break;
            case 3: q4_column_q8<3>(q, ws, qa, acc); break;
            default: q4_column_q8<4>(q, ws, qa, acc); break;
          }
          for (int64_t m = 0; m < M; ++m) {
            const float* zs = qa.zsum.data() + m * kb;
            float corr = 0.f;
            if (zq || zf) {
              for (int64_t b = 0; b < kb; ++b) corr += ws[b] * zero_point(n, b) * zs[b];
            } else {
              corr = default_zp * dot_f32(ws, zs, kb);
            }
            yf[m * N + n] = acc[m] - corr + (bi ? bi[n] : 0.f);
          }
        }
      });
#endif
    } else if (M <= 4) {
      // Few rows (decoding): dequantize one block at a time into registers' worth of floats
      // and multiply it into every row, column by column.
      // Per row and block: the sum of A's values there (for the zero-point term).
      std::vector<float> asum(static_cast<size_t>(M * kb), 0.f);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) asum[m * kb + k / block_] += a[m * K + k];
      helpers::parallel(ctx, N, helpers::grain_for(K * M, 65536), [&](int64_t n0, int64_t n1) {
        std::vector<float> w(static_cast<size_t>(block_));
        float acc[4];
        for (int64_t n = n0; n < n1; ++n) {
          std::fill(acc, acc + 4, 0.f);
          int64_t b = 0;
#ifdef GG_NBITS_AVX2
          if (bits_ == 4 && block_ % 32 == 0) {
            const int64_t whole = std::min(kb, K / block_);
            auto zp_of = [&](int64_t bb) { return zero_point(n, bb); };
            switch (M) {
              case 1: q4_column<1>(w_q + n * kb * blob, scales + n * kb, zp_of, asum.data(), kb, whole, block_, a, K, acc); break;
              case 2: q4_column<2>(w_q + n * kb * blob, scales + n * kb, zp_of, asum.data(), kb, whole, block_, a, K, acc); break;
              case 3: q4_column<3>(w_q + n * kb * blob, scales + n * kb, zp_of, asum.data(), kb, whole, block_, a, K, acc); break;
              default: q4_column<4>(w_q + n * kb * blob, scales + n * kb, zp_of, asum.data(), kb, whole, block_, a, K, acc); break;
            }
            b = whole;
          }
#endif
          for (; b < kb; ++b) {
            const int64_t k0 = b * block_, len = std::min<int64_t>(block_, K - k0);
            dequant_block(w_q + (n * kb + b) * blob, bits_, len, scales[n * kb + b], zero_point(n, b), w.data());
            accumulate_rows(w.data(), len, a + k0, K, M, acc);
          }
          for (int64_t m = 0; m < M; ++m) yf[m * N + n] = acc[m] + (bi ? bi[n] : 0.f);
        }
      });
    } else {
      // Dequantize strips of columns and multiply them as floats.
      constexpr int64_t strip = 128;
      const int64_t strips = (N + strip - 1) / strip;
      // A is packed once for every strip's product.
      std::atomic<bool> failed{false};
      std::shared_ptr<const sgemm::packed> apk =
          sgemm::available() ? sgemm::packed::left(sgemm::view{a, K, 1}, M, K) : nullptr;
      helpers::parallel(ctx, strips, 1, [&](int64_t s0, int64_t s1) {
        std::vector<float> deq(static_cast<size_t>(strip * K));
        for (int64_t s = s0; s < s1; ++s) {
          const int64_t n0 = s * strip, nn = std::min(strip, N - n0);
          for (int64_t j = 0; j < nn; ++j) {
            const int64_t n = n0 + j;
            for (int64_t b = 0; b < kb; ++b) {
              const int64_t k0 = b * block_, len = std::min<int64_t>(block_, K - k0);
              dequant_block(w_q + (n * kb + b) * blob, bits_, len, scales[n * kb + b], zero_point(n, b), deq.data() + j * K + k0);
            }
          }
          if (apk) {
            sgemm::problem q;
            q.m = M;
            q.n = nn;
            q.k = K;
            q.a.pk = apk.get();
            q.b.v = sgemm::view{deq.data(), 1, K};
            q.c = yf + n0;
            q.ldc = N;
            q.ep.bias = bi ? bi + n0 : nullptr;
            if (!sgemm::run(nullptr, q)) failed = true;
          } else {
            dense::matmul(nullptr, M, nn, K, a, K, deq.data(), K, true, yf + n0, N, 1.f, bi ? bi + n0 : nullptr);
          }
        }
      });
      if (failed) return ctx.fail("out of memory for the product");
    }
    if (!ybuf.empty()) dense::store_float(*Y, 0, ybuf.data(), M * N);
    return status::ok();
  }

 private:
  int64_t K_ = 0, N_ = 0, block_ = 0, accuracy_ = 0;
  int bits_ = 4;
};

status gather_block_quantized(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 3, 4, 3));
  const tensor& data = *ctx.input(0);
  const tensor& idx = *ctx.input(1);
  const tensor& S = *ctx.input(2);
  const tensor* zp = helpers::optional_input(ctx, 3);
  const node& n = ctx.op();
  const int bits = static_cast<int>(n.attr_int("bits", 4));
  const int64_t block = n.attr_int("block_size", 128);
  if (data.type() != dtype::u8 && data.type() != dtype::i8)
    return ctx.fail("data must be uint8 (packed {}-bit values) or int8, got {}", bits, dtype_name(data.type()));
  if (bits != 4 && bits != 8) return ctx.fail("bits must be 4 or 8, got {}", bits);
  if (data.type() == dtype::i8 && bits != 8) return ctx.fail("int8 data holds 8-bit values, bits is {}", bits);
  if (block < 16 || (block & (block - 1)) != 0)
    return ctx.fail("block_size must be a power of 2 and at least 16, got {}", block);
  if (data.rank() != 2) return ctx.fail("data must be 2-D, got {}", shape_str(data.shape()));
  if (n.attr_int("gather_axis", 0) != 0) return ctx.fail("only gather_axis 0 is supported");
  const int64_t qa = n.attr_int("quantize_axis", 1);
  if (qa != 1 && qa != -1) return ctx.fail("only quantize_axis 1 (the last axis) is supported");
  GG_RETURN_IF_ERROR(check_float(ctx, &S, "scales"));
  if (idx.type() != dtype::i32 && idx.type() != dtype::i64)
    return ctx.fail("indices must be int32 or int64, got {}", dtype_name(idx.type()));
  const int64_t V = data.dim(0), K = data.dim(1) * (8 / bits), kb = (K + block - 1) / block;
  if (S.numel() != V * kb) return ctx.fail("scales has {} values, expected {} rows of {} blocks", S.numel(), V, kb);
  const int64_t zp_row = (kb * bits + 7) / 8;
  if (zp && zp->type() != data.type()) return ctx.fail("zero_points must have data's type");
  if (zp && zp->numel() != V * zp_row) return ctx.fail("zero_points has {} values, expected {}", zp->numel(), V * zp_row);
  shape_t out_shape = idx.shape();
  out_shape.push_back(K);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, S.type(), out_shape));
  std::vector<float> sb;
  const float* scales = dense::as_float(S, &sb);
  const uint8_t* d = data.data<uint8_t>();
  const bool is_signed = data.type() == dtype::i8;
  const int64_t rows = idx.numel();
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t v = idx.as_int64(r);
    if (v < -V || v >= V) return ctx.fail("index {} is out of range for {} rows", v, V);
    if (v < 0) v += V;
    const uint8_t* q = d + v * data.dim(1);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = k / block;
      float z, x;
      if (is_signed) {
        x = static_cast<float>(static_cast<int8_t>(q[k]));
        z = zp ? static_cast<float>(zp->data<int8_t>()[v * zp_row + b]) : 0.f;
      } else {
        x = static_cast<float>(unpack(q, k, bits));
        z = zp ? static_cast<float>(unpack(zp->data<uint8_t>() + v * zp_row, b, bits)) : static_cast<float>(1 << (bits - 1));
      }
      row[k] = (x - z) * scales[v * kb + b];
    }
    dense::store_float(*Y, r * K, row.data(), K);
  }
  return status::ok();
}

// Broadcast batched product for FusedMatMul.
status fused_matmul(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 2, 2, 2));
  const tensor& A = *ctx.input(0);
  const tensor& B = *ctx.input(1);
  GG_RETURN_IF_ERROR(check_float(ctx, &A, "A"));
  GG_RETURN_IF_ERROR(check_float(ctx, &B, "B"));
  const node& n = ctx.op();
  if (n.attr_int("transBatchA", 0) || n.attr_int("transBatchB", 0))
    return ctx.fail("transBatchA / transBatchB are not supported");
  const bool ta = n.attr_int("transA", 0) != 0, tb = n.attr_int("transB", 0) != 0;
  const float alpha = n.attr_float("alpha", 1.f);
  if (A.rank() == 0 || B.rank() == 0) return ctx.fail("A and B must have at least one dimension");
  shape_t as = A.shape(), bs = B.shape();
  const bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  if (a1 && ta) std::swap(as[0], as[1]);
  if (b1 && tb) std::swap(bs[0], bs[1]);
  const int64_t M = ta ? as[as.size() - 1] : as[as.size() - 2];
  const int64_t Ka = ta ? as[as.size() - 2] : as[as.size() - 1];
  const int64_t Kb = tb ? bs[bs.size() - 1] : bs[bs.size() - 2];
  const int64_t N = tb ? bs[bs.size() - 2] : bs[bs.size() - 1];
  if (Ka != Kb) return ctx.fail("A {} and B {} have different inner dimensions", shape_str(A.shape()), shape_str(B.shape()));
  const size_t ra = as.size() - 2, rb = bs.size() - 2, rank = std::max(ra, rb);
  shape_t batch(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i + ra >= rank ? as[i + ra - rank] : 1, db = i + rb >= rank ? bs[i + rb - rank] : 1;
    if (da != db && da != 1 && db != 1)
      return ctx.fail("batch dimensions of A {} and B {} do not broadcast", shape_str(A.shape()), shape_str(B.shape()));
    batch[i] = std::max(da, db);
  }
  shape_t out = batch;
  if (!a1) out.push_back(M);
  if (!b1) out.push_back(N);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, A.type(), out));
  std::vector<float> abuf, bbuf, tbuf, ybuf(static_cast<size_t>(M * N));
  const float* a = dense::as_float(A, &abuf);
  const float* b = dense::as_float(B, &bbuf);
  const int64_t calls = helpers::prod(batch, 0, batch.size());
  for (int64_t c = 0; c < calls; ++c) {
    int64_t ao = 0, bo = 0, rem = c, sa = M * Ka, sb = Kb * N;
    for (size_t i = rank; i-- > 0;) {
      const int64_t x = rem % batch[i];
      rem /= batch[i];
      const int64_t da = i + ra >= rank ? as[i + ra - rank] : 1, db = i + rb >= rank ? bs[i + rb - rank] : 1;
      if (da != 1) ao += x * sa;
      if (db != 1) bo += x * sb;
      sa *= da;
      sb *= db;
    }
    const float* ap = a + ao;
    if (ta) {  // A stored [K, M]: make it [M, K]
      tbuf.resize(static_cast<size_t>(M * Ka));
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < Ka; ++k) tbuf[i * Ka + k] = ap[k * M + i];
      ap = tbuf.data();
    }
    if (!dense::matmul(&ctx.pool(), M, N, Ka, ap, Ka, b + bo, tb ? Kb : N, tb, ybuf.data(), N, alpha))
      return ctx.fail("out of memory");
    dense::store_float(*Y, c * M * N, ybuf.data(), M * N);
  }
  return status::ok();
}

bool is_q8(dtype t) { return t == dtype::u8 || t == dtype::i8; }
float q8_at(const tensor& t, int64_t i) {
  return t.type() == dtype::u8 ? static_cast<float>(t.data<uint8_t>()[i]) : static_cast<float>(t.data<int8_t>()[i]);
}

// Y = (Aq - za) x (B - zb) * sa * sb[n] + bias[n], for A already quantized (a given) or
// quantized here from float (a_float given).
status int_to_float_matmul(kernel_context& ctx, bool dynamic) {
  // DynamicQuantizeMatMul: A, B, b_scale, b_zero_point, bias.
  // MatMulIntegerToFloat:  A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias.
  GG_RETURN_IF_ERROR(dynamic ? helpers::check_inputs(ctx, 3, 5, 3) : helpers::check_inputs(ctx, 4, 7, 4));
  const tensor& A = *ctx.input(0);
  const tensor& B = *ctx.input(1);
  const tensor* as = dynamic ? nullptr : ctx.input(2);
  const tensor& bsc = *ctx.input(dynamic ? 2 : 3);
  const tensor* az = dynamic ? nullptr : helpers::optional_input(ctx, 4);
  const tensor* bz = helpers::optional_input(ctx, dynamic ? 3 : 5);
  const tensor* bias = helpers::optional_input(ctx, dynamic ? 4 : 6);
  if (dynamic) GG_RETURN_IF_ERROR(check_float(ctx, &A, "A"));
  else if (!is_q8(A.type())) return ctx.fail("A must be int8 or uint8, got {}", dtype_name(A.type()));
  if (!is_q8(B.type())) return ctx.fail("B must be int8 or uint8, got {}", dtype_name(B.type()));
  if (B.rank() != 2) return ctx.fail("B must be 2-D, got {}", shape_str(B.shape()));
  const int64_t K = B.dim(0), N = B.dim(1);
  if (A.rank() == 0 || A.shape().back() != K)
    return ctx.fail("A {} and B {} have different inner dimensions", shape_str(A.shape()), shape_str(B.shape()));
  GG_RETURN_IF_ERROR(check_float(ctx, &bsc, "b_scale"));
  if (bsc.numel() != 1 && bsc.numel() != N) return ctx.fail("b_scale must have 1 or N={} values", N);
  if (bz && (bz->type() != B.type() || (bz->numel() != 1 && bz->numel() != N)))
    return ctx.fail("b_zero_point must have B's type and 1 or N={} values", N);
  if (as) {
    GG_RETURN_IF_ERROR(check_float(ctx, as, "a_scale"));
    if (as->numel() != 1) return ctx.fail("a_scale must be one value (per-tensor)");
  }
  if (az && (az->type() != A.type() || az->numel() != 1)) return ctx.fail("a_zero_point must be one value of A's type");
  GG_RETURN_IF_ERROR(check_float(ctx, bias, "bias"));
  if (bias && bias->numel() != N) return ctx.fail("bias has {} values, N is {}", bias->numel(), N);
  const dtype out_type = dynamic ? A.type() : bsc.type();
  shape_t out_shape = A.shape();
  out_shape.back() = N;
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, out_type, out_shape));
  const int64_t M = A.numel() / std::max<int64_t>(1, K), numel = A.numel();
  std::vector<float> aq(static_cast<size_t>(numel)), bq(static_cast<size_t>(K * N)), y(static_cast<size_t>(M * N));
  float a_scale = 1.f;
  if (dynamic) {
    // DynamicQuantizeLinear: uint8, range widened to include 0, round half to even.
    std::vector<float> ab;
    const float* a = dense::as_float(A, &ab);
    float lo = 0.f, hi = 0.f;
    for (int64_t i = 0; i < numel; ++i) lo = std::min(lo, a[i]), hi = std::max(hi, a[i]);
    a_scale = (hi - lo) / 255.f;
    float zp = 0.f;
    if (a_scale != 0.f) zp = std::min(255.f, std::max(0.f, std::nearbyint(-lo / a_scale)));
    for (int64_t i = 0; i < numel; ++i) {
      const float q = a_scale == 0.f ? zp : std::min(255.f, std::max(0.f, std::nearbyint(a[i] / a_scale) + zp));
      aq[i] = q - zp;
    }
  } else {
    std::vector<float> sb;
    a_scale = dense::as_float(*as, &sb)[0];
    const float za = az ? q8_at(*az, 0) : 0.f;
    for (int64_t i = 0; i < numel; ++i) aq[i] = q8_at(A, i) - za;
  }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) bq[k * N + j] = q8_at(B, k * N + j) - (bz ? q8_at(*bz, bz->numel() == 1 ? 0 : j) : 0.f);
  if (M > 0 && !dense::matmul(&ctx.pool(), M, N, K, aq.data(), K, bq.data(), N, false, y.data(), N))
    return ctx.fail("out of memory");
  std::vector<float> sbuf, bbuf;
  const float* bs = dense::as_float(bsc, &sbuf);
  const float* bi = bias ? dense::as_float(*bias, &bbuf) : nullptr;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < N; ++j)
      y[m * N + j] = y[m * N + j] * (a_scale * bs[bsc.numel() == 1 ? 0 : j]) + (bi ? bi[j] : 0.f);
  dense::store_float(*Y, 0, y.data(), M * N);
  return status::ok();
}

}  // namespace

void register_contrib_matmul_ops(op_registry& r) {
  const std::string ms = "com.microsoft";
  r.add("MatMulNBits", [](const node& n) { return matmul_nbits_kernel::make(n); }, ms);
  r.add("GatherBlockQuantized", simple_kernel(gather_block_quantized), ms);
  r.add("FusedMatMul", simple_kernel(fused_matmul), ms);
  r.add("DynamicQuantizeMatMul", simple_kernel([](kernel_context& c) { return int_to_float_matmul(c, true); }), ms);
  r.add("MatMulIntegerToFloat", simple_kernel([](kernel_context& c) { return int_to_float_matmul(c, false); }), ms);
}

}  // namespace gpugrid::cpu
