#include "engine/onnx_loader.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/canonicalize.h"
#include "engine/tensor_proto.h"

namespace gpugrid {

namespace {

namespace fs = std::filesystem;

status read_external_data(onnx::TensorProto& t, const std::string& what, const load_options& opt,
                          int64_t* weight_bytes) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    if (kv.key() == "location") {
      location = kv.value();
    } else if (kv.key() == "offset" || kv.key() == "length") {
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(kv.value().c_str(), &end, 10);
      if (errno || !end || *end || v < 0)
        return invalid_input("{}: initializer '{}' has a bad external data {} '{}'", what, t.name(),
                             kv.key(), kv.value());
      (kv.key() == "offset" ? offset : length) = v;
    }
  }
  if (location.empty())
    return invalid_input("{}: initializer '{}' has external data without a location", what, t.name());
  if (opt.base_dir.empty())
    return invalid_input("{}: initializer '{}' uses external data, which needs the model as a file",
                         what, t.name());
  fs::path rel(location);
  if (rel.is_absolute() || location.find('\\') != std::string::npos)
    return invalid_input("{}: external data location '{}' must be a relative path", what, location);
  for (const auto& part : rel)
    if (part == "..")
      return invalid_input("{}: external data location '{}' leaves the model's folder", what, location);
  fs::path full = fs::path(opt.base_dir) / rel;
  std::error_code ec;
  auto canon_base = fs::weakly_canonical(opt.base_dir, ec);
  auto canon_full = fs::weakly_canonical(full, ec);
  if (ec || canon_full.string().rfind(canon_base.string(), 0) != 0)
    return invalid_input("{}: external data location '{}' leaves the model's folder", what, location);
  uintmax_t file_size = fs::file_size(canon_full, ec);
  if (ec) return invalid_input("{}: cannot read external data '{}': {}", what, location, ec.message());
  if (static_cast<uintmax_t>(offset) > file_size)
    return invalid_input("{}: external data offset {} is past the end of '{}' ({} bytes)", what,
                         offset, location, file_size);
  if (length < 0) length = static_cast<int64_t>(file_size) - offset;
  if (static_cast<uintmax_t>(offset) + static_cast<uintmax_t>(length) > file_size)
    return invalid_input("{}: external data for '{}' wants bytes {}..{} of '{}', which has {}", what,
                         t.name(), offset, offset + length, location, file_size);
  *weight_bytes += length;
  if (*weight_bytes > opt.max_weight_bytes)
    return invalid_input("{}: weights exceed the cap of {} bytes", what, opt.max_weight_bytes);
  std::ifstream in(canon_full, std::ios::binary);
  if (!in) return invalid_input("{}: cannot open external data '{}'", what, location);
  std::string data(static_cast<size_t>(length), '\0');
  in.seekg(offset);
  in.read(data.data(), length);
  if (in.gcount() != length)
    return invalid_input("{}: external data '{}' is shorter than declared", what, location);
  t.clear_external_data();
  t.set_data_location(onnx::TensorProto::DEFAULT);
  t.set_raw_data(std::move(data));
  return status::ok();
}

expected<tensor> load_initializer_copy(const onnx::TensorProto& proto, const std::string& what,
                                       const load_options& opt, int64_t* weight_bytes) {
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    onnx::TensorProto copy = proto;
    GG_RETURN_IF_ERROR(read_external_data(copy, what, opt, weight_bytes));
    return tensor_from_proto(copy, what);
  }
  auto t = tensor_from_proto(proto, what);
  if (t) {
    *weight_bytes += static_cast<int64_t>(t->bytes());
    if (*weight_bytes > opt.max_weight_bytes)
      return invalid_input("{}: weights exceed the cap of {} bytes", what, opt.max_weight_bytes);
  }
  return t;
}

