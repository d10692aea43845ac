// Conv, ConvTranspose and the fused com.gpugrid FusedConv (Conv + bias [+ Z] + activation: the
// optional fourth input Z is a residual of the output's shape added before the activation).
//
// Conv paths (float, in this order): a conv with one input channel per group (depthwise) runs
// a direct kernel per output plane: with AVX-512 straight from the input with masked loads
// (kernels up to 7 wide, stride 1 or 2; 3x3 and 5x5 make each input row's taps once for all
// the output rows that read it), else vectorized over a zero-padded copy of the plane
// (split into even and odd columns for stride 2) for 3x3 and for kernels up to 7 wide, or,
// over tiny planes (up to 16 outputs, or 64 in rows shorter than a vector), with the channels
// across the vector (depthwise_tiny); with constant weights, a conv over a tiny output map (up
// to 16 positions, or 64 with at most 32 output channels; a 1x1 one unless its map is 8 or 16
// positions) is one product with the images' positions as rows (tiny_map_conv), a 3x3
// stride-1 one with 16+ channels is Winograd F(2x2, 3x3); a conv with at most 8 output
// channels and few taps runs a direct kernel (direct_conv); a 1x1 stride-1 unpadded conv is
// one GEMM per image and group;
// everything else is im2col + GEMM per group, the im2col panels packed straight from the image.
// Bias and activation are applied to each block of output right after it is computed (with Z,
// the GEMM paths add it as each tile is stored; the others in one pass after). float
// products go to sgemm (sgemm.h) with the weights packed once, on the first run; without
// AVX2/FMA, to OpenBLAS.
// ConvTranspose is GEMM (W^T x X, sgemm on the engine's threads) + col2im.
//
// 1-D and 2-D convolutions run through the 3-D loops with leading spatial dims of size 1.
#include <immintrin.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/nn_internal.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/winograd.h"

namespace gpugrid::cpu {
namespace {

using simd::copy_floats;
using simd::zero_floats;

using nn::check_inputs;
using nn::gemm;
using nn::kMaxPaddedFloats;
using nn::parallel;
using nn::valid_taps;
using nn::window_attrs;
using nn::window_geom;

// The most elements one im2col / col2im buffer may hold (per tile).
// 8 MiB of floats: measured at 2 threads, one big sgemm beats several tiles that stay in L2
// (fewer OpenBLAS thread hand-offs); every ResNet/MobileNet layer at 224x224 fits one tile.
constexpr int64_t max_col_elems = int64_t{1} << 21;

template <typename T>
T act_scalar(const activation_spec& a, T x) {
  if constexpr (std::is_same_v<T, float>) {
    return activation_reference(a, x);
  } else {
    switch (a.kind) {
      case activation_kind::none: return x;
      case activation_kind::relu: return x < 0 ? T(0) : x;
      case activation_kind::leaky_relu: return x < 0 ? T(a.alpha) * x : x;
      case activation_kind::sigmoid: return T(1) / (T(1) + std::exp(-x));
      case activation_kind::tanh: return std::tanh(x);
      case activation_kind::clip: return std::min(std::max(x, T(a.alpha)), T(a.beta));
      case activation_kind::hard_sigmoid: return std::max(T(0), std::min(T(1), T(a.alpha) * x + T(a.beta)));
      case activation_kind::hard_swish: return x * std::max(T(0), std::min(T(1), x / T(6) + T(0.5)));
      case activation_kind::silu: return x / (T(1) + std::exp(-x));
      case activation_kind::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    }
    return x;
  }
}

// y[i] = act(y[i] + bias) over one run of one output channel.
template <typename T>
inline void epilogue(const activation_spec& a, T* y, int64_t n, T bias) {
  if constexpr (std::is_same_v<T, float>) {
    apply_activation(a, y, n, bias);
  } else {
    if (a.is_none() && bias == T(0)) return;
    for (int64_t i = 0; i < n; ++i) y[i] = act_scalar(a, y[i] + bias);
  }
}

// Fills col[K, (r1 - r0) * OW] for output rows [r0, r1) (a row is one (od, oh) pair) from
// the Cg channels at x. K = Cg * kD * kH * kW.
template <typename T>
void im2col(kernel_context& ctx, const T* x, int64_t Cg, const window_geom& g, int64_t r0, int64_t r1, T* col) {
  const int64_t D = g.in[0], H = g.in[1], W = g.in[2];
  const int64_t OH = g.out[1], OW = g.out[2];
  const int64_t kD = g.k[0], kH = g.k[1], kW = g.k[2];
  const int64_t kprod = kD * kH * kW;
  const int64_t K = Cg * kprod;
  const int64_t ncols = (r1 - r0) * OW;
  const int64_t plane = D * H * W;
  parallel(ctx, K, std::max<int64_t>(1, 8192 / std::max<int64_t>(ncols, 1)), [&](int64_t qb, int64_t qe) {
    for (int64_t q = qb; q < qe; ++q) {
      const int64_t c = q / kprod, rem = q % kprod;
      const int64_t kd = rem / (kH * kW), kh = (rem / kW) % kH, kw = rem % kW;
      const T* xc = x + c * plane;
      T* dst = col + q * ncols;
      const int64_t iw0 = kw * g.d[2] - g.pb[2];
      int64_t lo, hi;  // valid ow range: 0 <= ow * sw + iw0 < W
      {
        const int64_t sw = g.s[2];
        lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
        hi = (W - 1 - iw0) < 0 ? 0 : (W - 1 - iw0) / sw + 1;
        lo = std::min(lo, OW);
        hi = std::max(lo, std::min(hi, OW));
      }
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t od = r / OH, oh = r % OH;
        const int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
        const int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
        T* drow = dst + (r - r0) * OW;
        if (id < 0 || id >= D || ih < 0 || ih >= H) {
          std::fill(drow, drow + OW, T(0));
          continue;
        }
        const T* src = xc + (id * H + ih) * W;
        std::fill(drow, drow + lo, T(0));
        if (g.s[2] == 1) {
          if (hi > lo) std::memcpy(drow + lo, src + lo + iw0, static_cast<size_t>(hi - lo) * sizeof(T));
        } else {
          const int64_t sw = g.s[2];
          for (int64_t ow = lo; ow < hi; ++ow) drow[ow] = src[ow * sw + iw0];
        }
        std::fill(drow + hi, drow + OW, T(0));
      }
    }
  });
}

// One output row of a depthwise conv with a kW == 3 kernel row, interior columns only.
template <int SW>
inline void dw_row3(float* __restrict y, const float* __restrict x, int64_t lo, int64_t hi, int64_t sw,
                    int64_t o0, int64_t dw, float w0, float w1, float w2) {
  const int64_t s = SW > 0 ? SW : sw;
  for (int64_t ow = lo; ow < hi; ++ow) {
    const float* p = x + ow * s + o0;
    y[ow] += w0 * p[0] + w1 * p[dw] + w2 * p[2 * dw];
  }
}

// Depthwise (one input channel per output channel) 2-D conv of one plane, no bias.
void depthwise_plane(const float* x, const float* w, const window_geom& g, float* y) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t kH = g.k[1], kW = g.k[2], sh = g.s[1], sw = g.s[2], dh = g.d[1], dw = g.d[2];
  const int64_t ph = g.pb[1], pw = g.pb[2];
  // Per kw tap: the ow range where the tap lands inside the row.
  int64_t tap_lo[64], tap_hi[64];
  const bool small_k = kW <= 64;
  int64_t all_lo = 0, all_hi = OW;  // columns where every tap is inside
  for (int64_t kw = 0; kw < kW; ++kw) {
    const int64_t off = kw * dw - pw;
    int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t hi = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / sw + 1;
    lo = std::min(lo, OW);
    hi = std::max(lo, std::min(hi, OW));
    if (small_k) { tap_lo[kw] = lo; tap_hi[kw] = hi; }
    all_lo = std::max(all_lo, lo);
    all_hi = std::min(all_hi, hi);
  }
  if (all_hi < all_lo) all_hi = all_lo;
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* yr = y + oh * OW;
    std::fill(yr, yr + OW, 0.f);
    int64_t khlo, khhi;
    valid_taps(oh * sh - ph, kH, dh, H, &khlo, &khhi);
    for (int64_t kh = khlo; kh < khhi; ++kh) {
      const int64_t ih = oh * sh - ph + kh * dh;
      const float* xr = x + ih * W;
      const float* wr = w + kh * kW;
      if (kW == 3 && small_k) {
        const int64_t o0 = -pw;
        if (sw == 1) dw_row3<1>(yr, xr, all_lo, all_hi, sw, o0, dw, wr[0], wr[1], wr[2]);
        else if (sw == 2) dw_row3<2>(yr, xr, all_lo, all_hi, sw, o0, dw, wr[0], wr[1], wr[2]);
        else dw_row3<0>(yr, xr, all_lo, all_hi, sw, o0, dw, wr[0], wr[1], wr[2]);
        // Border columns, tap by tap.
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t off = kw * dw - pw;
          const float wv = wr[kw];
          for (int64_t ow = tap_lo[kw]; ow < std::min(tap_hi[kw], all_lo); ++ow) yr[ow] += wv * xr[ow * sw + off];
          for (int64_t ow = std::max(tap_lo[kw], all_hi); ow < tap_hi[kw]; ++ow) yr[ow] += wv * xr[ow * sw + off];
        }
        continue;
      }
      for (int64_t kw = 0; kw < kW; ++kw) {
        const int64_t off = kw * dw - pw;
        int64_t lo, hi;
        if (small_k) {
          lo = tap_lo[kw];
          hi = tap_hi[kw];
        } else {
          lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
          hi = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / sw + 1;
          lo = std::min(lo, OW);
          hi = std::max(lo, std::min(hi, OW));
        }
        const float wv = wr[kw];
        if (sw == 1) {
          const float* xs = xr + off;
          for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += wv * xs[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * sw + off];
        }
      }
    }
  }
}

// Depthwise 3x3 (any strides, dilations, pads) on a zero-padded copy of the plane: no bounds
// checks in the inner loop, all nine taps summed in registers, one store per output.
// Each output is clamped to [lo, hi] after adding bias (a fused ReLU or Clip, or none).
template <int SW>
void dw3x3_rows(const float* buf, int64_t Wp, const float* w, const window_geom& g, float* y, float bias, float lo,
                float hi) {
  const int64_t OH = g.out[1], OW = g.out[2], sh = g.s[1], dh = g.d[1], dw = g.d[2];
  const int64_t sw = SW > 0 ? SW : g.s[2];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
  for (int64_t oh = 0; oh < OH; ++oh) {
    const float* __restrict r0 = buf + oh * sh * Wp;
    const float* __restrict r1 = r0 + dh * Wp;
    const float* __restrict r2 = r1 + dh * Wp;
    float* __restrict yr = y + oh * OW;
    int64_t ow = 0;
    if (dw == 1 && (SW == 1 || SW == 2)) {
      // Eight outputs at a time. Stride 2 reads 16 (+1) inputs per row and keeps the even
      // (kw = 0, 2) and odd (kw = 1) ones; the last block stays inside the padded row.
      const __m256 v0 = _mm256_set1_ps(w0), v1 = _mm256_set1_ps(w1), v2 = _mm256_set1_ps(w2);
      const __m256 v3 = _mm256_set1_ps(w3), v4 = _mm256_set1_ps(w4), v5 = _mm256_set1_ps(w5);
      const __m256 v6 = _mm256_set1_ps(w6), v7 = _mm256_set1_ps(w7), v8 = _mm256_set1_ps(w8);
      const __m256 vb = _mm256_set1_ps(bias), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
      auto taps = [&](const float* r, __m256* t0, __m256* t1, __m256* t2) {
        if constexpr (SW == 1) {
          *t0 = _mm256_loadu_ps(r);
          *t1 = _mm256_loadu_ps(r + 1);
          *t2 = _mm256_loadu_ps(r + 2);
        } else {
          // r[0..15] -> evens (t0) and odds (t1); r[2..17] evens -> t2.
          const __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
          *t0 = simd::evens(a, b);
          *t1 = simd::odds(a, b);
          *t2 = simd::evens(_mm256_loadu_ps(r + 2), _mm256_loadu_ps(r + 10));
        }
      };
      // A block of 8 outputs at ow reads [ow * SW, ow * SW + (SW == 1 ? 10 : 18)) of each row:
      // the last block of a row may read past it (into the next row, or the buffer's slack) and
      // stores only its real outputs.
      for (; ow < OW; ow += 8) {
        __m256 t0, t1, t2, acc;
        taps(r0 + ow * SW, &t0, &t1, &t2);
        acc = _mm256_mul_ps(v0, t0);
        acc = _mm256_fmadd_ps(v1, t1, acc);
        acc = _mm256_fmadd_ps(v2, t2, acc);
        taps(r1 + ow * SW, &t0, &t1, &t2);
        acc = _mm256_fmadd_ps(v3, t0, acc);
        acc = _mm256_fmadd_ps(v4, t1, acc);
        acc = _mm256_fmadd_ps(v5, t2, acc);
        taps(r2 + ow * SW, &t0, &t1, &t2);
        acc = _mm256_fmadd_ps(v6, t0, acc);
        acc = _mm256_fmadd_ps(v7, t1, acc);
        acc = _mm256_fmadd_ps(v8, t2, acc);
        acc = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(acc, vb)));  // NaN stays NaN
        // A block that runs past the row end spills into the next row, which is written
        // after this one; only the plane's last block is stored masked.
        if (ow + 8 <= OW + (OH - 1 - oh) * OW) _mm256_storeu_ps(yr + ow, acc);
        else _mm256_maskstore_ps(yr + ow, simd::lanes(OW - ow), acc);
      }
    }
    for (; ow < OW; ++ow) {
      const int64_t b = ow * sw;
      const float v = w0 * r0[b] + w1 * r0[b + dw] + w2 * r0[b + 2 * dw] + w3 * r1[b] + w4 * r1[b + dw] +
                      w5 * r1[b + 2 * dw] + w6 * r2[b] + w7 * r2[b + dw] + w8 * r2[b + 2 * dw];
      yr[ow] = std::min(std::max(v + bias, lo), hi);
    }
  }
}

