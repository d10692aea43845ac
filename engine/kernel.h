// The contract between the executor and an op implementation, and the registry of ops.
//
// A kernel is created once per node when a model is loaded (its factory parses and checks the
// node's attributes, and may prepack constant weights), then run many times. run() is called
// from one thread at a time per kernel instance; kernels keep no per-run state in members
// unless they guard it. A kernel reports bad inputs (wrong dtype, incompatible shapes) as an
// invalid_input status naming the node, never by crashing.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/graph.h"
#include "engine/tensor.h"
#include "engine/thread_pool.h"

namespace gpugrid {

// Where a kernel's outputs come from. The executor's memory plan implements this; the default
// (nullptr) is a plain CPU heap allocation per output.
class output_allocator {
 public:
  virtual ~output_allocator() = default;
  // Allocates output `index` of the current node, zero-filled unless `zero` is false (the
  // kernel then writes every element itself).
  virtual expected<tensor> allocate(size_t index, dtype type, const shape_t& shape, bool zero) = 0;
  // True when input `input_index` of the current node may be overwritten by an output of the
  // same size (its last use is here and nobody else sees its bytes).
  virtual bool may_overwrite_input(size_t input_index) = 0;
};

class kernel_context {
 public:
  kernel_context(const node& n, std::vector<const tensor*> inputs, std::vector<tensor>* outputs,
                 thread_pool* pool, output_allocator* alloc = nullptr, void* device_context = nullptr)
      : node_(n), inputs_(std::move(inputs)), outputs_(outputs), pool_(pool), alloc_(alloc),
        device_context_(device_context) {}

  const node& op() const { return node_; }
  size_t num_inputs() const { return inputs_.size(); }
  // nullptr when the optional input is omitted (or i is past the node's inputs).
  const tensor* input(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }
  size_t num_outputs() const { return outputs_->size(); }
  // False when an optional output was omitted by the model (kernels may skip computing it).
  bool output_wanted(size_t i) const { return i < node_.outputs.size() && node_.outputs[i] >= 0; }

  // Allocates output i. Fails (invalid_input) when the shape is negative or absurdly large.
  expected<tensor*> output(size_t i, dtype type, const shape_t& shape);
  // Like output(), for a kernel that writes every element of the output: the memory is not
  // zero-filled first.
  expected<tensor*> output_for_overwrite(size_t i, dtype type, const shape_t& shape);
  // Like output(), but reuses input j's bytes when the executor says that is safe and the
  // sizes match; elementwise kernels that read element k before writing element k use this.
  expected<tensor*> output_reusing(size_t i, size_t j, dtype type, const shape_t& shape);
  // Sets output i to a tensor the kernel made itself (a view of an input, or a new tensor).
  void set_output(size_t i, tensor t) { (*outputs_)[i] = std::move(t); }

  thread_pool& pool() { return *pool_; }
  // The backend's per-run state (a CUDA stream and library handles); nullptr on the CPU.
  void* device_context() const { return device_context_; }

  // For device kernels: this case (dtype, rank, mode) is not implemented here; the executor
  // then runs the node on the CPU instead.
  template <typename... Args>
  status unsupported(fmt::format_string<Args...> f, Args&&... args) const {
    return {error_kind::unsupported_here,
            node_.describe() + ": " + fmt::format(f, std::forward<Args>(args)...)};
  }

  // Convenience for errors: invalid_input("<node>: <message>").
  template <typename... Args>
  status fail(fmt::format_string<Args...> f, Args&&... args) const {
    return {error_kind::invalid_input,
            node_.describe() + ": " + fmt::format(f, std::forward<Args>(args)...)};
  }

 private:
  expected<tensor*> make_output(size_t i, dtype type, const shape_t& shape, bool zero);

  const node& node_;
  std::vector<const tensor*> inputs_;
  std::vector<tensor>* outputs_;
  thread_pool* pool_;
  output_allocator* alloc_;
  void* device_context_;
};

class kernel {
 public:
  virtual ~kernel() = default;
  // Called once after creation with the node's inputs that are constant (initializers), or
  // nullptr for inputs known only at run time. A kernel may prepack weights here (it must
  // still accept the same values at run time). Default: nothing to do.
  virtual status prepare(const std::vector<const tensor*>& constant_inputs) {
    (void)constant_inputs;
    return status::ok();
  }
  virtual status run(kernel_context& ctx) = 0;
};

// Makes the kernel for one node, or says why it cannot (unsupported attribute value, ...).
using kernel_factory = std::function<expected<std::unique_ptr<kernel>>(const node& n)>;

// Op registry for one backend, keyed by (domain, op_type). Filled at start-up by explicit
// register_* calls (see kernels/cpu/cpu_ops.h), read-only afterwards.
struct op_entry {
  kernel_factory factory;
  // For device backends: inputs the kernel reads on the host (shape arguments such as
  // Reshape's shape) and outputs it produces in host memory. Empty on the CPU backend.
  std::vector<int> host_inputs;
  std::vector<int> host_outputs;
};

class op_registry {
 public:
  void add(const std::string& op_type, kernel_factory factory, const std::string& domain = "",
           std::vector<int> host_inputs = {}, std::vector<int> host_outputs = {});
  const kernel_factory* find(const std::string& domain, const std::string& op_type) const;
  const op_entry* find_entry(const std::string& domain, const std::string& op_type) const;
  std::vector<std::string> op_types() const;  // sorted "Op" or "domain:Op"

 private:
  std::map<std::pair<std::string, std::string>, op_entry> ops_;
};

// The CPU backend's ops, the reference every other backend is checked against. Declared here and
// defined by the CPU kernels (kernels/cpu/cpu_ops.cc), which register their op families into it:
// the engine names no kernel and includes none of their headers (tests/layers_test.sh).
const op_registry& cpu_op_registry();

// A kernel whose logic is one function (most ops): wraps it in a factory.
using simple_kernel_fn = std::function<status(kernel_context&)>;
kernel_factory simple_kernel(simple_kernel_fn fn);

// The largest tensor one output may be: 2^34 bytes (16 GiB). Larger requests fail cleanly.
constexpr int64_t max_tensor_bytes = int64_t{1} << 34;

}  // namespace gpugrid
