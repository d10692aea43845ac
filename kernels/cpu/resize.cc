// Resize (canonical opset-11+ form: X, roi?, scales?, sizes?), DepthToSpace, SpaceToDepth.
//
// Resize follows the ONNX reference implementation: every output coordinate maps to an input
// coordinate (coordinate_transformation_mode), whose n nearest input indices (edge-clamped)
// are weighted by the mode's coefficients. Linear and cubic interpolation are separable, so
// they run as one 1-D pass per resized axis; nearest is one gather over all axes.
#include <cmath>
#include <new>
#include <numeric>
#include <stdexcept>

#include "kernels/cpu/nn_internal.h"

namespace gpugrid::cpu {
namespace {

using nn::check_inputs;
using nn::parallel;

enum class rmode { nearest, linear, cubic };
enum class ctm { half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric,
                 tf_half_pixel_for_nn, tf_crop_and_resize };
enum class nmode { round_prefer_floor, round_prefer_ceil, floor, ceil };

struct resize_attrs {
  rmode mode = rmode::nearest;
  ctm coord = ctm::half_pixel;
  nmode nearest = nmode::round_prefer_floor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
  float extrapolation = 0.f;
  std::vector<int64_t> axes;
  int policy = 0;  // 0 stretch, 1 not_larger, 2 not_smaller
};

expected<resize_attrs> parse_resize(const node& n) {
  resize_attrs a;
  auto bad = [&](const std::string& m) { return invalid_input("{}: {}", n.describe(), m); };
  std::string mode = n.attr_string("mode", "nearest");
  if (mode == "nearest") a.mode = rmode::nearest;
  else if (mode == "linear" || mode == "bilinear" || mode == "trilinear") a.mode = rmode::linear;
  else if (mode == "cubic" || mode == "bicubic") a.mode = rmode::cubic;
  else return bad("unknown mode '" + mode + "'");
  const bool legacy = n.opset > 0 && n.opset < 11;
  std::string c = n.attr_string("coordinate_transformation_mode", legacy ? "asymmetric" : "half_pixel");
  if (c == "half_pixel") a.coord = ctm::half_pixel;
  else if (c == "half_pixel_symmetric") a.coord = ctm::half_pixel_symmetric;
  else if (c == "pytorch_half_pixel") a.coord = ctm::pytorch_half_pixel;
  else if (c == "align_corners") a.coord = ctm::align_corners;
  else if (c == "asymmetric") a.coord = ctm::asymmetric;
  else if (c == "tf_half_pixel_for_nn") a.coord = ctm::tf_half_pixel_for_nn;
  else if (c == "tf_crop_and_resize") a.coord = ctm::tf_crop_and_resize;
  else return bad("unknown coordinate_transformation_mode '" + c + "'");
  std::string nm = n.attr_string("nearest_mode", legacy ? "floor" : "round_prefer_floor");
  if (nm == "round_prefer_floor") a.nearest = nmode::round_prefer_floor;
  else if (nm == "round_prefer_ceil") a.nearest = nmode::round_prefer_ceil;
  else if (nm == "floor") a.nearest = nmode::floor;
  else if (nm == "ceil") a.nearest = nmode::ceil;
  else return bad("unknown nearest_mode '" + nm + "'");
  a.cubic_a = n.attr_float("cubic_coeff_a", -0.75f);
  a.exclude_outside = n.attr_int("exclude_outside", 0) != 0;
  a.antialias = n.attr_int("antialias", 0) != 0;
  a.extrapolation = n.attr_float("extrapolation_value", 0.f);
  a.axes = n.attr_ints("axes");
  std::string pol = n.attr_string("keep_aspect_ratio_policy", "stretch");
  if (pol == "stretch") a.policy = 0;
  else if (pol == "not_larger") a.policy = 1;
  else if (pol == "not_smaller") a.policy = 2;
  else return bad("unknown keep_aspect_ratio_policy '" + pol + "'");
  return a;
}

// The taps of one axis: for output coordinate o, n indices (already edge-clamped) and weights,
// or an extrapolated flag (tf_crop_and_resize outside the input).
struct axis_taps {
  int64_t in = 0, out = 0;
  int n = 0;
  std::vector<int64_t> idx;   // out * n
  std::vector<double> w;      // out * n
  std::vector<uint8_t> extrap;
  bool identity = false;
};

double cubic_weight(double x, double A) {
  x = std::abs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0;
}

status make_taps(const kernel_context& ctx, const resize_attrs& a, int64_t in, int64_t out, double scale,
                 double roi_s, double roi_e, axis_taps* t) {
  t->in = in;
  t->out = out;
  const double in_d = static_cast<double>(in);
  const double output_width = scale * in_d;
  // Number of taps.
  double s_aa = std::min(scale, 1.0);
  int64_t start = 0;
  if (a.mode == rmode::nearest) {
    start = 0;
  } else if (a.mode == rmode::linear) {
    start = a.antialias ? static_cast<int64_t>(std::floor(-1.0 / s_aa) + 1) : 0;
  } else {
    start = a.antialias ? static_cast<int64_t>(std::floor(-2.0 / s_aa) + 1) : -1;
  }
  const int64_t n = 2 - 2 * start;
  if (n < 2 || n > 4096) return ctx.fail("scale {} needs {} taps per output, too many", scale, n);
  t->n = static_cast<int>(n);
  t->idx.assign(static_cast<size_t>(out * n), 0);
  t->w.assign(static_cast<size_t>(out * n), 0.0);
  t->extrap.assign(static_cast<size_t>(out), 0);
  bool identity = out == in;
  std::vector<double> coef(static_cast<size_t>(n));
  for (int64_t x = 0; x < out; ++x) {
    const double xd = static_cast<double>(x);
    double xo = 0;
    switch (a.coord) {
      case ctm::align_corners:
        xo = output_width == 1 ? 0.0 : xd * (in_d - 1) / (output_width - 1);
        break;
      case ctm::asymmetric: xo = xd / scale; break;
      case ctm::tf_crop_and_resize:
        xo = output_width == 1 ? (roi_e - roi_s) * (in_d - 1) / 2 : xd * (roi_e - roi_s) * (in_d - 1) / (output_width - 1);
        xo += roi_s * (in_d - 1);
        break;
      case ctm::pytorch_half_pixel: xo = output_width == 1 ? -0.5 : (xd + 0.5) / scale - 0.5; break;
      case ctm::half_pixel: xo = (xd + 0.5) / scale - 0.5; break;
      case ctm::half_pixel_symmetric: {
        const double adjustment = static_cast<double>(out) / output_width;
        const double center = in_d / 2;
        const double offset = center * (1 - adjustment);
        xo = offset + (xd + 0.5) / scale - 0.5;
        break;
      }
      case ctm::tf_half_pixel_for_nn: xo = (xd + 0.5) / scale; break;
    }
    if (!std::isfinite(xo)) xo = 0;
    if (a.coord == ctm::tf_crop_and_resize && (xo < 0 || xo > in_d - 1)) {
      t->extrap[x] = 1;
      identity = false;
      continue;
    }
    xo = std::max(-1e15, std::min(1e15, xo));
    const double fl = std::floor(xo);
    const double ratio = (xo == fl) ? 1.0 : xo - fl;
    const int64_t base = static_cast<int64_t>(ratio == 1.0 ? fl - 1 : fl);  // ratio in (0, 1]
    // Coefficients for offsets start .. start + n - 1 from base.
    if (a.mode == rmode::nearest) {
      bool take_ceil;
      if (ratio == 1.0) take_ceil = true;
      else if (a.nearest == nmode::round_prefer_floor) take_ceil = ratio > 0.5;
      else if (a.nearest == nmode::round_prefer_ceil) take_ceil = ratio >= 0.5;
      else if (a.nearest == nmode::floor) take_ceil = false;
      else take_ceil = true;
      coef[0] = take_ceil ? 0.0 : 1.0;
      coef[1] = take_ceil ? 1.0 : 0.0;
    } else if (a.mode == rmode::linear) {
      if (!a.antialias) {
        coef[0] = 1 - ratio;
        coef[1] = ratio;
      } else {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          double arg = (static_cast<double>(start + i) - ratio) * s_aa;
          coef[i] = std::max(0.0, std::min(1.0, 1 - std::abs(arg)));
          sum += coef[i];
        }
        for (auto& c : coef) c = sum != 0 ? c / sum : 0;
      }
    } else {
      const double A = a.cubic_a;
      if (!a.antialias) {
        const double r1 = ratio + 1, r0 = ratio, q0 = 1 - ratio, q1 = 2 - ratio;
        coef[0] = ((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A;
        coef[1] = ((A + 2) * r0 - (A + 3)) * r0 * r0 + 1;
        coef[2] = ((A + 2) * q0 - (A + 3)) * q0 * q0 + 1;
        coef[3] = ((A * q1 - 5 * A) * q1 + 8 * A) * q1 - 4 * A;
      } else {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          coef[i] = cubic_weight(s_aa * (static_cast<double>(start + i) - ratio), A);
          sum += coef[i];
        }
        for (auto& c : coef) c = sum != 0 ? c / sum : 0;
      }
    }
    if (a.exclude_outside) {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        int64_t j = base + start + i;
        if (j < 0 || j >= in) coef[i] = 0;
        sum += coef[i];
      }
      for (auto& c : coef) c = sum != 0 ? c / sum : 0;
    }
    for (int64_t i = 0; i < n; ++i) {
      int64_t j = base + start + i;
      j = std::max<int64_t>(0, std::min<int64_t>(in - 1, j));
      t->idx[x * n + i] = j;
      t->w[x * n + i] = coef[i];
      if (coef[i] != 0 && !(coef[i] == 1.0 && j == x)) identity = false;
      if (coef[i] == 1.0 && j != x) identity = false;
    }
  }
  t->identity = identity && in > 0;
  return status::ok();
}

// The nearest tap of each output coordinate (the one with weight 1), or -1 to extrapolate.
std::vector<int64_t> nearest_index(const axis_taps& t) {
  std::vector<int64_t> r(static_cast<size_t>(t.out), -1);
  for (int64_t o = 0; o < t.out; ++o) {
    if (t.extrap[o]) continue;
    int64_t best = t.idx[o * t.n];
    for (int i = 0; i < t.n; ++i)
      if (t.w[o * t.n + i] > 0.5) best = t.idx[o * t.n + i];
    r[o] = best;
  }
  return r;
}

template <typename T>
void nearest_gather(kernel_context& ctx, const T* x, const shape_t& in, const std::vector<std::vector<int64_t>>& idx,
                    T extrap, T* y, const shape_t& out) {
  const size_t r = in.size();
  std::vector<int64_t> stride(r, 1);
  for (size_t d = r; d-- > 1;) stride[d - 1] = stride[d] * in[d];
  // Offset tables: input offset contributed by each output coordinate, -1 to extrapolate.
  std::vector<std::vector<int64_t>> off(r);
  for (size_t d = 0; d < r; ++d) {
    off[d].resize(static_cast<size_t>(out[d]));
    for (int64_t o = 0; o < out[d]; ++o) off[d][o] = idx[d][o] < 0 ? -1 : idx[d][o] * stride[d];
  }
  const int64_t inner = r ? out[r - 1] : 1;
  const int64_t rows = inner ? num_elements(out) / inner : 0;
  const std::vector<int64_t>& last = off[r - 1];
  parallel(ctx, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    std::vector<int64_t> id(r, 0);
    int64_t rem = b;
    for (size_t d = r - 1; d-- > 0;) {
      id[d] = rem % out[d];
      rem /= out[d];
    }
    for (int64_t row = b; row < e; ++row) {
      int64_t base = 0;
      bool ex = false;
      for (size_t d = 0; d + 1 < r; ++d) {
        int64_t o = off[d][id[d]];
        if (o < 0) ex = true;
        base += o;
      }
      T* yr = y + row * inner;
      if (ex) {
        std::fill(yr, yr + inner, extrap);
      } else {
        const T* xb = x + base;
        for (int64_t i = 0; i < inner; ++i) yr[i] = last[i] < 0 ? extrap : xb[last[i]];
      }
      for (size_t d = r - 1; d-- > 0;) {
        if (++id[d] < out[d]) break;
        id[d] = 0;
      }
    }
  });
}