// Depthwise 3x3 with stride 2 and no dilation along rows, from the padded plane split into its
// even and odd columns (E and O, row stride Ws): a row's three taps for outputs [ow, ow + 8)
// are the plain loads E[ow], O[ow] and E[ow + 1], no shuffles in the loop. Reads up to 9 floats
// past a row (the next row, or the slack after the planes).
void dw3x3_s2_rows(const float* E, const float* O, int64_t Ws, const float* w, const window_geom& g, float* y,
                   float bias, float lo, float hi) {
  const int64_t OH = g.out[1], OW = g.out[2], sh = g.s[1], dh = g.d[1];
  const __m256 v0 = _mm256_set1_ps(w[0]), v1 = _mm256_set1_ps(w[1]), v2 = _mm256_set1_ps(w[2]);
  const __m256 v3 = _mm256_set1_ps(w[3]), v4 = _mm256_set1_ps(w[4]), v5 = _mm256_set1_ps(w[5]);
  const __m256 v6 = _mm256_set1_ps(w[6]), v7 = _mm256_set1_ps(w[7]), v8 = _mm256_set1_ps(w[8]);
  const __m256 vb = _mm256_set1_ps(bias), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t r0 = oh * sh * Ws, r1 = r0 + dh * Ws, r2 = r1 + dh * Ws;
    const float *__restrict e0 = E + r0, *__restrict o0 = O + r0;
    const float *__restrict e1 = E + r1, *__restrict o1 = O + r1;
    const float *__restrict e2 = E + r2, *__restrict o2 = O + r2;
    float* __restrict yr = y + oh * OW;
    for (int64_t ow = 0; ow < OW; ow += 8) {
      __m256 acc = _mm256_mul_ps(v0, _mm256_loadu_ps(e0 + ow));
      acc = _mm256_fmadd_ps(v1, _mm256_loadu_ps(o0 + ow), acc);
      acc = _mm256_fmadd_ps(v2, _mm256_loadu_ps(e0 + ow + 1), acc);
      acc = _mm256_fmadd_ps(v3, _mm256_loadu_ps(e1 + ow), acc);
      acc = _mm256_fmadd_ps(v4, _mm256_loadu_ps(o1 + ow), acc);
      acc = _mm256_fmadd_ps(v5, _mm256_loadu_ps(e1 + ow + 1), acc);
      acc = _mm256_fmadd_ps(v6, _mm256_loadu_ps(e2 + ow), acc);
      acc = _mm256_fmadd_ps(v7, _mm256_loadu_ps(o2 + ow), acc);
      acc = _mm256_fmadd_ps(v8, _mm256_loadu_ps(e2 + ow + 1), acc);
      acc = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(acc, vb)));  // NaN stays NaN
      // As in dw3x3_rows: a block past the row end spills into the next row.
      if (ow + 8 <= OW + (OH - 1 - oh) * OW) _mm256_storeu_ps(yr + ow, acc);
      else _mm256_maskstore_ps(yr + ow, simd::lanes(OW - ow), acc);
    }
  }
}

// Depthwise kH x KW (KW 1, 3, 5 or 7, not 3 x 3; no dilation along rows) over a padded plane: stride 1 reads
// P (row stride Ws) at [ow + kw]; stride 2 reads the plane split into even and odd columns (P
// and O) at [ow + kw / 2]. Eight outputs per vector, bias and clamp fused, rows spilling into
// the next as in dw3x3_rows. Reads up to KW / 2 + 8 floats past a row.
template <int SW, int KW>
void dwk_rows(const float* P, const float* O, int64_t Ws, const float* w, const window_geom& g, float* y, float bias,
              float lo, float hi) {
  const int64_t OH = g.out[1], OW = g.out[2], sh = g.s[1], dh = g.d[1], kH = g.k[1];
  const __m256 vb = _mm256_set1_ps(bias), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* __restrict yr = y + oh * OW;
    for (int64_t ow = 0; ow < OW; ow += 8) {
      __m256 acc = vb;
      for (int64_t kh = 0; kh < kH; ++kh) {
        const int64_t r = (oh * sh + kh * dh) * Ws + ow;
        const float* wr = w + kh * KW;
        for (int kw = 0; kw < KW; ++kw) {
          const float* src = SW == 1 ? P + r + kw : ((kw & 1) ? O : P) + r + kw / 2;
          acc = _mm256_fmadd_ps(_mm256_broadcast_ss(wr + kw), _mm256_loadu_ps(src), acc);
        }
      }
      acc = _mm256_min_ps(vhi, _mm256_max_ps(vlo, acc));  // NaN stays NaN
      if (ow + 8 <= OW + (OH - 1 - oh) * OW) _mm256_storeu_ps(yr + ow, acc);
      else _mm256_maskstore_ps(yr + ow, simd::lanes(OW - ow), acc);
    }
  }
}

// The columns of a block of 16 outputs from ow for each of KW tap columns, at stride SW along
// rows: where the tap's 16 (stride 2: 32) inputs start in the row, which of them are inside it
// (m0, and m1 for the second 16 at stride 2), and which of the 16 outputs exist (store).
template <int SW, int KW>
struct tap_columns {
  int64_t c0[KW];
  __mmask16 m0[KW], m1[KW], store;
  __attribute__((target("avx512f"))) tap_columns(int64_t ow, const window_geom& g) {
    const int64_t W = g.in[2], OW = g.out[2];
    for (int kw = 0; kw < KW; ++kw) {
      c0[kw] = ow * SW - g.pb[2] + kw * g.d[2];
      m0[kw] = simd::row_lanes16(c0[kw], W);
      m1[kw] = SW == 2 ? simd::row_lanes16(c0[kw] + 16, W) : 0;
    }
    store = OW - ow >= 16 ? __mmask16(0xffff) : __mmask16((1u << (OW - ow)) - 1);
  }
};

// Depthwise 2-D convolution of one plane straight from the input, 16 outputs per vector
// (AVX-512, where sgemm::avx512()): kernels up to 7 wide, stride 1 or 2 along rows, any
// dilation, padding and row stride. The taps of a row are masked loads of the input row (lanes
// that fall in the padding load zero, and no memory outside the row is touched), so the plane
// is never copied into a padded buffer (that copy took as long as the sums in MobileNetV2 at
// one thread). Stride 2 loads 32 consecutive floats and keeps every other one (one permute).
// Square kernels (K = KH = KW) keep their weights in registers; KH == 0 reads kH from g and
// broadcasts each weight.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_max_ps's undefined pass-through
template <int SW, int KH, int KW>
__attribute__((target("avx512f"))) void dw_direct16(const float* x, const float* w, const window_geom& g, float* y,
                                                    float bias, float lo, float hi) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t sh = g.s[1], dh = g.d[1], ph = g.pb[1];
  const int64_t kH = KH > 0 ? KH : g.k[1];
  const __m512 vb = _mm512_set1_ps(bias), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  __m512 wv[KH > 0 ? KH * KW : 1];
  if constexpr (KH > 0)
    for (int t = 0; t < KH * KW; ++t) wv[t] = _mm512_set1_ps(w[t]);
  for (int64_t ow = 0; ow < OW; ow += 16) {
    const tap_columns<SW, KW> cols(ow, g);
    const int64_t* c0 = cols.c0;
    const __mmask16 *m0 = cols.m0, *m1 = cols.m1, store = cols.store;
    for (int64_t oh = 0; oh < OH; ++oh) {
      __m512 acc = vb;
      for (int64_t kh = 0; kh < kH; ++kh) {
        const int64_t ih = oh * sh - ph + kh * dh;
        if (ih < 0 || ih >= H) continue;
        const float* row = x + ih * W;
#pragma GCC unroll 7
        for (int kw = 0; kw < KW; ++kw) {
          __m512 v;
          if constexpr (SW == 1) {
            v = _mm512_maskz_loadu_ps(m0[kw], row + c0[kw]);
          } else {
            const __m512 a = _mm512_maskz_loadu_ps(m0[kw], row + c0[kw]);
            const __m512 b = _mm512_maskz_loadu_ps(m1[kw], row + c0[kw] + 16);
            v = _mm512_permutex2var_ps(a, evens, b);
          }
          const __m512 wt = KH > 0 ? wv[kh * KW + kw] : _mm512_set1_ps(w[kh * KW + kw]);
          acc = _mm512_fmadd_ps(wt, v, acc);
        }
      }
      acc = _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc));  // NaN stays NaN
      _mm512_mask_storeu_ps(y + oh * OW + ow, store, acc);
    }
  }
}

// dw_direct16 for K x K kernels (3 or 5) at stride SW along rows (1 or 2) and SH down columns
// (1 or 2), no dilation down them: consecutive output rows share K - SH input rows, so each
// input row's K tap vectors (loads across cache lines, and at stride 2 a permute each) are made
// once, not once per output row that reads them (a 3x3 at stride 1: three rows' loads per output
// row down to one). Rows in the padding add nothing (as in dw_direct16).
template <int SW, int SH, int K>
__attribute__((target("avx512f"))) void dw_shared_rows16(const float* x, const float* w, const window_geom& g,
                                                         float* y, float bias, float lo, float hi) {
  static_assert(SH < K);
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2], ph = g.pb[1];
  const __m512 vb = _mm512_set1_ps(bias), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (int64_t ow = 0; ow < OW; ow += 16) {
    const tap_columns<SW, K> cols(ow, g);
    const int64_t* c0 = cols.c0;
    const __mmask16 *m0 = cols.m0, *m1 = cols.m1, store = cols.store;
    // The K tap vectors of input row ih; false (and nothing loaded) in the padding.
    auto taps = [&](int64_t ih, __m512* t) __attribute__((target("avx512f"))) {
      if (ih < 0 || ih >= H) return false;
      const float* row = x + ih * W;
#pragma GCC unroll 5
      for (int kw = 0; kw < K; ++kw) {
        if constexpr (SW == 1) {
          t[kw] = _mm512_maskz_loadu_ps(m0[kw], row + c0[kw]);
        } else {
          const __m512 a = _mm512_maskz_loadu_ps(m0[kw], row + c0[kw]);
          const __m512 b = _mm512_maskz_loadu_ps(m1[kw], row + c0[kw] + 16);
          t[kw] = _mm512_permutex2var_ps(a, evens, b);
        }
      }
      return true;
    };
    // r[kh]: the taps of row oh * SH - ph + kh of output row oh; has[kh]: inside the plane.
    __m512 r[K][K];
    bool has[K];
#pragma GCC unroll 5
    for (int kh = 0; kh < K - SH; ++kh) has[kh] = taps(kh - ph, r[kh]);
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t ih = oh * SH - ph;
#pragma GCC unroll 2
      for (int kh = K - SH; kh < K; ++kh) has[kh] = taps(ih + kh, r[kh]);
      __m512 acc = vb;
#pragma GCC unroll 5
      for (int kh = 0; kh < K; ++kh)
        if (has[kh])
#pragma GCC unroll 5
          for (int kw = 0; kw < K; ++kw) acc = _mm512_fmadd_ps(_mm512_set1_ps(w[kh * K + kw]), r[kh][kw], acc);
      acc = _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc));  // NaN stays NaN
      _mm512_mask_storeu_ps(y + oh * OW + ow, store, acc);
      // The next output row starts SH rows down.
#pragma GCC unroll 5
      for (int kh = 0; kh < K - SH; ++kh) {
        has[kh] = has[kh + SH];
#pragma GCC unroll 5
        for (int kw = 0; kw < K; ++kw) r[kh][kw] = r[kh + SH][kw];
      }
    }
  }
}
#pragma GCC diagnostic pop

template <int SW>
void dw_direct16_dispatch(const float* x, const float* w, const window_geom& g, float* y, float bias, float lo,
                          float hi) {
  const int64_t kH = g.k[1], kW = g.k[2];
  const bool shared = (g.s[1] == 1 || g.s[1] == 2) && g.d[1] == 1;
  if (shared && kH == 3 && kW == 3) {
    if (g.s[1] == 1) dw_shared_rows16<SW, 1, 3>(x, w, g, y, bias, lo, hi);
    else dw_shared_rows16<SW, 2, 3>(x, w, g, y, bias, lo, hi);
  } else if (shared && kH == 5 && kW == 5) {
    if (g.s[1] == 1) dw_shared_rows16<SW, 1, 5>(x, w, g, y, bias, lo, hi);
    else dw_shared_rows16<SW, 2, 5>(x, w, g, y, bias, lo, hi);
  } else if (kH == 3 && kW == 3) {
    dw_direct16<SW, 3, 3>(x, w, g, y, bias, lo, hi);
  } else if (kH == 5 && kW == 5) {
    dw_direct16<SW, 5, 5>(x, w, g, y, bias, lo, hi);
  } else if (kW == 1) {
    dw_direct16<SW, 0, 1>(x, w, g, y, bias, lo, hi);
  } else if (kW == 2) {
    dw_direct16<SW, 0, 2>(x, w, g, y, bias, lo, hi);
  } else if (kW == 3) {
    dw_direct16<SW, 0, 3>(x, w, g, y, bias, lo, hi);
  } else if (kW == 4) {
    dw_direct16<SW, 0, 4>(x, w, g, y, bias, lo, hi);
  } else if (kW == 5) {
    dw_direct16<SW, 0, 5>(x, w, g, y, bias, lo, hi);
  } else if (kW == 6) {
    dw_direct16<SW, 0, 6>(x, w, g, y, bias, lo, hi);
  } else {
    dw_direct16<SW, 0, 7>(x, w, g, y, bias, lo, hi);
  }
}

