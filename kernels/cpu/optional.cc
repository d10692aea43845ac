// The optional ops (opset 15/18): Optional, OptionalHasElement, OptionalGetElement.
//
// An optional holding a value is that value (a tensor or a sequence); an empty one is
// tensor::none(). Optional(x) is x, Optional() with no input is empty (of the element type its
// `type` attribute names). OptionalHasElement is false for an empty optional or an omitted
// input (opset 18), true otherwise (a plain tensor or sequence counts as present);
// OptionalGetElement returns the value and fails with a one-line error on an empty optional.
#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cpu {
namespace {

status run_optional(kernel_context& ctx, dtype elem) {
  if (ctx.num_inputs() > 1) return ctx.fail("expects 0 or 1 inputs, got {}", ctx.num_inputs());
  const tensor* x = ctx.input(0);
  if (x && x->defined()) ctx.set_output(0, *x);
  else ctx.set_output(0, tensor::none(elem));
  return status::ok();
}

status run_has_element(kernel_context& ctx) {
  if (ctx.num_inputs() > 1) return ctx.fail("expects 0 or 1 inputs, got {}", ctx.num_inputs());
  const tensor* x = ctx.input(0);
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, dtype::boolean, {}));
  y->data<bool>()[0] = x && x->defined() && !x->is_none();
  return status::ok();
}

status run_get_element(kernel_context& ctx) {
  if (ctx.num_inputs() != 1) return ctx.fail("expects 1 input, got {}", ctx.num_inputs());
  const tensor* x = ctx.input(0);
  if (!x || !x->defined() || x->is_none()) return ctx.fail("the optional input is empty");
  ctx.set_output(0, *x);
  return status::ok();
}

}  // namespace

void register_optional_ops(op_registry& r) {
  r.add("Optional", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    dtype elem = dtype::undefined;
    if (n.has_attr("type") && !dtype_from_onnx(static_cast<int32_t>(n.attr_int("type", 0)), &elem))
      elem = dtype::undefined;
    return simple_kernel([elem](kernel_context& ctx) { return run_optional(ctx, elem); })(n);
  });
  r.add("OptionalHasElement", simple_kernel(run_has_element));
  r.add("OptionalGetElement", simple_kernel(run_get_element));
}

}  // namespace gpugrid::cpu
