// Signal ops (opset 17): HannWindow, HammingWindow, BlackmanWindow, DFT, STFT.
//
// A window of `size` points (a scalar int32/int64 input) in output_datatype (float, double,
// float16 or bfloat16; default float): w[n] = sum_k (-1)^k a_k cos(2 pi k n / N) with
// N = size when periodic (the default) and size - 1 when symmetric, as the ONNX reference.
// A negative or absurd size is a one-line error.
//
// DFT: x [batch, n1, ..., nk, 1 (real) or 2 (complex)] -> [..., 2], along `axis` (default 1;
// not the last), of length dft_length (input 1; default the axis' length: shorter signals are
// zero-padded, longer ones cut), inverse (scaled by 1/N), onesided (only the N/2 + 1 first
// bins). STFT: signal [batch, length, 1 or 2], frame_step, window [frame_length] (optional),
// frame_length (optional) -> [batch, frames, bins, 2] with frames = (length - frame_length) /
// frame_step + 1, onesided by default. Both compute the transform directly (O(N^2) per line,
// in double), which is exact but not fast for long signals.
//
// MelWeightMatrix: [dft_length / 2 + 1, num_mel_bins] triangular filters between
// lower_edge_hertz and upper_edge_hertz, placed on FFT bins as the ONNX reference does
// (mel = 2595 log10(1 + hz / 700), num_mel_bins + 2 points, floor((dft_length + 1) hz / rate)).
#include <complex>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

using helpers::check_inputs;

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kMaxWindow = int64_t{1} << 28;

struct window_attrs {
  dtype type = dtype::f32;
  bool periodic = true;
  std::vector<double> coeffs;  // a_0, a_1, ...
};

status run_window(kernel_context& ctx, const window_attrs& a) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& s = *ctx.input(0);
  if ((s.type() != dtype::i32 && s.type() != dtype::i64) || s.numel() != 1)
    return ctx.fail("size must be one int32 or int64 value, got {} {}", dtype_name(s.type()), shape_str(s.shape()));
  const int64_t size = s.as_int64(0);
  if (size < 0 || size > kMaxWindow) return ctx.fail("size {} is outside [0, {}]", size, kMaxWindow);
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, a.type, {size}));
  const double n_div = a.periodic ? double(size) : double(size - 1);
  for (int64_t n = 0; n < size; ++n) {
    double v = 0, sign = 1;
    for (size_t k = 0; k < a.coeffs.size(); ++k, sign = -sign)
      v += sign * a.coeffs[k] * (k == 0 ? 1.0 : std::cos(2 * kPi * double(k) * double(n) / n_div));
    switch (a.type) {
      case dtype::f32: y->data<float>()[n] = static_cast<float>(v); break;
      case dtype::f64: y->data<double>()[n] = v; break;
      case dtype::f16: y->data<half>()[n] = half(static_cast<float>(v)); break;
      default: y->data<bfloat16>()[n] = bfloat16(static_cast<float>(v)); break;
    }
  }
  return status::ok();
}

kernel_factory window_factory(std::vector<double> coeffs) {
  return [coeffs](const node& n) -> expected<std::unique_ptr<kernel>> {
    window_attrs a;
    a.coeffs = coeffs;
    a.periodic = n.attr_int("periodic", 1) != 0;
    const int64_t code = n.attr_int("output_datatype", 1);
    dtype t = dtype::undefined;
    if (!dtype_from_onnx(static_cast<int32_t>(code), &t) || !is_float(t))
      return invalid_input("{}: output_datatype {} is not supported (float, double, float16, bfloat16)", n.describe(),
                           code);
    a.type = t;
    return simple_kernel([a](kernel_context& ctx) { return run_window(ctx, a); })(n);
  };
}

using cplx = std::complex<double>;
constexpr int64_t kMaxDft = int64_t{1} << 20;

// Reads element (i) of a [.., 1 or 2] real/complex layout as a complex number.
cplx load_c(const tensor& x, int64_t base, bool complex_in) {
  return complex_in ? cplx(x.as_double(base), x.as_double(base + 1)) : cplx(x.as_double(base), 0);
}

void store_f(tensor* y, int64_t i, double v) {
  switch (y->type()) {
    case dtype::f32: y->data<float>()[i] = static_cast<float>(v); break;
    case dtype::f64: y->data<double>()[i] = v; break;
    case dtype::f16: y->data<half>()[i] = half(static_cast<float>(v)); break;
    default: y->data<bfloat16>()[i] = bfloat16(static_cast<float>(v)); break;
  }
}

