#include "engine/session.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>

#include "engine/backend.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace gpugrid {

namespace {
std::atomic<int> blas_thread_limit{0};  // 0: none
}  // namespace

void set_blas_threads(int threads) {
  if (threads <= 0) threads = hardware_threads();
  const int most = blas_thread_limit.load();
  openblas_set_num_threads(most > 0 ? std::min(threads, most) : threads);
}

void limit_blas_threads(int most) {
  blas_thread_limit.store(std::max(most, 0));
  if (most > 0) openblas_set_num_threads(most);
}

// A memory plan for one input signature: every freshly allocated value gets an offset into
// its device's arena (host = 0, device = 1), or -1 for a plain allocation (graph outputs).
struct session::plan {
  std::vector<int64_t> offset;
  std::vector<int64_t> size;
  std::vector<std::vector<char>> overwrite;  // per node, per input: in-place allowed
  int64_t arena_bytes[2] = {0, 0};
  int64_t peak_bytes[2] = {0, 0};
  std::mutex mu;
  std::vector<std::shared_ptr<std::byte>> free_arenas[2];
};

namespace {

bool same_owner(const std::shared_ptr<std::byte>& a, const std::shared_ptr<std::byte>& b) {
  return a && b && !a.owner_before(b) && !b.owner_before(a);
}

int64_t align_up(int64_t n) { return (n + 255) / 256 * 256; }

// Ops that compute shapes: kept on the host with their integer inputs even when a device is
// used, so that shape arithmetic never waits on the device.
const std::set<std::string> shape_ops = {"Shape", "Size", "ConstantOfShape", "Range", "NonZero", "Unique"};

// Default-domain ops that may read sequence values (every other kernel expects tensors).
const std::set<std::string> sequence_ops = {
    "If", "Loop", "Scan", "Identity", "SequenceConstruct", "SequenceAt", "SequenceInsert",
    "SequenceErase", "SequenceLength", "SequenceEmpty", "SplitToSequence", "ConcatFromSequence",
    "SequenceMap", "Optional", "OptionalGetElement", "OptionalHasElement"};
// Of those, the ops that may read an empty optional.
const std::set<std::string> optional_ops = {"If", "Loop", "Identity", "Optional", "OptionalGetElement",
                                            "OptionalHasElement"};

// Hands kernels their outputs: arena slices when a plan exists, plain allocations (recorded
// to make the plan) otherwise. Outputs of device-placed nodes live on the device.
class run_allocator final : public output_allocator {
 public:
  const node* current = nullptr;
  size_t node_index = 0;
  bool on_device = false;
  const std::vector<char>* host_outputs = nullptr;
  const std::vector<tensor>* vals = nullptr;
  const std::vector<int>* remaining = nullptr;
  const std::vector<bool>* pinned = nullptr;
  const std::vector<bool>* overwritable = nullptr;  // graph inputs the caller lets kernels overwrite
  device_backend* device = nullptr;

  // Planned mode.
  const std::vector<int64_t>* plan_offset = nullptr;
  const std::vector<int64_t>* plan_size = nullptr;
  const std::vector<std::vector<char>>* plan_overwrite = nullptr;
  std::shared_ptr<std::byte> arena[2];
  int fallbacks = 0;
  // Recording mode.
  std::vector<int64_t> rec_size;
  std::vector<char> rec_fresh;
  std::vector<char> rec_device;
  std::vector<shape_t> rec_shape;
  std::vector<std::vector<char>> rec_overwrite;

  bool output_on_device(size_t index) const {
    return on_device && !(host_outputs && index < host_outputs->size() && (*host_outputs)[index]);
  }

