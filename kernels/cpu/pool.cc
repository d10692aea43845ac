// MaxPool (with optional Indices), AveragePool, LpPool and their Global* forms.
//
// Every window op runs per (n, c) plane in parallel, over 3-D loops (1-D and 2-D pools have
// leading spatial dims of size 1). Each output visits only the taps of its window that land
// inside the input, so padding never reads out of bounds; a float MaxPool without Indices in
// 1-D or 2-D with stride 1 or 2 along rows takes the max over rows first, into a padded row
// (max_plane_rows512, with AVX-512), or reads a padded copy of the plane (max_plane_padded).
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/nn_internal.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"

namespace gpugrid::cpu {
namespace {

using nn::check_inputs;
using nn::parallel;
using nn::valid_taps;
using nn::window_attrs;
using nn::window_geom;

struct pool_setup {
  int64_t N = 0, C = 0;
  window_geom g;
  shape_t out;
};

status setup_pool(kernel_context& ctx, const window_attrs& wa, pool_setup* ps) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& X = *ctx.input(0);
  if (X.rank() < 3 || X.rank() > 5)
    return ctx.fail("X must have rank 3 to 5 ([N, C, spatial...]), got {}", shape_str(X.shape()));
  ps->N = X.dim(0);
  ps->C = X.dim(1);
  shape_t in_sp(X.shape().begin() + 2, X.shape().end());
  if (wa.kernel_shape.size() != in_sp.size())
    return ctx.fail("kernel_shape has {} values for {} spatial dims", wa.kernel_shape.size(), in_sp.size());
  GG_RETURN_IF_ERROR(nn::resolve_window(ctx, wa, in_sp, wa.kernel_shape, true, &ps->g));
  ps->out = {ps->N, ps->C};
  for (int i = 3 - ps->g.nsp; i < 3; ++i) ps->out.push_back(ps->g.out[i]);
  return status::ok();
}

// Calls f(od, oh, ow, kd_lo, kd_hi, kh_lo, kh_hi, kw_lo, kw_hi, out_index) for each output of
// one plane; the tap ranges are those inside the input.
template <typename F>
inline void for_each_window(const window_geom& g, F&& f) {
  int64_t o = 0;
  for (int64_t od = 0; od < g.out[0]; ++od) {
    int64_t dlo, dhi;
    valid_taps(od * g.s[0] - g.pb[0], g.k[0], g.d[0], g.in[0], &dlo, &dhi);
    for (int64_t oh = 0; oh < g.out[1]; ++oh) {
      int64_t hlo, hhi;
      valid_taps(oh * g.s[1] - g.pb[1], g.k[1], g.d[1], g.in[1], &hlo, &hhi);
      for (int64_t ow = 0; ow < g.out[2]; ++ow, ++o) {
        int64_t wlo, whi;
        valid_taps(ow * g.s[2] - g.pb[2], g.k[2], g.d[2], g.in[2], &wlo, &whi);
        f(od, oh, ow, dlo, dhi, hlo, hhi, wlo, whi, o);
      }
    }
  }
}


// Row-wise pooling of whole planes, used whenever no Indices are wanted: each output row
// folds in every valid input row of its window tap by tap (kw), over the ow range where that
// tap lands inside the input, so the inner loops are branch-free and vectorize.
enum class fold { max, sum, sq, abs, pow };

struct row_plan {
  std::vector<int64_t> tap_lo, tap_hi;  // per kw: valid ow range
  std::vector<int64_t> wcnt, wcnt_pad;  // per ow: valid taps, taps inside the padded row
};

inline row_plan make_row_plan(const window_geom& g) {
  row_plan rp;
  const int64_t W = g.in[2], OW = g.out[2], sw = g.s[2], dw = g.d[2], pw = g.pb[2];
  for (int64_t kw = 0; kw < g.k[2]; ++kw) {
    const int64_t off = kw * dw - pw;
    int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t hi = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / sw + 1;
    lo = std::min(lo, OW);
    hi = std::max(lo, std::min(hi, OW));
    rp.tap_lo.push_back(lo);
    rp.tap_hi.push_back(hi);
  }
  for (int64_t ow = 0; ow < OW; ++ow) {
    int64_t lo, hi;
    valid_taps(ow * sw - pw, g.k[2], dw, W, &lo, &hi);
    rp.wcnt.push_back(hi - lo);
    valid_taps(ow * sw, g.k[2], dw, W + pw + g.pe[2], &lo, &hi);
    rp.wcnt_pad.push_back(hi - lo);
  }
  return rp;
}

template <fold F, typename T>
inline void fold_tap(T* __restrict yr, const T* __restrict xs, int64_t lo, int64_t hi, int64_t sw, double p) {
  if constexpr (F == fold::max) {
    if (sw == 1) for (int64_t ow = lo; ow < hi; ++ow) yr[ow] = yr[ow] < xs[ow] ? xs[ow] : yr[ow];
    else for (int64_t ow = lo; ow < hi; ++ow) yr[ow] = yr[ow] < xs[ow * sw] ? xs[ow * sw] : yr[ow];
  } else if constexpr (F == fold::sum) {
    if (sw == 1) for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += xs[ow];
    else for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += xs[ow * sw];
  } else if constexpr (F == fold::sq) {
    for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += xs[ow * sw] * xs[ow * sw];
  } else if constexpr (F == fold::abs) {
    for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += std::abs(xs[ow * sw]);
  } else {
    for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += static_cast<T>(std::pow(std::abs(static_cast<double>(xs[ow * sw])), p));
  }
}

// Folds one plane; the caller finishes the rows (divide, root). dcnt/hcnt receive, per
// output row, the number of valid and padded-valid (d, h) window rows.
template <fold F, typename T>
void fold_plane(const T* xp, const window_geom& g, const row_plan& rp, T* yp, double p,
                std::vector<int64_t>* rows_valid, std::vector<int64_t>* rows_pad) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const T init = F == fold::max ? std::numeric_limits<T>::lowest() : T(0);
  for (int64_t od = 0; od < g.out[0]; ++od) {
    int64_t dlo, dhi, dplo, dphi;
    valid_taps(od * g.s[0] - g.pb[0], g.k[0], g.d[0], g.in[0], &dlo, &dhi);
    valid_taps(od * g.s[0], g.k[0], g.d[0], g.in[0] + g.pb[0] + g.pe[0], &dplo, &dphi);
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t hlo, hhi, hplo, hphi;
      valid_taps(oh * g.s[1] - g.pb[1], g.k[1], g.d[1], H, &hlo, &hhi);
      valid_taps(oh * g.s[1], g.k[1], g.d[1], H + g.pb[1] + g.pe[1], &hplo, &hphi);
      const int64_t r = od * OH + oh;
      if (rows_valid) (*rows_valid)[r] = (dhi - dlo) * (hhi - hlo);
      if (rows_pad) (*rows_pad)[r] = (dphi - dplo) * (hphi - hplo);
      T* yr = yp + r * OW;
      std::fill(yr, yr + OW, init);
      for (int64_t kd = dlo; kd < dhi; ++kd) {
        const int64_t zd = od * g.s[0] - g.pb[0] + kd * g.d[0];
        for (int64_t kh = hlo; kh < hhi; ++kh) {
          const int64_t zh = oh * g.s[1] - g.pb[1] + kh * g.d[1];
          const T* xr = xp + (zd * H + zh) * W;
          for (int64_t kw = 0; kw < g.k[2]; ++kw) {
            const int64_t lo = rp.tap_lo[kw], hi = rp.tap_hi[kw];
            if (lo >= hi) continue;
            const int64_t off = kw * g.d[2] - g.pb[2];
            // xs[ow * sw] = xr[ow * sw + off]; lo * sw + off >= 0, so shift both by lo.
            fold_tap<F>(yr + lo, xr + lo * g.s[2] + off, 0, hi - lo, g.s[2], p);
          }
        }
      }
    }
  }
}

