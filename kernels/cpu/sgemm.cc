#include "kernels/cpu/sgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/thread_pool.h"
#include "kernels/cpu/simd.h"

namespace gpugrid::cpu::sgemm {
namespace {

// Cache blocks: a KC x NR panel of B stays in L1 while the MC x KC block of A streams from L2;
// a KC x NC slice of B (1 MiB) is reused by every MC block of A.
constexpr int64_t KC = 256;
constexpr int64_t NC = 1024;  // a multiple of every NR
// k blocks up to this deep run row panel by row panel (run_tile).
constexpr int64_t kRowsFirstK = 128;
// Products smaller than this many multiply-adds run on the calling thread; a task of a split
// product has at least kTaskMacs of them. (Splitting products of 0.2-1M multiply-adds cost more
// than it saved: a ResNet-18 over 64x64 images, whose 2x2 and 4x4 maps make products of 295K,
// ran in 0.133-0.151 ms with them on one thread and 0.185-0.187 with them split; the 224 models
// did not move.)
constexpr double kSerialMacs = 1024.0 * 1024;
constexpr double kTaskMacs = 192.0 * 1024;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

void free_aligned(float* p) { std::free(p); }

float* alloc_aligned(size_t n) {
  size_t bytes = std::max<size_t>(64, (n * sizeof(float) + 63) / 64 * 64);
  return static_cast<float*>(std::aligned_alloc(64, bytes));
}

// Per-thread scratch for the packed blocks of the operands that are not prepacked.
struct scratch_buf {
  float* p = nullptr;
  size_t n = 0;
  ~scratch_buf() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      p = alloc_aligned(want);
      n = p ? want : 0;
    }
    return p;
  }
};

// Packs rows [0, mr) x k-range [k0, k0 + kc) of A (element (i, k) at a[i * rs + k * cs]) into
// one MR-row panel: dst[k * MR + i], zero rows past mr.
template <int64_t MR>
void pack_a_panel(const float* a, int64_t rs, int64_t cs, int64_t mr, int64_t k0, int64_t kc, float* dst) {
  if (mr == MR && cs == 1) {
    const float* r[MR];
    for (int64_t i = 0; i < MR; ++i) r[i] = a + i * rs + k0;
    int64_t k = 0;
    // Eight k at a time: the MR rows' next 8 floats (rows past MR zero) transposed in registers.
    static_assert(MR <= 8);
    for (; k + 8 <= kc; k += 8) {
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) v[i] = i < MR ? _mm256_loadu_ps(r[i] + k) : _mm256_setzero_ps();
      simd::transpose8x8(v);
      for (int64_t j = 0; j < 8; ++j, dst += MR) {
        if constexpr (MR == 8) {
          _mm256_storeu_ps(dst, v[j]);
        } else {
          static_assert(MR == 6);
          _mm_storeu_ps(dst, _mm256_castps256_ps128(v[j]));
          _mm_storel_pi(reinterpret_cast<__m64*>(dst + 4), _mm256_extractf128_ps(v[j], 1));
        }
      }
    }
    for (; k < kc; ++k) {
      for (int64_t i = 0; i < MR; ++i) dst[i] = r[i][k];
      dst += MR;
    }
    return;
  }
  if (rs == 1 && mr == MR) {  // A transposed: each k is 6 consecutive floats
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = a + (k0 + k) * cs;
      for (int64_t i = 0; i < MR; ++i) dst[i] = s[i];
      dst += MR;
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    for (int64_t i = 0; i < MR; ++i) dst[i] = i < mr ? a[i * rs + (k0 + k) * cs] : 0.f;
    dst += MR;
  }
}

// Packs k-range [k0, k0 + kc) x columns [0, nr) of B (element (k, j) at b[k * rs + j * cs])
// into one NR-column panel: dst[k * NR + j], zero columns past nr.
template <int64_t NR>
void pack_b_panel(const float* b, int64_t rs, int64_t cs, int64_t nr, int64_t k0, int64_t kc, float* dst) {
  if (cs == 1 && nr == NR) {
    const float* s = b + k0 * rs;
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t j = 0; j < NR; j += 8) _mm256_store_ps(dst + j, _mm256_loadu_ps(s + j));
      s += rs;
      dst += NR;
    }
    return;
  }
  if (cs == 1) {
    const float* s = b + k0 * rs;
    for (int64_t k = 0; k < kc; ++k) {
      int64_t j = 0;
      for (; j < nr; ++j) dst[j] = s[j];
      for (; j < NR; ++j) dst[j] = 0.f;
      s += rs;
      dst += NR;
    }
    return;
  }
  // B transposed (or strided): walk each source column along k, write with stride NR.
  for (int64_t j = 0; j < NR; ++j) {
    float* d = dst + j;
    if (j < nr) {
      const float* s = b + j * cs + k0 * rs;
      for (int64_t k = 0; k < kc; ++k) d[k * NR] = s[k * rs];
    } else {
      for (int64_t k = 0; k < kc; ++k) d[k * NR] = 0.f;
    }
  }
}

