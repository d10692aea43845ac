// Internals shared by the CPU neural-network kernel files (gemm.cc, conv.cc, pool.cc,
// resize.cc, grid_sample.cc, roi_align.cc); not for other kernels.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/kernel.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {

void register_gemm_ops(op_registry& r);    // gemm.cc: MatMul, Gemm, MatMulInteger, FusedGemm, FusedMatMul
void register_conv_ops(op_registry& r);    // conv.cc: Conv, ConvTranspose, FusedConv
void register_pool_ops(op_registry& r);    // pool.cc: MaxPool, AveragePool, LpPool, Global*Pool
void register_resize_ops(op_registry& r);  // resize.cc: Resize, DepthToSpace, SpaceToDepth
void register_grid_sample_ops(op_registry& r);  // grid_sample.cc: GridSample
void register_roi_align_ops(op_registry& r);    // roi_align.cc: RoiAlign

namespace nn {

// Fails unless the node has between lo and hi input slots with the first `required` present.
inline status check_inputs(const kernel_context& ctx, size_t lo, size_t hi, size_t required) {
  size_t n = ctx.num_inputs();
  if (n < lo || n > hi) {
    if (lo == hi) return ctx.fail("expects {} inputs, got {}", lo, n);
    return ctx.fail("expects {} to {} inputs, got {}", lo, hi, n);
  }
  for (size_t i = 0; i < required; ++i)
    if (!ctx.input(i)) return ctx.fail("input {} is required but missing", i);
  for (size_t i = 0; i < n; ++i)
    if (ctx.input(i) && ctx.input(i)->device() != device_kind::cpu)
      return ctx.fail("input {} is not in CPU memory", i);
  return status::ok();
}

// A present, non-empty optional input (an empty tensor counts as omitted, as ONNX allows), and
// the parallel loop: one copy of each, in kernel_helpers.h.
using helpers::optional_input;
using helpers::parallel;

// Per-thread scratch memory that grows and is kept (no per-run allocation in steady state).
// `slot` separates buffers a kernel needs at the same time. Returns nullptr when n is absurd.
template <typename T>
T* scratch(int slot, size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  struct buf {
    std::unique_ptr<std::byte[]> p;
    size_t bytes = 0;
  };
  thread_local buf bufs[4];
  if (slot < 0 || slot >= 4) return nullptr;
  if (n > (size_t{1} << 34) / sizeof(T)) return nullptr;
  size_t want = std::max<size_t>(n * sizeof(T), 64);
  buf& b = bufs[slot];
  if (b.bytes < want) {
    b.p.reset();
    b.p.reset(new (std::nothrow) std::byte[want + 64]);
    if (!b.p) {
      b.bytes = 0;
      return nullptr;
    }
    b.bytes = want;
  }
  // 64-byte alignment inside the block.
  auto addr = reinterpret_cast<uintptr_t>(b.p.get());
  return reinterpret_cast<T*>((addr + 63) & ~uintptr_t{63});
}

// The most floats the padded (and split) copies of a kernel's input may take in a thread's
// scratch memory, which is kept for the next run: larger inputs take the kernels' other paths.
constexpr int64_t kMaxPaddedFloats = int64_t{1} << 22;  // 16 MiB

// C = alpha * op(A) * op(B) + beta * C, row-major. Float/double go to OpenBLAS (callers send float
// products to sgemm where it runs, and one-row ones to dense::matmul); integer types
// use a plain loop with wrapping arithmetic.
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (k <= 0) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
      return;
    }
    const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<T, float>) {
      if (m == 1 && !ta) {
        // A row vector times op(B): a matrix-vector product is faster than sgemm's packing.
        if (tb) cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)k, alpha, b, (blasint)ldb, a, 1, beta, c, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)k, (blasint)n, alpha, b, (blasint)ldb, a, 1, beta, c, 1);
        return;
      }
      cblas_sgemm(CblasRowMajor, TA, TB, (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b,
                  (blasint)ldb, beta, c, (blasint)ldc);
    } else {
      cblas_dgemm(CblasRowMajor, TA, TB, (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b,
                  (blasint)ldb, beta, c, (blasint)ldc);
    }
  } else {
    using W = std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>;
    std::vector<W> acc(static_cast<size_t>(n));
    for (int64_t i = 0; i < m; ++i) {
      std::fill(acc.begin(), acc.end(), W(0));
      for (int64_t p = 0; p < k; ++p) {
        W av = static_cast<W>(ta ? a[p * lda + i] : a[i * lda + p]);
        if (av == 0) continue;
        if (!tb) {
          const T* brow = b + p * ldb;
          for (int64_t j = 0; j < n; ++j) acc[j] += av * static_cast<W>(brow[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) acc[j] += av * static_cast<W>(b[j * ldb + p]);
        }
      }
      T* crow = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) {
        W v = static_cast<W>(alpha) * acc[j];
        if (beta != T(0)) v += static_cast<W>(beta) * static_cast<W>(crow[j]);
        crow[j] = static_cast<T>(v);
      }
    }
  }
}