// With AVX-512, dw_direct16 for kernels up to 7 wide at stride 1 or 2; else the padded-plane
// kernels. Returns false when the padded plane would not fit the scratch buffer. Adds `bias` and
// applies `act` when it is none, ReLU or Clip (*fused set), else leaves both to the caller.
bool depthwise_padded_plane(const float* x, const float* w, const window_geom& g, float* y, float bias,
                            const activation_spec& act, bool* fused) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t ph = g.pb[1], pw = g.pb[2], kH = g.k[1], kW = g.k[2];
  const bool k3 = kH == 3 && kW == 3;
  if (sgemm::avx512() && kW <= 7 && (g.s[2] == 1 || g.s[2] == 2)) {
    float lo, hi;
    *fused = clamp_of(act, &lo, &hi);
    if (!*fused) bias = 0.f;  // the caller adds it with the activation
    if (g.s[2] == 1) dw_direct16_dispatch<1>(x, w, g, y, bias, lo, hi);
    else dw_direct16_dispatch<2>(x, w, g, y, bias, lo, hi);
    return true;
  }
  const int64_t Hp = (OH - 1) * g.s[1] + (kH - 1) * g.d[1] + 1, Wp = (OW - 1) * g.s[2] + (kW - 1) * g.d[2] + 1;
  // Stride 2 without dilation along rows reads the plane split into even and odd columns.
  const bool split = g.s[2] == 2 && g.d[2] == 1 && Hp * Wp <= kMaxPaddedFloats;
  if (!k3 && !((kW == 1 || kW == 3 || kW == 5 || kW == 7) && g.d[2] == 1 && (g.s[2] == 1 || split))) return false;
  // Slack after the plane for the vector loop's last block (see dw3x3_rows).
  constexpr int64_t slack = 32;
  float* buf = nullptr;
  if (!split) {
    buf = nn::scratch<float>(2, static_cast<size_t>(Hp * Wp + slack));
    if (!buf) return false;
    simd::pad_plane(x, H, W, ph, pw, Hp, Wp, slack, buf);
  }
  float lo, hi;
  *fused = clamp_of(act, &lo, &hi);
  if (!*fused) bias = 0.f;  // the caller adds it with the activation
  if (!k3 && g.s[2] == 1) {
    if (kW == 1) dwk_rows<1, 1>(buf, nullptr, Wp, w, g, y, bias, lo, hi);
    else if (kW == 3) dwk_rows<1, 3>(buf, nullptr, Wp, w, g, y, bias, lo, hi);
    else if (kW == 5) dwk_rows<1, 5>(buf, nullptr, Wp, w, g, y, bias, lo, hi);
    else dwk_rows<1, 7>(buf, nullptr, Wp, w, g, y, bias, lo, hi);
  } else if (g.s[2] == 1) {
    dw3x3_rows<1>(buf, Wp, w, g, y, bias, lo, hi);
  } else if (split) {
    const int64_t Ws = (Wp + 1) / 2;
    float* E = nn::scratch<float>(3, static_cast<size_t>(2 * (Hp * Ws + slack)));
    if (!E) return false;
    float* O = E + Hp * Ws + slack;
    simd::pad_split_plane(x, H, W, ph, pw, Hp, Wp, slack, E, O);
    if (k3) dw3x3_s2_rows(E, O, Ws, w, g, y, bias, lo, hi);
    else if (kW == 1) dwk_rows<2, 1>(E, O, Ws, w, g, y, bias, lo, hi);
    else if (kW == 3) dwk_rows<2, 3>(E, O, Ws, w, g, y, bias, lo, hi);
    else if (kW == 5) dwk_rows<2, 5>(E, O, Ws, w, g, y, bias, lo, hi);
    else dwk_rows<2, 7>(E, O, Ws, w, g, y, bias, lo, hi);
  } else if (g.s[2] == 2) {
    dw3x3_rows<2>(buf, Wp, w, g, y, bias, lo, hi);
  } else {
    dw3x3_rows<0>(buf, Wp, w, g, y, bias, lo, hi);
  }
  return true;
}

struct conv_shapes {
  int64_t N = 0, C = 0, M = 0, Cg = 0, Mg = 0, group = 1;
  window_geom g;
  shape_t out;
};

// Depthwise convolution (one input and one output channel per group) over tiny planes (up to
// kTinyDepthwise output positions: the last stages of small models), kernels of up to
// kTinyDepthwiseTaps taps: a plane of 2x2 outputs gives a per-plane kernel almost nothing to
// vectorize, so the channels go across the vector instead. Per image: the input transposed to
// [position][channel] (channels padded to 16), then every output position sums its taps, 8
// (16 with AVX-512) channels at a time in a register, with bias (blocks of 16 channels in
// parallel when there are many), and the result is transposed back; the activation runs once
// over each run of positions. False when scratch memory could not be had.
constexpr int64_t kTinyDepthwise = 16, kTinyDepthwiseTaps = 64;

// Also planes of up to 64 outputs whose rows are shorter than a vector (7x7, 5x9): measured, a
// 960-channel 3x3 over 7x7 takes 0.78 of the per-plane kernel's time, a 576-channel stride-2
// one from 14x14 0.73; over 8x8 the per-plane kernel is as fast or faster.
bool depthwise_tiny_applies(const window_geom& g) {
  const int64_t S = g.out_size();
  if (g.k_size() > kTinyDepthwiseTaps) return false;
  return S <= kTinyDepthwise || (S <= 64 && g.out[2] < 8);
}

// The buffers of depthwise_tiny hold each block of 16 channels on its own: [block][position][16]
// (input, output) and [block][tap][16] (weights), so a block's positions are 64 bytes apart. (With
// all channels in one row per position, positions lay a row of channels apart, 2,304 bytes for
// 576: a multiple of 256, so a block's 196 lines fell in 16 of the L1 cache's 64 sets and the
// transposes missed.)
struct tiny_blocks {
  const float* x;  // [block][H*W][16]
  const float* w;  // [block][taps][16]
  const float* b;  // [channel] (blocks of 16 in a row)
  float* y;        // [block][S][16]
  int64_t xstride, wstride, ystride;  // floats per block
};

// depthwise_tiny's sums for blocks [b0, b1) of every position, 8 channels per vector (AVX2),
// two blocks (four vectors, four independent sums that hide the multiply-add latency) at a time.
void tiny_sums_avx2(const tiny_blocks& t, int64_t b0, int64_t b1, int64_t S, const int64_t* first,
                    const int64_t* wofs, const int64_t* xofs, bool clamped, float lo, float hi) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  for (int64_t b = b0; b < b1; b += 2) {
    const bool two = b + 1 < b1;
    const float *x0 = t.x + b * t.xstride, *w0 = t.w + b * t.wstride;
    const float *x1 = two ? x0 + t.xstride : x0, *w1 = two ? w0 + t.wstride : w0;
    float *y0 = t.y + b * t.ystride, *y1 = two ? y0 + t.ystride : y0;
    const float *bb0 = t.b + b * 16, *bb1 = two ? bb0 + 16 : bb0;
    for (int64_t q = 0; q < S; ++q) {
      __m256 a0 = _mm256_loadu_ps(bb0), a1 = _mm256_loadu_ps(bb0 + 8);
      __m256 a2 = _mm256_loadu_ps(bb1), a3 = _mm256_loadu_ps(bb1 + 8);
      for (int64_t v = first[q]; v < first[q + 1]; ++v) {
        const float *wp0 = w0 + wofs[v], *xp0 = x0 + xofs[v], *wp1 = w1 + wofs[v], *xp1 = x1 + xofs[v];
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wp0), _mm256_loadu_ps(xp0), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wp0 + 8), _mm256_loadu_ps(xp0 + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wp1), _mm256_loadu_ps(xp1), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wp1 + 8), _mm256_loadu_ps(xp1 + 8), a3);
      }
      if (clamped) {  // NaN stays NaN
        a0 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, a0));
        a1 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, a1));
        a2 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, a2));
        a3 = _mm256_min_ps(vhi, _mm256_max_ps(vlo, a3));
      }
      _mm256_storeu_ps(y0 + q * 16, a0);
      _mm256_storeu_ps(y0 + q * 16 + 8, a1);
      _mm256_storeu_ps(y1 + q * 16, a2);  // one block alone: the same sums again
      _mm256_storeu_ps(y1 + q * 16 + 8, a3);
    }
  }
}

// depthwise_tiny's sums for blocks [b0, b1) of every position, one block per vector (AVX-512),
// four blocks at a time.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_max_ps's undefined pass-through
__attribute__((target("avx512f"))) void tiny_sums_avx512(const tiny_blocks& t, int64_t b0, int64_t b1, int64_t S,
                                                         const int64_t* first, const int64_t* wofs,
                                                         const int64_t* xofs, bool clamped, float lo, float hi) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int64_t b = b0; b < b1; b += 4) {
    const int64_t nb = std::min<int64_t>(4, b1 - b);
    // Fewer than four blocks left: the missing ones repeat the last (same sums, same stores).
    const float* x[4];
    const float* w[4];
    const float* bb[4];
    float* y[4];
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t bk = b + std::min(k, nb - 1);
      x[k] = t.x + bk * t.xstride, w[k] = t.w + bk * t.wstride, bb[k] = t.b + bk * 16, y[k] = t.y + bk * t.ystride;
    }
    for (int64_t q = 0; q < S; ++q) {
      __m512 a0 = _mm512_loadu_ps(bb[0]), a1 = _mm512_loadu_ps(bb[1]);
      __m512 a2 = _mm512_loadu_ps(bb[2]), a3 = _mm512_loadu_ps(bb[3]);
      for (int64_t v = first[q]; v < first[q + 1]; ++v) {
        const int64_t wo = wofs[v], xo = xofs[v];
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w[0] + wo), _mm512_loadu_ps(x[0] + xo), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w[1] + wo), _mm512_loadu_ps(x[1] + xo), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w[2] + wo), _mm512_loadu_ps(x[2] + xo), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w[3] + wo), _mm512_loadu_ps(x[3] + xo), a3);
      }
      if (clamped) {  // NaN stays NaN
        a0 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a0));
        a1 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a1));
        a2 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a2));
        a3 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a3));
      }
      _mm512_storeu_ps(y[0] + q * 16, a0);
      _mm512_storeu_ps(y[1] + q * 16, a1);
      _mm512_storeu_ps(y[2] + q * 16, a2);
      _mm512_storeu_ps(y[3] + q * 16, a3);
    }
  }
}
#pragma GCC diagnostic pop

bool depthwise_tiny(kernel_context& ctx, const conv_shapes& cs, const float* x, const float* w, const float* bias,
                    const activation_spec& act, float* out) {
  const window_geom& g = cs.g;
  const int64_t C = cs.C, H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2], S = OH * OW;
  // Blocks of 16 channels, each on its own cache lines (see tiny_blocks), so two threads never
  // write the same line.
  const bool wide = sgemm::avx512();
  constexpr int64_t bw = 16;
  const int64_t kH = g.k[1], kW = g.k[2], taps = kH * kW, blocks = (C + bw - 1) / bw, Cp = blocks * bw;
  float* xt = nn::scratch<float>(1, static_cast<size_t>(Cp * (H * W + taps + S + 1)));
  if (!xt) return false;
  float* wt = xt + Cp * H * W;  // [block][tap][16]
  float* yt = wt + Cp * taps;   // [block][position][16]
  float* bt = yt + Cp * S;      // bias per channel
  const tiny_blocks tb{xt, wt, bt, yt, H * W * bw, taps * bw, S * bw};
  // Each output's taps that land inside the image: the tap's offset in a block of wt, the
  // input's in a block of xt, the same for every block.
  int64_t* first = nn::scratch<int64_t>(2, static_cast<size_t>((S + 1) + 2 * S * taps));
  if (!first) return false;
  int64_t* wofs = first + S + 1;
  int64_t* xofs = wofs + S * taps;
  int64_t nv = 0;
  for (int64_t q = 0; q < S; ++q) {
    first[q] = nv;
    const int64_t oh = q / OW, ow = q % OW;
    for (int64_t kh = 0; kh < kH; ++kh) {
      const int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
      if (ih < 0 || ih >= H) continue;
      for (int64_t kw = 0; kw < kW; ++kw) {
        const int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
        if (iw < 0 || iw >= W) continue;
        wofs[nv] = (kh * kW + kw) * bw;
        xofs[nv++] = (ih * W + iw) * bw;
      }
    }
  }
  first[S] = nv;
  float lo, hi;
  const bool clamped = clamp_of(act, &lo, &hi);  // none, Relu or Clip: applied in the register
  for (int64_t n = 0; n < cs.N; ++n) {
    const float* xn = x + n * C * H * W;
    float* yn = out + n * C * S;
    // Blocks in parallel, each on its own from the transposes in to the transpose out (no
    // barrier between them).
    parallel(ctx, blocks, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, S * taps * bw)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = b * bw, nc = std::min(C, c0 + bw) - c0;
        float *xb = xt + b * tb.xstride, *wb = wt + b * tb.wstride;
        simd::transpose_floats(xn + c0 * H * W, H * W, nc, H * W, xb, bw);
        simd::transpose_floats(w + c0 * taps, taps, nc, taps, wb, bw);
        if (nc < bw) {
          for (int64_t q = 0; q < H * W; ++q) zero_floats(xb + q * bw + nc, bw - nc);
          for (int64_t k = 0; k < taps; ++k) zero_floats(wb + k * bw + nc, bw - nc);
        }
        for (int64_t c = c0; c < c0 + bw; ++c) bt[c] = c < C && bias ? bias[c] : 0.f;
      }
      if (wide) tiny_sums_avx512(tb, b0, b1, S, first, wofs, xofs, clamped, lo, hi);
      else tiny_sums_avx2(tb, b0, b1, S, first, wofs, xofs, clamped, lo, hi);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = b * bw, nc = std::min(C, c0 + bw) - c0;
        float* yb = yt + b * tb.ystride;
        if (!clamped) apply_activation(act, yb, S * bw);
        // Back to [channel][position].
        simd::transpose_floats(yb, bw, S, nc, yn + c0 * S, S);
      }
    });
  }
  return true;
}