// C[0:MR, 0:NR] (+)= A panel x B panel over kc steps, c with row stride ldc.

// AVX2 + FMA: 6 rows of 16 floats = 12 ymm accumulators, two for the B row, one for A.
struct avx2_6x16 {
  static constexpr int64_t MR = 6, NR = 16, MC = 96;
  static void kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                     bool accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      __m256 av = _mm256_broadcast_ss(a);
      c00 = _mm256_fmadd_ps(av, b0, c00);
      c01 = _mm256_fmadd_ps(av, b1, c01);
      av = _mm256_broadcast_ss(a + 1);
      c10 = _mm256_fmadd_ps(av, b0, c10);
      c11 = _mm256_fmadd_ps(av, b1, c11);
      av = _mm256_broadcast_ss(a + 2);
      c20 = _mm256_fmadd_ps(av, b0, c20);
      c21 = _mm256_fmadd_ps(av, b1, c21);
      av = _mm256_broadcast_ss(a + 3);
      c30 = _mm256_fmadd_ps(av, b0, c30);
      c31 = _mm256_fmadd_ps(av, b1, c31);
      av = _mm256_broadcast_ss(a + 4);
      c40 = _mm256_fmadd_ps(av, b0, c40);
      c41 = _mm256_fmadd_ps(av, b1, c41);
      av = _mm256_broadcast_ss(a + 5);
      c50 = _mm256_fmadd_ps(av, b0, c50);
      c51 = _mm256_fmadd_ps(av, b1, c51);
      a += MR;
      b += NR;
    }
    auto put = [&](float* row, __m256 lo, __m256 hi) {
      if (accumulate) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(row + 8));
      }
      _mm256_storeu_ps(row, lo);
      _mm256_storeu_ps(row + 8, hi);
    };
    put(c, c00, c01);
    put(c + ldc, c10, c11);
    put(c + 2 * ldc, c20, c21);
    put(c + 3 * ldc, c30, c31);
    put(c + 4 * ldc, c40, c41);
    put(c + 5 * ldc, c50, c51);
  }
};

// AVX-512F: 8 rows of 32 floats = 16 zmm accumulators (enough independent chains for two
// FMA pipes of latency 4), two for the B row, one for A. On CPUs with full-width AVX-512 units
// this doubles the multiply-adds per cycle of the AVX2 kernel.
#define GG_ROW(i)                                   \
  av = _mm512_set1_ps(a[i]);                        \
  c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);       \
  c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);
#define GG_PUT(i)                                                              \
  {                                                                            \
    float* row = c + (i) * ldc;                                                \
    if (accumulate) {                                                          \
      c##i##0 = _mm512_add_ps(c##i##0, _mm512_loadu_ps(row));                  \
      c##i##1 = _mm512_add_ps(c##i##1, _mm512_loadu_ps(row + 16));             \
    }                                                                          \
    _mm512_storeu_ps(row, c##i##0);                                            \
    _mm512_storeu_ps(row + 16, c##i##1);                                       \
  }
struct avx512_8x32 {
  static constexpr int64_t MR = 8, NR = 32, MC = 128;
  __attribute__((target("avx512f"))) static void kernel(int64_t kc, const float* __restrict a,
                                                        const float* __restrict b, float* c, int64_t ldc,
                                                        bool accumulate) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(),
           c11 = _mm512_setzero_ps(), c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(),
           c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c40 = _mm512_setzero_ps(),
           c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps(),
           c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(),
           c71 = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
      __m512 av;
      GG_ROW(0)
      GG_ROW(1)
      GG_ROW(2)
      GG_ROW(3)
      GG_ROW(4)
      GG_ROW(5)
      GG_ROW(6)
      GG_ROW(7)
      a += MR;
      b += NR;
    }
    GG_PUT(0)
    GG_PUT(1)
    GG_PUT(2)
    GG_PUT(3)
    GG_PUT(4)
    GG_PUT(5)
    GG_PUT(6)
    GG_PUT(7)
  }
};
#undef GG_ROW
#undef GG_PUT

// A cheap epilogue applied in registers as a tile is stored (bias per row or per column, then
// min/max for none, ReLU or Clip, or HardSigmoid / HardSwish), instead of in a pass over the
// finished block.
struct tile_clamp {
  const float* row_bias = nullptr;  // at the tile's first row
  const float* col_bias = nullptr;  // at the tile's first column
  const float* res = nullptr;       // the residual at the tile's first element (row stride ldc)
  float lo = 0.f, hi = 0.f;
  // HardSwish (x * hard_sigmoid(x)) or HardSigmoid (alpha * x + beta clamped to [0, 1]) after
  // the clamp (then lo, hi are unbounded), as apply_activation computes them.
  activation_kind shape = activation_kind::none;
  float alpha = 0.f, beta = 0.f;
};

