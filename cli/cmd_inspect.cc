// gpugrid inspect: what a model takes and gives, which ops it uses and who can run them.
#include <map>

#include <fmt/format.h>

#include "base/json.h"
#include "cli/commands.h"
#include "cli/model_io.h"
#include "engine/backend.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "engine/flops.h"
#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cli {

namespace {

std::string dims_str(const value_info& v) {
  if (!v.shape) return "?";
  std::vector<std::string> dims;
  for (const auto& d : *v.shape) dims.push_back(d.value >= 0 ? std::to_string(d.value) : (d.symbol.empty() ? "?" : d.symbol));
  return "[" + fmt::format("{}", fmt::join(dims, ", ")) + "]";
}

json values_json(const graph& g, const std::vector<int>& ids) {
  json list = json::array();
  for (int id : ids) {
    const value_info& v = g.values[id];
    json shape = json::array();
    if (v.shape)
      for (const auto& d : *v.shape) shape.push_back(d.value >= 0 ? json(d.value) : json(d.symbol.empty() ? "?" : d.symbol));
    list.push_back(json{{"name", v.name},
                        {"dtype", std::string(dtype_name(v.type))},
                        {"kind", v.optional ? "optional" : v.sequence ? "sequence" : "tensor"},
                        {"shape", std::move(shape)}});
  }
  return list;
}

std::string op_key(const node& n) { return n.domain.empty() ? n.op_type : n.domain + ":" + n.op_type; }

// Every node of g and of its subgraphs (If branches, Loop and Scan bodies) to any depth: counts
// per op, the ops seen inside subgraphs, and for each node the path of nodes that leads to it
// ("If 'a' then_branch > Loop #2 body > Foo 'b'").
struct op_walk {
  std::map<std::string, int> histogram;
  std::map<std::string, int> in_subgraphs;
  std::vector<std::pair<std::string, std::string>> nodes;  // (op, path)
  int subgraph_nodes = 0;
  void walk(const graph& g, const std::string& prefix, int depth) {
    for (const node& n : g.nodes) {
      std::string key = op_key(n);
      histogram[key]++;
      if (depth > 0) { in_subgraphs[key]++; ++subgraph_nodes; }
      nodes.push_back({key, prefix + n.describe()});
      for (const auto& [name, a] : n.attrs)
        if (a.type == attribute::kind::graph && a.g) walk(*a.g, prefix + n.describe() + " " + name + " > ", depth + 1);
    }
  }
};

}  // namespace

// A name from the model file as one printable line (control characters escaped).
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

