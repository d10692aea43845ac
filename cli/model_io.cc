#include "cli/model_io.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>

#include <fmt/format.h>

#include "engine/tensor_io.h"

namespace gpugrid::cli {

namespace {

bool static_shape(const value_info& v, shape_t* out) {
  if (!v.shape) return false;
  shape_t s;
  for (const auto& d : *v.shape) {
    if (d.value < 0) return false;
    s.push_back(d.value);
  }
  *out = std::move(s);
  return true;
}

}  // namespace

std::string value_type_str(const value_info& v) {
  std::string t(dtype_name(v.type));
  if (v.sequence) t = "sequence<" + t + ">";
  if (v.optional) t = "optional<" + t + ">";
  return t;
}

status check_tensor_io(const graph& g) {
  for (const auto* ids : {&g.inputs, &g.outputs})
    for (int id : *ids) {
      const value_info& v = g.values[id];
      if (!v.sequence && !v.optional) continue;
      return invalid_input(
          "model {} '{}' has type {}: run, bench, serve and the grid take and return tensors only (such models run "
          "with `gpugrid selftest --suite DIR` on ONNX test data, whose .pb files hold SequenceProto/OptionalProto "
          "values)",
          ids == &g.inputs ? "input" : "output", v.name, value_type_str(v));
    }
  return status::ok();
}

expected<std::vector<tensor>> load_inputs(const graph& g, const std::vector<std::string>& args) {
  GG_RETURN_IF_ERROR(check_tensor_io(g));
  std::vector<std::string> files(g.inputs.size());
  std::vector<bool> given(g.inputs.size(), false);
  size_t next_positional = 0;
  int stdin_uses = 0;
  for (const std::string& arg : args) {
    size_t slot = g.inputs.size();
    std::string file = arg;
    auto eq = arg.find('=');
    if (eq != std::string::npos && eq > 0) {
      std::string name = arg.substr(0, eq);
      for (size_t i = 0; i < g.inputs.size(); ++i)
        if (g.values[g.inputs[i]].name == name) slot = i;
      if (slot < g.inputs.size()) {
        file = arg.substr(eq + 1);
      } else if (::access(arg.c_str(), F_OK) != 0) {  // not a file whose name holds '='
        std::vector<std::string> names;
        for (int id : g.inputs) names.push_back(g.values[id].name);
        return status(error_kind::usage, fmt::format("the model has no input named {} (inputs: {})", name,
                                                     fmt::join(names, ", ")));
      }
    }
    if (slot == g.inputs.size()) {
      while (next_positional < g.inputs.size() && given[next_positional]) ++next_positional;
      if (next_positional >= g.inputs.size())
        return status(error_kind::usage, fmt::format("too many inputs: the model takes {}", g.inputs.size()));
      slot = next_positional;
    }
    if (given[slot])
      return status(error_kind::usage,
                    fmt::format("input '{}' is given twice", g.values[g.inputs[slot]].name));
    if (file == "-" && ++stdin_uses > 1)
      return status(error_kind::usage, "only one input can come from stdin ('-')");
    given[slot] = true;
    files[slot] = file;
  }
  std::vector<tensor> out;
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const value_info& v = g.values[g.inputs[i]];
    if (!given[i]) return status(error_kind::usage, fmt::format("input '{}' is missing", v.name));
    shape_t shape;
    bool has_shape = static_shape(v, &shape);
    std::string name;
    auto t = read_tensor_file(files[i], v.type, has_shape ? &shape : nullptr, &name);
    if (!t) return t.error();
    out.push_back(std::move(t).value());
  }
  return out;
}

expected<std::vector<tensor>> random_inputs(const graph& g, uint64_t seed, int64_t symbolic_dim) {
  GG_RETURN_IF_ERROR(check_tensor_io(g));
  std::mt19937_64 rng(seed);
  std::vector<tensor> out;
  for (int id : g.inputs) {
    const value_info& v = g.values[id];
    if (!v.shape || v.type == dtype::undefined)
      return invalid_input("input '{}' has no declared dtype and shape; give an input file", v.name);
    shape_t shape;
    for (const auto& d : *v.shape) shape.push_back(d.value >= 0 ? d.value : symbolic_dim);
    int64_t n = 0;
    if (!checked_num_elements(shape, int64_t{1} << 31, &n))
      return invalid_input("input '{}' would have {} elements; give an input file", v.name, shape_str(shape));
    tensor t = tensor::zeros(v.type, shape);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    bool ok = dispatch_all(v.type, [&](auto tag) {
      using T = decltype(tag);
      T* p = t.data<T>();
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<T, bool>) p[i] = (rng() & 1) != 0;
        else if constexpr (std::is_floating_point_v<T>) p[i] = static_cast<T>(uni(rng));
        else if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) p[i] = T(uni(rng));
        else p[i] = static_cast<T>(rng() % 2);  // small ids: valid for masks and token tables
      }
    });
    if (!ok) return invalid_input("input '{}' has unsupported type {}", v.name, dtype_name(v.type));
    out.push_back(std::move(t));
  }
  return out;
}

std::string summarize_output(const std::string& name, const tensor& t) {
  std::string s = fmt::format("{}: {} {}", name, dtype_name(t.type()), shape_str(t.shape()));
  const int64_t n = t.numel();
  const int64_t shown = std::min<int64_t>(n, 8);
  std::vector<std::string> vals;
  for (int64_t i = 0; i < shown; ++i)
    vals.push_back(is_float(t.type()) ? fmt::format("{:.5g}", t.as_double(i)) : fmt::format("{}", t.as_int64(i)));
  s += fmt::format("\n  values: [{}{}]", fmt::join(vals, ", "), n > shown ? ", ..." : "");
  if (n > 1 && (is_float(t.type()) || is_integer(t.type()))) {
    if (t.rank() == 2 && t.dim(0) > 1) {
      std::vector<std::string> per_row;
      for (int64_t r = 0; r < t.dim(0) && r < 16; ++r) {
        int64_t best = 0;
        for (int64_t c = 1; c < t.dim(1); ++c)
          if (t.as_double(r * t.dim(1) + c) > t.as_double(r * t.dim(1) + best)) best = c;
        per_row.push_back(std::to_string(best));
      }
      s += fmt::format("\n  argmax per row: [{}{}]", fmt::join(per_row, ", "), t.dim(0) > 16 ? ", ..." : "");
    } else {
      int64_t best = 0;
      for (int64_t i = 1; i < n; ++i) if (t.as_double(i) > t.as_double(best)) best = i;
      s += fmt::format("\n  argmax: {} ({:.5g})", best, t.as_double(best));
    }
  }
  return s;
}

std::string output_file_name(const std::string& name) {
  std::string s = name.empty() ? "output" : name;
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  if (s == "." || s == "..") s = "output";
  return s;
}

}  // namespace gpugrid::cli