// R rows of an AVX2 panel (all 16 columns real): R < 6 for the last rows of a product (one
// with 16, 32 or 64 rows leaves 4, 2 or 4 such rows; the full kernel into a buffer, then a
// copy, did 6), and R == 6 when the clamp epilogue is fused (CLAMP).
template <int R, bool CLAMP = false>
void kernel_rows_of_6x16(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                         bool accumulate, const tile_clamp* tc = nullptr) {
  __m256 lo[R], hi[R];
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
      lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
    }
    a += avx2_6x16::MR;
    b += avx2_6x16::NR;
  }
  __m256 vlo = _mm256_setzero_ps(), vhi = vlo, cb0 = vlo, cb1 = vlo;
  if constexpr (CLAMP) {
    vlo = _mm256_set1_ps(tc->lo);
    vhi = _mm256_set1_ps(tc->hi);
    if (tc->col_bias) {
      cb0 = _mm256_loadu_ps(tc->col_bias);
      cb1 = _mm256_loadu_ps(tc->col_bias + 8);
    }
  } else {
    (void)tc;
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      lo[i] = _mm256_add_ps(lo[i], _mm256_loadu_ps(row));
      hi[i] = _mm256_add_ps(hi[i], _mm256_loadu_ps(row + 8));
    }
    if constexpr (CLAMP) {
      if (tc->res) {
        lo[i] = _mm256_add_ps(lo[i], _mm256_loadu_ps(tc->res + i * ldc));
        hi[i] = _mm256_add_ps(hi[i], _mm256_loadu_ps(tc->res + i * ldc + 8));
      }
      if (tc->row_bias) {
        const __m256 rb = _mm256_set1_ps(tc->row_bias[i]);
        lo[i] = _mm256_add_ps(lo[i], rb);
        hi[i] = _mm256_add_ps(hi[i], rb);
      } else if (tc->col_bias) {
        lo[i] = _mm256_add_ps(lo[i], cb0);
        hi[i] = _mm256_add_ps(hi[i], cb1);
      }
      // max with the value second, then min: NaN stays NaN, as in apply_activation.
      lo[i] = _mm256_min_ps(vhi, _mm256_max_ps(vlo, lo[i]));
      hi[i] = _mm256_min_ps(vhi, _mm256_max_ps(vlo, hi[i]));
      if (tc->shape != activation_kind::none) {
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
        const __m256 al = _mm256_set1_ps(tc->alpha), be = _mm256_set1_ps(tc->beta);
        const __m256 gl = _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(al, lo[i], be)));
        const __m256 gh = _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(al, hi[i], be)));
        if (tc->shape == activation_kind::hard_swish) {
          lo[i] = _mm256_mul_ps(lo[i], gl);
          hi[i] = _mm256_mul_ps(hi[i], gh);
        } else {
          lo[i] = gl;
          hi[i] = gh;
        }
      }
    }
    _mm256_storeu_ps(row, lo[i]);
    _mm256_storeu_ps(row + 8, hi[i]);
  }
}

// kernel_rows_of_6x16 for mr of 1 to 6 rows.
template <bool CLAMP>
void rows_of_6x16(int64_t mr, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate,
                  const tile_clamp* tc) {
  switch (mr) {
    case 1: kernel_rows_of_6x16<1, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
    case 2: kernel_rows_of_6x16<2, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
    case 3: kernel_rows_of_6x16<3, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
    case 4: kernel_rows_of_6x16<4, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
    case 5: kernel_rows_of_6x16<5, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
    default: kernel_rows_of_6x16<6, CLAMP>(kc, a, b, c, ldc, accumulate, tc); break;
  }
}

