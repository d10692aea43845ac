// RoiAlign (opset 10 and 16): X [N, C, H, W], rois [R, 4] as (x1, y1, x2, y2), batch_indices
// [R] -> Y [R, C, output_height, output_width].
//
// Follows the ONNX reference implementation (onnxruntime's): each output bin averages (avg) or
// takes the largest (max) of sampling_ratio² bilinear samples (or ceil(bin size) per axis when
// sampling_ratio is 0). Opset 16 added coordinate_transformation_mode (default half_pixel,
// which shifts the box by half a pixel); opset 10 behaves as output_half_pixel, where boxes
// smaller than one pixel are stretched to one. In max mode, as in the reference, a sample is
// the largest of its four weighted taps. Tap positions and weights are shared by all channels.
#include <cmath>
#include <mutex>

#include "kernels/cpu/nn_internal.h"

namespace gpugrid::cpu {
namespace {

using nn::check_inputs;
using nn::parallel;

struct roi_align_attrs {
  bool max_mode = false;
  bool half_pixel = true;
  int64_t out_h = 1, out_w = 1;
  int64_t sampling_ratio = 0;
  float spatial_scale = 1.f;
};

expected<roi_align_attrs> parse_roi_align(const node& n) {
  roi_align_attrs a;
  auto bad = [&](const std::string& m) { return invalid_input("{}: {}", n.describe(), m); };
  const std::string mode = n.attr_string("mode", "avg");
  if (mode == "avg") a.max_mode = false;
  else if (mode == "max") a.max_mode = true;
  else return bad("unknown mode '" + mode + "' (avg or max)");
  const bool v10 = n.opset > 0 && n.opset < 16;
  if (v10 && n.has_attr("coordinate_transformation_mode"))
    return bad("coordinate_transformation_mode needs opset 16 or later");
  const std::string ctm = n.attr_string("coordinate_transformation_mode", v10 ? "output_half_pixel" : "half_pixel");
  if (ctm == "half_pixel") a.half_pixel = true;
  else if (ctm == "output_half_pixel") a.half_pixel = false;
  else return bad("unknown coordinate_transformation_mode '" + ctm + "' (half_pixel or output_half_pixel)");
  a.out_h = n.attr_int("output_height", 1);
  a.out_w = n.attr_int("output_width", 1);
  if (a.out_h < 1 || a.out_w < 1 || a.out_h > (1 << 20) || a.out_w > (1 << 20))
    return bad(fmt::format("output_height and output_width must be positive, got {} and {}", a.out_h, a.out_w));
  a.sampling_ratio = n.attr_int("sampling_ratio", 0);
  if (a.sampling_ratio < 0 || a.sampling_ratio > 1024)
    return bad(fmt::format("sampling_ratio must be 0 (adaptive) to 1024, got {}", a.sampling_ratio));
  a.spatial_scale = n.attr_float("spatial_scale", 1.f);
  if (!std::isfinite(a.spatial_scale)) return bad("spatial_scale must be finite");
  return a;
}

constexpr double kMaxSamples = double(1 << 24);

// One bilinear sample: four flat offsets into an H x W plane and their weights.
struct sample_taps {
  int64_t pos[4];
  double w[4];
};

class roi_align_kernel final : public kernel {
 public:
  explicit roi_align_kernel(roi_align_attrs a) : a_(a) {}

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 3, 3, 3));
    const tensor& X = *ctx.input(0);
    const tensor& rois = *ctx.input(1);
    const tensor& bi = *ctx.input(2);
    if (X.rank() != 4) return ctx.fail("X must be 4-D [N, C, H, W], got {}", shape_str(X.shape()));
    if (rois.rank() != 2 || rois.dim(1) != 4) return ctx.fail("rois must be [num_rois, 4], got {}", shape_str(rois.shape()));
    if (bi.rank() != 1 || bi.dim(0) != rois.dim(0))
      return ctx.fail("batch_indices must be [{}] (one per roi), got {}", rois.dim(0), shape_str(bi.shape()));
    if (X.type() != dtype::f32 && X.type() != dtype::f64)
      return ctx.fail("X must be float or double, got {}", dtype_name(X.type()));
    if (rois.type() != X.type()) return ctx.fail("rois must be {} like X, got {}", dtype_name(X.type()), dtype_name(rois.type()));
    if (bi.type() != dtype::i64 && bi.type() != dtype::i32)
      return ctx.fail("batch_indices must be int64, got {}", dtype_name(bi.type()));
    const int64_t R = rois.dim(0);
    for (int64_t i = 0; i < R; ++i) {
      const int64_t b = static_cast<int64_t>(bi.as_double(i));
      if (b < 0 || b >= X.dim(0)) return ctx.fail("batch_indices[{}] = {} is outside [0, {})", i, b, X.dim(0));
    }
    for (int64_t i = 0; i < R * 4; ++i)
      if (!std::isfinite(rois.as_double(i))) return ctx.fail("rois[{}] is not finite", i / 4);
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, X.type(), {R, X.dim(1), a_.out_h, a_.out_w}));
    if (y->numel() == 0) return status::ok();
    if (X.dim(2) == 0 || X.dim(3) == 0) return ctx.fail("X has no pixels: shape {}", shape_str(X.shape()));
    if (X.type() == dtype::f32) return align<float>(ctx, X, rois, bi, y);
    return align<double>(ctx, X, rois, bi, y);
  }

 private:
  template <typename T>
  status align(kernel_context& ctx, const tensor& X, const tensor& rois, const tensor& bi, tensor* y) const {
    const int64_t C = X.dim(1), H = X.dim(2), W = X.dim(3), R = rois.dim(0);
    const int64_t PH = a_.out_h, PW = a_.out_w;
    const T* x = X.data<T>();
    T* yp = y->data<T>();
    std::string err;
    std::mutex err_mu;
    parallel(ctx, R, 1, [&](int64_t b, int64_t e) {
      std::vector<sample_taps> taps;
      for (int64_t r = b; r < e; ++r) {
        const double offset = a_.half_pixel ? 0.5 : 0.0;
        const double x1 = rois.as_double(r * 4 + 0) * a_.spatial_scale - offset;
        const double y1 = rois.as_double(r * 4 + 1) * a_.spatial_scale - offset;
        const double x2 = rois.as_double(r * 4 + 2) * a_.spatial_scale - offset;
        const double y2 = rois.as_double(r * 4 + 3) * a_.spatial_scale - offset;
        double rw = x2 - x1, rh = y2 - y1;
        if (!a_.half_pixel) {
          rw = std::max(rw, 1.0);
          rh = std::max(rh, 1.0);
        }
        const double bh = rh / static_cast<double>(PH), bw = rw / static_cast<double>(PW);
        const double gh_d = a_.sampling_ratio > 0 ? static_cast<double>(a_.sampling_ratio) : std::ceil(rh / static_cast<double>(PH));
        const double gw_d = a_.sampling_ratio > 0 ? static_cast<double>(a_.sampling_ratio) : std::ceil(rw / static_cast<double>(PW));
        // A box far larger than the image would sample without end: cap the samples per roi.
        if (!(gh_d * gw_d * static_cast<double>(PH * PW) <= kMaxSamples)) {
          std::lock_guard<std::mutex> lock(err_mu);
          err = fmt::format("roi {} needs {}x{} samples per bin, too many", r, gh_d, gw_d);
          return;
        }
        const int64_t gh = std::max<int64_t>(0, static_cast<int64_t>(gh_d));
        const int64_t gw = std::max<int64_t>(0, static_cast<int64_t>(gw_d));
        const double count = static_cast<double>(std::max<int64_t>(gh * gw, 1));
        taps.resize(static_cast<size_t>(PH * PW * gh * gw));
        size_t k = 0;
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t pw = 0; pw < PW; ++pw)
            for (int64_t iy = 0; iy < gh; ++iy) {
              const double yy = y1 + static_cast<double>(ph) * bh + (static_cast<double>(iy) + 0.5) * bh / static_cast<double>(gh);
              for (int64_t ix = 0; ix < gw; ++ix, ++k) {
                double xx = x1 + static_cast<double>(pw) * bw + (static_cast<double>(ix) + 0.5) * bw / static_cast<double>(gw);
                double yv = yy;
                sample_taps& t = taps[k];
                if (yv < -1.0 || yv > static_cast<double>(H) || xx < -1.0 || xx > static_cast<double>(W)) {
                  t = sample_taps{{0, 0, 0, 0}, {0, 0, 0, 0}};
                  continue;
                }
                yv = std::max(yv, 0.0);
                xx = std::max(xx, 0.0);
                int64_t yl = static_cast<int64_t>(yv), xl = static_cast<int64_t>(xx), yh, xh;
                if (yl >= H - 1) { yh = yl = H - 1; yv = static_cast<double>(yl); } else { yh = yl + 1; }
                if (xl >= W - 1) { xh = xl = W - 1; xx = static_cast<double>(xl); } else { xh = xl + 1; }
                const double ly = yv - static_cast<double>(yl), lx = xx - static_cast<double>(xl);
                const double hy = 1 - ly, hx = 1 - lx;
                t = sample_taps{{yl * W + xl, yl * W + xh, yh * W + xl, yh * W + xh}, {hy * hx, hy * lx, ly * hx, ly * lx}};
              }
            }
        const int64_t batch = static_cast<int64_t>(bi.as_double(r));
        const int64_t per_bin = gh * gw;
        for (int64_t c = 0; c < C; ++c) {
          const T* plane = x + (batch * C + c) * H * W;
          T* out = yp + (r * C + c) * PH * PW;
          for (int64_t bin = 0; bin < PH * PW; ++bin) {
            const sample_taps* s = taps.data() + bin * per_bin;
            double v = 0;
            if (!a_.max_mode) {
              for (int64_t i = 0; i < per_bin; ++i)
                v += s[i].w[0] * plane[s[i].pos[0]] + s[i].w[1] * plane[s[i].pos[1]] + s[i].w[2] * plane[s[i].pos[2]] +
                     s[i].w[3] * plane[s[i].pos[3]];
              v /= count;
            } else {
              for (int64_t i = 0; i < per_bin; ++i) {
                double m = s[i].w[0] * plane[s[i].pos[0]];
                for (int q = 1; q < 4; ++q) m = std::max(m, s[i].w[q] * static_cast<double>(plane[s[i].pos[q]]));
                v = i == 0 ? m : std::max(v, m);
              }
            }
            out[bin] = static_cast<T>(v);
          }
        }
      }
    });
    if (!err.empty()) return ctx.fail("{}", err);
    return status::ok();
  }

  roi_align_attrs a_;
};

}  // namespace

void register_roi_align_ops(op_registry& r) {
  r.add("RoiAlign", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(roi_align_attrs a, parse_roi_align(n));
    return std::unique_ptr<kernel>(std::make_unique<roi_align_kernel>(a));
  });
}

}  // namespace gpugrid::cpu