// One separable pass: resizes axis `ax` of src (shape dims) into dst.
template <typename T>
void interp_pass(kernel_context& ctx, const T* src, const shape_t& dims, size_t ax, const axis_taps& t, T extrap, T* dst) {
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < ax; ++d) outer *= dims[d];
  for (size_t d = ax + 1; d < dims.size(); ++d) inner *= dims[d];
  const int64_t in_a = dims[ax], out_a = t.out, n = t.n;
  std::vector<T> wt(t.w.size());
  for (size_t i = 0; i < wt.size(); ++i) wt[i] = static_cast<T>(t.w[i]);
  const int64_t jobs = outer * out_a;
  parallel(ctx, jobs, std::max<int64_t>(1, 8192 / std::max<int64_t>(inner * n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const int64_t oo = j / out_a, o = j % out_a;
      T* dr = dst + j * inner;
      if (t.extrap[o]) {
        std::fill(dr, dr + inner, extrap);
        continue;
      }
      const T* sb = src + oo * in_a * inner;
      bool first = true;
      for (int64_t i = 0; i < n; ++i) {
        const T w = wt[o * n + i];
        if (w == T(0)) continue;
        const T* sr = sb + t.idx[o * n + i] * inner;
        if (first) {
          for (int64_t k = 0; k < inner; ++k) dr[k] = w * sr[k];
          first = false;
        } else {
          for (int64_t k = 0; k < inner; ++k) dr[k] += w * sr[k];
        }
      }
      if (first) std::fill(dr, dr + inner, T(0));
    }
  });
}

