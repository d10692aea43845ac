#include "engine/session.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace gpugrid {

void set_blas_threads(int threads) { openblas_set_num_threads(threads <= 0 ? hardware_threads() : threads); }

struct session::plan {
  std::vector<int64_t> offset;                 // per value: arena offset, -1 for heap
  std::vector<int64_t> size;                   // per value: planned bytes
  std::vector<std::vector<char>> overwrite;    // per node, per input: in-place allowed
  int64_t arena_bytes = 0;
  int64_t peak_bytes = 0;
  std::mutex mu;
  std::vector<std::shared_ptr<std::byte>> free_arenas;
};

namespace {

bool same_owner(const std::shared_ptr<std::byte>& a, const std::shared_ptr<std::byte>& b) {
  return a && b && !a.owner_before(b) && !b.owner_before(a);
}

int64_t align64(int64_t n) { return (n + 63) / 64 * 64; }

// The allocator the executor hands to kernels: arena slices when a plan exists, heap
// allocations (recorded for planning) otherwise.
class run_allocator final : public output_allocator {
 public:
  run_allocator(const node* const* current, const std::vector<tensor>* vals,
                const std::vector<int>* remaining, const std::vector<bool>* pinned)
      : current_(current), vals_(vals), remaining_(remaining), pinned_(pinned) {}

  const void* plan_ = nullptr;
  std::vector<int64_t>* plan_offset = nullptr;
  std::vector<int64_t>* plan_size = nullptr;
  std::vector<std::vector<char>>* plan_overwrite = nullptr;
  std::shared_ptr<std::byte> arena;
  size_t node_index = 0;
  int fallbacks = 0;
  // Recording (no plan): bytes per freshly allocated value, in-place decisions.
  std::vector<int64_t> rec_size;
  std::vector<char> rec_fresh;
  std::vector<std::vector<char>> rec_overwrite;

  expected<tensor> allocate(size_t index, dtype type, const shape_t& shape) override {
    const node& n = **current_;
    int v = index < n.outputs.size() ? n.outputs[index] : -1;
    int64_t bytes = num_elements(shape) * static_cast<int64_t>(dtype_size(type));
    if (plan_offset && v >= 0 && (*plan_offset)[v] >= 0 && bytes <= (*plan_size)[v]) {
      std::byte* p = arena.get() + (*plan_offset)[v];
      if (bytes) std::memset(p, 0, static_cast<size_t>(bytes));
      return tensor(type, shape, std::shared_ptr<std::byte>(arena, p));
    }
    if (plan_offset && v >= 0 && (*plan_offset)[v] >= 0) ++fallbacks;
    auto storage = allocate_cpu_bytes(static_cast<size_t>(bytes));
    if (!storage) return internal_error("{}: out of memory allocating {} bytes", n.describe(), bytes);
    if (!plan_offset && v >= 0) {
      rec_size[v] = bytes;
      rec_fresh[v] = 1;
    }
    return tensor(type, shape, std::move(storage));
  }

  bool may_overwrite_input(size_t j) override {
    const node& n = **current_;
    if (plan_overwrite) return j < (*plan_overwrite)[node_index].size() && (*plan_overwrite)[node_index][j];
    int u = j < n.inputs.size() ? n.inputs[j] : -1;
    bool ok = u >= 0 && !(*pinned_)[u] && (*remaining_)[u] == 1 && (*vals_)[u].storage() &&
              (*vals_)[u].storage().use_count() == 1;
    if (ok) rec_overwrite[node_index][j] = 1;
    return ok;
  }

 private:
  const node* const* current_;
  const std::vector<tensor>* vals_;
  const std::vector<int>* remaining_;
  const std::vector<bool>* pinned_;
};

std::string describe_declared(const value_info& v) {
  if (!v.shape) return "any shape";
  std::vector<std::string> dims;
  for (const auto& d : *v.shape) dims.push_back(d.value >= 0 ? std::to_string(d.value) : (d.symbol.empty() ? "?" : d.symbol));
  return "[" + fmt::format("{}", fmt::join(dims, ", ")) + "]";
}

}  // namespace

session::~session() = default;