// The output rows of max_plane_padded: stride 1 reads the padded plane P (row stride Ws) at
// [ow + kw]; stride 2 reads it split into even and odd columns (P and O) at [ow + kw / 2].
// KW is the kernel width, or 0 to take it from g.
template <int SW, int KW>
void max_rows(const float* P, const float* O, int64_t Ws, const window_geom& g, float* y) {
  const int64_t OH = g.out[1], OW = g.out[2], kH = g.k[1], sh = g.s[1], dh = g.d[1];
  const int64_t kW = KW > 0 ? KW : g.k[2];
  const __m256 lowest = _mm256_set1_ps(std::numeric_limits<float>::lowest());
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* yr = y + oh * OW;
    for (int64_t ow = 0; ow < OW; ow += 8) {
      __m256 acc = lowest;
      for (int64_t kh = 0; kh < kH; ++kh) {
        const int64_t r = (oh * sh + kh * dh) * Ws + ow;
        for (int64_t kw = 0; kw < kW; ++kw) {
          const float* src = SW == 1 ? P + r + kw : ((kw & 1) ? O : P) + r + kw / 2;
          acc = _mm256_max_ps(_mm256_loadu_ps(src), acc);  // acc when the input is NaN
        }
      }
      if (ow + 8 <= OW) _mm256_storeu_ps(yr + ow, acc);
      else _mm256_maskstore_ps(yr + ow, simd::lanes(OW - ow), acc);
    }
  }
}