// ---- sliding-window geometry shared by Conv and the pools ----

// Attributes of a sliding window op, checked when the kernel is created.
struct window_attrs {
  std::vector<int64_t> kernel_shape;  // may be empty for Conv (taken from W)
  std::vector<int64_t> strides, dilations, pads;
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false;
};

// Reads kernel_shape/strides/dilations/pads/auto_pad/ceil_mode and checks their values.
inline status parse_window_attrs(const node& n, window_attrs* w, bool kernel_required) {
  w->kernel_shape = n.attr_ints("kernel_shape");
  w->strides = n.attr_ints("strides");
  w->dilations = n.attr_ints("dilations");
  w->pads = n.attr_ints("pads");
  w->auto_pad = n.attr_string("auto_pad", "NOTSET");
  w->ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  auto bad = [&](const std::string& m) { return invalid_input("{}: {}", n.describe(), m); };
  if (w->auto_pad.empty()) w->auto_pad = "NOTSET";
  if (w->auto_pad != "NOTSET" && w->auto_pad != "SAME_UPPER" && w->auto_pad != "SAME_LOWER" &&
      w->auto_pad != "VALID")
    return bad("unknown auto_pad '" + w->auto_pad + "'");
  if (kernel_required && w->kernel_shape.empty()) return bad("attribute kernel_shape is required");
  for (int64_t k : w->kernel_shape)
    if (k < 1 || k > (int64_t{1} << 20)) return bad("kernel_shape values must be positive");
  for (int64_t s : w->strides)
    if (s < 1 || s > (int64_t{1} << 30)) return bad("strides must be positive");
  for (int64_t d : w->dilations)
    if (d < 1 || d > (int64_t{1} << 20)) return bad("dilations must be positive");
  for (int64_t p : w->pads)
    if (p < 0 || p > (int64_t{1} << 30)) return bad("pads must be non-negative");
  if (w->pads.size() % 2 != 0) return bad("pads must have an even number of values");
  size_t nsp = w->kernel_shape.size();
  if (nsp > 0) {
    if (!w->strides.empty() && w->strides.size() != nsp) return bad("strides and kernel_shape differ in length");
    if (!w->dilations.empty() && w->dilations.size() != nsp) return bad("dilations and kernel_shape differ in length");
    if (!w->pads.empty() && w->pads.size() != 2 * nsp) return bad("pads must have twice as many values as kernel_shape");
  }
  return status::ok();
}

// The resolved geometry of one run: spatial dims padded on the left to 3 (D, H, W), so 1-D
// and 2-D ops run through the same loops as 3-D ones (the extra dims have size 1).
struct window_geom {
  int nsp = 0;                 // the op's real number of spatial dims
  int64_t in[3] = {1, 1, 1};   // input spatial dims
  int64_t out[3] = {1, 1, 1};  // output spatial dims
  int64_t k[3] = {1, 1, 1};
  int64_t s[3] = {1, 1, 1};
  int64_t d[3] = {1, 1, 1};
  int64_t pb[3] = {0, 0, 0};   // padding at the beginning
  int64_t pe[3] = {0, 0, 0};   // padding at the end
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
};