// out[k] = scale * sum_j in[j] e^{sign 2 pi i j k / n} for k < bins (in has n points).
void dft_line(const std::vector<cplx>& in, int64_t n, int64_t bins, bool inverse, std::vector<cplx>* out) {
  out->assign(static_cast<size_t>(bins), cplx(0, 0));
  const double sign = inverse ? 1.0 : -1.0;
  for (int64_t k = 0; k < bins; ++k) {
    cplx acc(0, 0);
    for (int64_t j = 0; j < n; ++j) {
      const double ang = sign * 2 * kPi * double((j * k) % n) / double(n);
      acc += in[j] * cplx(std::cos(ang), std::sin(ang));
    }
    (*out)[k] = inverse ? acc / double(n) : acc;
  }
}

status check_signal(kernel_context& ctx, const tensor& x) {
  if (!is_float(x.type())) return ctx.fail("the signal must be a float tensor, got {}", dtype_name(x.type()));
  if (x.rank() < 3 || (x.dim(x.rank() - 1) != 1 && x.dim(x.rank() - 1) != 2))
    return ctx.fail("the signal must be [batch, ..., 1 or 2], got {}", shape_str(x.shape()));
  return status::ok();
}

expected<int64_t> scalar_int(kernel_context& ctx, size_t i, const char* what) {
  const tensor* t = ctx.input(i);
  if (!is_integer(t->type()) || t->numel() != 1)
    return ctx.fail("{} must be one integer, got {} {}", what, dtype_name(t->type()), shape_str(t->shape()));
  return t->as_int64(0);
}

status run_dft(kernel_context& ctx, int64_t axis_attr, bool inverse, bool onesided) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 2, 1));
  const tensor& x = *ctx.input(0);
  GG_RETURN_IF_ERROR(check_signal(ctx, x));
  const int64_t r = static_cast<int64_t>(x.rank());
  int64_t axis = axis_attr < 0 ? axis_attr + r : axis_attr;
  if (axis < 0 || axis >= r - 1) return ctx.fail("axis {} is out of range for a signal of rank {}", axis_attr, r);
  const bool complex_in = x.dim(r - 1) == 2;
  const int64_t n_in = x.dim(axis);
  int64_t n = n_in;
  if (ctx.input(1) && ctx.input(1)->defined()) {
    GG_ASSIGN_OR_RETURN(n, scalar_int(ctx, 1, "dft_length"));
  }
  if (n < 1 || n > kMaxDft) return ctx.fail("dft_length {} is outside [1, {}]", n, kMaxDft);
  const int64_t bins = onesided ? n / 2 + 1 : n;
  shape_t out_shape = x.shape();
  out_shape[axis] = bins;
  out_shape[r - 1] = 2;
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, x.type(), out_shape));
  const int64_t outer = helpers::prod(x.shape(), 0, axis), inner = helpers::prod(x.shape(), axis + 1, r - 1);
  const int64_t c_in = x.dim(r - 1);
  std::vector<cplx> line(static_cast<size_t>(n)), res;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      for (int64_t j = 0; j < n; ++j)
        line[j] = j < n_in ? load_c(x, ((o * n_in + j) * inner + i) * c_in, complex_in) : cplx(0, 0);
      dft_line(line, n, bins, inverse, &res);
      for (int64_t k = 0; k < bins; ++k) {
        const int64_t at = ((o * bins + k) * inner + i) * 2;
        store_f(y, at, res[k].real());
        store_f(y, at + 1, res[k].imag());
      }
    }
  return status::ok();
}

status run_stft(kernel_context& ctx, bool onesided) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 4, 2));
  const tensor& x = *ctx.input(0);
  GG_RETURN_IF_ERROR(check_signal(ctx, x));
  if (x.rank() != 3) return ctx.fail("the signal must be [batch, length, 1 or 2], got {}", shape_str(x.shape()));
  GG_ASSIGN_OR_RETURN(int64_t step, scalar_int(ctx, 1, "frame_step"));
  const tensor* window = ctx.input(2) && ctx.input(2)->defined() ? ctx.input(2) : nullptr;
  int64_t frame = -1;
  if (ctx.input(3) && ctx.input(3)->defined()) {
    GG_ASSIGN_OR_RETURN(frame, scalar_int(ctx, 3, "frame_length"));
  }
  if (window) {
    if (window->rank() != 1 || !is_float(window->type()))
      return ctx.fail("window must be a float vector, got {} {}", dtype_name(window->type()), shape_str(window->shape()));
    if (frame >= 0 && frame != window->dim(0))
      return ctx.fail("frame_length {} differs from the window's length {}", frame, window->dim(0));
    frame = window->dim(0);
  }
  if (frame < 0) return ctx.fail("needs a window or a frame_length");
  const int64_t B = x.dim(0), L = x.dim(1);
  const bool complex_in = x.dim(2) == 2;
  if (step < 1) return ctx.fail("frame_step must be positive, got {}", step);
  if (frame < 1 || frame > L || frame > kMaxDft)
    return ctx.fail("frame_length {} is outside [1, signal length {}]", frame, L);
  if (complex_in && onesided) return ctx.fail("onesided output needs a real signal");
  const int64_t frames = (L - frame) / step + 1;
  const int64_t bins = onesided ? frame / 2 + 1 : frame;
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, x.type(), {B, frames, bins, 2}));
  std::vector<cplx> line(static_cast<size_t>(frame)), res;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t f = 0; f < frames; ++f) {
      for (int64_t j = 0; j < frame; ++j) {
        const double w = window ? window->as_double(j) : 1.0;
        line[j] = load_c(x, (b * L + f * step + j) * x.dim(2), complex_in) * w;
      }
      dft_line(line, frame, bins, false, &res);
      for (int64_t k = 0; k < bins; ++k) {
        const int64_t at = ((b * frames + f) * bins + k) * 2;
        store_f(y, at, res[k].real());
        store_f(y, at + 1, res[k].imag());
      }
    }
  return status::ok();
}