class resize_kernel final : public kernel {
 public:
  explicit resize_kernel(resize_attrs a) : a_(std::move(a)) {}

  status run(kernel_context& ctx) override {
    // The tap tables and intermediates scale with the output; a huge one fails cleanly.
    try {
      return run_impl(ctx);
    } catch (const std::bad_alloc&) {
      return internal_error("{}: out of memory", ctx.op().describe());
    } catch (const std::length_error&) {
      return internal_error("{}: out of memory", ctx.op().describe());
    }
  }

 private:
  status run_impl(kernel_context& ctx) {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 4, 1));
    const tensor& X = *ctx.input(0);
    const size_t r = X.rank();
    if (r == 0) return ctx.fail("X must have rank >= 1");
    const tensor* roi = nn::optional_input(ctx, 1);
    const tensor* scales = nn::optional_input(ctx, 2);
    const tensor* sizes = nn::optional_input(ctx, 3);
    if (ctx.num_inputs() == 2 && ctx.op().opset > 0 && ctx.op().opset < 11) {  // Resize-10: (X, scales)
      scales = roi;
      roi = nullptr;
    }
    if (a_.antialias && a_.mode == rmode::nearest) return ctx.fail("antialias is not supported with mode nearest");
    // Axes.
    std::vector<int64_t> axes = a_.axes;
    if (axes.empty()) {
      axes.resize(r);
      std::iota(axes.begin(), axes.end(), 0);
    }
    std::vector<bool> seen(r, false);
    for (auto& ax : axes) {
      if (ax < -static_cast<int64_t>(r) || ax >= static_cast<int64_t>(r)) return ctx.fail("axis {} out of range for rank {}", ax, r);
      if (ax < 0) ax += static_cast<int64_t>(r);
      if (seen[ax]) return ctx.fail("axis {} repeated", ax);
      seen[ax] = true;
    }
    const size_t na = axes.size();
    if (scales && sizes) return ctx.fail("only one of scales and sizes may be given");
    if (!scales && !sizes) return ctx.fail("needs scales or sizes");
    std::vector<double> scale(r, 1.0);
    shape_t out = X.shape();
    if (sizes) {
      if (sizes->type() != dtype::i64) return ctx.fail("sizes must be int64, got {}", dtype_name(sizes->type()));
      if (static_cast<size_t>(sizes->numel()) != na) return ctx.fail("sizes has {} values for {} axes", sizes->numel(), na);
      for (size_t i = 0; i < na; ++i) {
        int64_t s = sizes->data<int64_t>()[i];
        if (s < 0 || s > (int64_t{1} << 40)) return ctx.fail("sizes must be non-negative, got {}", s);
        out[axes[i]] = s;
        if (X.dim(axes[i]) == 0) return ctx.fail("cannot resize an empty axis {}", axes[i]);
        scale[axes[i]] = static_cast<double>(s) / static_cast<double>(X.dim(axes[i]));
      }
      if (a_.policy != 0) {
        double sc = a_.policy == 1 ? 1e300 : 0.0;
        for (size_t i = 0; i < na; ++i)
          sc = a_.policy == 1 ? std::min(sc, scale[axes[i]]) : std::max(sc, scale[axes[i]]);
        for (size_t i = 0; i < na; ++i) {
          scale[axes[i]] = sc;
          out[axes[i]] = static_cast<int64_t>(sc * static_cast<double>(X.dim(axes[i])) + 0.5);
        }
      }
    } else {
      if (scales->type() != dtype::f32) return ctx.fail("scales must be float32, got {}", dtype_name(scales->type()));
      if (static_cast<size_t>(scales->numel()) != na) return ctx.fail("scales has {} values for {} axes", scales->numel(), na);
      for (size_t i = 0; i < na; ++i) {
        double s = scales->data<float>()[i];
        if (!(s > 0) || !std::isfinite(s)) return ctx.fail("scales must be positive, got {}", s);
        scale[axes[i]] = s;
        double o = s * static_cast<double>(X.dim(axes[i]));
        if (o > 1e12) return ctx.fail("scale {} makes the output too large", s);
        out[axes[i]] = static_cast<int64_t>(o);
      }
    }
    // roi for tf_crop_and_resize: [starts..., ends...] over the axes (or all dims).
    std::vector<double> roi_s(r, 0.0), roi_e(r, 1.0);
    if (a_.coord == ctm::tf_crop_and_resize) {
      if (!roi) return ctx.fail("tf_crop_and_resize needs roi");
      const size_t nr = static_cast<size_t>(roi->numel());
      if (nr == 2 * na) {
        for (size_t i = 0; i < na; ++i) {
          roi_s[axes[i]] = roi->as_double(static_cast<int64_t>(i));
          roi_e[axes[i]] = roi->as_double(static_cast<int64_t>(na + i));
        }
      } else if (nr == 2 * r) {
        for (size_t i = 0; i < r; ++i) {
          roi_s[i] = roi->as_double(static_cast<int64_t>(i));
          roi_e[i] = roi->as_double(static_cast<int64_t>(r + i));
        }
      } else {
        return ctx.fail("roi has {} values, expected {}", nr, 2 * na);
      }
    }
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, X.type(), out));
    if (y->numel() == 0) return status::ok();
    for (size_t d = 0; d < r; ++d)
      if (X.dim(d) == 0) return ctx.fail("cannot resize an empty axis {} to {}", d, out[d]);
    std::vector<axis_taps> taps(r);
    for (size_t d = 0; d < r; ++d)
      GG_RETURN_IF_ERROR(make_taps(ctx, a_, X.dim(d), out[d], scale[d], roi_s[d], roi_e[d], &taps[d]));

    if (a_.mode == rmode::nearest) {
      std::vector<std::vector<int64_t>> idx(r);
      for (size_t d = 0; d < r; ++d) idx[d] = nearest_index(taps[d]);
      bool ok = dispatch_all(X.type(), [&](auto tag) {
        using T = decltype(tag);
        nearest_gather<T>(ctx, X.data<T>(), X.shape(), idx, static_cast<T>(a_.extrapolation), y->data<T>(), out);
      });
      if (!ok) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
      return status::ok();
    }
    if (X.type() == dtype::f32) return interp<float>(ctx, X, taps, y);
    if (X.type() == dtype::f64) return interp<double>(ctx, X, taps, y);
    return ctx.fail("linear and cubic modes support float and double, got {}", dtype_name(X.type()));
  }

  template <typename T>
  status interp(kernel_context& ctx, const tensor& X, const std::vector<axis_taps>& taps, tensor* y) {
    const size_t r = X.rank();
    std::vector<size_t> order;
    for (size_t d = 0; d < r; ++d)
      if (!taps[d].identity) order.push_back(d);
    // Shrinking axes first keeps the intermediates small.
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return static_cast<double>(taps[a].out) / taps[a].in < static_cast<double>(taps[b].out) / taps[b].in;
    });
    if (order.empty()) {
      std::memcpy(y->raw(), X.raw(), X.bytes());
      return status::ok();
    }
    shape_t dims = X.shape();
    std::vector<T> bufs[2];
    const T* src = X.data<T>();
    const T ev = static_cast<T>(a_.extrapolation);
    for (size_t i = 0; i < order.size(); ++i) {
      const size_t ax = order[i];
      shape_t nd = dims;
      nd[ax] = taps[ax].out;
      T* dst;
      if (i + 1 == order.size()) {
        dst = y->data<T>();
      } else {
        bufs[i % 2].resize(static_cast<size_t>(num_elements(nd)));
        dst = bufs[i % 2].data();
      }
      interp_pass<T>(ctx, src, dims, ax, taps[ax], ev, dst);
      src = dst;
      dims = nd;
    }
    return status::ok();
  }

  resize_attrs a_;
};