// One AVX-512 tile of up to 8 rows (mr) and 32 columns (nr) straight into C: 8 rows of NV
// vectors of 16 floats (NV = 1 when nr <= 16: half the multiply-adds), the last vector's
// columns past nr masked off in the loads and stores, so edge tiles need no buffer and copy.
// With CLAMP (the last k block of a product with a cheap epilogue) the bias and activation of
// tile_clamp are applied in registers before the store.
// (GCC 12 warns that _mm512_min_ps/_mm512_max_ps read an "uninitialized" pass-through
// operand, their _mm512_undefined_ps(); a false positive of the header.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int NV, bool CLAMP>
__attribute__((target("avx512f"))) void kernel_8x32_to(int64_t kc, const float* __restrict a,
                                                       const float* __restrict b, float* c, int64_t ldc,
                                                       bool accumulate, int64_t mr, int64_t nr,
                                                       const tile_clamp* tc) {
  static_assert(NV == 1 || NV == 2);
  __m512 acc[8][NV];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += 8;
    b += 32;
  }
  // Lanes stored per vector: all 16 but in the last vector.
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = simd::row_lanes16(16 * v, nr);
  __m512 vlo = _mm512_setzero_ps(), vhi = vlo, cb[NV];
  for (int v = 0; v < NV; ++v) cb[v] = vlo;
  if constexpr (CLAMP) {
    vlo = _mm512_set1_ps(tc->lo);
    vhi = _mm512_set1_ps(tc->hi);
    if (tc->col_bias)
      for (int v = 0; v < NV; ++v) cb[v] = _mm512_maskz_loadu_ps(mask[v], tc->col_bias + 16 * v);
  } else {
    (void)tc;
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    if (i >= mr) break;
    float* row = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m512 x = acc[i][v];
      if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], row + 16 * v));
      if constexpr (CLAMP) {
        if (tc->res) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], tc->res + i * ldc + 16 * v));
        if (tc->row_bias) x = _mm512_add_ps(x, _mm512_set1_ps(tc->row_bias[i]));
        else if (tc->col_bias) x = _mm512_add_ps(x, cb[v]);
        x = _mm512_min_ps(vhi, _mm512_max_ps(vlo, x));  // NaN stays NaN, as in apply_activation
        if (tc->shape != activation_kind::none) {
          const __m512 g = _mm512_max_ps(_mm512_setzero_ps(),
                                         _mm512_min_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(_mm512_set1_ps(tc->alpha), x,
                                                                                            _mm512_set1_ps(tc->beta))));
          x = tc->shape == activation_kind::hard_swish ? _mm512_mul_ps(x, g) : g;
        }
      }
      _mm512_mask_storeu_ps(row + 16 * v, mask[v], x);
    }
  }
}
#pragma GCC diagnostic pop

// The left half (8 of 16 columns) of an AVX2 tile into c (row stride 16), for edge panels of at
// most 8 columns (a 7x7 map's 49 columns end in a panel of one): half the multiply-adds.
void kernel_6x8_of_16(int64_t kc, const float* __restrict a, const float* __restrict b, float* c) {
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps();
  __m256 c3 = _mm256_setzero_ps(), c4 = _mm256_setzero_ps(), c5 = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b);
    c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a), b0, c0);
    c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 1), b0, c1);
    c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2), b0, c2);
    c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3), b0, c3);
    c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 4), b0, c4);
    c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 5), b0, c5);
    a += 6;
    b += 16;
  }
  _mm256_store_ps(c, c0);
  _mm256_store_ps(c + 16, c1);
  _mm256_store_ps(c + 32, c2);
  _mm256_store_ps(c + 48, c3);
  _mm256_store_ps(c + 64, c4);
  _mm256_store_ps(c + 80, c5);
}

// A partial AVX2 tile (mr < MR or nr < NR): the full kernel into a buffer, then the valid part
// (AVX-512 tiles store theirs masked, kernel_8x32_to).
template <class Kern>
void kernel_edge(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, int64_t mr,
                 int64_t nr) {
  constexpr int64_t MR = Kern::MR, NR = Kern::NR;
  alignas(64) float tmp[MR * NR];
  if constexpr (NR == 16 && MR == 6) {
    if (nr <= 8) kernel_6x8_of_16(kc, a, b, tmp);
    else Kern::kernel(kc, a, b, tmp, NR, false);
  } else {
    Kern::kernel(kc, a, b, tmp, NR, false);
  }
  for (int64_t i = 0; i < mr; ++i) {
    float* row = c + i * ldc;
    const float* t = tmp + i * NR;
    if (accumulate)
      for (int64_t j = 0; j < nr; ++j) row[j] += t[j];
    else
      std::memcpy(row, t, static_cast<size_t>(nr) * sizeof(float));
  }
}

// alpha, residual (res: this item's, laid out as c), bias and activation over rows [r0, r1) x
// columns [n0, n1) of C.
void apply_epilogue(const epilogue& ep, const float* res, float* c, int64_t ldc, int64_t r0, int64_t r1, int64_t n0,
                    int64_t n1) {
  if (ep.trivial()) return;
  const int64_t len = n1 - n0;
  for (int64_t r = r0; r < r1; ++r) {
    float* row = c + r * ldc + n0;
    if (ep.alpha != 1.f) {
      const __m256 va = _mm256_set1_ps(ep.alpha);
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(va, _mm256_loadu_ps(row + j)));
      for (; j < len; ++j) row[j] *= ep.alpha;
    }
    if (res) {
      const float* rr = res + r * ldc + n0;
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) _mm256_storeu_ps(row + j, _mm256_add_ps(_mm256_loadu_ps(rr + j), _mm256_loadu_ps(row + j)));
      for (; j < len; ++j) row[j] += rr[j];
    }
    if (ep.bias_per_row) apply_activation(ep.act, row, len, ep.bias ? ep.bias[r] : 0.f);
    else apply_activation(ep.act, row, len, ep.bias ? ep.bias + n0 : nullptr);
  }
}