// MaxPool of one 2-D plane (1-D: one row), stride 1 or 2 along rows and no dilation along
// them, over a copy padded with the lowest float (split into even and odd columns for stride
// 2): eight outputs per vector, one max per tap, no bounds tests. As in fold_plane, a NaN input
// never replaces the maximum so far. False when the copies would not fit the scratch memory.
bool max_plane_padded(const float* x, const window_geom& g, float* y) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t kH = g.k[1], kW = g.k[2], sh = g.s[1], sw = g.s[2], dh = g.d[1];
  const int64_t Hp = (OH - 1) * sh + (kH - 1) * dh + 1, Wp = (OW - 1) * sw + kW;
  const int64_t Ws = sw == 2 ? (Wp + 1) / 2 : Wp;  // row stride of the planes the taps read
  constexpr int64_t slack = 32;  // the last block of a row reads up to kW / 2 + 7 floats past it
  // The padded plane (stride 1), or its even and odd columns (stride 2).
  const int64_t floats = sw == 1 ? Hp * Wp + slack : 2 * (Hp * Ws + slack);
  if (floats > nn::kMaxPaddedFloats) return false;
  float* buf = nn::scratch<float>(0, static_cast<size_t>(floats));
  if (!buf) return false;
  const float lowest = std::numeric_limits<float>::lowest();
  if (sw == 1) {
    simd::pad_plane(x, H, W, g.pb[1], g.pb[2], Hp, Wp, slack, buf, lowest);
    if (kW == 3) max_rows<1, 3>(buf, nullptr, Ws, g, y);
    else max_rows<1, 0>(buf, nullptr, Ws, g, y);
    return true;
  }
  // Stride 2: the padded plane's even and odd columns, made in one pass.
  float* E = buf;
  float* O = E + Hp * Ws + slack;
  simd::pad_split_plane(x, H, W, g.pb[1], g.pb[2], Hp, Wp, slack, E, O, lowest);
  if (kW == 3) max_rows<2, 3>(E, O, Ws, g, y);
  else if (kW == 2) max_rows<2, 2>(E, O, Ws, g, y);
  else max_rows<2, 0>(E, O, Ws, g, y);
  return true;
}