  expected<tensor> allocate(size_t index, dtype type, const shape_t& shape, bool zero) override {
    const node& n = *current;
    int v = index < n.outputs.size() ? n.outputs[index] : -1;
    const bool dev = output_on_device(index);
    const int d = dev ? 1 : 0;
    const device_kind kind = dev ? device_kind::cuda : device_kind::cpu;
    int64_t bytes = num_elements(shape) * static_cast<int64_t>(dtype_size(type));
    if (plan_offset && v >= 0 && (*plan_offset)[v] >= 0 && bytes <= (*plan_size)[v] && arena[d]) {
      std::byte* p = arena[d].get() + (*plan_offset)[v];
      if (!dev && bytes && zero) std::memset(p, 0, static_cast<size_t>(bytes));
      return tensor(type, shape, std::shared_ptr<std::byte>(arena[d], p), kind);
    }
    if (plan_offset && v >= 0 && (*plan_offset)[v] >= 0) ++fallbacks;
    std::shared_ptr<std::byte> storage;
    if (dev) {
      auto s = device->allocate(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
      if (!s) return status(s.error().kind(), n.describe() + ": " + s.error().message());
      storage = std::move(s).value();
    } else {
      // A kernel that writes every element of its output (output_for_overwrite) gets it
      // unzeroed: a large graph output is otherwise written twice on every run.
      storage = allocate_cpu_bytes(static_cast<size_t>(bytes), zero);
      if (!storage) return internal_error("{}: out of memory allocating {} bytes", n.describe(), bytes);
    }
    if (!plan_offset && v >= 0) {
      rec_size[v] = bytes;
      rec_fresh[v] = 1;
      rec_device[v] = static_cast<char>(d);
      rec_shape[v] = shape;
    }
    return tensor(type, shape, std::move(storage), kind);
  }

  bool may_overwrite_input(size_t j) override {
    const node& n = *current;
    if (plan_overwrite) return j < (*plan_overwrite)[node_index].size() && (*plan_overwrite)[node_index][j];
    int u = j < n.inputs.size() ? n.inputs[j] : -1;
    // An overwritable graph input is also held by the caller's inputs vector: two holders.
    const bool given = u >= 0 && overwritable && (*overwritable)[u];
    bool ok = u >= 0 && (!(*pinned)[u] || given) && (*remaining)[u] == 1 && (*vals)[u].storage() &&
              (*vals)[u].storage().use_count() == (given ? 2 : 1);
    if (ok) rec_overwrite[node_index][j] = 1;
    return ok;
  }
};

std::string describe_declared(const value_info& v) {
  if (!v.shape) return "any shape";
  std::vector<std::string> dims;
  for (const auto& d : *v.shape) dims.push_back(d.value >= 0 ? std::to_string(d.value) : (d.symbol.empty() ? "?" : d.symbol));
  return "[" + fmt::format("{}", fmt::join(dims, ", ")) + "]";
}

node make_copy_node(const std::string& op, int from, int to, int opset) {
  node c;
  c.op_type = op;
  c.domain = "com.gpugrid";
  c.opset = opset;
  c.inputs = {from};
  c.outputs = {to};
  return c;
}

}  // namespace

session::~session() = default;

std::string session::device_name() const { return device_ ? device_->info().id : "cpu"; }

std::map<std::string, int> session::cpu_fallback_ops() const {
  std::map<std::string, int> out;
  if (!device_) return out;
  for (size_t i = 0; i < graph_->nodes.size(); ++i) {
    const node& n = graph_->nodes[i];
    if (!on_device_[i] && n.domain != "com.gpugrid") out[n.op_type]++;
    else if (!on_device_[i]) out[n.domain + ":" + n.op_type]++;
  }
  return out;
}

// Decides which nodes run on the device and inserts the copies between host and device.
status session::place_on_device() {
  graph& g = *graph_;
  const op_registry& dev_ops = device_->ops();
  const size_t n_nodes = g.nodes.size();
  std::vector<char> place(n_nodes, 0);
  // Values that hold shape arithmetic (integers computed on the host).
  std::vector<char> host_int(g.values.size(), 0);
  for (auto& [id, t] : g.initializers) host_int[id] = is_integer(t.type()) ? 1 : 0;
  for (size_t i = 0; i < n_nodes; ++i) {
    const node& n = g.nodes[i];
    bool shape_math = shape_ops.count(n.op_type) > 0 && n.domain.empty();
    if (!shape_math) {
      bool any = false, all = true;
      for (int in : n.inputs) {
        if (in < 0) continue;
        any = true;
        if (!host_int[in]) all = false;
      }
      shape_math = any && all;
    }
    if (shape_math) {
      for (int o : n.outputs) if (o >= 0) host_int[o] = 1;
      continue;
    }
    place[i] = dev_ops.find_entry(n.domain, n.op_type) != nullptr;
  }

  // Rewrite: copy nodes where a value crosses between host and device.
  std::vector<node> out_nodes;
  std::vector<char> out_place;
  std::vector<char> where(g.values.size(), 0);  // 0 host, 1 device (for produced values)
  std::map<int, int> on_dev_copy, on_host_copy;  // value -> its copy on the other side
  std::map<int, int> device_twin;                 // graph output -> the device value it copies
  std::set<int> graph_outputs(g.outputs.begin(), g.outputs.end());
  auto add_value = [&](int like, const std::string& suffix) {
    std::string base = g.values[like].name + suffix;
    std::string name = base;
    for (int k = 1; g.find_value(name) >= 0; ++k) name = base + std::to_string(k);
    int id = g.value_id(name);
    g.values[id].type = g.values[like].type;
    where.resize(g.values.size(), 0);
    return id;
  };
  int opset = g.opsets.count("") ? g.opsets[""] : 17;
  for (size_t i = 0; i < n_nodes; ++i) {
    node n = g.nodes[i];
    const bool dev = place[i];
    const op_entry* entry = dev ? dev_ops.find_entry(n.domain, n.op_type) : nullptr;
    for (size_t j = 0; j < n.inputs.size(); ++j) {
      int u = n.inputs[j];
      if (u < 0) continue;
      auto ren = device_twin.find(u);
      if (ren != device_twin.end() && dev &&
          std::find(entry->host_inputs.begin(), entry->host_inputs.end(), static_cast<int>(j)) == entry->host_inputs.end()) {
        n.inputs[j] = ren->second;  // a graph output made on the device: read the device copy
        continue;
      }
      bool want_dev = dev && std::find(entry->host_inputs.begin(), entry->host_inputs.end(), static_cast<int>(j)) == entry->host_inputs.end();
      bool is_init = g.initializers.count(u) > 0;
      bool is_dev = !is_init && where[u] == 1;
      if (want_dev == is_dev && !(want_dev && is_init)) continue;
      if (want_dev && is_init) {
        auto it = on_dev_copy.find(u);
        if (it == on_dev_copy.end()) {
          const tensor& host = g.initializers.at(u);
          int id = add_value(u, "@device");
          auto storage = device_->allocate(std::max<size_t>(host.bytes(), 1));
          if (!storage) return storage.error();
          if (host.bytes()) GG_RETURN_IF_ERROR(device_->upload(storage->get(), host.raw(), host.bytes()));
          device_initializers_[id] = tensor(host.type(), host.shape(), std::move(storage).value(), device_kind::cuda);
          device_initializer_source_[id] = u;
          it = on_dev_copy.emplace(u, id).first;
        }
        n.inputs[j] = it->second;
      } else if (want_dev) {
        auto it = on_dev_copy.find(u);
        if (it == on_dev_copy.end()) {
          int id = add_value(u, "@device");
          where[id] = 1;
          out_nodes.push_back(make_copy_node("MemcpyFromHost", u, id, opset));
          out_place.push_back(1);
          it = on_dev_copy.emplace(u, id).first;
        }
        n.inputs[j] = it->second;
      } else {
        auto it = on_host_copy.find(u);
        if (it == on_host_copy.end()) {
          int id = add_value(u, "@host");
          out_nodes.push_back(make_copy_node("MemcpyToHost", u, id, opset));
          out_place.push_back(1);
          it = on_host_copy.emplace(u, id).first;
        }
        n.inputs[j] = it->second;
      }
    }
    std::vector<node> after;  // copies of device-made graph outputs back to the host
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      int v = n.outputs[o];
      if (v < 0) continue;
      bool host_out = !dev || std::find(entry->host_outputs.begin(), entry->host_outputs.end(), static_cast<int>(o)) != entry->host_outputs.end();
      if (!host_out && graph_outputs.count(v)) {
        // The graph output keeps its id (and name) on the host; the device value is renamed.
        int id = add_value(v, "@device");
        where[id] = 1;
        n.outputs[o] = id;
        after.push_back(make_copy_node("MemcpyToHost", id, v, opset));
        on_host_copy[id] = v;
        device_twin[v] = id;
        continue;
      }
      where[v] = host_out ? 0 : 1;
    }
    out_nodes.push_back(std::move(n));
    out_place.push_back(static_cast<char>(dev));
    for (node& c : after) {
      out_nodes.push_back(std::move(c));
      out_place.push_back(1);
    }
  }
  // Uploads of graph inputs first, downloads of graph outputs last (in output order): valid
  // topological orders both, and they leave the device work in one contiguous run that can
  // be captured as a graph.
  auto is_upload = [&](const node& n) {
    return n.domain == "com.gpugrid" && n.op_type == "MemcpyFromHost" &&
           std::find(g.inputs.begin(), g.inputs.end(), n.inputs[0]) != g.inputs.end();
  };
  std::set<int> consumed;
  for (const node& n : out_nodes)
    for (int in : n.inputs) if (in >= 0) consumed.insert(in);
  auto download_rank = [&](const node& n) -> long {
    if (n.domain != "com.gpugrid" || n.op_type != "MemcpyToHost" || consumed.count(n.outputs[0])) return -1;
    auto it = std::find(g.outputs.begin(), g.outputs.end(), n.outputs[0]);
    return it == g.outputs.end() ? -1 : static_cast<long>(it - g.outputs.begin());
  };
  std::vector<size_t> order(out_nodes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    auto key = [&](size_t i) -> long {
      if (is_upload(out_nodes[i])) return -1;
      long r = download_rank(out_nodes[i]);
      return r < 0 ? 0 : 1 + r;
    };
    return key(a) < key(b);
  });
  g.nodes.clear();
  on_device_.clear();
  for (size_t i : order) {
    g.nodes.push_back(std::move(out_nodes[i]));
    on_device_.push_back(out_place[i]);
  }
  find_capture_range();
  return status::ok();
}

