#include "serve/v2_codec.h"

#include <cstring>
#include <limits>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace gpugrid::serve {

using json = nlohmann::json;

namespace {

struct v2_name {
  dtype type;
  const char* name;
};
constexpr v2_name kNames[] = {
    {dtype::boolean, "BOOL"}, {dtype::u8, "UINT8"},  {dtype::u16, "UINT16"}, {dtype::u32, "UINT32"},
    {dtype::u64, "UINT64"},   {dtype::i8, "INT8"},   {dtype::i16, "INT16"},  {dtype::i32, "INT32"},
    {dtype::i64, "INT64"},    {dtype::f16, "FP16"},  {dtype::f32, "FP32"},   {dtype::f64, "FP64"},
    {dtype::bf16, "BF16"},
};

// The number of leaves of a (possibly nested) JSON array; a scalar is one leaf.
int64_t count_leaves(const json& v) {
  if (!v.is_array()) return 1;
  int64_t n = 0;
  for (const json& item : v) n += count_leaves(item);
  return n;
}

// Visits the leaves in order (depth is bounded by max_json_depth before parsing).
template <typename F>
bool for_each_leaf(const json& v, int64_t* index, F&& f) {
  if (!v.is_array()) return f(v, (*index)++);
  for (const json& item : v)
    if (!for_each_leaf(item, index, f)) return false;
  return true;
}

template <typename T>
bool convert(const json& v, T* out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (v.is_boolean()) { *out = v.get<bool>(); return true; }
    if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1)) { *out = v.get<int64_t>() != 0; return true; }
    return false;
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
      *out = static_cast<T>(u);
      return true;
    }
    if (v.is_number_integer()) {
      int64_t i = v.get<int64_t>();
      if constexpr (std::is_unsigned_v<T>) {
        if (i < 0) return false;
        if (static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
      } else {
        if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) || i > static_cast<int64_t>(std::numeric_limits<T>::max()))
          return false;
      }
      *out = static_cast<T>(i);
      return true;
    }
    return false;
  } else {
    if (!v.is_number()) return false;
    *out = T(static_cast<float>(v.get<double>()));
    if constexpr (std::is_same_v<T, double>) *out = v.get<double>();
    return true;
  }
}

template <typename T>
json to_json_value(const T& x) {
  if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) return static_cast<float>(x);
  else return x;
}

expected<tensor> tensor_from_json(const json& in, dtype type, const shape_t& shape, int64_t numel,
                                  const std::string& what) {
  auto it = in.find("data");
  if (it == in.end()) return invalid_input("input '{}' has neither 'data' nor parameters.binary_data_size", what);
  int64_t leaves = count_leaves(*it);
  if (leaves != numel)
    return invalid_input("input '{}': shape {} needs {} elements but 'data' holds {}", what, shape_str(shape), numel,
                         leaves);
  tensor t = tensor::zeros(type, shape);
  status bad = status::ok();
  dispatch_all(type, [&](auto tag) {
    using T = decltype(tag);
    T* dst = t.data<T>();
    int64_t index = 0;
    for_each_leaf(*it, &index, [&](const json& leaf, int64_t i) {
      if (convert<T>(leaf, &dst[i])) return true;
      bad = invalid_input("input '{}': element {} ({}) is not a valid {}", what, i, leaf.dump().substr(0, 40),
                          v2_datatype(type));
      return false;
    });
  });
  if (!bad.is_ok()) return bad;
  return t;
}

}  // namespace

std::string_view v2_datatype(dtype t) {
  for (const auto& n : kNames)
    if (n.type == t) return n.name;
  return "";
}

bool dtype_from_v2(std::string_view name, dtype* out) {
  for (const auto& n : kNames)
    if (name == n.name) {
      *out = n.type;
      return true;
    }
  return false;
}


std::string error_json(const std::string& message) { return json{{"error", message}}.dump(); }

