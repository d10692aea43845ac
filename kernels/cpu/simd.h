// Small AVX2 helpers shared by the CPU convolution and matrix kernels (conv.cc, winograd.cc,
// sgemm.cc, pool.cc): masks for a partial vector, short copies and fills without a library
// call, the even and odd elements of 16 floats (stride-2 windows), 8x8 and matrix transposes, a
// padded copy of one image plane and its split into even and odd columns.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace gpugrid::cpu::simd {

// Lanes [0, n) of a vector of 8 floats (n may be anything; <= 0 selects none).
inline __m256i lanes(int64_t n) {
  const int k = static_cast<int>(std::clamp<int64_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// n floats from src to dst, in whole vectors while they read no further than src + avail
// (avail >= n): up to 7 floats after dst + n may be overwritten with whatever follows src + n.
// The last part vector is moved masked.
// Lanes l of a 16-float (AVX-512) load at column c0 + l that lie inside [0, W): the mask of
// a load from a row of W floats that reads zero (or a fill) where the window hangs over it.
__attribute__((target("avx512f"))) inline __mmask16 row_lanes16(int64_t c0, int64_t W) {
  const int64_t first = c0 < 0 ? -c0 : 0, last = W - c0 < 16 ? W - c0 : 16;
  if (last <= first) return 0;
  const uint32_t upto = last >= 16 ? 0xffffu : (1u << last) - 1;
  return static_cast<__mmask16>(upto & ~((1u << first) - 1));
}

inline void copy_floats_over(const float* src, float* dst, int64_t n, int64_t avail) {
  int64_t i = 0;
  for (; i < n && i + 8 <= avail; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
  if (i < n) _mm256_maskstore_ps(dst + i, lanes(n - i), _mm256_maskload_ps(src + i, lanes(n - i)));
}

// n floats from src to dst, nothing after either touched.
inline void copy_floats(const float* src, float* dst, int64_t n) { copy_floats_over(src, dst, n, n); }

// n copies of v at dst.
inline void fill_floats(float* dst, int64_t n, float v) {
  const __m256 vv = _mm256_set1_ps(v);
  int64_t i = 0;
  // The empty asm keeps the compiler from turning the loop into a memset call, which costs
  // more than the one or two floats of a padding column (and most runs here are that short).
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, vv);
    asm("");
  }
  if (n - i >= 4) {
    _mm_storeu_ps(dst + i, _mm256_castps256_ps128(vv));
    i += 4;
  }
  if (n - i >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + i), _mm256_castps256_ps128(vv));
    i += 2;
  }
  if (n - i >= 1) _mm_store_ss(dst + i, _mm256_castps256_ps128(vv));
}

// n zeros at dst.
inline void zero_floats(float* dst, int64_t n) { fill_floats(dst, n, 0.f); }

// The even (0, 2, ..., 14) and odd (1, 3, ..., 15) elements of the 16 floats a:b.
inline __m256 evens(__m256 a, __m256 b) {
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  return _mm256_permute2f128_ps(_mm256_permutevar8x32_ps(a, idx), _mm256_permutevar8x32_ps(b, idx), 0x20);
}
inline __m256 odds(__m256 a, __m256 b) {
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  return _mm256_permute2f128_ps(_mm256_permutevar8x32_ps(a, idx), _mm256_permutevar8x32_ps(b, idx), 0x31);
}

