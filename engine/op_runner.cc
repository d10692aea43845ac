#include "engine/op_runner.h"

namespace gpugrid {

node make_node(const std::string& op_type, size_t num_outputs, int opset) {
  node n;
  n.op_type = op_type;
  n.opset = opset;
  for (size_t i = 0; i < num_outputs; ++i) n.outputs.push_back(static_cast<int>(i));
  return n;
}

expected<std::vector<tensor>> run_single_op(const op_registry& registry, node n,
                                            const std::vector<tensor>& inputs, thread_pool* pool,
                                            bool inputs_are_constant) {
  const kernel_factory* factory = registry.find(n.domain, n.op_type);
  if (!factory) return invalid_input("unsupported op {} (domain '{}', opset {})", n.op_type, n.domain, n.opset);
  n.inputs.clear();
  std::vector<const tensor*> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    n.inputs.push_back(inputs[i].defined() ? static_cast<int>(i) : -1);
    in.push_back(inputs[i].defined() ? &inputs[i] : nullptr);
  }
  if (n.outputs.empty()) n.outputs.push_back(0);
  auto k = (*factory)(n);
  if (!k) return k.error();
  std::vector<const tensor*> constants(in.size(), nullptr);
  if (inputs_are_constant) constants = in;
  GG_RETURN_IF_ERROR((*k)->prepare(constants));
  static thread_pool serial(1);
  std::vector<tensor> outputs(n.outputs.size());
  kernel_context ctx(n, std::move(in), &outputs, pool ? pool : &serial);
  GG_RETURN_IF_ERROR((*k)->run(ctx));
  return outputs;
}

}  // namespace gpugrid