// Direct 2-D convolution for few output channels (up to 8) and few taps per output (C x kH x
// kW up to kDirectMaxK: stems and thin layers of small models). im2col would pack every input
// element once per tap and use it only M times; here the input planes are zero-padded once
// (and split into even and odd columns for stride 2), so every tap is one plain load feeding
// the multiply-adds of 8 output channels held in registers, over 8 output columns.
constexpr int64_t kDirectMaxK = 160;

bool direct_applies(const conv_shapes& cs) {
  const window_geom& g = cs.g;
  // Measured against im2col + GEMM (AVX2, 2 threads): 3x faster with 8 output channels, about
  // even at 16 and 32 (224x224 stems), slower at 64. With AVX-512 (tiles of 32 columns): 3->16
  // 3x3 stride 2 over 224x224 0.14 -> 0.115 ms; even at 32 and 64 channels (3x3 and ResNet's
  // 7x7 stems), so im2col keeps those.
  const int64_t max_m = sgemm::avx512() ? 16 : 8;
  if (!(cs.group == 1 && cs.M <= max_m && g.nsp == 2 && g.d[1] == 1 && g.d[2] == 1 && (g.s[2] == 1 || g.s[2] == 2) &&
        cs.C * g.k[1] * g.k[2] <= kDirectMaxK && g.out[2] >= 8 && g.k[1] * g.k[2] > 1))
    return false;
  const int64_t Hp = (g.out[1] - 1) * g.s[1] + g.k[1], Wp = (g.out[2] - 1) * g.s[2] + g.k[2];
  return (cs.C + 1) * (Hp * Wp + 64) <= kMaxPaddedFloats;  // the padded planes (see direct_conv)
}

// Eight channels x eight output columns of direct_conv: p points at the first tap's input for
// the first column in channel 0's plane (planes `plane` floats apart; two per channel, even
// and odd columns, for stride 2), w at the block's weights [c][kh][kw][8].
template <int SW>
inline void direct_tile(const float* __restrict p, int64_t plane, int64_t C, int64_t kH, int64_t kW, int64_t Ws,
                        const float* __restrict w, __m256* res) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t c = 0; c < C; ++c, p += SW * plane) {
    for (int64_t kh = 0; kh < kH; ++kh) {
      const float* e = p + kh * Ws;
      const float* o = e + plane;
      for (int64_t kw = 0; kw < kW; ++kw, w += 8) {
        const __m256 v = _mm256_loadu_ps(SW == 1 ? e + kw : ((kw & 1) ? o : e) + kw / 2);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w), v, a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 1), v, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 2), v, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 3), v, a3);
        a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 4), v, a4);
        a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 5), v, a5);
        a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 6), v, a6);
        a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 7), v, a7);
      }
    }
  }
  res[0] = a0, res[1] = a1, res[2] = a2, res[3] = a3, res[4] = a4, res[5] = a5, res[6] = a6, res[7] = a7;
}

// Eight channels x 16 * NV output columns of direct_conv with AVX-512 (as direct_tile; res
// holds channel j's vectors at res[j * NV + v]).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512 intrinsics' undefined pass-through
template <int SW, int NV>
__attribute__((target("avx512f"))) void direct_tile512(const float* __restrict p, int64_t plane, int64_t C,
                                                        int64_t kH, int64_t kW, int64_t Ws, const float* __restrict w,
                                                        __m512* res) {
  __m512 a[8 * NV];
  for (int j = 0; j < 8 * NV; ++j) a[j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c, p += SW * plane) {
    for (int64_t kh = 0; kh < kH; ++kh) {
      const float* e = p + kh * Ws;
      const float* o = e + plane;
      for (int64_t kw = 0; kw < kW; ++kw, w += 8) {
        const float* src = SW == 1 ? e + kw : ((kw & 1) ? o : e) + kw / 2;
        __m512 v[NV];
        for (int k = 0; k < NV; ++k) v[k] = _mm512_loadu_ps(src + 16 * k);
        for (int j = 0; j < 8; ++j) {
          const __m512 wj = _mm512_set1_ps(w[j]);
          for (int k = 0; k < NV; ++k) a[j * NV + k] = _mm512_fmadd_ps(wj, v[k], a[j * NV + k]);
        }
      }
    }
  }
  for (int j = 0; j < 8 * NV; ++j) res[j] = a[j];
}

// One output row of direct_conv for one block of 8 channels, AVX-512: tiles of 32 columns, the
// last one of 16 when no more are left; bias and a clamp (or nothing) in the registers. Against
// the AVX2 tiles of 8 columns (2 threads): 3->8 3x3 stride 2 over 224x224 0.109 -> 0.056 ms,
// 16->8 3x3 over 112x112 0.214 -> 0.198.
__attribute__((target("avx512f"))) void direct_row512(const float* p, int64_t plane, int64_t C, int64_t kH, int64_t kW,
                                                       int64_t Ws, int64_t sw, const float* wb, int64_t OW,
                                                       int64_t mcount, const float* bias, bool fused, float lo,
                                                       float hi, float* y, int64_t S) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int64_t ow = 0; ow < OW;) {
    const int64_t left = OW - ow;
    const int nv = left > 16 ? 2 : 1;
    __m512 acc[16];
    const float* src = p + ow;
    if (nv == 2) {
      if (sw == 1) direct_tile512<1, 2>(src, plane, C, kH, kW, Ws, wb, acc);
      else direct_tile512<2, 2>(src, plane, C, kH, kW, Ws, wb, acc);
    } else {
      if (sw == 1) direct_tile512<1, 1>(src, plane, C, kH, kW, Ws, wb, acc);
      else direct_tile512<2, 1>(src, plane, C, kH, kW, Ws, wb, acc);
    }
    for (int64_t j = 0; j < mcount; ++j) {
      const __m512 b = _mm512_set1_ps(bias ? bias[j] : 0.f);
      for (int k = 0; k < nv; ++k) {
        __m512 v = _mm512_add_ps(acc[j * nv + k], b);
        if (fused) v = _mm512_min_ps(vhi, _mm512_max_ps(vlo, v));
        const int64_t n = std::min<int64_t>(16, left - 16 * k);
        const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
        _mm512_mask_storeu_ps(y + j * S + ow + 16 * k, m, v);
      }
    }
    ow += 16 * nv;
  }
}
#pragma GCC diagnostic pop

// False when scratch memory could not be had.
bool direct_conv(kernel_context& ctx, const conv_shapes& cs, const float* x, const float* w, const float* bias,
                 const activation_spec& act, float* out) {
  const window_geom& g = cs.g;
  const int64_t C = cs.C, M = cs.M, H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t kH = g.k[1], kW = g.k[2], sh = g.s[1], sw = g.s[2], S = OH * OW;
  const int64_t Hp = (OH - 1) * sh + kH, Wp = (OW - 1) * sw + kW;
  const int64_t Ws = sw == 2 ? (Wp + 1) / 2 : Wp;  // row stride of the planes the taps read
  constexpr int64_t slack = 64;  // a last tile's loads run up to 31 columns (and the taps) past a row
  const int64_t plane = Hp * Ws + slack;  // one padded plane (two, E and O, for stride 2)
  const int64_t nplanes = sw == 2 ? 2 * C : C;
  const int64_t blocks = (M + 7) / 8, K = C * kH * kW;
  // Weights as [block][c][kh][kw][8 channels] (zeros past M), then the padded planes.
  float* wt = nn::scratch<float>(1, static_cast<size_t>(blocks * K * 8 + nplanes * plane));
  if (!wt) return false;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < 8; ++j) {
        const int64_t m = b * 8 + j;
        wt[(b * K + k) * 8 + j] = m < M ? w[m * K + k] : 0.f;
      }
  float* planes = wt + blocks * K * 8;
  float lo, hi;
  const bool fused = clamp_of(act, &lo, &hi);
  const bool wide = sgemm::avx512();
  for (int64_t n = 0; n < cs.N; ++n) {
    const float* xn = x + n * C * H * W;
    for (int64_t c = 0; c < C; ++c) {
      if (sw == 1) {
        simd::pad_plane(xn + c * H * W, H, W, g.pb[1], g.pb[2], Hp, Wp, slack, planes + c * plane);
        continue;
      }
      simd::pad_split_plane(xn + c * H * W, H, W, g.pb[1], g.pb[2], Hp, Wp, slack, planes + 2 * c * plane,
                            planes + (2 * c + 1) * plane);
    }
    float* yn = out + n * M * S;
    // Tasks: (block of 8 channels, output row).
    parallel(ctx, blocks * OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(OW * K, 1)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / OH, oh = t % OH;
        const float* wb = wt + b * K * 8;
        const int64_t mcount = std::min<int64_t>(8, M - b * 8);
        if (wide) {
          direct_row512(planes + oh * sh * Ws, plane, C, kH, kW, Ws, sw, wb, OW, mcount, bias ? bias + b * 8 : nullptr,
                        fused, lo, hi, yn + b * 8 * S + oh * OW, S);
        } else {
          for (int64_t ow = 0; ow < OW; ow += 8) {
            __m256 acc[8];
            const float* p = planes + oh * sh * Ws + ow;
            if (sw == 1) direct_tile<1>(p, plane, C, kH, kW, Ws, wb, acc);
            else direct_tile<2>(p, plane, C, kH, kW, Ws, wb, acc);
            const int64_t len = std::min<int64_t>(8, OW - ow);
            for (int64_t j = 0; j < mcount; ++j) {
              const int64_t m = b * 8 + j;
              __m256 v = _mm256_add_ps(acc[j], _mm256_set1_ps(bias ? bias[m] : 0.f));
              if (fused) v = _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), v));
              float* yp = yn + m * S + oh * OW + ow;
              if (len == 8) _mm256_storeu_ps(yp, v);
              else _mm256_maskstore_ps(yp, simd::lanes(len), v);
            }
          }
        }
        if (!fused)
          for (int64_t j = 0; j < mcount; ++j) epilogue<float>(act, yn + (b * 8 + j) * S + oh * OW, OW, 0.f);
      }
    });
  }
  return true;
}

// Checks the shapes of X, W, B of a convolution and works out the geometry.
status conv_geometry(kernel_context& ctx, const window_attrs& wa, int64_t group, const tensor& X, const tensor& W,
                     const tensor* B, conv_shapes* cs) {
  if (X.rank() < 3 || X.rank() > 5)
    return ctx.fail("X must have rank 3 to 5 ([N, C, spatial...]), got {}", shape_str(X.shape()));
  if (W.rank() != X.rank())
    return ctx.fail("W {} must have the rank of X {}", shape_str(W.shape()), shape_str(X.shape()));
  cs->N = X.dim(0);
  cs->C = X.dim(1);
  cs->M = W.dim(0);
  cs->Cg = W.dim(1);
  cs->group = group;
  if (cs->Cg * group != cs->C)
    return ctx.fail("channel mismatch: X has {} channels but W expects {} x group {}", cs->C, cs->Cg, group);
  if (cs->M % group != 0)
    return ctx.fail("W has {} output channels, not a multiple of group {}", cs->M, group);
  cs->Mg = cs->M / group;
  std::vector<int64_t> kernel(W.shape().begin() + 2, W.shape().end());
  if (!wa.kernel_shape.empty() && wa.kernel_shape != kernel)
    return ctx.fail("kernel_shape {} does not match W {}", shape_str(wa.kernel_shape), shape_str(W.shape()));
  for (int64_t k : kernel)
    if (k < 1) return ctx.fail("W has an empty kernel {}", shape_str(W.shape()));
  if (B && (B->rank() != 1 || B->dim(0) != cs->M))
    return ctx.fail("B must have shape [{}], got {}", cs->M, shape_str(B->shape()));
  shape_t in_sp(X.shape().begin() + 2, X.shape().end());
  GG_RETURN_IF_ERROR(nn::resolve_window(ctx, wa, in_sp, kernel, false, &cs->g));
  cs->out = {cs->N, cs->M};
  for (int i = 3 - cs->g.nsp; i < 3; ++i) cs->out.push_back(cs->g.out[i]);
  return status::ok();
}