// ---------------------------------------------------------------------------------------
// DepthToSpace / SpaceToDepth: pure index permutations, copied by element size.

template <typename E>
void d2s_copy(const E* x, E* y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t b, bool crd, bool to_space) {
  // to_space: x [N, C, H, W] -> y [N, C/b², H*b, W*b]; else x [N, C, H, W] -> y [N, C*b², H/b, W/b].
  if (to_space) {
    const int64_t Co = C / (b * b);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < Co; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < b; ++i) {
            E* yr = y + ((n * Co + c) * H * b + h * b + i) * W * b;
            for (int64_t j = 0; j < b; ++j) {
              const int64_t ci = crd ? c * b * b + i * b + j : (i * b + j) * Co + c;
              const E* xr = x + ((n * C + ci) * H + h) * W;
              for (int64_t w = 0; w < W; ++w) yr[w * b + j] = xr[w];
            }
          }
  } else {
    const int64_t Ho = H / b, Wo = W / b, Co = C * b * b;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < Ho; ++h)
          for (int64_t i = 0; i < b; ++i) {
            const E* xr = x + ((n * C + c) * H + h * b + i) * W;
            for (int64_t j = 0; j < b; ++j) {
              const int64_t co = (i * b + j) * C + c;
              E* yr = y + ((n * Co + co) * Ho + h) * Wo;
              for (int64_t w = 0; w < Wo; ++w) yr[w] = xr[w * b + j];
            }
          }
  }
}