// Cache lines of a prepacked operand's next block, fetched into L2 a share at a time while the
// current block is in use: a network's large weights are cold (they do not stay in cache from
// one run to the next), and the hardware prefetcher follows a new block only after its first
// misses. Weights under kColdBytes mostly stay in cache; fetching them again costs more than
// it saves (SqueezeNet, MobileNetV2: 2-3% slower).
constexpr int64_t kColdBytes = 1 << 20;
struct prefetch_ahead {
  const char* next = nullptr;
  const char* end = nullptr;
  int64_t per_step = 0;  // bytes
  void set(const float* p, int64_t floats, int64_t steps) {
    next = reinterpret_cast<const char*>(p);
    end = next + floats * int64_t(sizeof(float));
    per_step = (floats * int64_t(sizeof(float)) / 64 + steps - 1) / std::max<int64_t>(steps, 1) * 64;
  }
  void step() {
    const char* stop = std::min(end, next + per_step);
    for (; next < stop; next += 64) _mm_prefetch(next, _MM_HINT_T1);
  }
};

// One tile of one product: rows [m0, m1) x columns [n0, n1) of C, m0 a multiple of MR and n0
// of NR (so prepacked panels line up). False when scratch memory could not be had.
template <class Kern>
bool run_tile(const problem& p, const packed* apk, const float* A, const float* B, float* C, const float* R,
              int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  constexpr int64_t MR = Kern::MR, NR = Kern::NR, MC = Kern::MC;
  thread_local scratch_buf abuf, bbuf;
  const int64_t K = p.k;
  // A cheap epilogue (bias, then none, ReLU, Clip, HardSigmoid or HardSwish) goes into the
  // kernels' stores on the last k block; any other runs over each finished block.
  tile_clamp fused;
  bool clamp = clamp_of(p.ep.act, &fused.lo, &fused.hi);
  const auto kind = p.ep.act.kind;
  if (kind == activation_kind::hard_swish || kind == activation_kind::hard_sigmoid) {
    clamp = true;
    fused.shape = kind;  // HardSwish is x * HardSigmoid(x) with alpha 1/6, beta 0.5
    fused.alpha = kind == activation_kind::hard_swish ? 1.f / 6.f : p.ep.act.alpha;
    fused.beta = kind == activation_kind::hard_swish ? 0.5f : p.ep.act.beta;
  }
  if (p.ep.trivial() || p.ep.alpha != 1.f) clamp = false;
  const bool cold_a = apk && p.m * K * int64_t(sizeof(float)) >= kColdBytes;
  const bool cold_b = p.b.pk && p.n * K * int64_t(sizeof(float)) >= kColdBytes;
  for (int64_t nc0 = n0; nc0 < n1; nc0 += NC) {
    const int64_t nc1 = std::min(n1, nc0 + NC);
    const int64_t npanels = (nc1 - nc0 + NR - 1) / NR;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const bool accumulate = k0 > 0;
      const bool last = k0 + kc >= K;
      // Short k blocks go row panel by row panel (below) with the AVX-512 kernel, unless an
      // operand is fetched ahead.
      const bool rows_first = NR == 32 && !cold_a && !cold_b && kc <= kRowsFirstK;
      const float* bp;
      if (p.b.pk) {
        bp = p.b.pk->block(k0, kc, nc0 / NR);
      } else if (p.b.pack) {
        float* buf = bbuf.get(static_cast<size_t>(npanels * NR * kc));
        if (!buf) return false;
        p.b.pack(k0, kc, nc0, nc1, NR, buf);
        bp = buf;
      } else {
        float* buf = bbuf.get(static_cast<size_t>(npanels * NR * kc));
        if (!buf) return false;
        for (int64_t q = 0; q < npanels; ++q) {
          const int64_t j0 = nc0 + q * NR;
          pack_b_panel<NR>(B + j0 * p.b.v.cs, p.b.v.rs, p.b.v.cs, std::min(NR, nc1 - j0), k0, kc, buf + q * NR * kc);
        }
        bp = buf;
      }
      for (int64_t mc0 = m0; mc0 < m1; mc0 += MC) {
        const int64_t mc1 = std::min(m1, mc0 + MC);
        const int64_t mpanels = (mc1 - mc0 + MR - 1) / MR;
        const float* ap;
        if (apk) {
          ap = apk->block(k0, kc, mc0 / MR);
        } else {
          float* buf = abuf.get(static_cast<size_t>(mpanels * MR * kc));
          if (!buf) return false;
          for (int64_t q = 0; q < mpanels; ++q) {
            const int64_t i0 = mc0 + q * MR;
            pack_a_panel<MR>(A + i0 * p.a.v.rs, p.a.v.rs, p.a.v.cs, std::min(MR, mc1 - i0), k0, kc, buf + q * MR * kc);
          }
          ap = buf;
        }
        prefetch_ahead next_a;  // this tile's next block of prepacked A
        if (cold_a) {
          if (mc1 < m1) {
            next_a.set(apk->block(k0, kc, mc1 / MR), round_up(std::min(MC, m1 - mc1), MR) * kc, npanels * mpanels);
          } else if (k0 + kc < K) {
            const int64_t kn = std::min(KC, K - k0 - kc);
            next_a.set(apk->block(k0 + kc, kn, m0 / MR), round_up(std::min(MC, m1 - m0), MR) * kn, npanels * mpanels);
          }
        }
        // Column panel by column panel, each B panel kept in L1 while it meets every A panel of the
        // block; or, for a short k block (the whole product of a convolution over few input
        // channels, or a Winograd product), row panel by row panel (rows_first): each A panel
        // sweeps the block's columns and C is written MR rows at a time along their length,
        // rather than every row of the block one column panel at a time (dozens of write streams
        // into lines not in cache); B's block (at most NC x kRowsFirstK floats, 512 KiB) stays in
        // L2. Measured with the AVX-512 kernel: SqueezeNet 2.68-2.70 -> 2.47-2.54 ms (its 3 -> 64
        // stem, K = 27, and its expand layers), EfficientNet and U-Net 2-5% faster, MobileNetV2
        // 3-4%, ResNet-18, BERT and GPT-2 unchanged; with the AVX2 kernel MobileNetV2 was slower.
        const int64_t outer = rows_first ? mpanels : npanels, inner = rows_first ? npanels : mpanels;
        for (int64_t o = 0; o < outer; ++o) {
          prefetch_ahead next_b;  // this tile's next panel of prepacked B (column panels first)
          if (cold_b && mc0 == m0 && !rows_first) {
            const float* bq = bp + o * NR * kc;
            if (o + 1 < npanels) {
              next_b.set(bq + NR * kc, NR * kc, mpanels);
            } else if (k0 + kc < K) {
              const int64_t kn = std::min(KC, K - k0 - kc);
              next_b.set(p.b.pk->block(k0 + kc, kn, nc0 / NR), NR * kn, mpanels);
            }
          }
          for (int64_t t = 0; t < inner; ++t) {
            const int64_t q = rows_first ? t : o, r = rows_first ? o : t;
            const int64_t j0 = nc0 + q * NR;
            const int64_t nr = std::min(NR, nc1 - j0);
            const float* bq = bp + q * NR * kc;
            const int64_t i0 = mc0 + r * MR;
            const int64_t mr = std::min(MR, mc1 - i0);
            float* ct = C + i0 * p.ldc + j0;
            next_b.step();
            next_a.step();
            if constexpr (MR == 8 && NR == 32) {
              const float* at = ap + r * MR * kc;
              if (clamp && last) {
                tile_clamp tc = fused;
                if (p.ep.bias) (p.ep.bias_per_row ? tc.row_bias : tc.col_bias) = p.ep.bias + (p.ep.bias_per_row ? i0 : j0);
                if (R) tc.res = R + i0 * p.ldc + j0;
                if (nr <= 16) kernel_8x32_to<1, true>(kc, at, bq, ct, p.ldc, accumulate, mr, nr, &tc);
                else kernel_8x32_to<2, true>(kc, at, bq, ct, p.ldc, accumulate, mr, nr, &tc);
              } else if (mr == MR && nr == NR) {
                Kern::kernel(kc, at, bq, ct, p.ldc, accumulate);
              } else if (nr <= 16) {
                kernel_8x32_to<1, false>(kc, at, bq, ct, p.ldc, accumulate, mr, nr, nullptr);
              } else {
                kernel_8x32_to<2, false>(kc, at, bq, ct, p.ldc, accumulate, mr, nr, nullptr);
              }
              continue;
            }
            if constexpr (MR == 6 && NR == 16) {
              if (clamp && last) {
                tile_clamp tc = fused;
                if (p.ep.bias) (p.ep.bias_per_row ? tc.row_bias : tc.col_bias) = p.ep.bias + (p.ep.bias_per_row ? i0 : j0);
                if (R) tc.res = R + i0 * p.ldc + j0;
                const float* at = ap + r * MR * kc;
                if (nr < NR) {
                  kernel_edge<Kern>(kc, at, bq, ct, p.ldc, accumulate, mr, nr);
                  apply_epilogue(p.ep, R, C, p.ldc, i0, i0 + mr, j0, j0 + nr);
                  continue;
                }
                rows_of_6x16<true>(mr, kc, at, bq, ct, p.ldc, accumulate, &tc);
                continue;
              }
            }
            if (mr == MR && nr == NR) {
              Kern::kernel(kc, ap + r * MR * kc, bq, ct, p.ldc, accumulate);
              continue;
            }
            if constexpr (MR == 6 && NR == 16) {
              if (nr == NR) {  // mr < MR here: the full tile went above
                rows_of_6x16<false>(mr, kc, ap + r * MR * kc, bq, ct, p.ldc, accumulate, nullptr);
                continue;
              }
            }
            kernel_edge<Kern>(kc, ap + r * MR * kc, bq, ct, p.ldc, accumulate, mr, nr);
          }
        }
        if (last && !clamp) apply_epilogue(p.ep, R, C, p.ldc, mc0, mc1, nc0, nc1);
      }
    }
  }
  return true;
}