// A tensor that uses the proto's raw_data bytes in place (they move out of the proto), so
// large weights are not copied while a model loads.
expected<tensor> adopt_raw_data(onnx::TensorProto& proto, const std::string& what) {
  dtype t;
  if (!dtype_from_onnx(proto.data_type(), &t) || t == dtype::string) return tensor_from_proto(proto, what);
  shape_t shape(proto.dims().begin(), proto.dims().end());
  int64_t n = 0;
  size_t es = dtype_size(t);
  if (!checked_num_elements(shape, (int64_t{1} << 34) / static_cast<int64_t>(es), &n) ||
      proto.raw_data().size() != static_cast<size_t>(n) * es || n == 0)
    return tensor_from_proto(proto, what);  // the checked path reports what is wrong
  std::shared_ptr<std::string> owner(proto.release_raw_data());
  if (t == dtype::boolean)
    for (char& c : *owner) c = c != 0 ? 1 : 0;
  std::shared_ptr<std::byte> storage(owner, reinterpret_cast<std::byte*>(owner->data()));
  return tensor(t, std::move(shape), std::move(storage));
}

expected<tensor> load_initializer(onnx::TensorProto& proto, const std::string& what,
                                  const load_options& opt, int64_t* weight_bytes) {
  if (proto.data_location() != onnx::TensorProto::EXTERNAL && proto.has_raw_data() &&
      proto.raw_data().size() >= 4096) {
    *weight_bytes += static_cast<int64_t>(proto.raw_data().size());
    if (*weight_bytes > opt.max_weight_bytes)
      return invalid_input("{}: weights exceed the cap of {} bytes", what, opt.max_weight_bytes);
    return adopt_raw_data(proto, what);
  }
  return load_initializer_copy(proto, what, opt, weight_bytes);
}

status convert_attribute(const onnx::AttributeProto& a, const std::string& what,
                         const load_options& opt, int64_t* weight_bytes, attribute* out) {
  switch (a.type()) {
    case onnx::AttributeProto::FLOAT: out->type = attribute::kind::floating; out->f = a.f(); break;
    case onnx::AttributeProto::INT: out->type = attribute::kind::integer; out->i = a.i(); break;
    case onnx::AttributeProto::STRING: out->type = attribute::kind::string; out->s = a.s(); break;
    case onnx::AttributeProto::TENSOR: {
      out->type = attribute::kind::tensor;
      auto t = load_initializer_copy(a.t(), what, opt, weight_bytes);
      if (!t) return t.error();
      out->t = std::move(t).value();
      break;
    }
    case onnx::AttributeProto::FLOATS:
      out->type = attribute::kind::floats;
      out->floats.assign(a.floats().begin(), a.floats().end());
      break;
    case onnx::AttributeProto::INTS:
      out->type = attribute::kind::ints;
      out->ints.assign(a.ints().begin(), a.ints().end());
      break;
    case onnx::AttributeProto::STRINGS:
      out->type = attribute::kind::strings;
      out->strings.assign(a.strings().begin(), a.strings().end());
      break;
    case onnx::AttributeProto::GRAPH:
    case onnx::AttributeProto::GRAPHS:
      out->type = attribute::kind::graph;  // subgraphs (If/Loop/Scan) are not executed yet
      break;
    case onnx::AttributeProto::TYPE_PROTO: {
      // A type (Optional's `type`): kept as the ONNX code of the tensor element type inside
      // it (through sequences and optionals), 0 when it names none.
      const onnx::TypeProto* tp = &a.tp();
      for (int depth = 0; depth < 8; ++depth) {
        if (tp->has_optional_type()) tp = &tp->optional_type().elem_type();
        else if (tp->has_sequence_type()) tp = &tp->sequence_type().elem_type();
        else break;
      }
      out->type = attribute::kind::integer;
      out->i = tp->has_tensor_type() ? tp->tensor_type().elem_type() : 0;
      break;
    }
    case onnx::AttributeProto::UNDEFINED:
      // Old models omit the type field; infer it from whichever field is set.
      if (a.has_f()) { out->type = attribute::kind::floating; out->f = a.f(); }
      else if (a.has_i()) { out->type = attribute::kind::integer; out->i = a.i(); }
      else if (a.has_s()) { out->type = attribute::kind::string; out->s = a.s(); }
      else if (a.ints_size()) { out->type = attribute::kind::ints; out->ints.assign(a.ints().begin(), a.ints().end()); }
      else if (a.floats_size()) { out->type = attribute::kind::floats; out->floats.assign(a.floats().begin(), a.floats().end()); }
      else return invalid_input("{}: attribute '{}' has no type and no value", what, a.name());
      break;
    default:
      return invalid_input("{}: attribute '{}' has an unsupported type ({})", what, a.name(),
                           static_cast<int>(a.type()));
  }
  return status::ok();
}