simple_kernel_fn depth_space(bool to_space) {
  return [to_space](kernel_context& ctx) -> status {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
    const tensor& X = *ctx.input(0);
    if (X.rank() != 4) return ctx.fail("X must be 4-D [N, C, H, W], got {}", shape_str(X.shape()));
    const int64_t b = ctx.op().attr_int("blocksize", 0);
    if (b < 1 || b > (1 << 16)) return ctx.fail("blocksize must be positive, got {}", b);
    std::string mode = ctx.op().attr_string("mode", "DCR");
    if (mode != "DCR" && mode != "CRD") return ctx.fail("unknown mode '{}'", mode);
    if (!to_space && ctx.op().has_attr("mode")) return ctx.fail("SpaceToDepth has no mode attribute");
    const int64_t N = X.dim(0), C = X.dim(1), H = X.dim(2), W = X.dim(3);
    shape_t out;
    if (to_space) {
      if (C % (b * b) != 0) return ctx.fail("{} channels is not a multiple of blocksize² {}", C, b * b);
      out = {N, C / (b * b), H * b, W * b};
    } else {
      if (H % b != 0 || W % b != 0) return ctx.fail("spatial dims {}x{} are not multiples of blocksize {}", H, W, b);
      out = {N, C * b * b, H / b, W / b};
    }
    const size_t es = dtype_size(X.type());
    if (es == 0) return ctx.fail("unsupported input type {}", dtype_name(X.type()));
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, X.type(), out));
    if (y->numel() == 0) return status::ok();
    const bool crd = mode == "CRD";
    switch (es) {
      case 1: d2s_copy(X.data<uint8_t>(), y->data<uint8_t>(), N, C, H, W, b, crd, to_space); break;
      case 2: d2s_copy(X.data<uint16_t>(), y->data<uint16_t>(), N, C, H, W, b, crd, to_space); break;
      case 4: d2s_copy(X.data<uint32_t>(), y->data<uint32_t>(), N, C, H, W, b, crd, to_space); break;
      case 8: d2s_copy(X.data<uint64_t>(), y->data<uint64_t>(), N, C, H, W, b, crd, to_space); break;
      default: return ctx.fail("unsupported element size {}", es);
    }
    return status::ok();
  };
}

}  // namespace

void register_resize_ops(op_registry& r) {
  r.add("Resize", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(resize_attrs a, parse_resize(n));
    return std::unique_ptr<kernel>(std::make_unique<resize_kernel>(std::move(a)));
  });
  r.add("DepthToSpace", simple_kernel(depth_space(true)));
  r.add("SpaceToDepth", simple_kernel(depth_space(false)));
}

}  // namespace gpugrid::cpu