// Checks X, W, B of a Conv / FusedConv (which may have a fourth, Z) and works out the geometry.
status check_conv(kernel_context& ctx, const window_attrs& wa, int64_t group, conv_shapes* cs, size_t max_inputs = 3) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, max_inputs, 2));
  const tensor& X = *ctx.input(0);
  const tensor& W = *ctx.input(1);
  const tensor* B = nn::optional_input(ctx, 2);
  if (X.type() != W.type() || (B && B->type() != X.type()))
    return ctx.fail("X, W (and B) must share one type, got {} and {}", dtype_name(X.type()), dtype_name(W.type()));
  return conv_geometry(ctx, wa, group, X, W, B, cs);
}

// A thread's buffer for one row of `len` im2col columns, zeros after them up to a whole panel
// of nr columns (and 16 floats of slack for whole-vector copies).
float* im2col_row_buffer(int64_t len, int64_t nr) {
  thread_local std::vector<float> row_buf;
  const int64_t padded = (len + nr - 1) / nr * nr;
  if (static_cast<int64_t>(row_buf.size()) < padded + 16) row_buf.resize(static_cast<size_t>(padded + 16));
  zero_floats(row_buf.data() + len, padded - len);
  return row_buf.data();
}

// Row r of a packed right operand (kc rows, panels of nr columns), from one built row.
void row_to_panels(const float* row, int64_t len, int64_t kc, int64_t nr, int64_t r, float* dst) {
  const int64_t padded = (len + nr - 1) / nr * nr;
  float* d = dst + r * nr;
  for (int64_t q = 0; q < padded; q += nr, d += kc * nr)
    for (int64_t t = 0; t < nr; t += 8) _mm256_store_ps(d + t, _mm256_loadu_ps(row + q + t));
}

// sgemm's packing function for the implicit im2col matrix of one image and group: rows
// [k0, k0 + kc) (k = (c, kd, kh, kw)) x columns [j0, j1) (j = output position) into panels of
// nr columns (a power of two), zeros where the window reads padding.
void pack_im2col(const float* x, const window_geom& g, int64_t k0, int64_t kc, int64_t j0, int64_t j1, int64_t nr,
                 float* dst) {
  const int64_t D = g.in[0], H = g.in[1], W = g.in[2];
  const int64_t OH = g.out[1], OW = g.out[2];
  const int64_t kH = g.k[1], kW = g.k[2];
  const int64_t kprod = g.k[0] * kH * kW;
  const int64_t plane = D * H * W, sw = g.s[2];
  const int64_t len = j1 - j0;
  // One row of the im2col matrix is built contiguously (copies of whole image rows where the
  // stride is 1), then cut into the panels. The output rows the columns cross are worked out
  // once per call, not per k.
  struct segment {
    int64_t id0, ih0;  // input depth / row of tap (0, 0)
    int64_t ow0, ow1;  // output columns [ow0, ow1) of one output row
    int64_t off;       // where they go in the im2col row
  };
  thread_local std::vector<segment> segs;
  float* row = im2col_row_buffer(len, nr);
  segs.clear();
  {
    int64_t r = j0 / OW, ow0 = j0 % OW;
    for (int64_t j = j0; j < j1; ++r, ow0 = 0) {
      const int64_t ow1 = ow0 + std::min(j1 - j, OW - ow0);
      const int64_t od = r / OH, oh = r % OH;
      segs.push_back({od * g.s[0] - g.pb[0], oh * g.s[1] - g.pb[1], ow0, ow1, j - j0});
      j += ow1 - ow0;
    }
  }
  for (int64_t k = k0; k < k0 + kc; ++k) {
    const int64_t c = k / kprod, rem = k % kprod;
    const int64_t kd = rem / (kH * kW), kh = (rem / kW) % kH, kw = rem % kW;
    const float* xc = x + c * plane;
    const int64_t iw0 = kw * g.d[2] - g.pb[2];
    // Output columns whose input column is inside the image: lo <= ow < hi.
    int64_t lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
    int64_t hi = (W - 1 - iw0) < 0 ? 0 : (W - 1 - iw0) / sw + 1;
    lo = std::min(lo, OW);
    hi = std::max(lo, std::min(hi, OW));
    const int64_t dd = kd * g.d[0], dh = kh * g.d[1];
    for (const segment& sg : segs) {
      float* out = row + sg.off;
      const int64_t id = sg.id0 + dd, ih = sg.ih0 + dh;
      if (id < 0 || id >= D || ih < 0 || ih >= H) {
        zero_floats(out, sg.ow1 - sg.ow0);
        continue;
      }
      const float* src = xc + (id * H + ih) * W;
      const int64_t ow0 = sg.ow0, ow1 = sg.ow1;
      const int64_t a = std::clamp(lo, ow0, ow1), b = std::clamp(hi, a, ow1);
      zero_floats(out, a - ow0);
      if (sw == 1) {
        copy_floats(src + a + iw0, out + (a - ow0), b - a);
      } else {
        int64_t ow = a;
        if (sw == 2) {  // the even elements of 16 consecutive inputs, while inside the row
          for (; ow + 8 <= b && ow * 2 + iw0 + 15 < W; ow += 8) {
            const float* p = src + ow * 2 + iw0;
            _mm256_storeu_ps(out + (ow - ow0), simd::evens(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)));
          }
        }
        for (; ow < b; ++ow) out[ow - ow0] = src[ow * sw + iw0];
      }
      zero_floats(out + (b - ow0), ow1 - b);
    }
    row_to_panels(row, len, kc, nr, k - k0, dst);
  }
}

// pack_im2col for stride-2 2-D convolutions without dilation along rows, from the input's
// padded planes split into even and odd columns (E, O: Hp rows of Ws each, `plane` floats per
// channel pair, see split_planes_applies): the taps of one output row are then plain copies
// from E or O (no gathering of every other float for each tap, no edge checks). The columns
// [j0, j1) fall into runs, each within one output row and one panel, worked out once per call;
// every tap's row is then one short copy per run straight into its panel.
void pack_im2col_split(const float* EO, int64_t plane, int64_t Ws, const window_geom& g, int64_t k0, int64_t kc,
                       int64_t j0, int64_t j1, int64_t nr, float* dst) {
  const int64_t OW = g.out[2], kH = g.k[1], kW = g.k[2], kprod = kH * kW;
  const int64_t len = j1 - j0;
  struct run {
    int64_t src;  // from a tap's first input: output row * row step + output column
    int64_t dst;  // panel * nr * kc + column within the panel
    int64_t n;
  };
  thread_local std::vector<run> runs;
  runs.clear();
  for (int64_t j = j0; j < j1;) {
    const int64_t oh = j / OW, ow = j % OW, q = (j - j0) / nr, t = (j - j0) % nr;
    const int64_t n = std::min({j1 - j, OW - ow, nr - t});
    runs.push_back({oh * g.s[1] * Ws + ow, q * nr * kc + t, n});
    j += n;
  }
  // The last panel's columns past j1 are zeros in every row.
  const int64_t tail = len % nr, tail_at = (len / nr) * nr * kc + tail;
  for (int64_t k = k0; k < k0 + kc; ++k) {
    const int64_t c = k / kprod, kh = (k % kprod) / kW, kw = k % kW;
    const float* src = EO + c * plane + ((kw % 2) ? plane / 2 : 0) + kh * g.d[1] * Ws + kw / 2;
    float* d = dst + (k - k0) * nr;
    for (const run& r : runs) copy_floats(src + r.src, d + r.dst, r.n);
    if (tail) zero_floats(d + tail_at, nr - tail);
  }
}

// Whether a stride-2 convolution's packing reads split planes (2-D, stride 2 along rows
// without dilation there), and the planes' geometry: Hp padded rows of Ws = (Wp + 1) / 2, E
// then O of one channel in `plane` floats, each followed by `slack`.
struct split_planes {
  static constexpr int64_t slack = 16;
  int64_t Hp = 0, Wp = 0, Ws = 0, plane = 0;
};

bool split_planes_applies(const conv_shapes& cs, split_planes* sp) {
  const window_geom& g = cs.g;
  if (g.in[0] != 1 || g.k[0] != 1 || g.s[2] != 2 || g.d[2] != 1) return false;
  sp->Hp = (g.out[1] - 1) * g.s[1] + (g.k[1] - 1) * g.d[1] + 1;
  sp->Wp = (g.out[2] - 1) * 2 + g.k[2];
  sp->Ws = (sp->Wp + 1) / 2;
  sp->plane = 2 * (sp->Hp * sp->Ws + split_planes::slack);
  return cs.Cg * sp->plane <= kMaxPaddedFloats;
}

// The weights of one conv packed for sgemm, one left operand (Mg x K) per group.
struct packed_weights {
  const float* src = nullptr;
  std::once_flag once, wino_once;
  std::unique_ptr<winograd::weights> wino;  // null when the transform failed
  std::vector<std::shared_ptr<const sgemm::packed>> groups;  // empty when packing failed
  // The packed groups when w is the constant these were made for, packing on first use.
  const std::vector<std::shared_ptr<const sgemm::packed>>* get(const float* w, int64_t group, int64_t Mg, int64_t K) {
    if (!src || w != src) return nullptr;
    std::call_once(once, [&] {
      for (int64_t gi = 0; gi < group; ++gi) {
        auto pk = sgemm::packed::left({src + gi * Mg * K, K, 1}, Mg, K);
        if (!pk) {
          groups.clear();
          return;
        }
        groups.push_back(std::move(pk));
      }
    });
    return groups.empty() ? nullptr : &groups;
  }
  // W^T packed as sgemm's right operand with its K rows in (tap, channel) order, for
  // convolutions over tiny maps (see tiny_map_conv), when w is the constant it was made for.
  std::once_flag right_once;
  std::shared_ptr<const sgemm::packed> right;
  const sgemm::packed* right_of(const float* w, int64_t M, int64_t C, int64_t taps) {
    if (!src || w != src) return nullptr;
    std::call_once(right_once, [&] {
      const int64_t K = C * taps;
      std::vector<float> wr(static_cast<size_t>(M * K));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t t = 0; t < taps; ++t) wr[m * K + t * C + c] = src[m * K + c * taps + t];
      right = sgemm::packed::right({wr.data(), 1, K}, K, M);
    });
    return right.get();
  }
  // The Winograd-transformed weights when w is the constant these were made for.
  const winograd::weights* winograd_of(const float* w, int64_t M, int64_t C) {
    if (!src || w != src) return nullptr;
    std::call_once(wino_once, [&] { wino = winograd::transform_weights(src, M, C); });
    return wino.get();
  }
};

// C[Mg, ncols] (row stride ldc) = act(W_g x B + bias) through sgemm, W_g prepacked or not; B
// in memory (pointwise) or packed from the image (im2col).
bool conv_gemm(kernel_context& ctx, const sgemm::packed* wpk, const float* w, int64_t Mg, int64_t K, sgemm::operand b,
               int64_t ncols, float* c, int64_t ldc, const float* bias, const activation_spec& act,
               const float* residual = nullptr) {
  sgemm::problem q;
  q.m = Mg;
  q.n = ncols;
  q.k = K;
  q.a.v = {w, K, 1};
  q.a.pk = wpk;
  q.b = std::move(b);
  q.c = c;
  q.ldc = ldc;
  q.ep.bias = bias;
  q.ep.bias_per_row = true;
  q.ep.act = act;
  q.ep.residual = residual;
  return sgemm::run(&ctx.pool(), q);
}

// Stride-1 convolutions that would otherwise pack im2col (7x1, 5x1, and 1x7 or dilated kernels
// over wide maps; grouped convolutions): each input plane is padded once, and the output is
// computed "wide", OH rows of Wp = OW + (kW - 1) * dW columns. Then the im2col row of tap (c, kh, kw) is the
// padded plane itself from offset kh * dH * Wp + kw * dW, so sgemm's right operand is packed
// with one contiguous copy per panel row (the im2col packer walks output rows and image edges
// for every tap). The kW - 1 extra columns of each row are computed and dropped (none for a
// kernel one column wide).
bool wide_applies(const conv_shapes& cs) {
  const window_geom& g = cs.g;
  if (g.in[0] != 1 || g.k[0] != 1 || g.s[1] != 1 || g.s[2] != 1) return false;
  const int64_t Hp = g.out[1] + (g.k[1] - 1) * g.d[1], Wp = g.out[2] + (g.k[2] - 1) * g.d[2];
  // At most a sixteenth more columns than the output has (measured: a 1x7 kernel over 56
  // columns, 11% more, ran no faster than im2col; a grouped 3x3 over 56, 4% more, 1.15x
  // faster; a 7x1, none more, 1.12x), and padded planes that fit.
  return 16 * Wp <= 17 * g.out[2] && cs.Cg * Hp * Wp + Wp + 64 <= kMaxPaddedFloats;
}