status run_mel(kernel_context& ctx, dtype out_type) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 5, 5, 5));
  GG_ASSIGN_OR_RETURN(int64_t mels, scalar_int(ctx, 0, "num_mel_bins"));
  GG_ASSIGN_OR_RETURN(int64_t dft_length, scalar_int(ctx, 1, "dft_length"));
  GG_ASSIGN_OR_RETURN(int64_t rate, scalar_int(ctx, 2, "sample_rate"));
  for (size_t i : {size_t{3}, size_t{4}})
    if (!is_float(ctx.input(i)->type()) || ctx.input(i)->numel() != 1)
      return ctx.fail("input {} must be one float value", i);
  const double lo = ctx.input(3)->as_double(0), hi = ctx.input(4)->as_double(0);
  if (mels < 1 || mels > 65536) return ctx.fail("num_mel_bins {} is outside [1, 65536]", mels);
  if (dft_length < 1 || dft_length > kMaxDft) return ctx.fail("dft_length {} is outside [1, {}]", dft_length, kMaxDft);
  if (rate < 1) return ctx.fail("sample_rate must be positive, got {}", rate);
  if (!(lo >= 0) || !(hi > lo) || hi > double(rate)) return ctx.fail("need 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate");
  const int64_t spec_bins = dft_length / 2 + 1;
  const double lo_mel = 2595 * std::log10(1 + lo / 700), hi_mel = 2595 * std::log10(1 + hi / 700);
  const double step = (hi_mel - lo_mel) / double(mels + 2);
  std::vector<int64_t> fb(static_cast<size_t>(mels + 2));
  for (int64_t i = 0; i < mels + 2; ++i) {
    const double hz = 700 * (std::pow(10.0, (double(i) * step + lo_mel) / 2595) - 1);
    fb[i] = static_cast<int64_t>(std::floor(double(dft_length + 1) * hz / double(rate)));
    fb[i] = std::min<int64_t>(std::max<int64_t>(fb[i], 0), spec_bins - 1);
  }
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, out_type, {spec_bins, mels}));
  for (int64_t i = 0; i < mels; ++i) {
    const int64_t l = fb[i], c = fb[i + 1], h = fb[i + 2];
    if (c == l) store_f(y, c * mels + i, 1.0);
    else
      for (int64_t j = l; j <= c; ++j) store_f(y, j * mels + i, double(j - l) / double(c - l));
    if (h > c)
      for (int64_t j = c; j < h; ++j) store_f(y, j * mels + i, double(h - j) / double(h - c));
  }
  return status::ok();
}

}  // namespace

void register_signal_ops(op_registry& r) {
  r.add("HannWindow", window_factory({0.5, 0.5}));
  r.add("HammingWindow", window_factory({25.0 / 46.0, 21.0 / 46.0}));
  r.add("BlackmanWindow", window_factory({0.42, 0.5, 0.08}));
  r.add("DFT", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    const int64_t axis = n.attr_int("axis", 1);
    const bool inverse = n.attr_int("inverse", 0) != 0, onesided = n.attr_int("onesided", 0) != 0;
    if (inverse && onesided) return invalid_input("{}: inverse with onesided is not supported", n.describe());
    return simple_kernel([=](kernel_context& ctx) { return run_dft(ctx, axis, inverse, onesided); })(n);
  });
  r.add("MelWeightMatrix", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    const int64_t code = n.attr_int("output_datatype", 1);
    dtype t = dtype::undefined;
    if (!dtype_from_onnx(static_cast<int32_t>(code), &t) || !is_float(t))
      return invalid_input("{}: output_datatype {} is not supported (float, double, float16, bfloat16)", n.describe(),
                           code);
    return simple_kernel([t](kernel_context& ctx) { return run_mel(ctx, t); })(n);
  });
  r.add("STFT", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    const bool onesided = n.attr_int("onesided", 1) != 0;
    return simple_kernel([=](kernel_context& ctx) { return run_stft(ctx, onesided); })(n);
  });
}

}  // namespace gpugrid::cpu