void read_value_info(const onnx::ValueInfoProto& vi, value_info* out) {
  if (!vi.has_type()) return;
  const onnx::TypeProto* type = &vi.type();
  if (type->has_optional_type() && type->optional_type().has_elem_type()) {
    out->optional = true;
    type = &type->optional_type().elem_type();
  }
  if (type->has_sequence_type() && type->sequence_type().has_elem_type()) {
    out->sequence = true;
    type = &type->sequence_type().elem_type();
  }
  if (!type->has_tensor_type()) return;
  const auto& tt = type->tensor_type();
  dtype t;
  if (dtype_from_onnx(tt.elem_type(), &t)) out->type = t;
  if (tt.has_shape()) {
    std::vector<dim_t> dims;
    for (const auto& d : tt.shape().dim()) {
      dim_t dim;
      if (d.has_dim_value()) dim.value = d.dim_value();
      else if (d.has_dim_param()) dim.symbol = d.dim_param();
      dims.push_back(dim);
    }
    out->shape = std::move(dims);
  }
}

// A type the engine can hold in a value: a tensor, a sequence of tensors, or an optional of
// either.
bool supported_type(const onnx::TypeProto& t) {
  if (t.has_tensor_type()) return true;
  if (t.has_optional_type())
    return !t.optional_type().has_elem_type() || (!t.optional_type().elem_type().has_optional_type() &&
                                                    supported_type(t.optional_type().elem_type()));
  return t.has_sequence_type() &&
         (!t.sequence_type().has_elem_type() || t.sequence_type().elem_type().has_tensor_type());
}

// Orders g.nodes so that every node comes after the producers of its inputs.
status topological_sort(graph& g, const std::string& what) {
  // Every id must name a value (a bug in a pass, not in the file, if one does not).
  const int nvalues = static_cast<int>(g.values.size());
  auto bad_id = [&](int id) { return id < -1 || id >= nvalues; };
  for (const node& n : g.nodes)
    for (const auto* ids : {&n.inputs, &n.outputs})
      for (int id : *ids)
        if (bad_id(id)) return internal_error("{}: {} refers to value #{}, which does not exist", what, n.describe(), id);
  for (int id : g.outputs)
    if (bad_id(id)) return internal_error("{}: a graph output refers to value #{}, which does not exist", what, id);
  std::vector<int> producer(g.values.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (int out : g.nodes[i].outputs) {
      if (out < 0) continue;
      if (producer[out] >= 0 || g.initializers.count(out) ||
          std::find(g.inputs.begin(), g.inputs.end(), out) != g.inputs.end())
        return invalid_input("{}: value '{}' is produced more than once (by {})", what,
                             g.values[out].name, g.nodes[i].describe());
      producer[out] = static_cast<int>(i);
    }
  }
  std::vector<int> pending(g.nodes.size(), 0);
  std::vector<std::vector<int>> consumers(g.nodes.size());
  std::set<int> available(g.inputs.begin(), g.inputs.end());
  for (auto& [id, t] : g.initializers) available.insert(id);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    std::set<int> seen;
    for (int in : g.nodes[i].inputs) {
      if (in < 0) continue;
      if (producer[in] < 0) {
        if (!available.count(in))
          return invalid_input("{}: {} reads '{}', which no node, input or initializer provides",
                               what, g.nodes[i].describe(), g.values[in].name);
        continue;
      }
      if (seen.insert(producer[in]).second) {
        ++pending[i];
        consumers[producer[in]].push_back(static_cast<int>(i));
      }
    }
  }
  std::vector<int> ready, order;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (pending[i] == 0) ready.push_back(static_cast<int>(i));
  // Keep the file's order among ready nodes (stable): process smallest index first.
  std::make_heap(ready.begin(), ready.end(), std::greater<int>());
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), std::greater<int>());
    int n = ready.back();
    ready.pop_back();
    order.push_back(n);
    for (int c : consumers[n]) {
      if (--pending[c] == 0) {
        ready.push_back(c);
        std::push_heap(ready.begin(), ready.end(), std::greater<int>());
      }
    }
  }
  if (order.size() != g.nodes.size()) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (pending[i] > 0) return invalid_input("{}: the graph has a cycle through {}", what, g.nodes[i].describe());
  }
  std::vector<node> sorted;
  sorted.reserve(order.size());
  for (int i : order) sorted.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(sorted);
  for (int out : g.outputs) {
    if (out < 0) continue;
    if (producer[out] < 0 && !available.count(out))
      return invalid_input("{}: graph output '{}' is not produced by any node", what, g.values[out].name);
  }
  return status::ok();
}

}  // namespace