bool wide_conv(kernel_context& ctx, const std::vector<std::shared_ptr<const sgemm::packed>>* wpk, const float* x,
               const float* w, const conv_shapes& cs, const float* bias, const activation_spec& act, float* out) {
  const window_geom& g = cs.g;
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2], S = OH * OW;
  const int64_t kH = g.k[1], kW = g.k[2], dh = g.d[1], dw = g.d[2], kprod = kH * kW;
  const int64_t Hp = OH + (kH - 1) * dh, Wp = OW + (kW - 1) * dw, plane = Hp * Wp;
  const int64_t K = cs.Cg * kprod;
  // The last tap of the last row reads (kW - 1) * dW floats past the plane.
  const int64_t slack = (kW - 1) * dw + 8;
  float* P = nn::scratch<float>(0, static_cast<size_t>(cs.Cg * plane + slack));
  if (!P) return false;
  // Output rows per product when the wide rows need a buffer: about 1M floats of it.
  const bool in_place = Wp == OW;
  const int64_t rows = in_place ? OH : std::clamp<int64_t>((int64_t{1} << 20) / std::max<int64_t>(1, cs.Mg * Wp), 1, OH);
  float* Cw = in_place ? nullptr : nn::scratch<float>(1, static_cast<size_t>(cs.Mg * rows * Wp));
  if (!in_place && !Cw) return false;
  for (int64_t n = 0; n < cs.N; ++n)
    for (int64_t gi = 0; gi < cs.group; ++gi) {
      const float* xg = x + (n * cs.C + gi * cs.Cg) * H * W;
      parallel(ctx, cs.Cg, std::max<int64_t>(1, 16384 / plane), [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) simd::pad_plane(xg + c * H * W, H, W, g.pb[1], g.pb[2], Hp, Wp, 0, P + c * plane);
      });
      zero_floats(P + cs.Cg * plane, slack);
      float* yg = out + (n * cs.M + gi * cs.Mg) * S;
      for (int64_t r0 = 0; r0 < OH; r0 += rows) {
        const int64_t r1 = std::min(OH, r0 + rows), ncols = (r1 - r0) * Wp;
        const float* base = P + r0 * Wp;
        sgemm::operand b;
        b.pack = [base, plane, Wp, kW, kprod, dh, dw](int64_t k0, int64_t kc, int64_t j0, int64_t j1, int64_t nr,
                                                       float* dst) {
          for (int64_t k = k0; k < k0 + kc; ++k) {
            const int64_t c = k / kprod, kh = (k % kprod) / kW, kw = k % kW;
            const float* src = base + c * plane + kh * dh * Wp + kw * dw;
            float* d = dst + (k - k0) * nr;
            for (int64_t j = j0; j < j1; j += nr, d += kc * nr) {
              const int64_t len = std::min(nr, j1 - j);
              int64_t t = 0;
              for (; t + 8 <= len; t += 8) _mm256_storeu_ps(d + t, _mm256_loadu_ps(src + j + t));
              for (; t < len; ++t) d[t] = src[j + t];
              for (; t < nr; ++t) d[t] = 0.f;
            }
          }
        };
        float* c = in_place ? yg + r0 * OW : Cw;
        if (!conv_gemm(ctx, wpk ? (*wpk)[gi].get() : nullptr, w + gi * cs.Mg * K, cs.Mg, K, std::move(b), ncols, c,
                       in_place ? S : ncols, bias ? bias + gi * cs.Mg : nullptr, act))
          return false;
        if (!in_place)
          parallel(ctx, cs.Mg, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, ncols)), [&](int64_t m0, int64_t m1) {
            for (int64_t m = m0; m < m1; ++m)
              for (int64_t r = r0; r < r1; ++r)
                copy_floats(Cw + m * ncols + (r - r0) * Wp, yg + m * S + r * OW, OW);
          });
      }
    }
  return true;
}

// Convolutions whose output maps are tiny (up to kTinyMap positions: the last stages of small
// models, 2x2 to 4x4): W x im2col would be a product with 4 to 16 columns per image, a quarter
// to all of one 16-wide panel of the micro-kernel, and an epilogue over rows shorter than a
// vector. (Measured: 1x1 convolutions whose maps are whole vectors, 8 or 16 positions, are
// faster on the pointwise path; over 1x1 maps, the squeeze-and-excite blocks, 2x2 or 3x3
// ones, 2 to 4 times slower.) Instead, with every image's positions as rows,
// C^T = im2col^T x W^T, the weights packed once as the right operand, and C^T transposed into
// the output. The rows of im2col^T run over (tap, channel): each image is first copied to a
// zero-padded [position][channel] layout, so a row is one run of C floats per tap. Needs
// constant weights; false when it does not apply or scratch memory could not be had (the
// caller then takes the other paths).
//
// Maps of up to 64 positions (8x8, 7x7) take it too when the conv is not 1x1 and has at most
// 32 output channels (one or two panels of the micro-kernel): a 16->16 3x3 over 8x8 runs 25%
// faster than Winograd, an 8->16 3x3 stride 2 over 16x16 30% faster than im2col (whose rows
// are 8 floats there). With 64 and more channels Winograd or im2col were even or faster.
constexpr int64_t kTinyMap = 16, kSmallMap = 64, kSmallMapMaxM = 32;

bool tiny_map_applies(const conv_shapes& cs, bool pointwise) {
  const int64_t S = cs.g.out_size();
  if (cs.group != 1) return false;
  if (pointwise) return S <= kTinyMap && S % 8 != 0;
  return S <= kTinyMap || (S <= kSmallMap && cs.M <= kSmallMapMaxM);
}

bool tiny_map_conv(kernel_context& ctx, const conv_shapes& cs, const float* x, const float* bias,
                   const activation_spec& act, const sgemm::packed* wT, float* out) {
  const window_geom& g = cs.g;
  const int64_t C = cs.C, S = g.out_size(), K = C * g.k_size(), M = cs.M, rows = cs.N * S;
  const int64_t D = g.in[0], H = g.in[1], W = g.in[2], OD = g.out[0], OH = g.out[1], OW = g.out[2];
  // The part of the padded image the windows read.
  const int64_t Dp = (OD - 1) * g.s[0] + (g.k[0] - 1) * g.d[0] + 1;
  const int64_t Hp = (OH - 1) * g.s[1] + (g.k[1] - 1) * g.d[1] + 1;
  const int64_t Wp = (OW - 1) * g.s[2] + (g.k[2] - 1) * g.d[2] + 1;
  // Copies move whole vectors: up to 7 floats past a run are read (slack after xp) and written
  // (overwritten by the next run, or the slack after A).
  constexpr int64_t slack = 8;
  const int64_t xp_size = Dp * Hp * Wp * C + slack, xt_size = D * H * W * C;
  if (rows * (K + M) + slack + xp_size + xt_size > kMaxPaddedFloats) return false;
  float* A = nn::scratch<float>(1, static_cast<size_t>(rows * (K + M) + slack));
  float* xp = nn::scratch<float>(2, static_cast<size_t>(xp_size + xt_size));
  if (!A || !xp) return false;
  float* Ct = A + rows * K + slack;
  float* xt = xp + xp_size;  // one image as [position][channel], unpadded
  zero_floats(xp + xp_size - slack, slack);
  for (int64_t n = 0; n < cs.N; ++n) {
    simd::transpose_floats(x + n * C * D * H * W, D * H * W, C, D * H * W, xt, C);
    // Each depth slice padded as a plane whose elements are runs of C floats.
    for (int64_t pd = 0; pd < Dp; ++pd) {
      const int64_t id = pd - g.pb[0];
      float* slice = xp + pd * Hp * Wp * C;
      if (id < 0 || id >= D) zero_floats(slice, Hp * Wp * C);
      else simd::pad_plane(xt + id * H * W * C, H, W * C, g.pb[1], g.pb[2] * C, Hp, Wp * C, 0, slice);
    }
    // A[n * S + s][(kd, kh, kw, c)] = the input under tap (kd, kh, kw) of output s.
    float* a = A + n * S * K;
    for (int64_t od = 0; od < OD; ++od)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t kd = 0; kd < g.k[0]; ++kd)
            for (int64_t kh = 0; kh < g.k[1]; ++kh) {
              const float* r = xp + ((od * g.s[0] + kd * g.d[0]) * Hp + oh * g.s[1] + kh * g.d[1]) * Wp * C;
              for (int64_t kw = 0; kw < g.k[2]; ++kw, a += C)
                simd::copy_floats_over(r + (ow * g.s[2] + kw * g.d[2]) * C, a, C, C + slack - 1);
            }
  }
  sgemm::problem q;
  q.m = rows;
  q.n = M;
  q.k = K;
  q.a.v = {A, K, 1};
  q.b.pk = wT;
  q.c = Ct;
  q.ldc = M;
  q.ep.bias = bias;  // per column: per output channel
  q.ep.act = act;
  if (!sgemm::run(&ctx.pool(), q)) return false;
  for (int64_t n = 0; n < cs.N; ++n) simd::transpose_floats(Ct + n * S * M, M, S, M, out + n * M * S, S);
  return true;
}