expected<std::unique_ptr<session>> session::create(std::shared_ptr<const graph> g,
                                                   const session_options& options) {
  std::unique_ptr<session> s(new session());
  s->options_ = options;
  s->graph_ = std::make_shared<graph>(*g);
  s->pool_ = std::make_unique<thread_pool>(options.threads);
  graph& gr = *s->graph_;
  if (options.optimize) GG_RETURN_IF_ERROR(optimize_graph(gr, s->pool_.get()));

  const op_registry& reg = cpu::registry();
  for (const node& n : gr.nodes) {
    const kernel_factory* f = reg.find(n.domain, n.op_type);
    if (!f)
      return invalid_input("unsupported op {} (domain '{}', opset {}) in {}", n.op_type,
                           n.domain.empty() ? "ai.onnx" : n.domain, n.opset, n.describe());
    auto k = (*f)(n);
    if (!k) return k.error();
    std::vector<const tensor*> constants;
    for (int in : n.inputs) {
      auto it = in >= 0 ? gr.initializers.find(in) : gr.initializers.end();
      constants.push_back(it == gr.initializers.end() ? nullptr : &it->second);
    }
    GG_RETURN_IF_ERROR((*k)->prepare(constants));
    s->kernels_.push_back(std::move(k).value());
  }
  s->use_counts_.assign(gr.values.size(), 0);
  s->pinned_.assign(gr.values.size(), false);
  for (const node& n : gr.nodes)
    for (int in : n.inputs)
      if (in >= 0) ++s->use_counts_[in];
  for (int out : gr.outputs) { ++s->use_counts_[out]; s->pinned_[out] = true; }
  for (int in : gr.inputs) s->pinned_[in] = true;
  for (auto& [id, t] : gr.initializers) s->pinned_[id] = true;
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
  std::map<std::string, int64_t> symbols;
  signature->clear();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const value_info& v = g.values[g.inputs[i]];
    const tensor& t = inputs[i];
    if (!t.defined()) return invalid_input("input '{}' is missing", v.name);
    if (v.type != dtype::undefined && t.type() != v.type)
      return invalid_input("input '{}' is {} but the model expects {}", v.name, dtype_name(t.type()),
                           dtype_name(v.type));
    if (v.shape) {
      bool ok = v.shape->size() == t.rank();
      for (size_t d = 0; ok && d < t.rank(); ++d) {
        const dim_t& dim = (*v.shape)[d];
        if (dim.value >= 0 && dim.value != t.dim(d)) ok = false;
        if (dim.value < 0 && !dim.symbol.empty()) {
          auto [it, fresh] = symbols.emplace(dim.symbol, t.dim(d));
          if (!fresh && it->second != t.dim(d)) ok = false;
        }
      }
      if (!ok)
        return invalid_input("input '{}' has shape {} but the model expects {}", v.name,
                             shape_str(t.shape()), describe_declared(v));
    }
    *signature += fmt::format("{}:{};", static_cast<int>(t.type()), fmt::join(t.shape(), ","));
  }
  return status::ok();
}

