// Optimizer update ops of the ai.onnx.preview.training domain (opset 1): Adagrad, Momentum
// (standard and Nesterov) and Adam. Each takes R (learning rate, scalar float) and T (update
// count, scalar int64), then n tensors X, n gradients G and the optimizer's n (Momentum,
// Adagrad) or 2n (Adam) state tensors, and returns the n updated X followed by the updated
// states, exactly as the ONNX reference formulas (in double, stored as the inputs' type:
// float or double). Mismatched counts, shapes or types are one-line errors.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cpu {
namespace {

enum class optimizer { adagrad, momentum, nesterov, adam };

struct train_attrs {
  optimizer kind = optimizer::adagrad;
  double decay_factor = 0, epsilon = 1e-6, norm_coefficient = 0, norm_coefficient_post = 0, alpha = 0.9,
         beta = 0.999;
};

double get(const tensor& t, int64_t i) {
  return t.type() == dtype::f64 ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}
void put(tensor* t, int64_t i, double v) {
  if (t->type() == dtype::f64) t->data<double>()[i] = v;
  else t->data<float>()[i] = static_cast<float>(v);
}

status run_optimizer(kernel_context& ctx, const train_attrs& a) {
  const int states = a.kind == optimizer::adam ? 2 : 1;
  const size_t per = 2 + static_cast<size_t>(states);  // X, G, states
  const size_t n_in = ctx.num_inputs();
  if (n_in < 2 + per || (n_in - 2) % per != 0)
    return ctx.fail("expects R, T and {} groups of {} tensors (X, G{}), got {} inputs", "n", per,
                    states == 2 ? ", V, H" : a.kind == optimizer::adagrad ? ", H" : ", V", n_in);
  const size_t n = (n_in - 2) / per;
  for (size_t i = 0; i < n_in; ++i)
    if (!ctx.input(i) || !ctx.input(i)->defined() || ctx.input(i)->is_sequence() ||
        ctx.input(i)->device() != device_kind::cpu)
      return ctx.fail("input {} is missing or not a CPU tensor", i);
  const tensor& R = *ctx.input(0);
  const tensor& T = *ctx.input(1);
  if (!is_float(R.type()) || R.numel() != 1) return ctx.fail("R must be one float value, got {}", shape_str(R.shape()));
  if (!is_integer(T.type()) || T.numel() != 1) return ctx.fail("T must be one integer, got {}", shape_str(T.shape()));
  const double r = R.as_double(0);
  const int64_t t = T.as_int64(0);
  for (size_t k = 0; k < n; ++k) {
    const tensor& X = *ctx.input(2 + k);
    if (X.type() != dtype::f32 && X.type() != dtype::f64)
      return ctx.fail("X{} must be float or double, got {}", k, dtype_name(X.type()));
    std::vector<const tensor*> parts{&X, ctx.input(2 + n + k)};
    for (int s = 0; s < states; ++s) parts.push_back(ctx.input(2 + (2 + s) * n + k));
    for (const tensor* p : parts)
      if (p->type() != X.type() || p->shape() != X.shape())
        return ctx.fail("group {}: every tensor must be {} {}, got {} {}", k, dtype_name(X.type()), shape_str(X.shape()),
                        dtype_name(p->type()), shape_str(p->shape()));
    const tensor& G = *parts[1];
    const tensor& S1 = *parts[2];
    GG_ASSIGN_OR_RETURN(tensor * Xn, ctx.output_for_overwrite(k, X.type(), X.shape()));
    tensor* S1n = nullptr;
    tensor* S2n = nullptr;
    if (ctx.output_wanted(n + k)) {
      GG_ASSIGN_OR_RETURN(S1n, ctx.output_for_overwrite(n + k, X.type(), X.shape()));
    }
    if (states == 2 && ctx.output_wanted(2 * n + k)) {
      GG_ASSIGN_OR_RETURN(S2n, ctx.output_for_overwrite(2 * n + k, X.type(), X.shape()));
    }
    const int64_t m = X.numel();
    for (int64_t i = 0; i < m; ++i) {
      const double x = get(X, i), g = a.norm_coefficient * x + get(G, i), s1 = get(S1, i);
      double xn = 0, s1n = 0, s2n = 0;
      switch (a.kind) {
        case optimizer::adagrad: {
          const double rr = r / (1 + double(t) * a.decay_factor);
          s1n = s1 + g * g;
          xn = x - rr * g / (std::sqrt(s1n) + a.epsilon);
          break;
        }
        case optimizer::momentum:
        case optimizer::nesterov: {
          const double b = t > 0 ? a.beta : 1.0;
          s1n = a.alpha * s1 + b * g;
          xn = a.kind == optimizer::momentum ? x - r * s1n : x - r * (g + a.alpha * s1n);
          break;
        }
        case optimizer::adam: {
          const double h = get(*parts[3], i);
          s1n = a.alpha * s1 + (1 - a.alpha) * g;
          s2n = a.beta * h + (1 - a.beta) * g * g;
          const double ra =
              t > 0 ? r * std::sqrt(1 - std::pow(a.beta, double(t))) / (1 - std::pow(a.alpha, double(t))) : r;
          xn = (1 - a.norm_coefficient_post) * (x - ra * (s1n / (std::sqrt(s2n) + a.epsilon)));
          break;
        }
      }
      put(Xn, i, xn);
      if (S1n) put(S1n, i, s1n);
      if (S2n) put(S2n, i, s2n);
    }
  }
  return status::ok();
}

kernel_factory optimizer_factory(optimizer kind) {
  return [kind](const node& n) -> expected<std::unique_ptr<kernel>> {
    train_attrs a;
    a.kind = kind;
    a.norm_coefficient = n.attr_float("norm_coefficient", 0.f);
    if (kind == optimizer::adagrad) {
      a.decay_factor = n.attr_float("decay_factor", 0.f);
      a.epsilon = n.attr_float("epsilon", 1e-6f);
    } else if (kind == optimizer::adam) {
      a.alpha = n.attr_float("alpha", 0.9f);
      a.beta = n.attr_float("beta", 0.999f);
      a.epsilon = n.attr_float("epsilon", 1e-6f);
      a.norm_coefficient_post = n.attr_float("norm_coefficient_post", 0.f);
    } else {
      if (!n.has_attr("alpha") || !n.has_attr("beta") || !n.has_attr("mode"))
        return invalid_input("{}: Momentum needs the attributes alpha, beta and mode", n.describe());
      a.alpha = n.attr_float("alpha", 0.f);
      a.beta = n.attr_float("beta", 0.f);
      const std::string mode = n.attr_string("mode", "standard");
      if (mode == "nesterov") a.kind = optimizer::nesterov;
      else if (mode != "standard")
        return invalid_input("{}: unknown mode '{}' (standard or nesterov)", n.describe(), mode);
    }
    return simple_kernel([a](kernel_context& ctx) { return run_optimizer(ctx, a); })(n);
  };
}

}  // namespace

void register_training_ops(op_registry& r) {
  const std::string domain = "ai.onnx.preview.training";
  r.add("Adagrad", optimizer_factory(optimizer::adagrad), domain);
  r.add("Momentum", optimizer_factory(optimizer::momentum), domain);
  r.add("Adam", optimizer_factory(optimizer::adam), domain);
}

}  // namespace gpugrid::cpu