expected<std::shared_ptr<kernel>> session::cpu_kernel_for(size_t ni) {
  std::lock_guard<std::mutex> lock(fallback_mu_);
  auto it = cpu_fallback_.find(ni);
  if (it != cpu_fallback_.end()) return it->second;
  const graph& g = *graph_;
  const node& n = g.nodes[ni];
  const op_entry* e = cpu_op_registry().find_entry(n.domain, n.op_type);
  if (!e) return status(error_kind::unsupported_here, n.describe() + ": no CPU kernel to fall back to");
  auto k = e->factory(n);
  if (!k) return k.error();
  std::vector<const tensor*> constants;
  for (int in : n.inputs) {
    auto src = device_initializer_source_.find(in);
    int host_id = src == device_initializer_source_.end() ? in : src->second;
    auto hit = host_id >= 0 ? g.initializers.find(host_id) : g.initializers.end();
    constants.push_back(hit == g.initializers.end() ? nullptr : &hit->second);
  }
  GG_RETURN_IF_ERROR((*k)->prepare(constants));
  std::shared_ptr<kernel> shared(std::move(k).value());
  cpu_fallback_[ni] = shared;
  return shared;
}

status session::run_on_cpu_instead(size_t ni, kernel_context& dctx, run_context* rc, std::vector<tensor>* outs) {
  GG_ASSIGN_OR_RETURN(std::shared_ptr<kernel> k, cpu_kernel_for(ni));
  const node& n = graph_->nodes[ni];
  std::vector<tensor> host_in(dctx.num_inputs());
  std::vector<const tensor*> ptrs(dctx.num_inputs(), nullptr);
  for (size_t i = 0; i < dctx.num_inputs(); ++i) {
    const tensor* t = dctx.input(i);
    if (!t) continue;
    if (t->device() == device_kind::cpu) {
      host_in[i] = *t;
    } else {
      auto bytes = allocate_cpu_bytes(t->bytes());
      if (!bytes) return internal_error("{}: out of memory copying an input to the host", n.describe());
      host_in[i] = tensor(t->type(), t->shape(), std::move(bytes));
      GG_RETURN_IF_ERROR(rc->download(host_in[i].raw(), t->raw(), t->bytes()));
    }
    ptrs[i] = &host_in[i];
  }
  std::vector<tensor> host_out(n.outputs.size());
  kernel_context hctx(n, ptrs, &host_out, pool_.get());
  GG_RETURN_IF_ERROR(k->run(hctx));
  for (size_t o = 0; o < host_out.size(); ++o) {
    if (!host_out[o].defined()) continue;
    if (host_output_[ni][o]) {
      (*outs)[o] = std::move(host_out[o]);
      continue;
    }
    GG_ASSIGN_OR_RETURN(tensor * dst, dctx.output(o, host_out[o].type(), host_out[o].shape()));
    if (host_out[o].bytes()) GG_RETURN_IF_ERROR(rc->upload(dst->raw(), host_out[o].raw(), host_out[o].bytes()));
  }
  return status::ok();
}