enum class isa { none, avx2, avx512 };

// The micro-kernel this process uses: AVX-512 where the CPU has it, else AVX2 + FMA, else none
// (callers use BLAS). GPUGRID_SGEMM=avx2 or =blas chooses a lesser one (for comparisons).
isa chosen() {
  static const isa k = [] {
    const char* e = std::getenv("GPUGRID_SGEMM");
    const std::string want = e ? e : "";
    if (want == "blas") return isa::none;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return isa::none;
    if (want != "avx2" && __builtin_cpu_supports("avx512f")) return isa::avx512;
    return isa::avx2;
  }();
  return k;
}

int64_t panel_rows() { return chosen() == isa::avx512 ? avx512_8x32::MR : avx2_6x16::MR; }
int64_t panel_cols() { return chosen() == isa::avx512 ? avx512_8x32::NR : avx2_6x16::NR; }

template <class Kern>
bool run_with(thread_pool* pool, const problem& p) {
  constexpr int64_t MR = Kern::MR, NR = Kern::NR;
  if (p.m <= 0 || p.n <= 0 || p.batch <= 0) return true;
  auto item = [&](int64_t i, const packed** apk, const float** a, const float** b, float** c, const float** res) {
    int64_t ao = 0, bo = 0, co = 0;
    if (p.batch > 1 && p.offsets) p.offsets(i, &ao, &bo, &co);
    *apk = p.a_each ? p.a_each[i] : p.a.pk;
    *a = *apk ? nullptr : p.a.v.p + ao;
    *b = p.b.pk ? nullptr : p.b.v.p + bo;
    *c = p.c + co;
    *res = p.ep.residual ? p.ep.residual + co : nullptr;
  };
  if (p.k <= 0) {  // an empty sum: C = epilogue(0)
    for (int64_t i = 0; i < p.batch; ++i) {
      const packed* apk;
      const float *a, *b, *res;
      float* c;
      item(i, &apk, &a, &b, &c, &res);
      for (int64_t r = 0; r < p.m; ++r) std::fill(c + r * p.ldc, c + r * p.ldc + p.n, 0.f);
      apply_epilogue(p.ep, res, c, p.ldc, 0, p.m, 0, p.n);
    }
    return true;
  }

  // Split each product into tm x tn tiles so that there are about as many tasks as threads
  // (four times as many when there is plenty of work, so that a thread that loses its core for
  // a while does not hold up the rest). Each tile streams its columns of B once and its rows of
  // A once per NC-wide slice; an operand that is not prepacked is also written and read again
  // by the packing. Pick the split that moves the fewest floats.
  const int threads = pool ? pool->size() : 1;
  const double macs = static_cast<double>(p.m) * p.n * p.k;
  const double total = macs * p.batch;
  int64_t want = 1;
  if (threads > 1 && total > kSerialMacs) {
    want = threads;
    if (total > 64.0 * kTaskMacs * threads) want = 4 * threads;
  }
  const int64_t per_item = std::max<int64_t>(1, (want + p.batch - 1) / p.batch);
  const int64_t mpan = (p.m + MR - 1) / MR, npan = (p.n + NR - 1) / NR;
  int64_t tm = 1, tn = 1;
  if (per_item > 1) {
    double best = -1;
    for (int64_t cm = 1; cm <= per_item; ++cm) {
      const int64_t cn = (per_item + cm - 1) / cm;
      if (cm > mpan || cn > npan) continue;
      const double mt = double(round_up((p.m + cm - 1) / cm, MR)), nt = double(round_up((p.n + cn - 1) / cn, NR));
      const double per_tile = double(p.k) * nt * (p.b.pk ? 1 : 2) +
                              double(p.k) * mt * std::ceil(nt / NC) * (p.a.pk || p.a_each ? 1 : 2);
      const double cost = per_tile * double(cm * cn);
      if (best < 0 || cost < best) {
        best = cost;
        tm = cm;
        tn = cn;
      }
    }
  }
  const int64_t mstep = round_up((p.m + tm - 1) / tm, MR);
  int64_t nstep = round_up((p.n + tn - 1) / tn, NR);
  // Column tiles may also start at half a panel when B is packed per tile and the kernel has a
  // half-width form (AVX-512: a tile's last panel of up to 16 columns costs half of a full one):
  // then the same number of tiles comes out more even (196 columns in two: 112 + 84, three and
  // a half panels against three, rather than 128 + 68, four against three).
  if (!p.b.pk && NR == 32) {
    const int64_t half = round_up((p.n + tn - 1) / tn, NR / 2);
    if ((p.n + half - 1) / half == (p.n + nstep - 1) / nstep) nstep = half;
  }
  tm = (p.m + mstep - 1) / mstep;
  tn = (p.n + nstep - 1) / nstep;
  const int64_t tiles = tm * tn;
  const int64_t tasks = tiles * p.batch;
  std::atomic<bool> failed{false};
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / tiles, r = t % tiles;
      const int64_t mi = r / tn, ni = r % tn;
      const packed* apk;
      const float *a, *bb, *res;
      float* c;
      item(i, &apk, &a, &bb, &c, &res);
      if (!run_tile<Kern>(p, apk, a, bb, c, res, mi * mstep, std::min(p.m, (mi + 1) * mstep), ni * nstep,
                    std::min(p.n, (ni + 1) * nstep)))
        failed = true;
    }
  };
  if (tasks == 1 || threads <= 1 || total <= kSerialMacs) {
    body(0, tasks);
  } else {
    const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kTaskMacs / std::max(1.0, macs / tiles)));
    pool->parallel_for(tasks, grain, body);
  }
  return !failed;
}

}  // namespace

