// Shrink (opset 9) and Det (opset 11).
//
// Shrink: y = x + bias where x < -lambd, x - bias where x > lambd, else 0; any numeric type
// (halves computed in float). Det: the determinant of each trailing [M, M] matrix of a float
// tensor [*, M, M] -> [*], by LU factorisation with partial pivoting in double.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

using helpers::check_inputs;

status run_shrink(kernel_context& ctx, double bias, double lambd) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& x = *ctx.input(0);
  auto f = [&](double v) { return v < -lambd ? v + bias : v > lambd ? v - bias : 0.0; };
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, x.type(), x.shape()));
  const int64_t n = x.numel();
  if (x.type() == dtype::f16 || x.type() == dtype::bf16) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = static_cast<float>(f(x.as_double(i)));
      if (x.type() == dtype::f16) y->data<half>()[i] = half(v);
      else y->data<bfloat16>()[i] = bfloat16(v);
    }
    return status::ok();
  }
  bool ok = dispatch_numeric(x.type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y->data<T>();
    for (int64_t i = 0; i < n; ++i) yp[i] = static_cast<T>(f(static_cast<double>(xp[i])));
  });
  if (!ok) return ctx.fail("input type {} is not numeric", dtype_name(x.type()));
  return status::ok();
}

status run_det(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 1, 1, 1));
  const tensor& x = *ctx.input(0);
  if (!is_float(x.type())) return ctx.fail("input must be a float type, got {}", dtype_name(x.type()));
  if (x.rank() < 2 || x.dim(x.rank() - 1) != x.dim(x.rank() - 2))
    return ctx.fail("input must be [*, M, M] (square matrices), got {}", shape_str(x.shape()));
  const int64_t m = x.dim(x.rank() - 1);
  shape_t out_shape(x.shape().begin(), x.shape().end() - 2);
  const int64_t batch = helpers::prod(out_shape, 0, out_shape.size());
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, x.type(), out_shape));
  std::vector<double> a(static_cast<size_t>(m * m));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < m * m; ++i) a[i] = x.as_double(b * m * m + i);
    double det = 1;
    for (int64_t k = 0; k < m && det != 0; ++k) {
      int64_t p = k;
      for (int64_t i = k + 1; i < m; ++i)
        if (std::fabs(a[i * m + k]) > std::fabs(a[p * m + k])) p = i;
      if (a[p * m + k] == 0) { det = 0; break; }
      if (p != k) {
        for (int64_t j = 0; j < m; ++j) std::swap(a[k * m + j], a[p * m + j]);
        det = -det;
      }
      det *= a[k * m + k];
      for (int64_t i = k + 1; i < m; ++i) {
        const double f = a[i * m + k] / a[k * m + k];
        for (int64_t j = k; j < m; ++j) a[i * m + j] -= f * a[k * m + j];
      }
    }
    switch (x.type()) {
      case dtype::f32: y->data<float>()[b] = static_cast<float>(det); break;
      case dtype::f64: y->data<double>()[b] = det; break;
      case dtype::f16: y->data<half>()[b] = half(static_cast<float>(det)); break;
      default: y->data<bfloat16>()[b] = bfloat16(static_cast<float>(det)); break;
    }
  }
  return status::ok();
}

}  // namespace

void register_shrink_det_ops(op_registry& r) {
  r.add("Shrink", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    const double bias = n.attr_float("bias", 0.f), lambd = n.attr_float("lambd", 0.5f);
    return simple_kernel([bias, lambd](kernel_context& ctx) { return run_shrink(ctx, bias, lambd); })(n);
  });
  r.add("Det", simple_kernel(run_det));
}

}  // namespace gpugrid::cpu