// The convolution into y. With z (a FusedConv's residual, y's shape): y = act(conv + bias + z).
// The paths through sgemm (pointwise, im2col) add z in the product (*z_used); the others run
// without the activation (act_in is then only for the sgemm paths) and leave z to conv_run.
template <typename T>
status conv_body(kernel_context& ctx, const conv_shapes& cs, const activation_spec& act_in, const tensor& X,
                 const tensor& Wt, const tensor* Bt, tensor* y, packed_weights* pw, const T* z, bool* z_used) {
  const activation_spec act = z ? activation_spec{} : act_in;
  const window_geom& g = cs.g;
  const T* x = X.data<T>();
  const T* w = Wt.data<T>();
  const T* bias = Bt ? Bt->data<T>() : nullptr;
  T* out = y->data<T>();
  const int64_t S_in = g.in_size(), S = g.out_size();
  const int64_t kprod = g.k_size();
  const int64_t K = cs.Cg * kprod;
  if (cs.N == 0 || cs.M == 0 || S == 0) return status::ok();

  auto finish_rows = [&](T* ybase, int64_t m0, int64_t rows, int64_t col0, int64_t ncols) {
    // Epilogue over channels [m0, m0 + rows), columns [col0, col0 + ncols) of one image.
    if (act.is_none() && !bias) return;
    parallel(ctx, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(ncols, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        epilogue<T>(act, ybase + (m0 + r) * S + col0, ncols, bias ? bias[m0 + r] : T(0));
    });
  };

  if (K == 0) {  // no input channels: the output is the bias
    for (int64_t n = 0; n < cs.N; ++n) {
      std::fill(out + n * cs.M * S, out + (n + 1) * cs.M * S, T(0));
      finish_rows(out + n * cs.M * S, 0, cs.M, 0, S);
    }
    return status::ok();
  }

  bool pointwise = true;
  for (int i = 0; i < 3; ++i)
    if (g.k[i] != 1 || g.s[i] != 1 || g.pb[i] != 0 || g.pe[i] != 0) pointwise = false;

  if constexpr (std::is_same_v<T, float>) {
    if (cs.Cg == 1 && cs.Mg == 1 && g.nsp <= 2 && !pointwise && depthwise_tiny_applies(g) &&
        cs.C * (g.in_size() + g.k_size() + S + 1) <= kMaxPaddedFloats)
      if (depthwise_tiny(ctx, cs, x, w, bias, act, out)) return status::ok();
    if (cs.Cg == 1 && g.nsp <= 2 && !pointwise) {
      // Depthwise: each output plane reads one input plane.
      const int64_t planes = cs.N * cs.M;
      const int64_t work = S * kprod;
      parallel(ctx, planes, std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1)), [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          const int64_t n = p / cs.M, m = p % cs.M;
          const int64_t c = m / cs.Mg;  // the input channel of this output channel's group
          float* yp = out + p * S;
          const float* xp = x + (n * cs.C + c) * S_in;
          bool fused = false;
          if (!depthwise_padded_plane(xp, w + m * kprod, g, yp, bias ? bias[m] : 0.f, act, &fused))
            depthwise_plane(xp, w + m * kprod, g, yp);
          if (!fused) epilogue<float>(act, yp, S, bias ? bias[m] : 0.f);
        }
      });
      return status::ok();
    }
  }

  if constexpr (std::is_same_v<T, float>) {
    if (sgemm::available()) {
      auto oom = [&] { return internal_error("{}: out of memory for the packed blocks", ctx.op().describe()); };
      if (pointwise && S == 1 && S_in == 1 && cs.group == 1 && cs.N <= 2) {
        // A 1x1 convolution over a 1x1 map (squeeze-excite): Y[N, M] = X[N, C] W^T, rows of W
        // read in place by the matrix-vector kernel (one or two rows), on the engine's threads.
        (void)dense::matmul(&ctx.pool(), cs.N, cs.M, cs.C, x, cs.C, w, cs.C, true, out, cs.M, 1.f, bias);
        if (!act.is_none()) apply_activation(act, out, cs.N * cs.M);
        return status::ok();
      }
      if (pw && tiny_map_applies(cs, pointwise))
        if (const sgemm::packed* wT = pw->right_of(w, cs.M, cs.C, kprod))
          if (tiny_map_conv(ctx, cs, x, bias, act, wT, out)) return status::ok();
      if (pw && winograd::applies(g, cs.group, cs.C, cs.M)) {
        if (const winograd::weights* U = pw->winograd_of(w, cs.M, cs.C)) {
          for (int64_t n = 0; n < cs.N; ++n)
            if (!winograd::run(&ctx.pool(), *U, x + n * cs.C * S_in, g, bias, act, out + n * cs.M * S)) return oom();
          return status::ok();
        }
      }
      if (!pointwise && direct_applies(cs)) {
        if (!direct_conv(ctx, cs, x, w, bias, act, out)) return oom();
        return status::ok();
      }
      const auto* wpk = pw ? pw->get(w, cs.group, cs.Mg, K) : nullptr;
      if (!pointwise && wide_applies(cs)) {
        if (!wide_conv(ctx, wpk, x, w, cs, bias, act, out)) return oom();
        return status::ok();
      }
      if (pointwise) {
        for (int64_t n = 0; n < cs.N; ++n)
          for (int64_t gi = 0; gi < cs.group; ++gi) {
            sgemm::operand xs;
            xs.v = {x + (n * cs.C + gi * cs.Cg) * S_in, S_in, 1};
            const int64_t at = (n * cs.M + gi * cs.Mg) * S;
            if (!conv_gemm(ctx, wpk ? (*wpk)[gi].get() : nullptr, w + gi * cs.Mg * K, cs.Mg, K, std::move(xs), S,
                           out + at, S, bias ? bias + gi * cs.Mg : nullptr, act_in, z ? z + at : nullptr))
              return oom();
          }
        *z_used = z != nullptr;
        return status::ok();
      }
      // The im2col matrix is never written out: sgemm packs its panels straight from the image
      // or, at stride 2, from its padded planes split into even and odd columns.
      split_planes sp;
      const bool split = split_planes_applies(cs, &sp);
      const int64_t plane = sp.plane, Ws = sp.Ws;
      float* EO = split ? nn::scratch<float>(0, static_cast<size_t>(cs.Cg * plane)) : nullptr;
      if (split && !EO) return oom();
      for (int64_t n = 0; n < cs.N; ++n)
        for (int64_t gi = 0; gi < cs.group; ++gi) {
          const float* xg = x + (n * cs.C + gi * cs.Cg) * S_in;
          sgemm::operand cols;
          if (split) {
            const int64_t H = g.in[1], W = g.in[2];
            parallel(ctx, cs.Cg, 1, [&](int64_t c0, int64_t c1) {
              for (int64_t c = c0; c < c1; ++c)
                simd::pad_split_plane(xg + c * H * W, H, W, g.pb[1], g.pb[2], sp.Hp, sp.Wp, split_planes::slack,
                                      EO + c * plane, EO + c * plane + plane / 2);
            });
            cols.pack = [EO, plane, Ws, &g](int64_t k0, int64_t kc, int64_t j0, int64_t j1, int64_t nr, float* dst) {
              pack_im2col_split(EO, plane, Ws, g, k0, kc, j0, j1, nr, dst);
            };
          } else {
            cols.pack = [xg, &g](int64_t k0, int64_t kc, int64_t j0, int64_t j1, int64_t nr, float* dst) {
              pack_im2col(xg, g, k0, kc, j0, j1, nr, dst);
            };
          }
          const int64_t at = (n * cs.M + gi * cs.Mg) * S;
          if (!conv_gemm(ctx, wpk ? (*wpk)[gi].get() : nullptr, w + gi * cs.Mg * K, cs.Mg, K, std::move(cols), S,
                         out + at, S, bias ? bias + gi * cs.Mg : nullptr, act_in, z ? z + at : nullptr))
            return oom();
        }
      *z_used = z != nullptr;
      return status::ok();
    }
  }

  if (pointwise) {
    for (int64_t n = 0; n < cs.N; ++n) {
      for (int64_t gi = 0; gi < cs.group; ++gi) {
        T* yb = out + (n * cs.M + gi * cs.Mg) * S;
        gemm<T>(false, false, cs.Mg, S, cs.Cg, T(1), w + gi * cs.Mg * K, K, x + (n * cs.C + gi * cs.Cg) * S_in, S_in,
                T(0), yb, S);
      }
      finish_rows(out + n * cs.M * S, 0, cs.M, 0, S);
    }
    return status::ok();
  }

  // General: im2col + GEMM, tiled along output rows.
  const int64_t OW = g.out[2];
  const int64_t out_rows = g.out[0] * g.out[1];
  int64_t tile_rows = std::max<int64_t>(1, max_col_elems / std::max<int64_t>(K * OW, 1));
  tile_rows = std::min(tile_rows, out_rows);
  T* col = nn::scratch<T>(0, static_cast<size_t>(K * tile_rows * OW));
  if (!col) return internal_error("{}: out of memory for the im2col buffer", ctx.op().describe());
  for (int64_t n = 0; n < cs.N; ++n) {
    for (int64_t gi = 0; gi < cs.group; ++gi) {
      const T* xg = x + (n * cs.C + gi * cs.Cg) * S_in;
      T* yb = out + n * cs.M * S;
      for (int64_t r0 = 0; r0 < out_rows; r0 += tile_rows) {
        const int64_t r1 = std::min(out_rows, r0 + tile_rows);
        const int64_t ncols = (r1 - r0) * OW;
        im2col<T>(ctx, xg, cs.Cg, g, r0, r1, col);
        gemm<T>(false, false, cs.Mg, ncols, K, T(1), w + gi * cs.Mg * K, K, col, ncols, T(0),
                yb + gi * cs.Mg * S + r0 * OW, S);
        finish_rows(yb, gi * cs.Mg, cs.Mg, r0 * OW, ncols);
      }
    }
  }
  return status::ok();
}

// conv_body, then z added and the activation applied where the path did not.
template <typename T>
status conv_run(kernel_context& ctx, const conv_shapes& cs, const activation_spec& act, const tensor& X,
                const tensor& Wt, const tensor* Bt, tensor* y, packed_weights* pw = nullptr, const T* z = nullptr) {
  bool z_used = false;
  GG_RETURN_IF_ERROR(conv_body<T>(ctx, cs, act, X, Wt, Bt, y, pw, z, &z_used));
  if (!z || z_used) return status::ok();
  T* out = y->data<T>();
  const int64_t n = y->numel();
  parallel(ctx, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] += z[i];
    epilogue<T>(act, out + b, e - b, T(0));
  });
  return status::ok();
}

class conv_kernel final : public kernel {
 public:
  conv_kernel(window_attrs wa, int64_t group, activation_spec act, bool fused)
      : wa_(std::move(wa)), group_(group), act_(act), fused_(fused) {}

  status prepare(const std::vector<const tensor*>& constants) override {
    if (constants.size() > 1 && constants[1] && constants[1]->type() == dtype::f32) weights_.src = constants[1]->data<float>();
    return status::ok();
  }

  status run(kernel_context& ctx) override {
    conv_shapes cs;
    GG_RETURN_IF_ERROR(check_conv(ctx, wa_, group_, &cs, fused_ ? 4 : 3));
    const dtype t = ctx.input(0)->type();
    if (t != dtype::f32 && t != dtype::f64) return ctx.fail("unsupported input type {}", dtype_name(t));
    // A FusedConv's residual (a following Add folded in by the graph passes, which do not know
    // the shapes): added as Add would, broadcasting; in the product when it has y's shape.
    const tensor* Z = fused_ && ctx.num_inputs() > 3 ? nn::optional_input(ctx, 3) : nullptr;
    if (Z && Z->type() != t)
      return ctx.fail("the residual Z is {}, the convolution {}", dtype_name(Z->type()), dtype_name(t));
    if (Z && Z->shape() != cs.out) return run_broadcast(ctx, cs, *Z);
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, t, cs.out));
    const tensor* B = nn::optional_input(ctx, 2);
    if (t == dtype::f32)
      return conv_run<float>(ctx, cs, act_, *ctx.input(0), *ctx.input(1), B, y, &weights_,
                             Z ? Z->data<float>() : nullptr);
    return conv_run<double>(ctx, cs, act_, *ctx.input(0), *ctx.input(1), B, y, nullptr,
                            Z ? Z->data<double>() : nullptr);
  }

 private:
  // y = act(conv + bias + Z) for a Z of another shape than the convolution's output.
  status run_broadcast(kernel_context& ctx, const conv_shapes& cs, const tensor& Z) {
    shape_t out;
    if (!broadcast_shapes(cs.out, Z.shape(), &out))
      return ctx.fail("the residual Z {} does not broadcast with the output {}", shape_str(Z.shape()),
                      shape_str(cs.out));
    const dtype t = Z.type();
    tensor c = tensor::zeros(t, cs.out);
    const tensor* B = nn::optional_input(ctx, 2);
    if (t == dtype::f32) GG_RETURN_IF_ERROR(conv_run<float>(ctx, cs, {}, *ctx.input(0), *ctx.input(1), B, &c, &weights_));
    else GG_RETURN_IF_ERROR(conv_run<double>(ctx, cs, {}, *ctx.input(0), *ctx.input(1), B, &c));
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, t, out));
    broadcast_walker walk(out, {broadcast_strides(cs.out, out), broadcast_strides(Z.shape(), out)});
    auto sum = [&](auto* yp, const auto* cp, const auto* zp) {
      walk.for_range(0, y->numel(), [&](int64_t i, const int64_t* off) { yp[i] = cp[off[0]] + zp[off[1]]; });
      epilogue(act_, yp, y->numel(), std::remove_pointer_t<decltype(yp)>(0));
    };
    if (t == dtype::f32) sum(y->data<float>(), c.data<float>(), Z.data<float>());
    else sum(y->data<double>(), c.data<double>(), Z.data<double>());
    return status::ok();
  }

  window_attrs wa_;
  int64_t group_;
  activation_spec act_;
  bool fused_;
  packed_weights weights_;
};

expected<std::unique_ptr<kernel>> make_conv(const node& n, bool fused) {
  window_attrs wa;
  GG_RETURN_IF_ERROR(nn::parse_window_attrs(n, &wa, false));
  const int64_t group = n.attr_int("group", 1);
  if (group < 1) return invalid_input("{}: group must be >= 1, got {}", n.describe(), group);
  activation_spec act;
  if (fused) {
    GG_ASSIGN_OR_RETURN(act, parse_activation(n));
  }
  return std::unique_ptr<kernel>(std::make_unique<conv_kernel>(std::move(wa), group, act, fused));
}

// ---------------------------------------------------------------------------------------
// ConvTranspose

class conv_transpose_kernel final : public kernel {
 public:
  explicit conv_transpose_kernel(const node& n) {
    wa_.kernel_shape = n.attr_ints("kernel_shape");
    wa_.strides = n.attr_ints("strides");
    wa_.dilations = n.attr_ints("dilations");
    wa_.pads = n.attr_ints("pads");
    wa_.auto_pad = n.attr_string("auto_pad", "NOTSET");
    if (wa_.auto_pad.empty()) wa_.auto_pad = "NOTSET";
    group_ = n.attr_int("group", 1);
    output_padding_ = n.attr_ints("output_padding");
    output_shape_ = n.attr_ints("output_shape");
  }