// MaxPool of one 2-D plane (1-D: one row) with AVX-512, stride 1 or 2 along rows, any
// dilation: for each output row the max over the window's input rows comes first (16 columns
// per vector, straight from the input), into a row buffer padded with the lowest float; then
// the max over each window's columns of that buffer, 16 outputs per vector (stride 2: 32
// consecutive floats with every other one kept). A 3x3 window at stride 2 takes 5 maxes per
// output instead of 9. As in fold_plane, a NaN input never replaces the maximum so far. False
// when the row buffer would not fit the scratch memory.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_max_ps's undefined pass-through
template <int SW>
__attribute__((target("avx512f"))) bool max_plane_rows512(const float* x, const window_geom& g, float* y) {
  const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t kH = g.k[1], kW = g.k[2], sh = g.s[1], dh = g.d[1], dw = g.d[2], ph = g.pb[1], pw = g.pb[2];
  const int64_t OWr = (OW + 15) / 16 * 16;
  // The windows read buf[ow * SW + kw * dw] (stride 2: 32 floats from there per 16 outputs).
  const int64_t len = std::max(pw + W + 16, SW * OWr + (kW - 1) * dw + 32);
  if (len > nn::kMaxPaddedFloats) return false;
  float* buf = nn::scratch<float>(0, static_cast<size_t>(len));
  if (!buf) return false;
  const float lowest = std::numeric_limits<float>::lowest();
  const __m512 vlow = _mm512_set1_ps(lowest);
  for (int64_t i = 0; i < len; ++i) buf[i] = lowest;
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  float* row = buf + pw;
  for (int64_t oh = 0; oh < OH; ++oh) {
    // The window's input rows, max column by column into buf[pw, pw + W).
    for (int64_t c = 0; c < W; c += 16) {
      const __mmask16 m = W - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (W - c)) - 1);
      __m512 acc = vlow;
      for (int64_t kh = 0; kh < kH; ++kh) {
        const int64_t ih = oh * sh - ph + kh * dh;
        if (ih < 0 || ih >= H) continue;
        acc = _mm512_max_ps(_mm512_mask_loadu_ps(vlow, m, x + ih * W + c), acc);  // acc when the input is NaN
      }
      _mm512_mask_storeu_ps(row + c, m, acc);
    }
    float* yr = y + oh * OW;
    for (int64_t ow = 0; ow < OW; ow += 16) {
      const float* b = buf + ow * SW;
      __m512 acc = vlow;
      if constexpr (SW == 1) {
        for (int64_t kw = 0; kw < kW; ++kw) acc = _mm512_max_ps(_mm512_loadu_ps(b + kw * dw), acc);
      } else {
        int64_t kw = 0;
        // Without dilation, taps kw and kw + 1 are the even and odd floats of the same 32.
        if (dw == 1)
          for (; kw + 1 < kW; kw += 2) {
            const __m512 lo = _mm512_loadu_ps(b + kw), hi = _mm512_loadu_ps(b + kw + 16);
            acc = _mm512_max_ps(_mm512_permutex2var_ps(lo, evens, hi), acc);
            acc = _mm512_max_ps(_mm512_permutex2var_ps(lo, odds, hi), acc);
          }
        for (; kw < kW; ++kw) {
          const __m512 lo = _mm512_loadu_ps(b + kw * dw), hi = _mm512_loadu_ps(b + kw * dw + 16);
          acc = _mm512_max_ps(_mm512_permutex2var_ps(lo, evens, hi), acc);
        }
      }
      const __mmask16 store = OW - ow >= 16 ? __mmask16(0xffff) : __mmask16((1u << (OW - ow)) - 1);
      _mm512_mask_storeu_ps(yr + ow, store, acc);
    }
  }
  return true;
}
#pragma GCC diagnostic pop

// ---------------------------------------------------------------------------------------
// MaxPool

class maxpool_kernel final : public kernel {
 public:
  maxpool_kernel(window_attrs wa, int64_t storage_order) : wa_(std::move(wa)), storage_order_(storage_order) {}