void session::find_capture_range() {
  const graph& g = *graph_;
  capturable_ = false;
  size_t n = g.nodes.size();
  size_t a = 0;
  while (a < n && g.nodes[a].op_type == "MemcpyFromHost" && g.nodes[a].domain == "com.gpugrid" &&
         std::find(g.inputs.begin(), g.inputs.end(), g.nodes[a].inputs[0]) != g.inputs.end())
    ++a;
  size_t b = n;
  while (b > a && g.nodes[b - 1].op_type == "MemcpyToHost" && g.nodes[b - 1].domain == "com.gpugrid") --b;
  if (n - b != g.outputs.size() || b == a) return;
  for (size_t k = b; k < n; ++k)
    if (g.nodes[k].outputs[0] != g.outputs[k - b]) return;  // downloads must be in output order
  for (size_t k = 0; k < n; ++k) {
    if (!on_device_[k]) return;
    if (k >= a && k < b) {
      const node& nd = g.nodes[k];
      if (nd.domain == "com.gpugrid" && (nd.op_type == "MemcpyToHost" || nd.op_type == "MemcpyFromHost")) return;
      const op_entry* e = device_->ops().find_entry(nd.domain, nd.op_type);
      for (int hi : e->host_inputs)  // a host-side argument must be constant to be baked in
        if (hi >= 0 && static_cast<size_t>(hi) < nd.inputs.size() && nd.inputs[hi] >= 0 && !g.initializers.count(nd.inputs[hi]))
          return;
    }
  }
  capture_begin_ = a;
  capture_end_ = b;
  capturable_ = true;
}

expected<std::unique_ptr<session>> session::create(std::shared_ptr<const graph> g,
                                                   const session_options& options) {
  std::unique_ptr<session> s(new session());
  s->options_ = options;
  if (options.subgraph) {
    s->options_.memory_plan = false;
    s->options_.device = "cpu";
    s->options_.threads = 1;  // runs on its caller's pool (run_subgraph)
  }
  // Sequences and optionals as model inputs or outputs: their sizes vary from run to run in
  // ways a shape signature does not capture, so such models run without a memory plan, on the CPU.
  for (const auto* ids : {&g->inputs, &g->outputs})
    for (int id : *ids)
      if (g->values[id].sequence || g->values[id].optional) {
        s->options_.memory_plan = false;
        s->options_.device = "cpu";
      }
  s->graph_ = std::make_shared<graph>(*g);
  s->pool_ = std::make_unique<thread_pool>(s->options_.threads);
  graph& gr = *s->graph_;

  const std::string& device = s->options_.device;
  if (!valid_device_spec(device))
    return invalid_input("'{}' is not a device (use auto, cpu, cuda or cuda:N)", device);
  if (device != "cpu") {
    std::string spec = device == "auto" ? "cuda" : device;
    auto dev = open_device(spec);
    if (dev) {
      s->device_ = std::move(dev).value();
    } else if (device == "auto") {
      s->device_note_ = dev.error().message();
    } else {
      return dev.error();
    }
  }
  if (options.optimize) GG_RETURN_IF_ERROR(optimize_graph(gr, s->pool_.get(), !s->device_));
  if (s->device_) {
    GG_RETURN_IF_ERROR(s->place_on_device());
  } else {
    s->on_device_.assign(gr.nodes.size(), 0);
  }

  const op_registry& cpu_reg = cpu_op_registry();
  s->host_output_.resize(gr.nodes.size());
  for (size_t i = 0; i < gr.nodes.size(); ++i) {
    const node& n = gr.nodes[i];
    const op_entry* e = s->on_device_[i] ? s->device_->ops().find_entry(n.domain, n.op_type)
                                         : cpu_reg.find_entry(n.domain, n.op_type);
    if (!e)
      return invalid_input("unsupported op {} (domain '{}', opset {}) in {}", n.op_type,
                           n.domain.empty() ? "ai.onnx" : n.domain, n.opset, n.describe());
    s->host_output_[i].assign(n.outputs.size(), s->on_device_[i] ? 0 : 1);
    for (int o : e->host_outputs)
      if (o >= 0 && static_cast<size_t>(o) < n.outputs.size()) s->host_output_[i][o] = 1;
    auto k = e->factory(n);
    if (!k) return k.error();
    std::vector<const tensor*> constants;
    for (int in : n.inputs) {
      auto it = in >= 0 ? gr.initializers.find(in) : gr.initializers.end();
      auto dit = in >= 0 ? s->device_initializers_.find(in) : s->device_initializers_.end();
      constants.push_back(it != gr.initializers.end() ? &it->second
                                                      : dit != s->device_initializers_.end() ? &dit->second : nullptr);
    }
    GG_RETURN_IF_ERROR((*k)->prepare(constants));
    s->kernels_.push_back(std::move(k).value());
  }
  s->takes_sequences_.resize(gr.nodes.size());
  for (size_t i = 0; i < gr.nodes.size(); ++i)
    s->takes_sequences_[i] = gr.nodes[i].domain.empty() && sequence_ops.count(gr.nodes[i].op_type) ? 1 : 0;
  s->use_counts_.assign(gr.values.size(), 0);
  s->pinned_.assign(gr.values.size(), false);
  for (const node& n : gr.nodes)
    for (int in : n.inputs)
      if (in >= 0) ++s->use_counts_[in];
  for (int out : gr.outputs) { ++s->use_counts_[out]; s->pinned_[out] = true; }
  for (int in : gr.inputs) s->pinned_[in] = true;
  for (auto& [id, t] : gr.initializers) s->pinned_[id] = true;
  for (auto& [id, t] : s->device_initializers_) s->pinned_[id] = true;
  if (s->options_.overwrite_inputs && !s->options_.memory_plan) {
    s->overwritable_.assign(gr.values.size(), false);
    for (int in : gr.inputs) s->overwritable_[in] = true;
    for (int out : gr.outputs) s->overwritable_[out] = false;
    for (auto& [id, t] : gr.initializers) s->overwritable_[id] = false;
  }
  return s;
}

std::vector<std::string> session::input_names() const {
  std::vector<std::string> out;
  for (int id : graph_->inputs) out.push_back(graph_->values[id].name);
  return out;
}