// Transposes the 8x8 block whose rows are v[0..7]: afterwards v[j] holds what was column j.
inline void transpose8x8(__m256 v[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
  const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  v[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  v[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  v[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  v[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  v[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  v[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  v[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  v[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: whole 8x8 blocks through
// transpose8x8, the edges one float at a time.
inline void transpose_floats(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  int64_t i = 0;
  for (; i + 8 <= rows; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      __m256 v[8];
      for (int64_t k = 0; k < 8; ++k) v[k] = _mm256_loadu_ps(src + (i + k) * lds + j);
      transpose8x8(v);
      for (int64_t k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (j + k) * ldd + i, v[k]);
    }
    for (; j < cols; ++j)
      for (int64_t k = i; k < i + 8; ++k) dst[j * ldd + k] = src[k * lds + j];
  }
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// buf[Hp x Wp] = the H x W plane x placed at row ph, column pw, `fill` (zeros unless given)
// around it, then `slack` more after the plane (for vector loops whose last block reads past
// its end).
inline void pad_plane(const float* x, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t Hp, int64_t Wp,
                      int64_t slack, float* buf, float fill = 0.f) {
  const int64_t left = std::min(pw, Wp), ncopy = std::max<int64_t>(0, std::min(W, Wp - pw));
  for (int64_t r = 0; r < Hp; ++r) {
    float* d = buf + r * Wp;
    const int64_t ih = r - ph;
    if (ih < 0 || ih >= H) {
      fill_floats(d, Wp, fill);
      continue;
    }
    fill_floats(d, left, fill);
    // Whole vectors while they stay inside the plane: what lands past the copied run is
    // overwritten below (right padding), by the next row, or lies in the slack (filled last).
    if (ncopy > 0) copy_floats_over(x + ih * W, d + left, ncopy, (H - ih) * W);
    fill_floats(d + left + ncopy, Wp - left - ncopy, fill);
  }
  fill_floats(buf + Hp * Wp, slack, fill);
}

// Eight floats of a row of W from column `off` (>= 0): `fill` past the row's end.
inline __m256 load_row8(const float* row, int64_t off, int64_t W, __m256 fill) {
  const int64_t n = W - off;
  if (n >= 8) return _mm256_loadu_ps(row + off);
  if (n <= 0) return fill;
  const __m256i m = lanes(n);
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(row + off, m), _mm256_castsi256_ps(m));
}

// The even and odd columns of the plane that pad_plane would make, in one pass over x (no
// padded copy): E and O, Hp rows of Ws = (Wp + 1) / 2 each, then `slack` floats of `fill`.
// 16 columns at a time: a row's last block spills up to 7 floats into the next row (written
// after it) or the slack.
inline void pad_split_plane(const float* x, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t Hp, int64_t Wp,
                            int64_t slack, float* E, float* O, float fill = 0.f) {
  const int64_t Ws = (Wp + 1) / 2;
  const __m256 vf = _mm256_set1_ps(fill);
  for (int64_t r = 0; r < Hp; ++r) {
    float* e = E + r * Ws;
    float* o = O + r * Ws;
    const int64_t ih = r - ph;
    if (ih < 0 || ih >= H) {
      fill_floats(e, Ws, fill);
      fill_floats(o, Ws, fill);
      continue;
    }
    const float* xr = x + ih * W;
    for (int64_t j = 0; j < Ws; j += 8) {
      // Padded columns [2j, 2j + 16) are x's columns [s, s + 16).
      const int64_t s = 2 * j - pw;
      __m256 a, b;
      if (s >= 0) {
        a = load_row8(xr, s, W, vf);
        b = load_row8(xr, s + 8, W, vf);
      } else if (s > -16) {
        // The left padding: the row's first floats shifted right by -s lanes.
        alignas(32) float t[32];
        for (int q = 0; q < 32; q += 8) _mm256_store_ps(t + q, vf);
        _mm256_storeu_ps(t - s, load_row8(xr, 0, W, vf));
        _mm256_storeu_ps(t - s + 8, load_row8(xr, 8, W, vf));
        a = _mm256_load_ps(t);
        b = _mm256_load_ps(t + 8);
      } else {
        a = b = vf;
      }
      _mm256_storeu_ps(e + j, evens(a, b));
      _mm256_storeu_ps(o + j, odds(a, b));
    }
  }
  fill_floats(E + Hp * Ws, slack, fill);
  fill_floats(O + Hp * Ws, slack, fill);
}

}  // namespace gpugrid::cpu::simd