  status run(kernel_context& ctx) override {
    pool_setup ps;
    GG_RETURN_IF_ERROR(setup_pool(ctx, wa_, &ps));
    const tensor& X = *ctx.input(0);
    bool ok = false;
    status st = status::ok();
    auto go = [&](auto tag) {
      using T = decltype(tag);
      ok = true;
      st = run_t<T>(ctx, X, ps);
    };
    switch (X.type()) {
      case dtype::f32: go(float{}); break;
      case dtype::f64: go(double{}); break;
      case dtype::i8: go(int8_t{}); break;
      case dtype::u8: go(uint8_t{}); break;
      default: break;
    }
    if (!ok) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
    return st;
  }

 private:
  template <typename T>
  status run_t(kernel_context& ctx, const tensor& X, const pool_setup& ps) {
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, X.type(), ps.out));
    tensor* ind = nullptr;
    if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
      GG_ASSIGN_OR_RETURN(ind, ctx.output(1, dtype::i64, ps.out));
    }
    const window_geom& g = ps.g;
    const int64_t S_in = g.in_size(), S = g.out_size();
    const int64_t planes = ps.N * ps.C;
    const T* x = X.data<T>();
    T* yd = y->data<T>();
    int64_t* id = ind ? ind->data<int64_t>() : nullptr;
    const int64_t D = g.in[0], H = g.in[1], W = g.in[2];
    const bool col_major = storage_order_ == 1;
    const T lowest = std::numeric_limits<T>::lowest();
    const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(S * g.k_size(), 1));
    if (!id) {
      const row_plan rp = make_row_plan(g);
      bool padded = false;
      bool rows512 = false;
      if constexpr (std::is_same_v<T, float>) {
        rows512 = g.nsp <= 2 && (g.s[2] == 1 || g.s[2] == 2) && sgemm::avx512();
        padded = g.nsp <= 2 && g.d[2] == 1 && (g.s[2] == 1 || g.s[2] == 2);
      }
      parallel(ctx, planes, grain, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          if constexpr (std::is_same_v<T, float>) {
            if (rows512 && (g.s[2] == 1 ? max_plane_rows512<1>(x + p * S_in, g, yd + p * S)
                                        : max_plane_rows512<2>(x + p * S_in, g, yd + p * S)))
              continue;
            if (padded && max_plane_padded(x + p * S_in, g, yd + p * S)) continue;
          }
          fold_plane<fold::max, T>(x + p * S_in, g, rp, yd + p * S, 0.0, nullptr, nullptr);
        }
      });
      return status::ok();
    }
    parallel(ctx, planes, std::max<int64_t>(1, 8192 / std::max<int64_t>(S * g.k_size(), 1)), [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const T* xp = x + p * S_in;
        T* yp = yd + p * S;
        int64_t* ip = id ? id + p * S : nullptr;
        for_each_window(g, [&](int64_t od, int64_t oh, int64_t ow, int64_t dlo, int64_t dhi, int64_t hlo, int64_t hhi,
                               int64_t wlo, int64_t whi, int64_t o) {
          T best = lowest;
          int64_t bi = -1;
          const int64_t d0 = od * g.s[0] - g.pb[0], h0 = oh * g.s[1] - g.pb[1], w0 = ow * g.s[2] - g.pb[2];
          for (int64_t kd = dlo; kd < dhi; ++kd) {
            const int64_t zd = d0 + kd * g.d[0];
            for (int64_t kh = hlo; kh < hhi; ++kh) {
              const int64_t zh = h0 + kh * g.d[1];
              const T* row = xp + (zd * H + zh) * W;
              for (int64_t kw = wlo; kw < whi; ++kw) {
                const int64_t zw = w0 + kw * g.d[2];
                const T v = row[zw];
                if (v > best || bi < 0) {
                  best = v;
                  bi = (zd * H + zh) * W + zw;
                  if (ip && col_major) bi = zd + zh * D + zw * D * H;
                }
              }
            }
          }
          yp[o] = best;
          if (ip) ip[o] = bi < 0 ? -1 : p * S_in + bi;
        });
      }
    });
    return status::ok();
  }

  window_attrs wa_;
  int64_t storage_order_;
};