int inspect_command(const inspect_options& o) {
  auto model = load_model_file(o.model);
  if (!model) { fmt::print(stderr, "gpugrid: {}\n", model.error().message()); return 2; }
  const graph& g = **model;
  op_walk ops;
  ops.walk(g, "", 0);
  const std::map<std::string, int>& histogram = ops.histogram;
  const op_registry& cpu_reg = cpu::registry();
  std::string cuda_note;
  const op_registry* cuda_reg = cuda_ops(&cuda_note);
  std::vector<std::string> cpu_missing, cuda_missing;
  auto supports = [](const op_registry* reg, const std::string& op) {
    auto colon = op.find(':');
    return reg && reg->find(colon == std::string::npos ? "" : op.substr(0, colon),
                            colon == std::string::npos ? op : op.substr(colon + 1)) != nullptr;
  };
  // Ops inside subgraphs always run on the CPU (the control-flow op that holds them does).
  auto on_cuda = [&](const std::string& op) {
    auto it = ops.in_subgraphs.find(op);
    return supports(cuda_reg, op) && (it == ops.in_subgraphs.end() || it->second < histogram.at(op));
  };
  for (auto& [op, count] : histogram) {
    if (!supports(&cpu_reg, op)) cpu_missing.push_back(op);
    if (cuda_reg && !on_cuda(op)) cuda_missing.push_back(op);
  }
  // Where each unsupported op is (the path of nodes down to it, for ops inside subgraphs).
  std::vector<std::pair<std::string, std::string>> missing_at;
  for (const auto& [op, path] : ops.nodes)
    if (!supports(&cpu_reg, op)) missing_at.push_back({op, path});
  // With --device cuda and a GPU present: what the optimised graph actually places where.
  std::map<std::string, int> fallback;
  std::string device_used = "cpu";
  if (o.device != "cpu") {
    session_options so;
    so.device = o.device;
    auto s = session::create(*model, so);
    if (s) { fallback = (*s)->cpu_fallback_ops(); device_used = (*s)->device_name(); }
    else if (o.device != "auto") { fmt::print(stderr, "gpugrid: {}\n", s.error().message()); return 2; }
  }
  // FLOPs need concrete shapes: run once on random inputs (symbolic dims = 1).
  std::string flops_note;
  int64_t flops = -1;
  if (cpu_missing.empty()) {
    auto f = estimate_flops(*model);
    if (f) flops = *f; else flops_note = f.error().message();
  } else {
    flops_note = "unsupported ops";
  }
  if (o.json) {
    int64_t params = 0;
    for (auto& [id, t] : g.initializers) params += t.numel();
    json op_counts = json::object();
    for (auto& [op, count] : histogram) op_counts[op] = count;
    json missing_paths = json::array();
    for (auto& [op, path] : missing_at) missing_paths.push_back(json{{"op", op}, {"path", path}});
    json cuda = cuda_reg ? json{{"unsupported", cuda_missing}} : json{{"unsupported", nullptr}, {"note", cuda_note}};
    json fallbacks = json::object();
    for (auto& [op, count] : fallback) fallbacks[op] = count;
    json j{{"model", o.model},
           {"opset", g.opsets.count("") ? g.opsets.at("") : 0},
           {"inputs", values_json(g, g.inputs)},
           {"outputs", values_json(g, g.outputs)},
           {"nodes", g.nodes.size()},
           {"subgraph_nodes", ops.subgraph_nodes},
           {"parameters", params},
           {"ops", std::move(op_counts)},
           {"backends", json{{"cpu", json{{"unsupported", cpu_missing}, {"unsupported_at", std::move(missing_paths)}}},
                             {"cuda", std::move(cuda)}}},
           {"device", device_used},
           {"cpu_fallback", std::move(fallbacks)},
           {"flops", flops >= 0 ? json(flops) : json(nullptr)}};
    fmt::print("{}\n", dump_json(j));
    return 0;
  }
  fmt::print("model    {}\nopset    {}\nnodes    {}", o.model, g.opsets.count("") ? g.opsets.at("") : 0, g.nodes.size());
  if (ops.subgraph_nodes) fmt::print(" (and {} inside subgraphs)", ops.subgraph_nodes);
  fmt::print("\n");
  fmt::print("inputs\n");
  for (int id : g.inputs) fmt::print("  {:<24} {:<8} {}\n", printable(g.values[id].name), value_type_str(g.values[id]), dims_str(g.values[id]));
  fmt::print("outputs\n");
  for (int id : g.outputs) fmt::print("  {:<24} {:<8} {}\n", printable(g.values[id].name), value_type_str(g.values[id]), dims_str(g.values[id]));
  {
    status io = check_tensor_io(g);
    if (!io.is_ok()) fmt::print("note     {}\n", io.message());
  }
  fmt::print("ops\n");
  for (auto& [op, count] : histogram) {
    std::string where = ops.in_subgraphs.count(op) ? fmt::format("   ({} in subgraphs)", ops.in_subgraphs.at(op)) : "";
    fmt::print("  {:<28} {:>5}   cpu: {:<3}  cuda: {}{}\n", printable(op), count, supports(&cpu_reg, op) ? "yes" : "no",
               !cuda_reg ? "-" : on_cuda(op) ? "yes" : "no (runs on the CPU)", where);
  }
  for (auto& [op, path] : missing_at) fmt::print("unsupported {} at {}\n", printable(op), printable(path));
  if (!cuda_reg) fmt::print("cuda     {}\n", cuda_note);
  if (device_used != "cpu") {
    fmt::print("device   {}: ", device_used);
    if (fallback.empty()) fmt::print("every op runs on the device\n");
    else {
      std::vector<std::string> parts;
      for (auto& [op, count] : fallback) parts.push_back(fmt::format("{} x{}", op, count));
      fmt::print("on the CPU after optimisation: {}\n", fmt::join(parts, ", "));
    }
  }
  if (flops >= 0) fmt::print("flops    {:.3g} per run (symbolic dims = 1)\n", static_cast<double>(flops));
  else fmt::print("flops    unknown ({})\n", flops_note);
  return 0;
}

}  // namespace gpugrid::cli
