#include "engine/graph.h"

#include <fmt/format.h>

namespace gpugrid {

int64_t node::attr_int(const std::string& key, int64_t dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.type == attribute::kind::floating) return static_cast<int64_t>(it->second.f);
  return it->second.i;
}

float node::attr_float(const std::string& key, float dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.type == attribute::kind::integer) return static_cast<float>(it->second.i);
  return it->second.f;
}

std::string node::attr_string(const std::string& key, const std::string& dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.s;
}

std::shared_ptr<const graph> node::attr_graph(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second.type != attribute::kind::graph) return nullptr;
  return it->second.g;
}

bool node::has_subgraphs() const {
  for (const auto& [key, a] : attrs)
    if (a.type == attribute::kind::graph) return true;
  return false;
}

std::vector<int64_t> node::attr_ints(const std::string& key, std::vector<int64_t> dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.ints;
}

std::vector<float> node::attr_floats(const std::string& key, std::vector<float> dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.floats;
}

const tensor* node::attr_tensor(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second.type != attribute::kind::tensor) return nullptr;
  return &it->second.t;
}

std::string node::describe() const {
  if (!name.empty()) return fmt::format("{} '{}'", op_type, name);
  return fmt::format("{} node", op_type);
}

int graph::value_id(const std::string& name) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  int id = static_cast<int>(values.size());
  value_info v;
  v.name = name;
  values.push_back(std::move(v));
  by_name_[name] = id;
  return id;
}

int graph::find_value(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

}  // namespace gpugrid