// ---------------------------------------------------------------------------------------
// AveragePool and LpPool

class avgpool_kernel final : public kernel {
 public:
  avgpool_kernel(window_attrs wa, bool include_pad, int64_t p, bool lp)
      : wa_(std::move(wa)), include_pad_(include_pad), p_(p), lp_(lp) {}

  status run(kernel_context& ctx) override {
    pool_setup ps;
    GG_RETURN_IF_ERROR(setup_pool(ctx, wa_, &ps));
    const tensor& X = *ctx.input(0);
    if (X.type() == dtype::f32) return run_t<float>(ctx, X, ps);
    if (X.type() == dtype::f64) return run_t<double>(ctx, X, ps);
    return ctx.fail("unsupported input type {}", dtype_name(X.type()));
  }

 private:
  template <typename T>
  status run_t(kernel_context& ctx, const tensor& X, const pool_setup& ps) {
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, X.type(), ps.out));
    const window_geom& g = ps.g;
    const int64_t S_in = g.in_size(), S = g.out_size();
    const int64_t rows = g.out[0] * g.out[1], OW = g.out[2];
    const T* x = X.data<T>();
    T* yd = y->data<T>();
    const double pw = static_cast<double>(p_);
    const row_plan rp = make_row_plan(g);
    parallel(ctx, ps.N * ps.C, std::max<int64_t>(1, 8192 / std::max<int64_t>(S * g.k_size(), 1)), [&](int64_t b, int64_t e) {
      std::vector<int64_t> rv(static_cast<size_t>(rows)), rpad(static_cast<size_t>(rows));
      for (int64_t p = b; p < e; ++p) {
        const T* xp = x + p * S_in;
        T* yp = yd + p * S;
        if (!lp_) fold_plane<fold::sum, T>(xp, g, rp, yp, 0.0, &rv, &rpad);
        else if (p_ == 2) fold_plane<fold::sq, T>(xp, g, rp, yp, 0.0, nullptr, nullptr);
        else if (p_ == 1) fold_plane<fold::abs, T>(xp, g, rp, yp, 0.0, nullptr, nullptr);
        else fold_plane<fold::pow, T>(xp, g, rp, yp, pw, nullptr, nullptr);
        if (lp_) {
          if (p_ == 2) for (int64_t i = 0; i < S; ++i) yp[i] = std::sqrt(yp[i]);
          else if (p_ != 1)
            for (int64_t i = 0; i < S; ++i) yp[i] = static_cast<T>(std::pow(static_cast<double>(yp[i]), 1.0 / pw));
          continue;
        }
        for (int64_t r = 0; r < rows; ++r) {
          T* yr = yp + r * OW;
          const int64_t rc = include_pad_ ? rpad[r] : rv[r];
          const std::vector<int64_t>& wc = include_pad_ ? rp.wcnt_pad : rp.wcnt;
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t count = rc * wc[ow];
            yr[ow] = count > 0 ? yr[ow] / static_cast<T>(count) : T(0);
          }
        }
      }
    });
    return status::ok();
  }

  window_attrs wa_;
  bool include_pad_;
  int64_t p_;
  bool lp_;
};

// ---------------------------------------------------------------------------------------
// Global pools: one value per (n, c) plane.

enum class global_kind { avg, max, lp };

template <typename T>
T plane_sum(const T* x, int64_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j];
  T s = 0;
  for (; i < n; ++i) s += x[i];
  return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
T plane_max(const T* x, int64_t n) {
  T acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = std::numeric_limits<T>::lowest();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] = acc[j] < x[i + j] ? x[i + j] : acc[j];
  T m = std::numeric_limits<T>::lowest();
  for (; i < n; ++i) m = m < x[i] ? x[i] : m;
  for (int j = 0; j < 8; ++j) m = m < acc[j] ? acc[j] : m;
  return m;
}