expected<infer_request> parse_infer_request(const std::string& body, int64_t header_length) {
  if (header_length > static_cast<int64_t>(body.size()))
    return invalid_input("Inference-Header-Content-Length is {} but the body holds only {} bytes", header_length,
                         body.size());
  size_t json_size = header_length >= 0 ? static_cast<size_t>(header_length) : body.size();
  std::string_view text(body.data(), json_size);
  if (json_depth(text, max_json_depth) > max_json_depth)
    return invalid_input("the request JSON nests deeper than {} levels", max_json_depth);
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return invalid_input("the request body is not valid JSON");
  if (!doc.is_object()) return invalid_input("the request must be a JSON object");

  infer_request req;
  if (auto id = doc.find("id"); id != doc.end()) {
    if (!id->is_string()) return invalid_input("'id' must be a string");
    req.id = id->get<std::string>();
  }
  if (auto p = doc.find("parameters"); p != doc.end()) {
    if (!p->is_object()) return invalid_input("'parameters' must be an object");
    if (auto b = p->find("binary_data_output"); b != p->end()) {
      if (!b->is_boolean()) return invalid_input("parameters.binary_data_output must be true or false");
      req.binary_output_default = b->get<bool>();
    }
  }
  auto inputs = doc.find("inputs");
  if (inputs == doc.end() || !inputs->is_array()) return invalid_input("the request needs an 'inputs' array");

  size_t binary_at = json_size;  // next unread byte of the binary part
  for (const json& in : *inputs) {
    if (!in.is_object()) return invalid_input("every entry of 'inputs' must be an object");
    auto name = in.find("name");
    if (name == in.end() || !name->is_string()) return invalid_input("an input has no 'name'");
    std::string what = name->get<std::string>();
    auto dt = in.find("datatype");
    if (dt == in.end() || !dt->is_string()) return invalid_input("input '{}' has no 'datatype'", what);
    dtype type;
    if (!dtype_from_v2(dt->get<std::string>(), &type))
      return invalid_input("input '{}': datatype '{}' is not supported", what, dt->get<std::string>().substr(0, 32));
    auto sh = in.find("shape");
    if (sh == in.end() || !sh->is_array()) return invalid_input("input '{}' has no 'shape' array", what);
    shape_t shape;
    for (const json& d : *sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return invalid_input("input '{}': shape dims must be whole numbers >= 0", what);
      shape.push_back(d.get<int64_t>());
    }
    int64_t numel = 0;
    if (!checked_num_elements(shape, int64_t{1} << 40, &numel))
      return invalid_input("input '{}': shape {} is too large", what, shape_str(shape));
    int64_t binary_size = -1;
    if (auto p = in.find("parameters"); p != in.end()) {
      if (!p->is_object()) return invalid_input("input '{}': 'parameters' must be an object", what);
      if (auto b = p->find("binary_data_size"); b != p->end()) {
        if (!b->is_number_integer() || b->get<int64_t>() < 0)
          return invalid_input("input '{}': binary_data_size must be a whole number >= 0", what);
        binary_size = b->get<int64_t>();
      }
    }
    tensor t;
    if (binary_size >= 0) {
      if (header_length < 0)
        return invalid_input("input '{}' has binary_data_size but the request has no Inference-Header-Content-Length", what);
      size_t want = static_cast<size_t>(numel) * dtype_size(type);
      if (static_cast<uint64_t>(binary_size) != want)
        return invalid_input("input '{}': shape {} {} needs {} bytes but binary_data_size is {}", what, shape_str(shape),
                             v2_datatype(type), want, binary_size);
      if (body.size() - binary_at < want)
        return invalid_input("input '{}': the body ends {} bytes short of its binary data", what,
                             want - (body.size() - binary_at));
      t = tensor::zeros(type, shape);
      if (want) std::memcpy(t.raw(), body.data() + binary_at, want);
      binary_at += want;
    } else {
      auto made = tensor_from_json(in, type, shape, numel, what);
      if (!made) return made.error();
      t = std::move(made).value();
    }
    req.input_names.push_back(what);
    req.inputs.push_back(std::move(t));
  }
  if (binary_at != body.size())
    return invalid_input("the body holds {} bytes after the inputs' binary data", body.size() - binary_at);

  if (auto outs = doc.find("outputs"); outs != doc.end()) {
    if (!outs->is_array()) return invalid_input("'outputs' must be an array");
    for (const json& o : *outs) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
        return invalid_input("every entry of 'outputs' needs a 'name'");
      requested_output r;
      r.name = o["name"].get<std::string>();
      r.binary = req.binary_output_default;
      if (auto p = o.find("parameters"); p != o.end() && p->is_object()) {
        if (auto b = p->find("binary_data"); b != p->end()) {
          if (!b->is_boolean()) return invalid_input("output '{}': parameters.binary_data must be true or false", r.name);
          r.binary = b->get<bool>();
        }
      }
      req.outputs.push_back(std::move(r));
    }
  }
  return req;
}

expected<encoded_response> encode_infer_response(const std::string& model_name, const infer_request& req,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<tensor>& outputs) {
  std::vector<requested_output> wanted = req.outputs;
  if (wanted.empty())
    for (const auto& n : names) wanted.push_back({n, req.binary_output_default});
  json doc;
  doc["model_name"] = model_name;
  doc["model_version"] = "1";
  if (!req.id.empty()) doc["id"] = req.id;
  json outs = json::array();
  std::string binary;
  bool any_binary = false;
  for (const auto& w : wanted) {
    size_t i = 0;
    while (i < names.size() && names[i] != w.name) ++i;
    if (i == names.size()) return invalid_input("the model has no output '{}'", w.name);
    const tensor& t = outputs[i];
    json o;
    o["name"] = w.name;
    std::string_view dt = v2_datatype(t.type());
    if (dt.empty()) return invalid_input("output '{}' has dtype {}, which the protocol cannot carry", w.name, dtype_name(t.type()));
    o["datatype"] = std::string(dt);
    o["shape"] = t.shape();
    if (w.binary) {
      any_binary = true;
      o["parameters"] = {{"binary_data_size", t.bytes()}};
      binary.append(static_cast<const char*>(t.raw()), t.bytes());
    } else {
      json data = json::array();
      dispatch_all(t.type(), [&](auto tag) {
        using T = decltype(tag);
        const T* p = t.data<T>();
        for (int64_t k = 0; k < t.numel(); ++k) data.push_back(to_json_value(p[k]));
      });
      o["data"] = std::move(data);
    }
    outs.push_back(std::move(o));
  }
  doc["outputs"] = std::move(outs);
  encoded_response r;
  r.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  if (any_binary) {
    r.header_length = static_cast<int64_t>(r.body.size());
    r.body += binary;
  }
  return r;
}

}  // namespace gpugrid::serve
