// The engine's graph IR: values, nodes with parsed attributes, and the graph that owns them.
//
// Built once by the loader from an ONNX ModelProto (engine/onnx_loader.h), rewritten by the
// passes, then read-only while the executor runs it (safe to share across threads then).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace gpugrid {

struct graph;

struct attribute {
  enum class kind { floating, integer, string, tensor, floats, ints, strings, graph };
  kind type = kind::integer;
  float f = 0;
  int64_t i = 0;
  std::string s;
  gpugrid::tensor t;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::shared_ptr<gpugrid::graph> g;
};

// A dimension of a declared shape: a number, or a symbol (e.g. "batch") resolved at run time.
struct dim_t {
  int64_t value = -1;   // -1 when symbolic or unknown
  std::string symbol;   // empty when numeric or unknown
};

struct value_info {
  std::string name;
  dtype type = dtype::undefined;
  std::optional<std::vector<dim_t>> shape;  // nullopt: rank unknown (for a sequence: its elements')
  bool sequence = false;                     // declared as a sequence of tensors of `type`
  bool optional = false;                     // declared optional (of a tensor or a sequence)
};

struct node {
  std::string name;
  std::string op_type;
  std::string domain;           // "" for the default ONNX domain
  int opset = 0;                // the model's opset for this node's domain
  std::vector<int> inputs;      // value ids; -1 for an omitted optional input
  std::vector<int> outputs;     // value ids; -1 for an omitted optional output
  std::map<std::string, attribute> attrs;
  // The last `implicit_inputs` inputs are values of this graph that the node's subgraphs
  // (If/Loop/Scan bodies) read from the enclosing scope, in the order of those subgraphs'
  // captured inputs. Passes and the executor treat them as ordinary inputs.
  int implicit_inputs = 0;

  size_t explicit_inputs() const { return inputs.size() - static_cast<size_t>(implicit_inputs); }
  bool has_subgraphs() const;

  bool has_attr(const std::string& key) const { return attrs.count(key) != 0; }
  int64_t attr_int(const std::string& key, int64_t dflt) const;
  float attr_float(const std::string& key, float dflt) const;
  std::string attr_string(const std::string& key, const std::string& dflt) const;
  std::vector<int64_t> attr_ints(const std::string& key, std::vector<int64_t> dflt = {}) const;
  std::vector<float> attr_floats(const std::string& key, std::vector<float> dflt = {}) const;
  const tensor* attr_tensor(const std::string& key) const;
  // The subgraph held by attribute `key`; nullptr when absent or not a graph.
  std::shared_ptr<const graph> attr_graph(const std::string& key) const;
  // "Conv 'conv1'" or "Conv #12" when unnamed: how error messages name a node.
  std::string describe() const;
};

struct graph {
  std::vector<value_info> values;             // indexed by value id
  std::map<int, tensor> initializers;         // value id -> constant data
  std::vector<node> nodes;                    // topologically sorted after validation
  std::vector<int> inputs;                    // graph inputs that are not initializers
  std::vector<int> outputs;
  std::map<std::string, int> opsets;          // domain -> version ("" is the ONNX domain)
  // For a subgraph: the last `captured_inputs` of `inputs` are values of enclosing graphs it
  // reads (its node's implicit inputs, in the same order). 0 for a model's main graph.
  int captured_inputs = 0;

  // Returns the id of the value with this name, adding it when absent.
  int value_id(const std::string& name);
  int find_value(const std::string& name) const;  // -1 when absent

 private:
  std::map<std::string, int> by_name_;
};

}  // namespace gpugrid