simple_kernel_fn global_pool(global_kind kind) {
  return [kind](kernel_context& ctx) -> status {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
    const tensor& X = *ctx.input(0);
    if (X.rank() < 3) return ctx.fail("X must have rank >= 3 ([N, C, spatial...]), got {}", shape_str(X.shape()));
    int64_t p = ctx.op().attr_int("p", 2);
    if (kind == global_kind::lp && (p < 1 || p > 1000)) return ctx.fail("p must be a positive integer, got {}", p);
    shape_t out = {X.dim(0), X.dim(1)};
    out.resize(X.rank(), 1);
    const int64_t planes = X.dim(0) * X.dim(1);
    int64_t S = 1;
    for (size_t i = 2; i < X.rank(); ++i) S *= X.dim(i);
    bool ok = false;
    status st = status::ok();
    auto go = [&](auto tag) {
      using T = decltype(tag);
      ok = true;
      auto yr = ctx.output(0, X.type(), out);
      if (!yr) { st = yr.error(); return; }
      const T* x = X.data<T>();
      T* y = (*yr)->data<T>();
      parallel(ctx, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const T* xp = x + i * S;
          if (kind == global_kind::avg) {
            y[i] = S > 0 ? plane_sum(xp, S) / static_cast<T>(S) : T(0);
          } else if (kind == global_kind::max) {
            y[i] = plane_max(xp, S);
          } else {
            double acc = 0;
            for (int64_t j = 0; j < S; ++j) acc += std::pow(std::abs(static_cast<double>(xp[j])), static_cast<double>(p));
            y[i] = static_cast<T>(std::pow(acc, 1.0 / static_cast<double>(p)));
          }
        }
      });
    };
    if (X.type() == dtype::f32) go(float{});
    else if (X.type() == dtype::f64) go(double{});
    if (!ok) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
    return st;
  };
}

template <typename Make>
kernel_factory window_factory(bool kernel_required, Make make) {
  return [kernel_required, make](const node& n) -> expected<std::unique_ptr<kernel>> {
    window_attrs wa;
    GG_RETURN_IF_ERROR(nn::parse_window_attrs(n, &wa, kernel_required));
    return make(n, std::move(wa));
  };
}

// ---------------------------------------------------------------------------------------
// MaxUnpool: scatters X into zeros at the flat positions MaxPool's Indices recorded.

