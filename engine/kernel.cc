#include "engine/kernel.h"

#include <algorithm>

namespace gpugrid {

expected<tensor*> kernel_context::output(size_t i, dtype type, const shape_t& shape) {
  return make_output(i, type, shape, true);
}

expected<tensor*> kernel_context::output_for_overwrite(size_t i, dtype type, const shape_t& shape) {
  return make_output(i, type, shape, false);
}

expected<tensor*> kernel_context::make_output(size_t i, dtype type, const shape_t& shape, bool zero) {
  if (i >= outputs_->size()) return fail("kernel asked for output {} of {}", i, outputs_->size());
  size_t esize = dtype_size(type);
  if (esize == 0) return fail("output {} has unsupported type {}", i, dtype_name(type));
  int64_t n = 0;
  if (!checked_num_elements(shape, max_tensor_bytes / static_cast<int64_t>(esize), &n))
    return fail("output {} would have shape {}, which is negative or too large", i, shape_str(shape));
  if (alloc_) {
    auto t = alloc_->allocate(i, type, shape, zero);
    if (!t) return t.error();
    (*outputs_)[i] = std::move(t).value();
  } else {
    auto storage = allocate_cpu_bytes(static_cast<size_t>(n) * esize);
    if (!storage) return internal_error("{}: out of memory allocating {} bytes", node_.describe(),
                                        static_cast<size_t>(n) * esize);
    (*outputs_)[i] = tensor(type, shape, std::move(storage));
  }
  return &(*outputs_)[i];
}

expected<tensor*> kernel_context::output_reusing(size_t i, size_t j, dtype type,
                                                 const shape_t& shape) {
  const tensor* in = input(j);
  if (alloc_ && in && in->type() == type && in->device() == device_kind::cpu &&
      num_elements(in->shape()) == num_elements(shape) && alloc_->may_overwrite_input(j)) {
    (*outputs_)[i] = in->reshaped(shape);
    return &(*outputs_)[i];
  }
  return output(i, type, shape);
}

void op_registry::add(const std::string& op_type, kernel_factory factory, const std::string& domain,
                      std::vector<int> host_inputs, std::vector<int> host_outputs) {
  ops_[{domain, op_type}] = op_entry{std::move(factory), std::move(host_inputs), std::move(host_outputs)};
}

const op_entry* op_registry::find_entry(const std::string& domain, const std::string& op_type) const {
  std::string d = (domain == "ai.onnx") ? "" : domain;
  auto it = ops_.find({d, op_type});
  return it == ops_.end() ? nullptr : &it->second;
}

const kernel_factory* op_registry::find(const std::string& domain, const std::string& op_type) const {
  const op_entry* e = find_entry(domain, op_type);
  return e ? &e->factory : nullptr;
}

std::vector<std::string> op_registry::op_types() const {
  std::vector<std::string> out;
  for (auto& [key, f] : ops_) out.push_back(key.first.empty() ? key.second : key.first + ":" + key.second);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
class fn_kernel final : public kernel {
 public:
  explicit fn_kernel(simple_kernel_fn fn) : fn_(std::move(fn)) {}
  status run(kernel_context& ctx) override { return fn_(ctx); }

 private:
  simple_kernel_fn fn_;
};
}  // namespace

kernel_factory simple_kernel(simple_kernel_fn fn) {
  return [fn](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<fn_kernel>(fn));
  };
}

}  // namespace gpugrid
