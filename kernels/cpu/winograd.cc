#include "kernels/cpu/winograd.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>

#include "engine/thread_pool.h"
#include "kernels/cpu/simd.h"

namespace gpugrid::cpu::winograd {
namespace {

// Runs f(begin, end) over [0, n), on the pool when there is one and enough items.
template <typename F>
void par(thread_pool* pool, int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (!pool || pool->size() <= 1 || n <= grain) {
    f(int64_t{0}, n);
    return;
  }
  pool->parallel_for(n, grain, [&](int64_t b, int64_t e) { f(b, e); });
}

inline void store8(float* p, __m256 v, int64_t n) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else if (n > 0) _mm256_maskstore_ps(p, simd::lanes(n), v);
}

inline __m256 load8(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, simd::lanes(n));
}

// Slack after a padded plane: the last block of a row reads up to 14 floats past it.
constexpr int64_t kSlack = 32;

// A band of tile rows takes at most this many floats of V and M (1 MB, well inside a core's
// L2 cache); a map whose V and M are larger is computed band by band.
constexpr int64_t kBandFloats = int64_t{1} << 18;

struct geometry {
  int64_t C, H, W, OH, OW, ph, pw;
  int64_t TH, TW, T;  // tiles of 2x2 outputs
  int64_t Hp, Wp;     // the padded plane the tiles read: (2 TH + 2) x (2 TW + 2)
};

// V[xi][c][t] = (B^T d B)[xi] for the tiles of `tile_rows` rows of tiles of channel c, read
// from its zero-padded rows (pad: the first tile row's first padded row; rows Wp floats apart,
// kSlack floats after the last). V points at channel c's row of xi = 0; rows of the next xi
// are cs floats further.
void input_rows(const geometry& q, const float* pad, int64_t tile_rows, float* V, int64_t cs) {
  for (int64_t th = 0; th < tile_rows; ++th) {
    const float* rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = pad + (2 * th + i) * q.Wp;
    for (int64_t tw0 = 0; tw0 < q.TW; tw0 += 8) {
      const int64_t n = std::min<int64_t>(8, q.TW - tw0);
      // d[i][j]: input (2 th + i, 2 tw + j) of eight tiles tw0..tw0+7.
      __m256 d[4][4];
      for (int i = 0; i < 4; ++i) {
        const float* b = rows[i] + 2 * tw0;
        const __m256 a0 = _mm256_loadu_ps(b), a1 = _mm256_loadu_ps(b + 8);
        const __m256 c0 = _mm256_loadu_ps(b + 2), c1 = _mm256_loadu_ps(b + 10);
        d[i][0] = simd::evens(a0, a1);
        d[i][1] = simd::odds(a0, a1);
        d[i][2] = simd::evens(c0, c1);
        d[i][3] = simd::odds(c0, c1);
      }
      // s = B^T d (rows), then v = s B (columns).
      __m256 s[4][4];
      for (int j = 0; j < 4; ++j) {
        s[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        s[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        s[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        s[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
      }
      float* out = V + th * q.TW + tw0;
      for (int i = 0; i < 4; ++i) {
        store8(out + (i * 4 + 0) * cs, _mm256_sub_ps(s[i][0], s[i][2]), n);
        store8(out + (i * 4 + 1) * cs, _mm256_add_ps(s[i][1], s[i][2]), n);
        store8(out + (i * 4 + 2) * cs, _mm256_sub_ps(s[i][2], s[i][1]), n);
        store8(out + (i * 4 + 3) * cs, _mm256_sub_ps(s[i][1], s[i][3]), n);
      }
    }
  }
}

// y_m = act(A^T m A + bias) for the tiles of tile rows [th0, th1) of output channel m (Mo
// points at m's row of xi = 0, which starts at tile row th0; rows of the next xi are ms floats
// further; ym at channel m's output plane). The bias and an activation that is a clamp (none,
// ReLU, Clip) are applied in registers; any other runs over each output row.
void output_rows(const geometry& q, int64_t th0, int64_t th1, const float* Mo, int64_t ms, float bias,
                 const activation_spec& act, float* ym) {
  float lo, hi;
  const bool clamped = clamp_of(act, &lo, &hi);
  const __m256 vb = _mm256_set1_ps(clamped ? bias : 0.f), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  for (int64_t th = th0; th < th1; ++th) {
    float* y0 = ym + 2 * th * q.OW;
    float* y1 = y0 + q.OW;
    const bool second_row = 2 * th + 1 < q.OH;
    for (int64_t tw0 = 0; tw0 < q.TW; tw0 += 8) {
      const int64_t n = std::min<int64_t>(8, q.TW - tw0);
      const float* in = Mo + (th - th0) * q.TW + tw0;
      __m256 m[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) m[i][j] = load8(in + (i * 4 + j) * ms, n);
      __m256 a0[4], a1[4];  // A^T m
      for (int j = 0; j < 4; ++j) {
        a0[j] = _mm256_add_ps(_mm256_add_ps(m[0][j], m[1][j]), m[2][j]);
        a1[j] = _mm256_sub_ps(_mm256_sub_ps(m[1][j], m[2][j]), m[3][j]);
      }
      // (A^T m) A: the 2x2 outputs of each tile.
      const __m256 y00 = _mm256_add_ps(_mm256_add_ps(a0[0], a0[1]), a0[2]);
      const __m256 y01 = _mm256_sub_ps(_mm256_sub_ps(a0[1], a0[2]), a0[3]);
      const __m256 y10 = _mm256_add_ps(_mm256_add_ps(a1[0], a1[1]), a1[2]);
      const __m256 y11 = _mm256_sub_ps(_mm256_sub_ps(a1[1], a1[2]), a1[3]);
      // Interleave each row's two outputs per tile: 16 consecutive output columns.
      const int64_t cols = std::min(q.OW - 2 * tw0, 2 * n);
      auto put = [&](float* row, __m256 e, __m256 o) {
        // max with the value second, then min: NaN stays NaN, as in apply_activation.
        e = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(e, vb)));
        o = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(o, vb)));
        const __m256 l = _mm256_unpacklo_ps(e, o), h = _mm256_unpackhi_ps(e, o);
        store8(row + 2 * tw0, _mm256_permute2f128_ps(l, h, 0x20), cols);
        store8(row + 2 * tw0 + 8, _mm256_permute2f128_ps(l, h, 0x31), cols - 8);
      };
      put(y0, y00, y01);
      if (second_row) put(y1, y10, y11);
    }
    if (!clamped) {
      apply_activation(act, y0, q.OW, bias);
      if (second_row) apply_activation(act, y1, q.OW, bias);
    }
  }
}

}  // namespace