bool available() { return chosen() != isa::none; }

bool avx512() { return chosen() == isa::avx512; }

const char* kernel_name() {
  switch (chosen()) {
    case isa::avx512: return "avx512 8x32";
    case isa::avx2: return "avx2 6x16";
    case isa::none: break;
  }
  return "blas";
}

std::shared_ptr<const packed> packed::left(view a, int64_t m, int64_t k) { return make(a, m, k, true); }

std::shared_ptr<const packed> packed::right(view b, int64_t k, int64_t n) { return make(b, n, k, false); }

std::shared_ptr<const packed> packed::make(view v, int64_t outer, int64_t k, bool left) {
  // outer: the rows of a left operand (M) or the columns of a right one (N).
  if (!available()) return nullptr;
  std::shared_ptr<packed> pk(new packed());
  const int64_t P = left ? panel_rows() : panel_cols();
  pk->panel_ = P;
  pk->padded_ = round_up(std::max<int64_t>(outer, 1), P);
  pk->data_ = {alloc_aligned(static_cast<size_t>(pk->padded_ * std::max<int64_t>(k, 1))), free_aligned};
  if (!pk->data_) return nullptr;
  const bool wide = chosen() == isa::avx512;
  for (int64_t k0 = 0; k0 < k; k0 += KC) {
    const int64_t kc = std::min(KC, k - k0);
    for (int64_t o0 = 0; o0 < outer; o0 += P) {
      float* dst = const_cast<float*>(pk->block(k0, kc, o0 / P));
      const int64_t n = std::min(P, outer - o0);
      if (left) {
        const float* src = v.p + o0 * v.rs;
        if (wide) pack_a_panel<avx512_8x32::MR>(src, v.rs, v.cs, n, k0, kc, dst);
        else pack_a_panel<avx2_6x16::MR>(src, v.rs, v.cs, n, k0, kc, dst);
      } else {
        const float* src = v.p + o0 * v.cs;
        if (wide) pack_b_panel<avx512_8x32::NR>(src, v.rs, v.cs, n, k0, kc, dst);
        else pack_b_panel<avx2_6x16::NR>(src, v.rs, v.cs, n, k0, kc, dst);
      }
    }
  }
  return pk;
}

const float* packed::block(int64_t k0, int64_t kc, int64_t panel) const {
  // Blocks before k0 are KC deep and padded_ wide; within a block, panels of kc x panel_.
  return data_.get() + k0 * padded_ + panel * panel_ * kc;
}

bool run(thread_pool* pool, const problem& p) {
  switch (chosen()) {
    case isa::avx512: return run_with<avx512_8x32>(pool, p);
    case isa::avx2: return run_with<avx2_6x16>(pool, p);
    case isa::none: break;
  }
  return false;
}

}  // namespace gpugrid::cpu::sgemm
