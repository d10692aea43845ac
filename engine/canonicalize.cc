#include "engine/canonicalize.h"

#include <set>

namespace gpugrid {

namespace {

// Adds a constant value named after the node and returns its id.
int add_constant(graph& g, const node& n, const std::string& role, tensor t) {
  std::string base = (n.name.empty() ? n.op_type : n.name) + "::" + role;
  std::string name = base;
  for (int k = 1; g.find_value(name) >= 0; ++k) name = base + "_" + std::to_string(k);
  int id = g.value_id(name);
  g.values[id].type = t.type();
  g.initializers[id] = std::move(t);
  return id;
}

tensor ints_tensor(const std::vector<int64_t>& v) {
  return tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v);
}

void set_input(node& n, size_t index, int id) {
  if (n.inputs.size() <= index) n.inputs.resize(index + 1, -1);
  n.inputs[index] = id;
}

// Drops every input but the data input, before attributes are moved into inputs 1.. . A node
// that had no inputs at all gets an omitted one (-1), never value 0.
void keep_data_input(node& n) { n.inputs.resize(1, -1); }

// Moves an ints attribute into input `index` (when present) and erases the attribute.
void ints_attr_to_input(graph& g, node& n, const std::string& key, size_t index) {
  if (!n.has_attr(key)) return;
  set_input(n, index, add_constant(g, n, key, ints_tensor(n.attr_ints(key))));
  n.attrs.erase(key);
}

const std::set<std::string> reduce_ops = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                                          "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                          "ReduceLogSumExp", "ReduceSumSquare"};

status constant_to_tensor(const node& n, const std::string& what, tensor* out) {
  if (const tensor* t = n.attr_tensor("value")) { *out = *t; return status::ok(); }
  if (n.has_attr("value_float")) { *out = tensor::scalar<float>(n.attr_float("value_float", 0)); return status::ok(); }
  if (n.has_attr("value_int")) { *out = tensor::scalar<int64_t>(n.attr_int("value_int", 0)); return status::ok(); }
  if (n.has_attr("value_floats")) {
    auto v = n.attr_floats("value_floats");
    *out = tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v);
    return status::ok();
  }
  if (n.has_attr("value_ints")) { *out = ints_tensor(n.attr_ints("value_ints")); return status::ok(); }
  return invalid_input("{}: {} has no supported value attribute (sparse and string constants are not supported)",
                       what, n.describe());
}

}  // namespace

status canonicalize(graph& g, const std::string& what) {
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    const int v = n.opset;
    if (n.domain.empty()) {
      if (n.op_type == "Constant") {
        if (n.outputs.size() != 1 || n.outputs[0] < 0)
          return invalid_input("{}: {} must have exactly one output", what, n.describe());
        tensor t;
        GG_RETURN_IF_ERROR(constant_to_tensor(n, what, &t));
        int id = n.outputs[0];
        if (g.initializers.count(id))
          return invalid_input("{}: value '{}' is produced more than once", what, g.values[id].name);
        g.values[id].type = t.type();
        g.initializers[id] = std::move(t);
        continue;
      }
      if (n.op_type == "Clip" && v < 11) {
        float lo = n.attr_float("min", -3.402823466e38f), hi = n.attr_float("max", 3.402823466e38f);
        keep_data_input(n);
        set_input(n, 1, add_constant(g, n, "min", tensor::scalar<float>(lo)));
        set_input(n, 2, add_constant(g, n, "max", tensor::scalar<float>(hi)));
        n.attrs.erase("min");
        n.attrs.erase("max");
      } else if (n.op_type == "Pad" && v < 11) {
        keep_data_input(n);
        set_input(n, 1, add_constant(g, n, "pads", ints_tensor(n.attr_ints("pads"))));
        set_input(n, 2, add_constant(g, n, "value", tensor::scalar<float>(n.attr_float("value", 0))));
        n.attrs.erase("pads");
        n.attrs.erase("value");
      } else if ((n.op_type == "Squeeze" || n.op_type == "Unsqueeze") && v < 13) {
        keep_data_input(n);
        ints_attr_to_input(g, n, "axes", 1);
      } else if (n.op_type == "Split" && v < 13) {
        keep_data_input(n);
        ints_attr_to_input(g, n, "split", 1);
      } else if (reduce_ops.count(n.op_type) && (v < 18 && !(n.op_type == "ReduceSum" && v >= 13))) {
        keep_data_input(n);
        ints_attr_to_input(g, n, "axes", 1);
      } else if (n.op_type == "Slice" && v < 10) {
        keep_data_input(n);
        set_input(n, 1, add_constant(g, n, "starts", ints_tensor(n.attr_ints("starts"))));
        set_input(n, 2, add_constant(g, n, "ends", ints_tensor(n.attr_ints("ends"))));
        if (n.has_attr("axes")) set_input(n, 3, add_constant(g, n, "axes", ints_tensor(n.attr_ints("axes"))));
        n.attrs.erase("starts");
        n.attrs.erase("ends");
        n.attrs.erase("axes");
      } else if (n.op_type == "TopK" && v < 10) {
        keep_data_input(n);
        set_input(n, 1, add_constant(g, n, "k", ints_tensor({n.attr_int("k", 1)})));
        n.attrs.erase("k");
      } else if (n.op_type == "Upsample" || (n.op_type == "Resize" && v < 11)) {
        // Upsample-7: scales attribute; Upsample-9 and Resize-10: (X, scales). Both map to
        // Resize-11+ (X, roi, scales) with asymmetric coordinates and floor rounding.
        int scales = -1;
        if (n.op_type == "Upsample" && v < 9) {
          auto s = n.attr_floats("scales");
          scales = add_constant(g, n, "scales", tensor::from_vector<float>({static_cast<int64_t>(s.size())}, s));
          n.attrs.erase("scales");
        } else if (n.inputs.size() >= 2) {
          scales = n.inputs[1];
        }
        std::string mode = n.attr_string("mode", "nearest");
        if (mode == "bilinear") mode = "linear";
        n.op_type = "Resize";
        n.inputs = {n.inputs.empty() ? -1 : n.inputs[0], -1, scales};
        attribute m; m.type = attribute::kind::string; m.s = mode;
        n.attrs["mode"] = m;
        attribute ctm; ctm.type = attribute::kind::string; ctm.s = "asymmetric";
        n.attrs["coordinate_transformation_mode"] = ctm;
        attribute nm; nm.type = attribute::kind::string; nm.s = "floor";
        n.attrs["nearest_mode"] = nm;
      }
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  return status::ok();
}

}  // namespace gpugrid