bool applies(const nn::window_geom& g, int64_t group, int64_t C, int64_t M) {
  if (g.nsp != 2 || group != 1 || !sgemm::available()) return false;
  if (g.k[1] != 3 || g.k[2] != 3 || g.s[1] != 1 || g.s[2] != 1 || g.d[1] != 1 || g.d[2] != 1) return false;
  // Few channels make the 16 products too thin to win back the transforms.
  return C >= 16 && M >= 16 && g.out[1] >= 4 && g.out[2] >= 4;
}

std::unique_ptr<weights> transform_weights(const float* w, int64_t M, int64_t C) {
  std::vector<float> u;
  try {
    u.resize(static_cast<size_t>(16 * M * C));
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  const int64_t MC = M * C;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c) {
      const float* g = w + (m * C + c) * 9;
      // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2 (each a row of three).
      float gg[4][3];
      for (int s = 0; s < 3; ++s) {
        gg[0][s] = g[s];
        gg[1][s] = 0.5f * (g[s] + g[3 + s] + g[6 + s]);
        gg[2][s] = 0.5f * (g[s] - g[3 + s] + g[6 + s]);
        gg[3][s] = g[6 + s];
      }
      // (G g) G^T, row by row.
      for (int r = 0; r < 4; ++r) {
        const float a = gg[r][0], b = gg[r][1], cc = gg[r][2];
        const float row[4] = {a, 0.5f * (a + b + cc), 0.5f * (a - b + cc), cc};
        for (int j = 0; j < 4; ++j) u[static_cast<size_t>((r * 4 + j) * MC + m * C + c)] = row[j];
      }
    }
  auto out = std::make_unique<weights>();
  out->M = M;
  out->C = C;
  for (int xi = 0; xi < 16; ++xi) {
    auto pk = sgemm::packed::left({u.data() + xi * MC, C, 1}, M, C);
    if (!pk) return nullptr;
    out->u.push_back(std::move(pk));
  }
  return out;
}