namespace {
expected<std::shared_ptr<graph>> build_graph(onnx::ModelProto& model, const std::string& what,
                                             const load_options& options);
}  // namespace

expected<std::shared_ptr<graph>> load_model_from_bytes(const std::string& bytes,
                                                       const std::string& what,
                                                       const load_options& options) {
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    return invalid_input("{}: {} bytes is too large for one protobuf (over 2 GiB; keep weights in external data)",
                         what, bytes.size());
  onnx::ModelProto model;
  {
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                              static_cast<int>(bytes.size()));
    in.SetTotalBytesLimit(INT_MAX);
    in.SetRecursionLimit(64);
    if (!model.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage())
      return invalid_input("{}: not a valid ONNX model (protobuf parse failed; truncated or corrupt?)", what);
  }
  return build_graph(model, what, options);
}

namespace {

// The names one graph defines, and the graphs around it (for subgraphs' outer-scope reads).
struct scope {
  const scope* parent = nullptr;
  std::set<std::string> names;
  bool visible(const std::string& name) const {
    for (const scope* s = this; s; s = s->parent)
      if (s->names.count(name)) return true;
    return false;
  }
};

struct build_state {
  std::string what;
  const load_options& options;
  int64_t weight_bytes = 0;
};

status build_body(onnx::GraphProto& gp, graph& g, build_state& st, int depth, const scope* outer,
                  const std::string& where, std::vector<std::string>* free_names);

// Reads the graph attributes of node `n` (If branches, Loop and Scan bodies), then gives each
// of them the same captured inputs: the union of the names they read from enclosing graphs,
// which become n's implicit inputs.
status build_subgraphs(onnx::NodeProto& np, node& n, graph& g, build_state& st, int depth,
                       const scope& here, const std::string& where) {
  std::vector<std::pair<std::string, std::shared_ptr<graph>>> subs;
  std::vector<std::string> captured;
  for (auto& a : *np.mutable_attribute()) {
    if (a.type() != onnx::AttributeProto::GRAPH) continue;
    if (depth + 1 > max_subgraph_depth)
      return invalid_input("{}: subgraphs are nested deeper than {} levels (at {} in {})", st.what,
                           max_subgraph_depth, n.describe(), where);
    auto sub = std::make_shared<graph>();
    sub->opsets = g.opsets;
    std::string sub_where = where + " > " + n.describe() + " " + a.name();
    std::vector<std::string> reads;
    GG_RETURN_IF_ERROR(build_body(*a.mutable_g(), *sub, st, depth + 1, &here, sub_where, &reads));
    for (auto& name : reads)
      if (std::find(captured.begin(), captured.end(), name) == captured.end()) captured.push_back(name);
    subs.push_back({a.name(), std::move(sub)});
  }
  for (auto& [key, sub] : subs) {
    for (const auto& name : captured) {
      int id = sub->value_id(name);
      if (std::find(sub->inputs.begin(), sub->inputs.end(), id) != sub->inputs.end() || sub->initializers.count(id))
        return internal_error("{}: captured value '{}' is already an input of {}", st.what, name, key);
      sub->inputs.push_back(id);
    }
    sub->captured_inputs = static_cast<int>(captured.size());
    std::string sub_what = st.what + ": " + n.describe() + " " + key;
    GG_RETURN_IF_ERROR(canonicalize(*sub, sub_what));
    GG_RETURN_IF_ERROR(topological_sort(*sub, sub_what));
    attribute attr;
    attr.type = attribute::kind::graph;
    attr.g = std::move(sub);
    n.attrs[key] = std::move(attr);
  }
  for (const auto& name : captured) n.inputs.push_back(g.value_id(name));
  n.implicit_inputs = static_cast<int>(captured.size());
  return status::ok();
}

// Reads one graph: the model's main graph (depth 0, outer == nullptr) or a subgraph, whose
// reads of names it does not define are checked against the enclosing graphs and returned in
// free_names (in order of first use).
status build_body(onnx::GraphProto& gp, graph& g, build_state& st, int depth, const scope* outer,
                  const std::string& where, std::vector<std::string>* free_names) {
  const std::string& what = st.what;
  const bool sub = depth > 0;
  for (auto& init : *gp.mutable_initializer()) {
    if (init.name().empty()) return invalid_input("{}: an initializer has no name", what);
    auto t = load_initializer(init, what, st.options, &st.weight_bytes);
    if (!t) return t.error();
    int id = g.value_id(init.name());
    if (g.initializers.count(id)) return invalid_input("{}: initializer '{}' appears twice", what, init.name());
    g.values[id].type = t->type();
    g.initializers[id] = std::move(t).value();
  }
  if (gp.sparse_initializer_size() > 0)
    return invalid_input("{}: sparse initializers are not supported", what);
  for (const auto& in : gp.input()) {
    if (in.name().empty()) return invalid_input("{}: a graph input has no name", what);
    if (in.has_type() && !supported_type(in.type()))
      return invalid_input("{}: input '{}' is a map, sparse tensor or nested sequence, which is not supported", what,
                           in.name());
    int id = g.value_id(in.name());
    if (g.initializers.count(id)) continue;  // an input with a default: treated as a constant
    read_value_info(in, &g.values[id]);
    if (std::find(g.inputs.begin(), g.inputs.end(), id) != g.inputs.end())
      return invalid_input("{}: graph input '{}' appears twice", what, in.name());
    g.inputs.push_back(id);
  }
  for (const auto& out : gp.output()) {
    if (out.name().empty()) return invalid_input("{}: a graph output has no name", what);
    if (out.has_type() && !supported_type(out.type()))
      return invalid_input("{}: output '{}' is a map, sparse tensor or nested sequence, which is not supported", what,
                           out.name());
    int id = g.value_id(out.name());
    read_value_info(out, &g.values[id]);
    g.outputs.push_back(id);
  }
  for (const auto& vi : gp.value_info()) {
    int id = g.find_value(vi.name());
    if (id >= 0 && g.values[id].type == dtype::undefined) read_value_info(vi, &g.values[id]);
  }
  // The names this graph defines, visible to its subgraphs.
  scope here;
  here.parent = outer;
  for (const auto& init : gp.initializer()) here.names.insert(init.name());
  for (const auto& in : gp.input()) here.names.insert(in.name());
  for (const auto& np : gp.node())
    for (const auto& o : np.output())
      if (!o.empty()) here.names.insert(o);
  auto read_name = [&](const std::string& name, const std::string& reader) -> status {
    if (!sub || here.names.count(name)) return status::ok();
    if (!outer || !outer->visible(name))
      return invalid_input("{}: {} in subgraph {} reads '{}', which is not defined there or in any enclosing graph",
                           what, reader, where, name);
    if (std::find(free_names->begin(), free_names->end(), name) == free_names->end()) free_names->push_back(name);
    return status::ok();
  };
  for (auto& np : *gp.mutable_node()) {
    node n;
    n.name = np.name();
    n.op_type = np.op_type();
    n.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    if (n.op_type.empty()) return invalid_input("{}: a node has no op_type", what);
    auto ops = g.opsets.find(n.domain);
    if (ops == g.opsets.end())
      return invalid_input("{}: {} uses domain '{}', which the model does not import", what, n.describe(), n.domain);
    n.opset = ops->second;
    for (const auto& in : np.input()) {
      if (!in.empty()) GG_RETURN_IF_ERROR(read_name(in, n.describe()));
      n.inputs.push_back(in.empty() ? -1 : g.value_id(in));
    }
    for (const auto& out : np.output()) n.outputs.push_back(out.empty() ? -1 : g.value_id(out));
    for (const auto& a : np.attribute()) {
      if (a.type() == onnx::AttributeProto::GRAPH) continue;  // below
      attribute attr;
      GG_RETURN_IF_ERROR(convert_attribute(a, what + ": " + n.describe(), st.options, &st.weight_bytes, &attr));
      n.attrs[a.name()] = std::move(attr);
    }
    GG_RETURN_IF_ERROR(build_subgraphs(np, n, g, st, depth, here, where));
    for (size_t k = n.explicit_inputs(); k < n.inputs.size(); ++k)
      GG_RETURN_IF_ERROR(read_name(g.values[n.inputs[k]].name, n.describe()));
    g.nodes.push_back(std::move(n));
  }
  for (const auto& out : gp.output()) GG_RETURN_IF_ERROR(read_name(out.name(), "output '" + out.name() + "'"));
  return status::ok();
}

expected<std::shared_ptr<graph>> build_graph(onnx::ModelProto& model, const std::string& what,
                                             const load_options& options) {
  if (!model.has_graph()) return invalid_input("{}: not an ONNX model (no graph)", what);

  auto g = std::make_shared<graph>();
  for (const auto& op : model.opset_import()) {
    std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
    if (op.version() < 0 || op.version() > 1000)
      return invalid_input("{}: opset {} for domain '{}' is not a valid version", what, op.version(), domain);
    g->opsets[domain] = static_cast<int>(op.version());
  }
  if (model.opset_import_size() == 0) g->opsets[""] = 1;  // IR v1-2 models had no imports
  if (!g->opsets.count("")) g->opsets[""] = max_supported_opset;
  int opset = g->opsets[""];
  if (opset < min_supported_opset || opset > max_supported_opset)
    return invalid_input("{}: default-domain opset {} is not supported (supported: {} to {})", what,
                         opset, min_supported_opset, max_supported_opset);

  build_state st{what, options};
  GG_RETURN_IF_ERROR(build_body(*model.mutable_graph(), *g, st, 0, nullptr, "main", nullptr));
  GG_RETURN_IF_ERROR(canonicalize(*g, what));
  GG_RETURN_IF_ERROR(topological_sort(*g, what));
  return g;
}
}  // namespace

expected<std::shared_ptr<graph>> load_model_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return invalid_input("cannot read model '{}': it is a directory", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_input("cannot read model '{}': {}", path, std::strerror(errno));
  load_options opt;
  opt.base_dir = fs::path(path).parent_path().string();
  if (opt.base_dir.empty()) opt.base_dir = ".";
  // Parsed straight from the file: the bytes are never held twice.
  onnx::ModelProto model;
  {
    google::protobuf::io::IstreamInputStream raw(&in);
    google::protobuf::io::CodedInputStream coded(&raw);
    coded.SetTotalBytesLimit(INT_MAX);
    coded.SetRecursionLimit(64);
    if (!model.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage() || in.bad())
      return invalid_input("{}: not a valid ONNX model (protobuf parse failed; truncated or corrupt?)", path);
  }
  return build_graph(model, path, opt);
}

}  // namespace gpugrid
