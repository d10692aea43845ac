// Loss ops: NegativeLogLikelihoodLoss (opset 12/13) and SoftmaxCrossEntropyLoss (opset 12/13).
//
// Both take scores [N, C, d1, ..., dk] (or [N, C]) and integer targets [N, d1, ..., dk]; the
// loss of one element is -input[n, target, d] (times weight[target] when weights are given),
// 0 where target == ignore_index. reduction "none" keeps the target's shape, "sum" adds
// everything, "mean" divides the sum by the sum of the weights that were applied (the count of
// elements not ignored when there are no weights), as the ONNX reference does (0/0 is NaN).
// SoftmaxCrossEntropyLoss first takes log-softmax over axis 1 and may return it (log_prob).
// Arithmetic is in double; outputs have the scores' type (float, double, float16, bfloat16).
// A target outside [0, C) that is not ignore_index is a one-line error.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

using helpers::check_inputs;

enum class reduction { none, sum, mean };

struct loss_attrs {
  reduction red = reduction::mean;
  bool has_ignore = false;
  int64_t ignore_index = 0;
};

expected<loss_attrs> parse_loss(const node& n) {
  loss_attrs a;
  const std::string r = n.attr_string("reduction", "mean");
  if (r == "none") a.red = reduction::none;
  else if (r == "sum") a.red = reduction::sum;
  else if (r == "mean") a.red = reduction::mean;
  else return invalid_input("{}: unknown reduction '{}' (none, sum or mean)", n.describe(), r);
  a.has_ignore = n.has_attr("ignore_index");
  a.ignore_index = n.attr_int("ignore_index", 0);
  return a;
}

bool is_loss_float(dtype t) { return t == dtype::f32 || t == dtype::f64 || t == dtype::f16 || t == dtype::bf16; }

// Writes v into element i of a float tensor of any of the four float types.
inline void store(tensor* t, int64_t i, double v) {
  switch (t->type()) {
    case dtype::f32: t->data<float>()[i] = static_cast<float>(v); break;
    case dtype::f64: t->data<double>()[i] = v; break;
    case dtype::f16: t->data<half>()[i] = half(static_cast<float>(v)); break;
    case dtype::bf16: t->data<bfloat16>()[i] = bfloat16(static_cast<float>(v)); break;
    default: break;
  }
}

std::vector<double> to_doubles(const tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  if (t.type() == dtype::f32) {
    const float* p = t.data<float>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = p[i];
  } else {
    for (size_t i = 0; i < v.size(); ++i) v[i] = t.as_double(static_cast<int64_t>(i));
  }
  return v;
}

// Checks scores/target/weight, then writes the loss (output 0) from log-probabilities logp
// laid out as [N, C, D].
status nll_from_logp(kernel_context& ctx, const loss_attrs& a, const std::vector<double>& logp, dtype out_type,
                     const shape_t& scores_shape, const tensor& target, const tensor* weight) {
  const int64_t N = scores_shape[0], C = scores_shape[1];
  const int64_t D = helpers::prod(scores_shape, 2, scores_shape.size());
  shape_t want{N};
  for (size_t i = 2; i < scores_shape.size(); ++i) want.push_back(scores_shape[i]);
  if (target.type() != dtype::i32 && target.type() != dtype::i64)
    return ctx.fail("target must be int32 or int64, got {}", dtype_name(target.type()));
  if (target.shape() != want)
    return ctx.fail("target has shape {}, expected {} for input of shape {}", shape_str(target.shape()),
                    shape_str(want), shape_str(scores_shape));
  std::vector<double> w;
  if (weight) {
    if (weight->type() != out_type)
      return ctx.fail("weight has type {}, expected {}", dtype_name(weight->type()), dtype_name(out_type));
    if (weight->rank() != 1 || weight->dim(0) != C)
      return ctx.fail("weight has shape {}, expected [{}]", shape_str(weight->shape()), C);
    w = to_doubles(*weight);
  }
  const int64_t count = N * D;
  std::vector<double> loss(static_cast<size_t>(count));
  double sum = 0, den = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t d = 0; d < D; ++d) {
      const int64_t k = n * D + d;
      const int64_t t = target.as_int64(k);
      if (a.has_ignore && t == a.ignore_index) {
        loss[k] = 0;
        continue;
      }
      if (t < 0 || t >= C)
        return ctx.fail("target {} at element {} is outside [0, {}){}", t, k, C,
                        a.has_ignore ? fmt::format(" and is not ignore_index {}", a.ignore_index) : "");
      const double wt = weight ? w[t] : 1.0;
      loss[k] = -logp[(n * C + t) * D + d] * wt;
      sum += loss[k];
      den += wt;
    }
  }
  if (a.red == reduction::none) {
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, out_type, want));
    for (int64_t k = 0; k < count; ++k) store(y, k, loss[k]);
    return status::ok();
  }
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, out_type, {}));
  store(y, 0, a.red == reduction::sum ? sum : sum / den);
  return status::ok();
}

status check_scores(kernel_context& ctx, const tensor& x) {
  if (!is_loss_float(x.type()))
    return ctx.fail("input must be float, double, float16 or bfloat16, got {}", dtype_name(x.type()));
  if (x.rank() < 2) return ctx.fail("input must have rank 2 or more ([N, C, ...]), got {}", shape_str(x.shape()));
  if (x.dim(1) < 1) return ctx.fail("input has no classes (shape {})", shape_str(x.shape()));
  return status::ok();
}

status run_nll(kernel_context& ctx, const loss_attrs& a) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
  const tensor& x = *ctx.input(0);
  GG_RETURN_IF_ERROR(check_scores(ctx, x));
  const tensor* w = ctx.input(2) && ctx.input(2)->defined() ? ctx.input(2) : nullptr;
  return nll_from_logp(ctx, a, to_doubles(x), x.type(), x.shape(), *ctx.input(1), w);
}

status run_sce(kernel_context& ctx, const loss_attrs& a) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
  const tensor& x = *ctx.input(0);
  GG_RETURN_IF_ERROR(check_scores(ctx, x));
  const int64_t N = x.dim(0), C = x.dim(1), D = helpers::prod(x.shape(), 2, x.rank());
  std::vector<double> v = to_doubles(x);
  // Log-softmax over axis 1, in place.
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t d = 0; d < D; ++d) {
      double* base = v.data() + n * C * D + d;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < C; ++c) m = std::max(m, base[c * D]);
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(base[c * D] - m);
      const double ls = std::log(s);
      for (int64_t c = 0; c < C; ++c) base[c * D] = base[c * D] - m - ls;
    }
  }
  const tensor* w = ctx.input(2) && ctx.input(2)->defined() ? ctx.input(2) : nullptr;
  GG_RETURN_IF_ERROR(nll_from_logp(ctx, a, v, x.type(), x.shape(), *ctx.input(1), w));
  if (ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(tensor * lp, ctx.output_for_overwrite(1, x.type(), x.shape()));
    for (size_t i = 0; i < v.size(); ++i) store(lp, static_cast<int64_t>(i), v[i]);
  }
  return status::ok();
}

kernel_factory loss_factory(status (*fn)(kernel_context&, const loss_attrs&)) {
  return [fn](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(loss_attrs a, parse_loss(n));
    return simple_kernel([fn, a](kernel_context& ctx) { return fn(ctx, a); })(n);
  };
}

}  // namespace

void register_loss_ops(op_registry& r) {
  r.add("NegativeLogLikelihoodLoss", loss_factory(run_nll));
  r.add("SoftmaxCrossEntropyLoss", loss_factory(run_sce));
}

}  // namespace gpugrid::cpu