  status check_attrs(const node& n) const {
    window_attrs tmp;
    GG_RETURN_IF_ERROR(nn::parse_window_attrs(n, &tmp, false));
    if (group_ < 1) return invalid_input("{}: group must be >= 1", n.describe());
    for (int64_t v : output_padding_)
      if (v < 0 || v > (int64_t{1} << 30)) return invalid_input("{}: output_padding must be non-negative", n.describe());
    for (int64_t v : output_shape_)
      if (v < 0 || v > (int64_t{1} << 40)) return invalid_input("{}: output_shape must be non-negative", n.describe());
    return status::ok();
  }

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
    const tensor& X = *ctx.input(0);
    const tensor& Wt = *ctx.input(1);
    const tensor* Bt = nn::optional_input(ctx, 2);
    if (X.type() != Wt.type() || (Bt && Bt->type() != X.type()))
      return ctx.fail("X, W (and B) must share one type");
    if (X.type() != dtype::f32 && X.type() != dtype::f64) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
    if (X.rank() < 3 || X.rank() > 5) return ctx.fail("X must have rank 3 to 5, got {}", shape_str(X.shape()));
    if (Wt.rank() != X.rank()) return ctx.fail("W {} must have the rank of X {}", shape_str(Wt.shape()), shape_str(X.shape()));
    const int64_t N = X.dim(0), C = X.dim(1);
    if (Wt.dim(0) != C) return ctx.fail("channel mismatch: X has {} channels but W has {}", C, Wt.dim(0));
    if (C % group_ != 0) return ctx.fail("{} input channels is not a multiple of group {}", C, group_);
    const int64_t Mg = Wt.dim(1), M = Mg * group_, Cg = C / group_;
    if (Bt && (Bt->rank() != 1 || Bt->dim(0) != M)) return ctx.fail("B must have shape [{}], got {}", M, shape_str(Bt->shape()));
    const size_t nsp = X.rank() - 2;
    auto sized = [&](const std::vector<int64_t>& v, size_t want, const char* what) -> status {
      if (!v.empty() && v.size() != want) return ctx.fail("{} has {} values, expected {}", what, v.size(), want);
      return status::ok();
    };
    GG_RETURN_IF_ERROR(sized(wa_.strides, nsp, "strides"));
    GG_RETURN_IF_ERROR(sized(wa_.dilations, nsp, "dilations"));
    GG_RETURN_IF_ERROR(sized(wa_.pads, 2 * nsp, "pads"));
    GG_RETURN_IF_ERROR(sized(output_padding_, nsp, "output_padding"));
    std::vector<int64_t> oshape = output_shape_;
    if (oshape.size() == nsp + 2) oshape.erase(oshape.begin(), oshape.begin() + 2);
    GG_RETURN_IF_ERROR(sized(oshape, nsp, "output_shape"));
    std::vector<int64_t> kernel(Wt.shape().begin() + 2, Wt.shape().end());
    if (!wa_.kernel_shape.empty() && wa_.kernel_shape != kernel)
      return ctx.fail("kernel_shape {} does not match W {}", shape_str(wa_.kernel_shape), shape_str(Wt.shape()));
    window_geom g;
    g.nsp = static_cast<int>(nsp);
    const size_t off = 3 - nsp;
    for (size_t i = 0; i < nsp; ++i) {
      const size_t j = off + i;
      const int64_t in = X.dim(2 + i), k = kernel[i];
      if (k < 1) return ctx.fail("W has an empty kernel");
      const int64_t s = wa_.strides.empty() ? 1 : wa_.strides[i];
      const int64_t d = wa_.dilations.empty() ? 1 : wa_.dilations[i];
      const int64_t op = output_padding_.empty() ? 0 : output_padding_[i];
      const int64_t keff = (k - 1) * d + 1;
      const int64_t full = s * (in - 1) + op + keff;  // output size with no padding
      int64_t pb = 0, pe = 0, out = 0;
      const bool same = wa_.auto_pad == "SAME_UPPER" || wa_.auto_pad == "SAME_LOWER";
      if (!oshape.empty() || same) {
        out = !oshape.empty() ? oshape[i] : in * s;
        // Like onnxruntime: a negative total (a larger output than the input covers) pads
        // nothing; the extra outputs hold only the bias.
        const int64_t total = std::max<int64_t>(0, full - out);
        if (wa_.auto_pad == "SAME_UPPER") {
          pb = total / 2;
          pe = total - pb;
        } else {
          pe = total / 2;
          pb = total - pe;
        }
      } else {
        if (wa_.auto_pad == "NOTSET" && !wa_.pads.empty()) {
          pb = wa_.pads[i];
          pe = wa_.pads[i + nsp];
        }
        out = full - pb - pe;
      }
      if (out < 0) return ctx.fail("output spatial dim {} would be {} (pads too large)", i, out);
      g.in[j] = in;
      g.out[j] = out;
      g.k[j] = k;
      g.s[j] = s;
      g.d[j] = d;
      g.pb[j] = pb;
      g.pe[j] = pe;
    }
    shape_t yshape = {N, M};
    for (size_t i = 0; i < nsp; ++i) yshape.push_back(g.out[off + i]);
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, X.type(), yshape));
    if (X.type() == dtype::f32) return run_t<float>(ctx, X, Wt, Bt, g, N, C, M, Cg, Mg, y);
    return run_t<double>(ctx, X, Wt, Bt, g, N, C, M, Cg, Mg, y);
  }

 private:
  template <typename T>
  status run_t(kernel_context& ctx, const tensor& X, const tensor& Wt, const tensor* Bt, const window_geom& g,
               int64_t N, int64_t C, int64_t M, int64_t Cg, int64_t Mg, tensor* y) {
    const T* x = X.data<T>();
    const T* w = Wt.data<T>();
    const T* bias = Bt ? Bt->data<T>() : nullptr;
    T* out = y->data<T>();
    const int64_t S_in = g.in_size(), S = g.out_size();
    const int64_t kprod = g.k_size();
    const int64_t R = Mg * kprod;  // rows of col
    std::fill(out, out + y->numel(), T(0));
    if (N == 0 || M == 0 || S == 0) return status::ok();
    const int64_t IW = g.in[2], in_rows = g.in[0] * g.in[1];
    const int64_t OH = g.out[1], OW = g.out[2], OD = g.out[0];
    if (Cg > 0 && S_in > 0) {
      int64_t tile_rows = std::max<int64_t>(1, max_col_elems / std::max<int64_t>(R * IW, 1));
      tile_rows = std::min(tile_rows, in_rows);
      T* col = nn::scratch<T>(0, static_cast<size_t>(R * tile_rows * IW));
      if (!col) return internal_error("{}: out of memory for the col2im buffer", ctx.op().describe());
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t gi = 0; gi < group_; ++gi) {
          const T* xg = x + (n * C + gi * Cg) * S_in;
          const T* wg = w + gi * Cg * R;  // [Cg, Mg * kprod]
          T* yg = out + (n * M + gi * Mg) * S;
          for (int64_t r0 = 0; r0 < in_rows; r0 += tile_rows) {
            const int64_t r1 = std::min(in_rows, r0 + tile_rows);
            const int64_t ncols = (r1 - r0) * IW;
            bool done = false;
            if constexpr (std::is_same_v<T, float>) {
              if (sgemm::available()) {
                // col = W_g^T x X_g on the engine's threads (W_g is [Cg, R]).
                sgemm::problem q;
                q.m = R;
                q.n = ncols;
                q.k = Cg;
                q.a.v = {wg, 1, R};
                q.b.v = {xg + r0 * IW, S_in, 1};
                q.c = col;
                q.ldc = ncols;
                if (!sgemm::run(&ctx.pool(), q))
                  return internal_error("{}: out of memory for the packed blocks", ctx.op().describe());
                done = true;
              }
            }
            if (!done) gemm<T>(true, false, R, ncols, Cg, T(1), wg, R, xg + r0 * IW, S_in, T(0), col, ncols);
            // col2im: each output channel owns its kprod rows and its output plane.
            parallel(ctx, Mg, 1, [&](int64_t mb, int64_t me) {
              for (int64_t m = mb; m < me; ++m) {
                T* yp = yg + m * S;
                for (int64_t kk = 0; kk < kprod; ++kk) {
                  const int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
                  const T* crow = col + (m * kprod + kk) * ncols;
                  const int64_t ow0 = kw * g.d[2] - g.pb[2];  // ow = iw * sw + ow0
                  int64_t lo = ow0 >= 0 ? 0 : (-ow0 + g.s[2] - 1) / g.s[2];
                  int64_t hi = (OW - 1 - ow0) < 0 ? 0 : (OW - 1 - ow0) / g.s[2] + 1;
                  lo = std::min(lo, IW);
                  hi = std::max(lo, std::min(hi, IW));
                  for (int64_t r = r0; r < r1; ++r) {
                    const int64_t id = r / g.in[1], ih = r % g.in[1];
                    const int64_t od = id * g.s[0] - g.pb[0] + kd * g.d[0];
                    const int64_t oh = ih * g.s[1] - g.pb[1] + kh * g.d[1];
                    if (od < 0 || od >= OD || oh < 0 || oh >= OH) continue;
                    T* yrow = yp + (od * OH + oh) * OW;
                    const T* c = crow + (r - r0) * IW;
                    if (g.s[2] == 1) {
                      for (int64_t iw = lo; iw < hi; ++iw) yrow[iw + ow0] += c[iw];
                    } else {
                      const int64_t sw = g.s[2];
                      for (int64_t iw = lo; iw < hi; ++iw) yrow[iw * sw + ow0] += c[iw];
                    }
                  }
                }
              }
            });
          }
        }
      }
    }
    if (bias) {
      activation_spec none;
      parallel(ctx, N * M, std::max<int64_t>(1, 16384 / S), [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) epilogue<T>(none, out + p * S, S, bias[p % M]);
      });
    }
    return status::ok();
  }

  window_attrs wa_;
  int64_t group_ = 1;
  std::vector<int64_t> output_padding_, output_shape_;
};

// ---------------------------------------------------------------------------------------
// ConvInteger and QLinearConv: the integer convolution runs exactly in double precision
// (|products| < 2^16, sums far below 2^53), then converts or requantizes.

class qconv_kernel final : public kernel {
 public:
  qconv_kernel(window_attrs wa, int64_t group, bool qlinear) : wa_(std::move(wa)), group_(group), qlinear_(qlinear) {}

  status run(kernel_context& ctx) override {
    // ConvInteger: x, w, x_zero_point?, w_zero_point?
    // QLinearConv: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B?
    GG_RETURN_IF_ERROR(qlinear_ ? check_inputs(ctx, 8, 9, 8) : check_inputs(ctx, 2, 4, 2));
    const tensor& X = *ctx.input(0);
    const tensor& W = *ctx.input(qlinear_ ? 3 : 1);
    const tensor* xzp = nn::optional_input(ctx, qlinear_ ? 2 : 2);
    const tensor* wzp = nn::optional_input(ctx, qlinear_ ? 5 : 3);
    if (!nn::is_q8(X.type()) || !nn::is_q8(W.type()))
      return ctx.fail("x and w must be int8 or uint8, got {} and {}", dtype_name(X.type()), dtype_name(W.type()));
    const int64_t M = W.rank() > 0 ? W.dim(0) : 0;
    GG_RETURN_IF_ERROR(nn::check_qparam(ctx, xzp, "x_zero_point", 1, false, X.type()));
    GG_RETURN_IF_ERROR(nn::check_qparam(ctx, wzp, "w_zero_point", M, false, W.type()));
    const tensor *xs = nullptr, *ws = nullptr, *ys = nullptr, *yzp = nullptr, *B = nullptr;
    if (qlinear_) {
      xs = ctx.input(1);
      ws = ctx.input(4);
      ys = ctx.input(6);
      yzp = ctx.input(7);
      B = nn::optional_input(ctx, 8);
      GG_RETURN_IF_ERROR(nn::check_qparam(ctx, xs, "x_scale", 1, true, X.type()));
      GG_RETURN_IF_ERROR(nn::check_qparam(ctx, ws, "w_scale", M, true, X.type()));
      GG_RETURN_IF_ERROR(nn::check_qparam(ctx, ys, "y_scale", 1, true, X.type()));
      if (!nn::is_q8(yzp->type()) || yzp->numel() != 1) return ctx.fail("y_zero_point must be one int8 or uint8 value");
      if (B && (B->type() != dtype::i32 || B->rank() != 1 || B->dim(0) != M))
        return ctx.fail("B must be int32 of shape [{}]", M);
    }
    if (X.numel() > max_tensor_bytes / 8 || W.numel() > max_tensor_bytes / 8) return ctx.fail("inputs too large");
    conv_shapes cs;
    GG_RETURN_IF_ERROR(conv_geometry(ctx, wa_, group_, X, W, nullptr, &cs));
    int64_t n_out = 0;
    if (!checked_num_elements(cs.out, max_tensor_bytes / 8, &n_out)) return ctx.fail("output {} too large", shape_str(cs.out));
    tensor Xd = tensor::zeros(dtype::f64, X.shape()), Wd = tensor::zeros(dtype::f64, W.shape());
    const int32_t xz = nn::qzero(xzp, 0);
    for (int64_t i = 0; i < X.numel(); ++i) Xd.data<double>()[i] = nn::q8(X, i) - xz;
    const int64_t per = M > 0 ? W.numel() / M : 0;
    for (int64_t i = 0; i < W.numel(); ++i) Wd.data<double>()[i] = nn::q8(W, i) - nn::qzero(wzp, i / per);
    tensor Yd = tensor::zeros(dtype::f64, cs.out);
    GG_RETURN_IF_ERROR(conv_run<double>(ctx, cs, activation_spec{}, Xd, Wd, nullptr, &Yd));
    const double* yd = Yd.data<double>();
    const int64_t S = cs.g.out_size();
    if (!qlinear_) {
      GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, dtype::i32, cs.out));
      for (int64_t i = 0; i < n_out; ++i) y->data<int32_t>()[i] = static_cast<int32_t>(yd[i]);
      return status::ok();
    }
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, yzp->type(), cs.out));
    const int32_t yz = nn::q8(*yzp, 0);
    for (int64_t i = 0; i < n_out; ++i) {
      const int64_t m = S > 0 ? (i / S) % M : 0;
      const double acc = yd[i] + (B ? B->data<int32_t>()[m] : 0);
      nn::store_q8(*y, i, acc * (nn::qscale(*xs, 0) * nn::qscale(*ws, m) / nn::qscale(*ys, 0)), yz);
    }
    return status::ok();
  }

 private:
  window_attrs wa_;
  int64_t group_;
  bool qlinear_;
};

expected<std::unique_ptr<kernel>> make_qconv(const node& n, bool qlinear) {
  window_attrs wa;
  GG_RETURN_IF_ERROR(nn::parse_window_attrs(n, &wa, false));
  const int64_t group = n.attr_int("group", 1);
  if (group < 1) return invalid_input("{}: group must be >= 1, got {}", n.describe(), group);
  return std::unique_ptr<kernel>(std::make_unique<qconv_kernel>(std::move(wa), group, qlinear));
}

}  // namespace

void register_conv_ops(op_registry& r) {
  r.add("ConvInteger", [](const node& n) { return make_qconv(n, false); });
  r.add("QLinearConv", [](const node& n) { return make_qconv(n, true); });
  r.add("Conv", [](const node& n) { return make_conv(n, false); });
  r.add("FusedConv", [](const node& n) { return make_conv(n, true); }, "com.gpugrid");
  r.add("ConvTranspose", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    auto k = std::make_unique<conv_transpose_kernel>(n);
    GG_RETURN_IF_ERROR(k->check_attrs(n));
    return std::unique_ptr<kernel>(std::move(k));
  });
}

}  // namespace gpugrid::cpu