class maxunpool_kernel final : public kernel {
 public:
  explicit maxunpool_kernel(window_attrs wa) : wa_(std::move(wa)) {}

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
    const tensor& X = *ctx.input(0);
    const tensor& I = *ctx.input(1);
    const tensor* os = nn::optional_input(ctx, 2);
    if (I.type() != dtype::i64) return ctx.fail("I must be int64, got {}", dtype_name(I.type()));
    if (I.shape() != X.shape()) return ctx.fail("I {} must have X's shape {}", shape_str(I.shape()), shape_str(X.shape()));
    if (X.rank() < 3) return ctx.fail("X must have rank >= 3, got {}", shape_str(X.shape()));
    const size_t nsp = X.rank() - 2;
    if (wa_.kernel_shape.size() != nsp) return ctx.fail("kernel_shape has {} values for {} spatial dims", wa_.kernel_shape.size(), nsp);
    if (!wa_.strides.empty() && wa_.strides.size() != nsp) return ctx.fail("strides has {} values for {} spatial dims", wa_.strides.size(), nsp);
    if (!wa_.pads.empty() && wa_.pads.size() != 2 * nsp) return ctx.fail("pads has {} values for {} spatial dims", wa_.pads.size(), nsp);
    // Indices address the inferred output (as MaxPool's input); an output_shape at least as
    // large places that block at its origin (the ONNX reference).
    shape_t inferred = {X.dim(0), X.dim(1)};
    for (size_t i = 0; i < nsp; ++i) {
      const int64_t s = wa_.strides.empty() ? 1 : wa_.strides[i];
      const int64_t pads = wa_.pads.empty() ? 0 : wa_.pads[i] + wa_.pads[i + nsp];
      const int64_t o = (X.dim(2 + i) - 1) * s + wa_.kernel_shape[i] - pads;
      if (o < 0) return ctx.fail("output spatial dim {} would be negative", i);
      inferred.push_back(o);
    }
    shape_t out = inferred;
    if (os) {
      if (os->type() != dtype::i64 || os->numel() != static_cast<int64_t>(X.rank()))
        return ctx.fail("output_shape must be int64 with {} values", X.rank());
      out = os->to_int64_vector();
      for (size_t d = 0; d < out.size(); ++d)
        if (out[d] < inferred[d])
          return ctx.fail("output_shape {} is smaller than the unpooled shape {}", shape_str(out), shape_str(inferred));
    }
    int64_t inferred_total = 0;
    if (!checked_num_elements(inferred, max_tensor_bytes, &inferred_total)) return ctx.fail("output too large");
    const size_t es = dtype_size(X.type());
    if (es == 0) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, X.type(), out));
    std::memset(y->raw(), 0, y->bytes());
    const int64_t* idx = I.data<int64_t>();
    const auto* src = static_cast<const std::byte*>(X.raw());
    auto* dst = static_cast<std::byte*>(y->raw());
    const bool same = out == inferred;
    for (int64_t i = 0; i < X.numel(); ++i) {
      int64_t v = idx[i];
      if (v < 0 || v >= inferred_total)
        return ctx.fail("index {} out of range for an unpooled shape {}", v, shape_str(inferred));
      int64_t o = v;
      if (!same) {  // coordinates in `inferred` -> offset in `out`
        o = 0;
        int64_t stride = 1;
        for (size_t d = inferred.size(); d-- > 0;) {
          o += (v % inferred[d]) * stride;
          v /= inferred[d];
          stride *= out[d];
        }
      }
      std::memcpy(dst + o * es, src + i * es, es);
    }
    return status::ok();
  }

 private:
  window_attrs wa_;
};

}  // namespace

void register_pool_ops(op_registry& r) {
  r.add("MaxUnpool", window_factory(true, [](const node&, window_attrs wa) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<maxunpool_kernel>(std::move(wa)));
  }));
  r.add("MaxPool", window_factory(true, [](const node& n, window_attrs wa) -> expected<std::unique_ptr<kernel>> {
    int64_t so = n.attr_int("storage_order", 0);
    if (so != 0 && so != 1) return invalid_input("{}: storage_order must be 0 or 1, got {}", n.describe(), so);
    return std::unique_ptr<kernel>(std::make_unique<maxpool_kernel>(std::move(wa), so));
  }));
  r.add("AveragePool", window_factory(true, [](const node& n, window_attrs wa) -> expected<std::unique_ptr<kernel>> {
    bool inc = n.attr_int("count_include_pad", 0) != 0;
    return std::unique_ptr<kernel>(std::make_unique<avgpool_kernel>(std::move(wa), inc, 1, false));
  }));
  r.add("LpPool", window_factory(true, [](const node& n, window_attrs wa) -> expected<std::unique_ptr<kernel>> {
    int64_t p = n.attr_int("p", 2);
    if (n.has_attr("p") && n.attrs.at("p").type == attribute::kind::floating) p = static_cast<int64_t>(n.attr_float("p", 2.f));
    if (p < 1 || p > 1000) return invalid_input("{}: p must be a positive integer, got {}", n.describe(), p);
    return std::unique_ptr<kernel>(std::make_unique<avgpool_kernel>(std::move(wa), false, p, true));
  }));
  r.add("GlobalAveragePool", simple_kernel(global_pool(global_kind::avg)));
  r.add("GlobalMaxPool", simple_kernel(global_pool(global_kind::max)));
  r.add("GlobalLpPool", simple_kernel(global_pool(global_kind::lp)));
}

}  // namespace gpugrid::cpu
