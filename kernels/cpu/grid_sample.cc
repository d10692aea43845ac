// GridSample (opset 16: 4-D, modes bilinear/nearest/bicubic; opset 20: 1 to 3 spatial dims,
// modes linear/nearest/cubic; either spelling is accepted in both).
//
// Follows the ONNX reference implementation (itself PyTorch's grid_sampler): each output
// point's grid entry (x, y[, z], innermost spatial axis first) is denormalised per axis, moved
// inside the border by padding_mode, and interpolated from the taps of each axis; a tap outside
// the input reads 0 (zeros), the edge (border) or its mirror image (reflection). The taps of
// one output point are shared by all channels.
#include <cmath>

#include "kernels/cpu/nn_internal.h"

namespace gpugrid::cpu {
namespace {

using nn::check_inputs;
using nn::parallel;

enum class gs_mode { linear, nearest, cubic };
enum class gs_padding { zeros, border, reflection };

struct grid_sample_attrs {
  gs_mode mode = gs_mode::linear;
  gs_padding padding = gs_padding::zeros;
  bool align_corners = false;
};

expected<grid_sample_attrs> parse_grid_sample(const node& n) {
  grid_sample_attrs a;
  const std::string mode = n.attr_string("mode", n.opset > 0 && n.opset < 20 ? "bilinear" : "linear");
  if (mode == "linear" || mode == "bilinear") a.mode = gs_mode::linear;
  else if (mode == "nearest") a.mode = gs_mode::nearest;
  else if (mode == "cubic" || mode == "bicubic") a.mode = gs_mode::cubic;
  else return invalid_input("{}: unknown mode '{}' (linear, nearest or cubic)", n.describe(), mode);
  const std::string pad = n.attr_string("padding_mode", "zeros");
  if (pad == "zeros") a.padding = gs_padding::zeros;
  else if (pad == "border") a.padding = gs_padding::border;
  else if (pad == "reflection") a.padding = gs_padding::reflection;
  else return invalid_input("{}: unknown padding_mode '{}' (zeros, border or reflection)", n.describe(), pad);
  a.align_corners = n.attr_int("align_corners", 0) != 0;
  return a;
}

// Mirrors x into [lo, hi] by its nearer edge, as often as needed.
double reflect(double x, double lo, double hi) {
  const double range = hi - lo;
  if (range <= 0) return lo;
  if (x < lo) {
    const double dx = lo - x;
    const double k = std::floor(dx / range);
    const double r = dx - k * range;
    return std::fmod(k, 2.0) == 0 ? lo + r : hi - r;
  }
  if (x > hi) {
    const double dx = x - hi;
    const double k = std::floor(dx / range);
    const double r = dx - k * range;
    return std::fmod(k, 2.0) == 0 ? hi - r : lo + r;
  }
  return x;
}

void cubic_coeffs(double t, double* c) {
  const double A = -0.75;
  t = std::abs(t);
  c[0] = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
  c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
  c[2] = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
  c[3] = ((A * (2 - t) - 5 * A) * (2 - t) + 8 * A) * (2 - t) - 4 * A;
}

constexpr int kMaxSpatial = 3;
constexpr int kMaxTaps = 4;

// One axis of one output point: up to four input indices (-1: reads zero) and their weights.
struct axis_taps {
  int n = 0;
  int64_t idx[kMaxTaps];
  double w[kMaxTaps];
};

class grid_sample_kernel final : public kernel {
 public:
  explicit grid_sample_kernel(grid_sample_attrs a) : a_(a) {}

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 2, 2));
    const tensor& X = *ctx.input(0);
    const tensor& G = *ctx.input(1);
    const size_t r = X.rank();
    if (r < 3 || r > 2 + kMaxSpatial)
      return ctx.fail("X must have 1 to {} spatial dims ([N, C, ...]), got shape {}", kMaxSpatial, shape_str(X.shape()));
    const size_t sd = r - 2;
    if (G.rank() != r || G.dim(0) != X.dim(0) || G.dim(r - 1) != static_cast<int64_t>(sd))
      return ctx.fail("grid must be [N, out..., {}] for X of shape {}, got {}", sd, shape_str(X.shape()),
                      shape_str(G.shape()));
    if (X.type() != dtype::f32 && X.type() != dtype::f64)
      return ctx.fail("X must be float or double, got {}", dtype_name(X.type()));
    if (G.type() != dtype::f32 && G.type() != dtype::f64)
      return ctx.fail("grid must be float or double, got {}", dtype_name(G.type()));
    shape_t out = {X.dim(0), X.dim(1)};
    for (size_t d = 1; d + 1 < r; ++d) out.push_back(G.dim(d));
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, X.type(), out));
    if (y->numel() == 0) return status::ok();
    for (size_t d = 2; d < r; ++d)
      if (X.dim(d) == 0) return ctx.fail("X has an empty spatial dim: shape {}", shape_str(X.shape()));
    if (X.type() == dtype::f32) sample<float>(ctx, X, G, y);
    else sample<double>(ctx, X, G, y);
    return status::ok();
  }

 private:
  // The taps of one axis of length `len` at normalised coordinate g.
  void make_taps(double g, int64_t len, axis_taps* t, bool round_half_away) const {
    const double L = static_cast<double>(len);
    double x = a_.align_corners ? (g + 1) / 2 * (L - 1) : ((g + 1) * L - 1) / 2;
    x = static_cast<float>(x);  // the reference keeps coordinates in float32
    const double lo = a_.align_corners ? 0.0 : -0.5, hi = a_.align_corners ? L - 1 : L - 0.5;
    if (a_.mode == gs_mode::nearest) x = round_half_away ? std::round(x) : std::nearbyint(x);
    // Cubic taps are each padded on their own (as PyTorch and onnxruntime do); the other
    // modes move the point itself inside first.
    if ((x < lo || x > hi) && a_.mode != gs_mode::cubic) {
      if (a_.padding == gs_padding::border) x = std::min(std::max(x, 0.0), L - 1);
      else if (a_.padding == gs_padding::reflection) x = reflect(x, lo, hi);
    }
    auto tap = [&](int64_t i) -> int64_t {
      if (i >= 0 && i < len) return i;
      switch (a_.padding) {
        case gs_padding::zeros: return -1;
        case gs_padding::border: return i < 0 ? 0 : len - 1;
        case gs_padding::reflection: {
          const int64_t j = static_cast<int64_t>(reflect(static_cast<double>(i), lo, hi));  // truncates, as int()
          return std::min(std::max<int64_t>(j, 0), len - 1);
        }
      }
      return -1;
    };
    if (!std::isfinite(x)) {  // NaN grid entries read nothing
      t->n = 1;
      t->idx[0] = -1;
      t->w[0] = 0;
      return;
    }
    x = std::max(-1e15, std::min(1e15, x));
    if (a_.mode == gs_mode::nearest) {
      t->n = 1;
      t->idx[0] = tap(static_cast<int64_t>(x));
      t->w[0] = 1;
    } else if (a_.mode == gs_mode::linear) {
      const double f = std::floor(x);
      const int64_t i0 = static_cast<int64_t>(f);
      t->n = 2;
      t->idx[0] = tap(i0);
      t->idx[1] = tap(i0 + 1);
      t->w[0] = 1 - (x - f);
      t->w[1] = x - f;
    } else {
      const double f = std::floor(x);
      const int64_t i0 = static_cast<int64_t>(f);
      t->n = 4;
      cubic_coeffs(x - f, t->w);
      for (int k = 0; k < 4; ++k) t->idx[k] = tap(i0 - 1 + k);
    }
  }

  template <typename T>
  void sample(kernel_context& ctx, const tensor& X, const tensor& G, tensor* y) const {
    const size_t r = X.rank(), sd = r - 2;
    const int64_t N = X.dim(0), C = X.dim(1);
    int64_t in_size = 1, out_size = 1;
    int64_t in_dims[kMaxSpatial], in_stride[kMaxSpatial];
    for (size_t d = 0; d < sd; ++d) {
      in_dims[d] = X.dim(2 + d);
      in_size *= in_dims[d];
      out_size *= G.dim(1 + d);
    }
    for (size_t d = sd; d-- > 0;) in_stride[d] = d + 1 == sd ? 1 : in_stride[d + 1] * in_dims[d + 1];
    const bool round_half_away = sd == 3;  // PyTorch's 3-D nearest uses std::round
    const T* x = X.data<T>();
    T* yp = y->data<T>();
    parallel(ctx, N * out_size, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      axis_taps taps[kMaxSpatial];
      for (int64_t p = b; p < e; ++p) {
        const int64_t n = p / out_size, o = p % out_size;
        // grid[n, o, :] holds the innermost axis first.
        for (size_t d = 0; d < sd; ++d) {
          const int64_t gi = p * static_cast<int64_t>(sd) + static_cast<int64_t>(sd - 1 - d);
          const double g = G.type() == dtype::f32 ? G.data<float>()[gi] : G.data<double>()[gi];
          make_taps(g, in_dims[d], &taps[d], round_half_away);
        }
        // The product of the axes' taps: flat input offsets and weights.
        int64_t off[kMaxTaps * kMaxTaps * kMaxTaps];
        double wt[kMaxTaps * kMaxTaps * kMaxTaps];
        int count = 1;
        off[0] = 0;
        wt[0] = 1;
        for (size_t d = 0; d < sd; ++d) {
          int next = 0;
          int64_t noff[kMaxTaps * kMaxTaps * kMaxTaps];
          double nwt[kMaxTaps * kMaxTaps * kMaxTaps];
          for (int i = 0; i < count; ++i)
            for (int k = 0; k < taps[d].n; ++k) {
              const bool zero = off[i] < 0 || taps[d].idx[k] < 0;
              noff[next] = zero ? -1 : off[i] + taps[d].idx[k] * in_stride[d];
              nwt[next] = wt[i] * taps[d].w[k];
              ++next;
            }
          count = next;
          std::copy(noff, noff + count, off);
          std::copy(nwt, nwt + count, wt);
        }
        for (int64_t c = 0; c < C; ++c) {
          const T* xc = x + (n * C + c) * in_size;
          double acc = 0;
          for (int i = 0; i < count; ++i)
            if (off[i] >= 0) acc += wt[i] * static_cast<double>(xc[off[i]]);
          yp[(n * C + c) * out_size + o] = static_cast<T>(acc);
        }
      }
    });
  }

  grid_sample_attrs a_;
};

}  // namespace

void register_grid_sample_ops(op_registry& r) {
  r.add("GridSample", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(grid_sample_attrs a, parse_grid_sample(n));
    return std::unique_ptr<kernel>(std::make_unique<grid_sample_kernel>(a));
  });
}

}  // namespace gpugrid::cpu