bool run(thread_pool* pool, const weights& U, const float* x, const nn::window_geom& g, const float* bias,
         const activation_spec& act, float* y) {
  geometry q;
  q.C = U.C;
  q.H = g.in[1];
  q.W = g.in[2];
  q.OH = g.out[1];
  q.OW = g.out[2];
  q.ph = g.pb[1];
  q.pw = g.pb[2];
  q.TH = (q.OH + 1) / 2;
  q.TW = (q.OW + 1) / 2;
  q.T = q.TH * q.TW;
  q.Hp = 2 * q.TH + 2;
  q.Wp = 2 * q.TW + 2;
  const int64_t M = U.M, C = U.C, T = q.T;
  std::vector<const sgemm::packed*> us;
  for (const auto& u : U.u) us.push_back(u.get());
  // Sixteen products M_xi [M x n] = U_xi [M x C] x V_xi [C x n] over n tiles (V_xi and M_xi
  // vs and ms floats apart).
  auto products = [&](thread_pool* on, const float* V, float* Mo, int64_t n, int64_t vs, int64_t ms) {
    sgemm::problem p;
    p.m = M;
    p.n = n;
    p.k = C;
    p.a_each = us.data();
    p.b.v = {V, n, 1};
    p.c = Mo;
    p.ldc = n;
    p.batch = 16;
    p.offsets = [vs, ms](int64_t i, int64_t* ao, int64_t* bo, int64_t* co) {
      *ao = 0;
      *bo = i * vs;
      *co = i * ms;
    };
    return sgemm::run(on, p);
  };

  // A large map goes in bands of tile rows, each through all three steps on one thread, so
  // that its V and M stay in that core's cache between the steps (on SqueezeNet's 55x55
  // layers, V and M of the whole map are 4 MB, written and read back once each).
  const int64_t threads = pool ? std::max<int64_t>(1, pool->size()) : 1;
  int64_t band = std::max<int64_t>(1, kBandFloats / (16 * (C + M) * q.TW));
  band = std::min(band, (q.TH + 2 * threads - 1) / (2 * threads));  // two bands a thread or more
  const int64_t bands = (q.TH + band - 1) / band;
  // Worth it when the products keep at least two panels of tiles, and reading U once more per
  // band costs at most a quarter of the V and M traffic saved (ResNet-18's 128-channel layers
  // over 28x28 maps were 8% slower in four bands).
  if (16 * (C + M) * T > kBandFloats && bands >= 2 && band * q.TW >= 64 && 4 * (bands - 1) * M * C <= (C + M) * T) {
    std::atomic<bool> failed{false};
    par(pool, bands, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e && !failed; ++k) {
        const int64_t th0 = k * band, th1 = std::min(q.TH, th0 + band), n = (th1 - th0) * q.TW;
        const int64_t vs = C * n + 16, ms = M * n + 16, prows = 2 * (th1 - th0) + 2;
        // This thread's scratch: slots 0 and 1 as in the whole-map path below, 2 the padded rows.
        float* V = nn::scratch<float>(0, static_cast<size_t>(16 * vs));
        float* Mo = nn::scratch<float>(1, static_cast<size_t>(16 * ms));
        float* pad = nn::scratch<float>(2, static_cast<size_t>(prows * q.Wp + kSlack));
        if (!V || !Mo || !pad) {
          failed = true;
          return;
        }
        for (int64_t c = 0; c < C; ++c) {
          // The band's padded rows: row r is input row r + 2 th0 - ph.
          simd::pad_plane(x + c * q.H * q.W, q.H, q.W, q.ph - 2 * th0, q.pw, prows, q.Wp, kSlack, pad);
          input_rows(q, pad, th1 - th0, V + c * n, vs);
        }
        if (!products(nullptr, V, Mo, n, vs, ms)) {
          failed = true;
          return;
        }
        for (int64_t m = 0; m < M; ++m)
          output_rows(q, th0, th1, Mo + m * n, ms, bias ? bias[m] : 0.f, act, y + m * q.OH * q.OW);
      }
    });
    return !failed;
  }

  // The caller's scratch slots 0 and 1 (the im2col buffer and Gemm's bias, never in use here)
  // hold V and M; each thread's slot 2 (the depthwise kernel's) holds its padded input plane.
  // V_xi and M_xi lie vs and ms floats apart: one cache line more than they take, so that the
  // 16 rows the transforms write or read at once do not all fall into the same cache sets
  // (C x T floats is a multiple of 4 KiB on most maps).
  const int64_t vs = C * T + 16, ms = M * T + 16;
  float* V = nn::scratch<float>(0, static_cast<size_t>(16 * vs));
  float* Mo = nn::scratch<float>(1, static_cast<size_t>(16 * ms));
  if (!V || !Mo) return false;

  // 1. Input tiles, one channel per item.
  const size_t plane = static_cast<size_t>(q.Hp * q.Wp + kSlack);
  std::atomic<bool> no_memory{false};
  par(pool, C, std::max<int64_t>(1, 4096 / std::max<int64_t>(T, 1)), [&](int64_t b, int64_t e) {
    float* pad = nn::scratch<float>(2, plane);
    if (!pad) {
      no_memory = true;
      return;
    }
    for (int64_t c = b; c < e; ++c) {
      // The zero-padded plane: row r is input row r - ph, column j is input column j - pw.
      simd::pad_plane(x + c * q.H * q.W, q.H, q.W, q.ph, q.pw, q.Hp, q.Wp, kSlack, pad);
      input_rows(q, pad, q.TH, V + c * T, vs);
    }
  });
  if (no_memory) return false;

  // 2. The sixteen products, over all the threads.
  if (!products(pool, V, Mo, T, vs, ms)) return false;

  // 3. Output tiles, bias and activation, one output channel per item.
  par(pool, M, std::max<int64_t>(1, 4096 / std::max<int64_t>(T, 1)), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m)
      output_rows(q, 0, q.TH, Mo + m * T, ms, bias ? bias[m] : 0.f, act, y + m * q.OH * q.OW);
  });
  return true;
}

}  // namespace gpugrid::cpu::winograd