// Computes the output dims and pads for input spatial dims `in` and kernel `kernel`
// (Conv: floor always; pools: ceil_mode). Fails when the window does not fit.
inline status resolve_window(const kernel_context& ctx, const window_attrs& a, const shape_t& in_spatial,
                             const std::vector<int64_t>& kernel, bool use_ceil, window_geom* g) {
  const size_t nsp = in_spatial.size();
  if (nsp < 1 || nsp > 3) return ctx.fail("supports 1 to 3 spatial dims, got {}", nsp);
  if (kernel.size() != nsp) return ctx.fail("kernel has {} spatial dims but the input has {}", kernel.size(), nsp);
  if (!a.strides.empty() && a.strides.size() != nsp) return ctx.fail("strides has {} values for {} spatial dims", a.strides.size(), nsp);
  if (!a.dilations.empty() && a.dilations.size() != nsp) return ctx.fail("dilations has {} values for {} spatial dims", a.dilations.size(), nsp);
  if (!a.pads.empty() && a.pads.size() != 2 * nsp) return ctx.fail("pads has {} values for {} spatial dims", a.pads.size(), nsp);
  *g = window_geom{};
  g->nsp = static_cast<int>(nsp);
  const size_t off = 3 - nsp;
  for (size_t i = 0; i < nsp; ++i) {
    const size_t j = off + i;
    const int64_t in = in_spatial[i], k = kernel[i];
    const int64_t s = a.strides.empty() ? 1 : a.strides[i];
    const int64_t d = a.dilations.empty() ? 1 : a.dilations[i];
    if (in < 0) return ctx.fail("negative spatial dim");
    if (k < 1) return ctx.fail("kernel dims must be positive, got {}", k);
    const int64_t keff = (k - 1) * d + 1;
    int64_t pb = 0, pe = 0, out = 0;
    if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (out - 1) * s + keff - in);
      if (a.auto_pad == "SAME_UPPER") {
        pb = total / 2;
        pe = total - pb;
      } else {
        pe = total / 2;
        pb = total - pe;
      }
    } else {
      if (a.auto_pad == "NOTSET" && !a.pads.empty()) {
        pb = a.pads[i];
        pe = a.pads[i + nsp];
      }
      const int64_t span = in + pb + pe - keff;
      if (span < 0)
        return ctx.fail("kernel (effective size {}) is bigger than the padded input ({}) in spatial dim {}",
                        keff, in + pb + pe, i);
      if (use_ceil && a.ceil_mode) {
        out = (span + s - 1) / s + 1;
        if ((out - 1) * s >= in + pb) --out;  // windows must start inside the input or left pad
      } else {
        out = span / s + 1;
      }
    }
    if (out < 0) return ctx.fail("output spatial dim {} would be negative", i);
    g->in[j] = in;
    g->out[j] = out;
    g->k[j] = k;
    g->s[j] = s;
    g->d[j] = d;
    g->pb[j] = pb;
    g->pe[j] = pe;
  }
  return status::ok();
}

// The taps t in [0, k) of a window starting at `start` (step d) that land inside [0, n).
inline void valid_taps(int64_t start, int64_t k, int64_t d, int64_t n, int64_t* lo, int64_t* hi) {
  int64_t l = start >= 0 ? 0 : (-start + d - 1) / d;
  int64_t h = (n - 1 - start) < 0 ? 0 : (n - 1 - start) / d + 1;
  *lo = std::min(l, k);
  *hi = std::max(*lo, std::min(h, k));
}

// ---- 8-bit quantized operands (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul) ----

inline bool is_q8(dtype t) { return t == dtype::u8 || t == dtype::i8; }

// Element i of a uint8 / int8 tensor.
inline int32_t q8(const tensor& t, int64_t i) {
  return t.type() == dtype::u8 ? static_cast<int32_t>(t.data<uint8_t>()[i]) : static_cast<int32_t>(t.data<int8_t>()[i]);
}

// A float32 scale (scalar or per-channel) as double; channel c picks its own value when the
// tensor holds one per channel.
inline double qscale(const tensor& t, int64_t c) {
  return t.numel() == 1 ? static_cast<double>(t.data<float>()[0]) : static_cast<double>(t.data<float>()[c]);
}
inline int32_t qzero(const tensor* t, int64_t c) {
  if (!t) return 0;
  return q8(*t, t->numel() == 1 ? 0 : c);
}

// Checks a scale / zero point holds one value or `channels` values (of the right type).
inline status check_qparam(const kernel_context& ctx, const tensor* t, const char* what, int64_t channels,
                           bool is_scale, dtype q_type) {
  if (!t) return status::ok();
  if (is_scale && t->type() != dtype::f32) return ctx.fail("{} must be float32, got {}", what, dtype_name(t->type()));
  if (!is_scale && t->type() != q_type)
    return ctx.fail("{} must be {} like its data, got {}", what, dtype_name(q_type), dtype_name(t->type()));
  if (t->numel() != 1 && t->numel() != channels)
    return ctx.fail("{} must hold 1 or {} values, got {}", what, channels, t->numel());
  return status::ok();
}

// Requantizes an exact accumulator: round half to even, add the zero point, saturate.
inline void store_q8(tensor& y, int64_t i, double v, int32_t zp) {
  double r = std::nearbyint(v) + zp;
  if (y.type() == dtype::u8) y.data<uint8_t>()[i] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, r)));
  else y.data<int8_t>()[i] = static_cast<int8_t>(std::min(127.0, std::max(-128.0, r)));
}

}  // namespace nn
}  // namespace gpugrid::cpu