std::vector<std::string> session::output_names() const {
  std::vector<std::string> out;
  for (int id : graph_->outputs) out.push_back(graph_->values[id].name);
  return out;
}

status session::check_inputs(const std::vector<tensor>& inputs, std::string* signature) const {
  const graph& g = *graph_;
  if (inputs.size() != g.inputs.size()) {
    return invalid_input("the model takes {} input(s) ({}), got {}", g.inputs.size(),
                         fmt::join(input_names(), ", "), inputs.size());
  }
  signature->clear();
  if (options_.subgraph) return status::ok();  // declarations inside subgraphs are hints
  for (size_t i = 0; i < inputs.size(); ++i) {
    const value_info& v = g.values[g.inputs[i]];
    const tensor& t = inputs[i];
    if (!t.defined()) return invalid_input("input '{}' is missing", v.name);
    if (t.is_none()) {
      if (!v.optional) return invalid_input("input '{}' is an empty optional but the model expects a value", v.name);
      *signature += "none;";
      continue;
    }
    if (t.is_sequence() != v.sequence)
      return invalid_input("input '{}' is a {} but the model expects a {}", v.name,
                           t.is_sequence() ? "sequence" : "tensor", v.sequence ? "sequence of tensors" : "tensor");
    if (t.is_sequence()) {
      // Element shapes of a declared sequence are hints (items may differ); types must match.
      for (size_t k = 0; k < t.items().size(); ++k)
        if (v.type != dtype::undefined && t.items()[k].type() != v.type)
          return invalid_input("input '{}': sequence item {} is {} but the model expects {}", v.name, k,
                               dtype_name(t.items()[k].type()), dtype_name(v.type));
      *signature += fmt::format("seq{};", t.items().size());
      continue;
    }
    if (t.device() != device_kind::cpu) return invalid_input("input '{}' must be in host memory", v.name);
    if (v.type != dtype::undefined && t.type() != v.type)
      return invalid_input("input '{}' is {} but the model expects {}", v.name, dtype_name(t.type()),
                           dtype_name(v.type));
    if (v.shape) {
      bool ok = v.shape->size() == t.rank();
      for (size_t d = 0; ok && d < t.rank(); ++d) {
        const dim_t& dim = (*v.shape)[d];
        // A symbolic name is a hint, not a constraint: exporters give every unknown dim the
        // same name ("?"), so two dims sharing a name may differ (as in onnxruntime).
        if (dim.value >= 0 && dim.value != t.dim(d)) ok = false;
      }
      if (!ok)
        return invalid_input("input '{}' has shape {} but the model expects {}", v.name,
                             shape_str(t.shape()), describe_declared(v));
    }
    *signature += fmt::format("{}:{};", static_cast<int>(t.type()), fmt::join(t.shape(), ","));
  }
  return status::ok();
}

namespace {
status stopped_run() { return status(error_kind::io, "the run was stopped"); }
}  // namespace

expected<std::vector<tensor>> session::run(const std::vector<tensor>& inputs, run_stats* stats,
                                           const node_observer* observer, const stop_check* stop) {
  std::string signature;
  GG_RETURN_IF_ERROR(check_inputs(inputs, &signature));
  if (stop && *stop && (*stop)()) return stopped_run();
  if (capturable_ && options_.device_graphs && !observer && !options_.profile) {
    std::shared_ptr<plan> p;
    {
      std::lock_guard<std::mutex> lock(plans_mu_);
      auto it = plans_.find(signature);
      if (it != plans_.end()) p = it->second;
    }
    if (p) {
      std::shared_ptr<graph_bundle> b;
      {
        std::lock_guard<std::mutex> lock(plans_mu_);
        auto& slot = graphs_[signature];
        if (!slot) slot = std::make_shared<graph_bundle>();
        b = slot;
      }
      std::unique_lock<std::mutex> lk(b->mu, std::try_to_lock);
      if (lk.owns_lock() && !b->failed) {
        auto r = run_graph(*b, p, inputs, stats);
        if (r || !b->failed) return r;  // a capture that failed falls back to plain launches
      }
    }
  }
  return execute(signature, inputs, stats, observer, nullptr, nullptr, nullptr, nullptr, stop);
}

expected<std::vector<tensor>> session::run_subgraph(const std::vector<tensor>& inputs, thread_pool* pool) {
  if (!options_.subgraph) return internal_error("run_subgraph on a session that is not a subgraph's");
  if (inputs.size() != graph_->inputs.size())
    return internal_error("a subgraph takes {} inputs, got {}", graph_->inputs.size(), inputs.size());
  return execute(std::string(), inputs, nullptr, nullptr, nullptr, nullptr, nullptr, pool);
}

expected<std::vector<tensor>> session::run_graph(graph_bundle& b, const std::shared_ptr<plan>& p,
                                                 const std::vector<tensor>& inputs, run_stats* stats) {
  const graph& g = *graph_;
  if (!b.ready) {
    if (!b.rc) {
      auto made = device_->new_run_context();
      if (!made) return made.error();
      b.rc = std::move(made).value();
      b.rc->set_allow_tf32(options_.allow_tf32);
    }
    std::string signature;
    GG_RETURN_IF_ERROR(check_inputs(inputs, &signature));
    // A warm-up run grows the context's workspaces to their final size, then a run whose
    // device part is captured; any failure turns graphs off for this shape.
    auto warm = execute(signature, inputs, stats, nullptr, b.rc.get(), b.arenas, nullptr);
    if (!warm) return warm.error();
    auto captured = execute(signature, inputs, stats, nullptr, b.rc.get(), b.arenas, &b);
    if (!captured) {
      if (!b.failed) return captured.error();
      return captured.error();
    }
    b.ready = true;
    return captured;
  }
  for (const auto& [input_index, dst] : b.uploads) {
    const tensor& t = inputs[input_index];
    GG_RETURN_IF_ERROR(b.rc->upload(dst, t.raw(), t.bytes()));
  }
  GG_RETURN_IF_ERROR(b.rc->replay());
  std::vector<tensor> outputs;
  for (const auto& d : b.downloads) {
    tensor t = tensor::zeros(d.type, d.shape);
    GG_RETURN_IF_ERROR(b.rc->download(t.raw(), d.src, t.bytes()));
    outputs.push_back(std::move(t));
  }
  GG_RETURN_IF_ERROR(b.rc->synchronize());
  (void)g;
  if (stats) {
    stats->arena_bytes = p->arena_bytes[0];
    stats->peak_bytes = p->peak_bytes[0];
    stats->device_arena_bytes = p->arena_bytes[1];
    stats->device_peak_bytes = p->peak_bytes[1];
    stats->planned = true;
    stats->graph_replay = true;
  }
  return outputs;
}

