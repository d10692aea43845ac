// Graph optimisations applied when a session is created: identity removal, constant folding,
// dead-node elimination and operator fusion (see fusion.cc).
#include <set>

#include "engine/fusion.h"
#include "engine/op_runner.h"
#include "engine/session.h"

namespace gpugrid {

namespace {

const std::set<std::string> nondeterministic = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                                "RandomUniformLike", "Bernoulli", "Multinomial"};

// Replaces every read of value `from` by value `to`.
void replace_uses(graph& g, int from, int to) {
  for (node& n : g.nodes)
    for (int& in : n.inputs)
      if (in == from) in = to;
}

bool is_graph_output(const graph& g, int v) {
  return std::find(g.outputs.begin(), g.outputs.end(), v) != g.outputs.end();
}

void remove_identities(graph& g) {
  std::vector<node> kept;
  std::vector<std::pair<int, int>> renames;
  for (node& n : g.nodes) {
    bool identity = n.domain.empty() && (n.op_type == "Identity" ||
                                         (n.op_type == "Dropout" && (n.outputs.size() < 2 || n.outputs[1] < 0) &&
                                          (n.inputs.size() < 3 || n.inputs[2] < 0)));
    if (identity && n.inputs.size() >= 1 && n.inputs[0] >= 0 && !n.outputs.empty() && n.outputs[0] >= 0 &&
        !is_graph_output(g, n.outputs[0])) {
      renames.push_back({n.outputs[0], n.inputs[0]});
      continue;
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  for (auto [from, to] : renames) {
    // Follow chains (Identity of Identity).
    for (auto& [f2, t2] : renames) if (t2 == from) t2 = to;
    replace_uses(g, from, to);
  }
}

void fold_constants(graph& g, thread_pool* pool) {
  std::vector<node> kept;
  const op_registry& reg = cpu_op_registry();
  for (node& n : g.nodes) {
    // Nodes with subgraphs (If, Loop, Scan, SequenceMap) are left for run time.
    bool foldable = !n.outputs.empty() && !nondeterministic.count(n.op_type) && !n.has_subgraphs() &&
                    reg.find(n.domain, n.op_type);
    for (int in : n.inputs) if (in >= 0 && !g.initializers.count(in)) foldable = false;
    // Folding runs the op at load time: keep heavy work on big constants for run time.
    if (foldable) {
      size_t in_bytes = 0;
      for (int in : n.inputs) if (in >= 0) in_bytes += g.initializers.at(in).bytes();
      if (in_bytes > (size_t{16} << 20)) foldable = false;
    }
    for (int out : n.outputs) if (out >= 0 && g.initializers.count(out)) foldable = false;
    if (foldable) {
      std::vector<tensor> ins;
      for (int in : n.inputs) ins.push_back(in >= 0 ? g.initializers.at(in) : tensor());
      node copy = n;
      auto result = run_single_op(reg, copy, ins, pool, true);
      size_t bytes = 0;
      bool holds_none = false;  // an empty optional stays a node: initializers are tensors or sequences
      if (result)
        for (auto& t : *result) {
          if (t.is_none()) holds_none = true;
          else bytes += t.bytes();
        }
      // Folding must not blow up the model (e.g. ConstantOfShape of a huge shape stays lazy).
      if (result && !holds_none && bytes <= (size_t{64} << 20)) {
        for (size_t o = 0; o < n.outputs.size(); ++o) {
          int v = n.outputs[o];
          if (v < 0 || o >= result->size() || !(*result)[o].defined()) continue;
          // Outputs that view an input's bytes are copied so initializers own their data.
          g.initializers[v] = (*result)[o].clone();
          g.values[v].type = (*result)[o].type();
        }
        continue;
      }
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
}

void remove_dead_nodes(graph& g) {
  std::set<int> needed(g.outputs.begin(), g.outputs.end());
  std::vector<node> kept;
  for (size_t i = g.nodes.size(); i-- > 0;) {
    node& n = g.nodes[i];
    bool used = false;
    for (int out : n.outputs) if (out >= 0 && needed.count(out)) used = true;
    if (!used) continue;
    for (int in : n.inputs) if (in >= 0) needed.insert(in);
    kept.push_back(std::move(n));
  }
  std::reverse(kept.begin(), kept.end());
  g.nodes = std::move(kept);
  // Initializers nobody reads any more (folded away) are dropped to save memory.
  for (auto it = g.initializers.begin(); it != g.initializers.end();) {
    if (!needed.count(it->first)) it = g.initializers.erase(it);
    else ++it;
  }
}

}  // namespace

status optimize_graph(graph& g, thread_pool* pool, bool cpu_only) {
  remove_identities(g);
  fold_constants(g, pool);
  remove_dead_nodes(g);
  GG_RETURN_IF_ERROR(fuse_operators(g, cpu_only));
  remove_dead_nodes(g);
  return status::ok();
}

}  // namespace gpugrid