expected<std::vector<tensor>> session::run(const std::vector<tensor>& inputs, run_stats* stats,
                                           const node_observer* observer) {
  std::string signature;
  GG_RETURN_IF_ERROR(check_inputs(inputs, &signature));
  const graph& g = *graph_;
  const size_t nv = g.values.size();

  std::shared_ptr<plan> p;
  if (options_.memory_plan) {
    std::lock_guard<std::mutex> lock(plans_mu_);
    auto it = plans_.find(signature);
    if (it != plans_.end()) p = it->second;
  }

  std::vector<tensor> vals(nv);
  for (auto& [id, t] : g.initializers) vals[id] = t;
  for (size_t i = 0; i < inputs.size(); ++i) vals[g.inputs[i]] = inputs[i];
  std::vector<int> remaining = use_counts_;

  const node* current = nullptr;
  run_allocator alloc(&current, &vals, &remaining, &pinned_);
  if (p) {
    alloc.plan_offset = &p->offset;
    alloc.plan_size = &p->size;
    alloc.plan_overwrite = &p->overwrite;
    {
      std::lock_guard<std::mutex> lock(p->mu);
      if (!p->free_arenas.empty()) {
        alloc.arena = std::move(p->free_arenas.back());
        p->free_arenas.pop_back();
      }
    }
    if (!alloc.arena) {
      alloc.arena = allocate_cpu_bytes(static_cast<size_t>(p->arena_bytes));
      if (!alloc.arena) return internal_error("out of memory allocating a {}-byte arena", p->arena_bytes);
    }
  } else {
    alloc.rec_size.assign(nv, 0);
    alloc.rec_fresh.assign(nv, 0);
    alloc.rec_overwrite.resize(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) alloc.rec_overwrite[i].assign(g.nodes[i].inputs.size(), 0);
  }
  std::vector<int> root(nv, -1);  // recording: the value whose fresh allocation v's bytes live in

  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    current = &n;
    alloc.node_index = ni;
    std::vector<const tensor*> ins;
    ins.reserve(n.inputs.size());
    for (int in : n.inputs) ins.push_back(in >= 0 && vals[in].defined() ? &vals[in] : nullptr);
    std::vector<tensor> outs(n.outputs.size());
    std::vector<const tensor*> observed_ins;
    if (observer) observed_ins = ins;
    kernel_context ctx(n, std::move(ins), &outs, pool_.get(), &alloc);
    status st = kernels_[ni]->run(ctx);
    if (!st.is_ok()) return st;
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

  std::vector<tensor> outputs;
  outputs.reserve(g.outputs.size());
  for (int out : g.outputs) outputs.push_back(vals[out]);
  vals.clear();

  if (p) {
    if (stats) { stats->arena_bytes = p->arena_bytes; stats->peak_bytes = p->peak_bytes; stats->planned = true; }
    if (alloc.arena.use_count() == 1) {
      std::lock_guard<std::mutex> lock(p->mu);
      if (p->free_arenas.size() < 4) p->free_arenas.push_back(std::move(alloc.arena));
    }
    if (alloc.fallbacks > 0) {  // sizes changed under the same signature: plan again next time
      std::lock_guard<std::mutex> lock(plans_mu_);
      plans_.erase(signature);
    }
    return outputs;
  }

  // Build the plan from what this run allocated: each fresh allocation is a buffer living from
  // its node to the last node that reads it or any view of it.
  auto np = std::make_shared<plan>();
  np->offset.assign(nv, -1);
  np->size.assign(nv, 0);
  np->overwrite = alloc.rec_overwrite;
  std::vector<int> def(nv, -1), last(nv, -1);
  std::vector<bool> heap(nv, false);
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    for (int v : g.nodes[ni].outputs) if (v >= 0 && root[v] == v) { def[v] = static_cast<int>(ni); last[v] = static_cast<int>(ni); }
  }
  for (size_t ni = 0; ni < g.nodes.size(); ++ni)
    for (int in : g.nodes[ni].inputs)
      if (in >= 0 && root[in] >= 0) last[root[in]] = std::max(last[root[in]], static_cast<int>(ni));
  for (int out : g.outputs) if (root[out] >= 0) heap[root[out]] = true;
  struct buf { int v; int64_t size; int from, to; int64_t off; };
  std::vector<buf> bufs;
  int64_t output_bytes = 0;
  for (size_t v = 0; v < nv; ++v) {
    if (root[v] != static_cast<int>(v)) continue;
    if (heap[v]) { output_bytes += alloc.rec_size[v]; continue; }
    bufs.push_back({static_cast<int>(v), align64(std::max<int64_t>(alloc.rec_size[v], 1)), def[v], last[v], -1});
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
  np->arena_bytes = arena;
  int64_t peak = 0;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    int64_t live = 0;
    for (const buf& b : bufs) if (b.from <= static_cast<int>(ni) && static_cast<int>(ni) <= b.to) live += b.size;
    peak = std::max(peak, live);
  }
  np->peak_bytes = peak + output_bytes;
  if (stats) { stats->arena_bytes = 0; stats->peak_bytes = np->peak_bytes; stats->planned = false; }
  if (options_.memory_plan) {
    std::lock_guard<std::mutex> lock(plans_mu_);
    plans_[signature] = np;
  }
  return outputs;
}

}  // namespace gpugrid