expected<std::vector<tensor>> session::execute(const std::string& signature, const std::vector<tensor>& inputs,
                                               run_stats* stats, const node_observer* observer,
                                               run_context* given_rc, std::shared_ptr<std::byte>* given_arenas,
                                               graph_bundle* capture, thread_pool* pool, const stop_check* stop) {
  const graph& g = *graph_;
  if (!pool) pool = pool_.get();
  const size_t nv = g.values.size();

  std::shared_ptr<plan> p;
  if (options_.memory_plan) {
    std::lock_guard<std::mutex> lock(plans_mu_);
    auto it = plans_.find(signature);
    if (it != plans_.end()) p = it->second;
  }

  std::unique_ptr<run_context> rc;
  if (device_ && !given_rc) {
    {
      std::lock_guard<std::mutex> lock(contexts_mu_);
      if (!free_contexts_.empty()) { rc = std::move(free_contexts_.back()); free_contexts_.pop_back(); }
    }
    if (!rc) {
      auto made = device_->new_run_context();
      if (!made) return made.error();
      rc = std::move(made).value();
      rc->set_allow_tf32(options_.allow_tf32);
    }
  }
  struct context_return {
    session* s; std::unique_ptr<run_context>* rc;
    ~context_return() {
      if (*rc) { std::lock_guard<std::mutex> lock(s->contexts_mu_); s->free_contexts_.push_back(std::move(*rc)); }
    }
  } give_back{this, &rc};
  run_context* ctx_rc = given_rc ? given_rc : rc.get();

  std::vector<tensor> vals(nv);
  for (auto& [id, t] : g.initializers) vals[id] = t;
  for (auto& [id, t] : device_initializers_) vals[id] = t;
  for (size_t i = 0; i < inputs.size(); ++i) vals[g.inputs[i]] = inputs[i];
  std::vector<int> remaining = use_counts_;

  run_allocator alloc;
  alloc.vals = &vals;
  alloc.remaining = &remaining;
  alloc.pinned = &pinned_;
  if (!overwritable_.empty() && !p) alloc.overwritable = &overwritable_;
  alloc.device = device_.get();
  if (p) {
    alloc.plan_offset = &p->offset;
    alloc.plan_size = &p->size;
    alloc.plan_overwrite = &p->overwrite;
    if (given_arenas) {
      alloc.arena[0] = given_arenas[0];
      alloc.arena[1] = given_arenas[1];
    } else {
      std::lock_guard<std::mutex> lock(p->mu);
      for (int d = 0; d < 2; ++d) {
        if (!p->free_arenas[d].empty()) {
          alloc.arena[d] = std::move(p->free_arenas[d].back());
          p->free_arenas[d].pop_back();
        }
      }
    }
    for (int d = 0; d < 2; ++d) {
      if (alloc.arena[d] || p->arena_bytes[d] == 0) continue;
      if (d == 0) {
        alloc.arena[0] = allocate_cpu_bytes(static_cast<size_t>(p->arena_bytes[0]));
        if (!alloc.arena[0]) return internal_error("out of memory allocating a {}-byte arena", p->arena_bytes[0]);
      } else {
        auto a = device_->allocate(static_cast<size_t>(p->arena_bytes[1]));
        if (!a) return a.error();
        alloc.arena[1] = std::move(a).value();
      }
    }
    if (given_arenas) {
      given_arenas[0] = alloc.arena[0];
      given_arenas[1] = alloc.arena[1];
    }
  } else {
    alloc.rec_size.assign(nv, 0);
    alloc.rec_fresh.assign(nv, 0);
    alloc.rec_device.assign(nv, 0);
    alloc.rec_shape.assign(nv, shape_t{});
    alloc.rec_overwrite.resize(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) alloc.rec_overwrite[i].assign(g.nodes[i].inputs.size(), 0);
  }
  std::vector<int> root(nv, -1);  // recording: the value whose fresh allocation v's bytes live in

  if (capture && !p) return internal_error("graph capture needs a memory plan");
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    if (stop && *stop && (*stop)()) return stopped_run();
    if (capture && ni == capture_begin_) {
      // Everything the uploads wrote must sit at fixed addresses the graph can keep using.
      capture->uploads.clear();
      for (size_t k = 0; k < capture_begin_; ++k) {
        const node& up = g.nodes[k];
        auto in_pos = std::find(g.inputs.begin(), g.inputs.end(), up.inputs[0]);
        capture->uploads.push_back({static_cast<size_t>(in_pos - g.inputs.begin()), vals[up.outputs[0]].raw()});
      }
      status st = ctx_rc->begin_capture();
      if (!st.is_ok()) { capture->failed = true; return st; }
    }
    if (capture && ni == capture_end_) {
      status st = ctx_rc->end_capture();
      if (st.is_ok()) st = ctx_rc->replay();
      if (!st.is_ok()) { capture->failed = true; return st; }
      capture->downloads.clear();
      for (size_t k = capture_end_; k < g.nodes.size(); ++k) {
        const tensor& src = vals[g.nodes[k].inputs[0]];
        capture->downloads.push_back({src.raw(), src.type(), src.shape()});
      }
    }
    alloc.current = &n;
    alloc.node_index = ni;
    alloc.on_device = on_device_[ni] != 0;
    alloc.host_outputs = &host_output_[ni];
    std::vector<const tensor*> ins;
    ins.reserve(n.inputs.size());
    for (int in : n.inputs) ins.push_back(in >= 0 && vals[in].defined() ? &vals[in] : nullptr);
    if (!takes_sequences_[ni])
      for (size_t j = 0; j < ins.size(); ++j)
        if (ins[j] && (ins[j]->is_sequence() || ins[j]->is_none()))
          return invalid_input("{} reads '{}', which is {}, not a tensor", n.describe(), g.values[n.inputs[j]].name,
                               ins[j]->is_none() ? "an empty optional" : "a sequence");
    for (size_t j = 0; j < ins.size(); ++j)
      if (ins[j] && ins[j]->is_none() && !optional_ops.count(n.op_type))
        return invalid_input("{} reads '{}', which is an empty optional, not a tensor or sequence", n.describe(),
                             g.values[n.inputs[j]].name);
    std::vector<tensor> outs(n.outputs.size());
    std::vector<const tensor*> observed_ins;
    if (observer) observed_ins = ins;
    kernel_context ctx(n, std::move(ins), &outs, pool, &alloc,
                       on_device_[ni] && ctx_rc ? ctx_rc->native() : nullptr);
    auto t_node = std::chrono::steady_clock::now();
    status st = kernels_[ni]->run(ctx);
    if (!st.is_ok() && on_device_[ni] && ctx_rc && !capture &&
        (st.kind() == error_kind::unsupported_here || st.kind() == error_kind::invalid_input)) {
      // The CPU is the reference: it runs what the device declined, and its verdict stands.
      st = run_on_cpu_instead(ni, ctx, ctx_rc, &outs);
      if (stats) ++stats->cpu_fallbacks;
    }
    if (!st.is_ok()) {
      if (capture && ni >= capture_begin_ && ni < capture_end_) {
        (void)ctx_rc->end_capture();  // abandon the capture; the error below is what counts
        capture->failed = true;
      }
      return st;
    }
    if (options_.profile && stats) {
      if (ctx_rc && on_device_[ni]) (void)ctx_rc->synchronize();
      std::string key = n.op_type;
      if (!on_device_[ni] && device_) key += " (cpu)";
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_node).count();
      stats->op_ms[key] += ms;
      if (stats->node_ms.size() < g.nodes.size()) stats->node_ms.resize(g.nodes.size());
      run_stats::node_time& nt = stats->node_ms[ni];
      if (nt.op.empty()) {
        nt.op = std::move(key);
        nt.name = n.name.empty() ? fmt::format("#{}", ni) : n.name;
        nt.shape = outs.empty() || !outs[0].defined() ? std::string("-") : shape_str(outs[0].shape());
      }
      nt.ms += ms;
    }
    if (observer) {
      std::vector<const tensor*> observed_outs;
      for (auto& t : outs) observed_outs.push_back(&t);
      (*observer)(n, observed_ins, observed_outs);
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      int v = n.outputs[o];
      if (v < 0) continue;
      if (!outs[o].defined() && use_counts_[v] > 0)
        return internal_error("{} produced no output {}", n.describe(), o);
      vals[v] = std::move(outs[o]);
      if (!p) {
        if (alloc.rec_fresh[v]) {
          root[v] = v;
        } else {
          for (int in : n.inputs)
            if (in >= 0 && same_owner(vals[in].storage(), vals[v].storage())) { root[v] = root[in]; break; }
        }
      }
    }
    for (int in : n.inputs) {
      if (in < 0) continue;
      if (--remaining[in] == 0 && !pinned_[in]) vals[in] = tensor();
    }
  }
  if (capture && capture_end_ >= g.nodes.size()) {
    capture->failed = true;  // nothing to download: not a shape of session graphs can serve
    return internal_error("graph capture found no outputs to download");
  }
  if (ctx_rc) GG_RETURN_IF_ERROR(ctx_rc->synchronize());

  std::vector<tensor> outputs;
  outputs.reserve(g.outputs.size());
  for (int out : g.outputs) {
    if (!options_.subgraph && vals[out].is_sequence() && !g.values[out].sequence && !g.values[out].optional)
      return invalid_input("output '{}' is a sequence but the model declares a tensor", g.values[out].name);
    if (!options_.subgraph && vals[out].is_none() && !g.values[out].optional)
      return invalid_input("output '{}' is an empty optional but the model declares no optional", g.values[out].name);
    outputs.push_back(vals[out]);
  }
  vals.clear();

  if (p) {
    if (stats) {
      stats->arena_bytes = p->arena_bytes[0];
      stats->peak_bytes = p->peak_bytes[0];
      stats->device_arena_bytes = p->arena_bytes[1];
      stats->device_peak_bytes = p->peak_bytes[1];
      stats->planned = true;
    }
    if (!given_arenas) {
      std::lock_guard<std::mutex> lock(p->mu);
      for (int d = 0; d < 2; ++d)
        if (alloc.arena[d] && alloc.arena[d].use_count() == 1 && p->free_arenas[d].size() < 4)
          p->free_arenas[d].push_back(std::move(alloc.arena[d]));
    }
    if (alloc.fallbacks > 0) {  // sizes changed under the same signature: plan again next time
      std::lock_guard<std::mutex> lock(plans_mu_);
      plans_.erase(signature);
    }
    return outputs;
  }

  if (!options_.memory_plan && !stats) return outputs;  // nobody wants the plan or its figures

  // Build the plan from what this run allocated: each fresh allocation is a buffer living from
  // its node to the last node that reads it or any view of it; buffers are packed per device.
  auto np = std::make_shared<plan>();
  np->offset.assign(nv, -1);
  np->size.assign(nv, 0);
  np->overwrite = alloc.rec_overwrite;
  std::vector<int> def(nv, -1), last(nv, -1);
  std::vector<bool> heap(nv, false);
  for (size_t ni = 0; ni < g.nodes.size(); ++ni)
    for (int v : g.nodes[ni].outputs)
      if (v >= 0 && root[v] == v) { def[v] = static_cast<int>(ni); last[v] = static_cast<int>(ni); }
  for (size_t ni = 0; ni < g.nodes.size(); ++ni)
    for (int in : g.nodes[ni].inputs)
      if (in >= 0 && root[in] >= 0) last[root[in]] = std::max(last[root[in]], static_cast<int>(ni));
  for (int out : g.outputs) if (root[out] >= 0) heap[root[out]] = true;
  // Concatenations in place: an input of a host-side Concat whose slices of the output are
  // contiguous (nothing but ones before the axis) lives in its slice of the output's buffer
  // when the Concat is its only reader, so its producer writes it there and the Concat finds
  // it in place (and copies nothing; concat_run skips an input already at its destination).
  std::vector<int> host(nv, -1);     // the Concat output whose buffer v lives in
  std::vector<int64_t> at(nv, 0);    // and where in it
  {
    auto fresh = [&](int v) {
      return v >= 0 && root[v] == v && alloc.rec_fresh[v] && !heap[v] && alloc.rec_device[v] == 0;
    };
    for (const node& n : g.nodes) {
      if (n.op_type != "Concat" || !n.domain.empty() || n.outputs.size() != 1 || n.inputs.size() < 2) continue;
      const int out = n.outputs[0];
      if (!fresh(out)) continue;
      const shape_t& shape = alloc.rec_shape[out];
      const int64_t rank = static_cast<int64_t>(shape.size());
      int64_t axis = n.attr_int("axis", 0);
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank) continue;
      bool ok = true;
      for (int64_t d = 0; d < axis; ++d) ok = ok && shape[static_cast<size_t>(d)] == 1;
      int64_t off = 0;
      std::vector<int> seen;
      for (int in : n.inputs) {
        ok = ok && fresh(in) && use_counts_[in] == 1 && host[in] < 0 && off % 64 == 0 &&
             std::find(seen.begin(), seen.end(), in) == seen.end();
        if (!ok) break;
        seen.push_back(in);
        off += alloc.rec_size[in];
      }
      if (!ok || off != alloc.rec_size[out]) continue;
      off = 0;
      for (int in : n.inputs) {
        host[in] = out;
        at[in] = off;
        off += alloc.rec_size[in];
      }
    }
  }
  // The buffer a hosted value's bytes are in, and where: through nested Concats.
  auto outermost = [&](int v, int64_t* where) {
    *where = 0;
    while (host[v] >= 0) {
      *where += at[v];
      v = host[v];
    }
    return v;
  };
  // A host's buffer lives from the first of its hosted values' producers.
  for (size_t v = 0; v < nv; ++v) {
    if (host[v] < 0) continue;
    int64_t where;
    const int top = outermost(static_cast<int>(v), &where);
    def[top] = std::min(def[top], def[v]);
  }
  struct buf { int v; int64_t size; int from, to; int64_t off; };
  for (int d = 0; d < 2; ++d) {
    std::vector<buf> bufs;
    int64_t output_bytes = 0;
    for (size_t v = 0; v < nv; ++v) {
      if (root[v] != static_cast<int>(v) || alloc.rec_device[v] != d || host[v] >= 0) continue;
      if (heap[v]) { output_bytes += alloc.rec_size[v]; continue; }
      bufs.push_back({static_cast<int>(v), align_up(std::max<int64_t>(alloc.rec_size[v], 1)), def[v], last[v], -1});
    }
    std::vector<size_t> order(bufs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bufs[a].size > bufs[b].size; });
    std::vector<size_t> placed;
    int64_t arena = 0;
    for (size_t i : order) {
      buf& b = bufs[i];
      std::vector<std::pair<int64_t, int64_t>> busy;
      for (size_t j : placed) {
        const buf& o = bufs[j];
        if (o.from <= b.to && b.from <= o.to) busy.push_back({o.off, o.off + o.size});
      }
      std::sort(busy.begin(), busy.end());
      int64_t off = 0;
      for (auto& [lo, hi] : busy) {
        if (off + b.size <= lo) break;
        off = std::max(off, hi);
      }
      b.off = off;
      arena = std::max(arena, off + b.size);
      placed.push_back(i);
      np->offset[b.v] = off;
      np->size[b.v] = b.size;
    }
    np->arena_bytes[d] = arena;
    for (size_t v = 0; v < nv; ++v) {
      if (host[v] < 0 || alloc.rec_device[v] != d) continue;
      int64_t where;
      const int top = outermost(static_cast<int>(v), &where);
      if (np->offset[top] < 0) continue;
      np->offset[v] = np->offset[top] + where;
      np->size[v] = alloc.rec_size[v];
    }
    // Peak: sweep over node indices with +size at `from` and -size after `to`.
    std::vector<int64_t> delta(g.nodes.size() + 1, 0);
    for (const buf& b : bufs) { delta[b.from] += b.size; delta[b.to + 1] -= b.size; }
    int64_t live = 0, peak = 0;
    for (int64_t dd : delta) { live += dd; peak = std::max(peak, live); }
    np->peak_bytes[d] = peak + output_bytes;
  }
  if (stats) {
    stats->arena_bytes = 0;
    stats->peak_bytes = np->peak_bytes[0];
    stats->device_arena_bytes = 0;
    stats->device_peak_bytes = np->peak_bytes[1];
    stats->planned = false;
  }
  if (options_.memory_plan) {
    std::lock_guard<std::mutex> lock(plans_mu_);
    plans_[signature] = np;
  }
  return outputs;
}

}  // namespace gpugrid
