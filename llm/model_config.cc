#include "llm/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace gpugrid::llm {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

expected<std::string> read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return invalid_input("{}: cannot open", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

expected<json> read_json(const std::string& path) {
  GG_ASSIGN_OR_RETURN(std::string text, read_text(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_input("{}: not a JSON object", path);
  return j;
}

// Reads an optional integer field; a present field of another type is an error.
status get_int(const json& j, const char* key, const std::string& path, int64_t* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  if (!j.at(key).is_number_integer()) return invalid_input("{}: '{}' must be an integer", path, key);
  *out = j.at(key).get<int64_t>();
  return status::ok();
}

status get_id(const json& j, const char* key, const std::string& path, int32_t* out) {
  int64_t v = *out;
  GG_RETURN_IF_ERROR(get_int(j, key, path, &v));
  if (v < -1 || v > INT32_MAX) return invalid_input("{}: '{}' is out of range", path, key);
  *out = static_cast<int32_t>(v);
  return status::ok();
}

status get_ids(const json& j, const char* key, const std::string& path, std::vector<int32_t>* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  const json& v = j.at(key);
  std::vector<int32_t> ids;
  auto one = [&](const json& x) -> status {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
      return invalid_input("{}: '{}' must be a token id or a list of token ids", path, key);
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    return status::ok();
  };
  if (v.is_array()) {
    for (auto& x : v) GG_RETURN_IF_ERROR(one(x));
  } else {
    GG_RETURN_IF_ERROR(one(v));
  }
  *out = std::move(ids);
  return status::ok();
}

status get_double(const json& j, const char* key, const std::string& path, double* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  if (!j.at(key).is_number()) return invalid_input("{}: '{}' must be a number", path, key);
  *out = j.at(key).get<double>();
  return status::ok();
}

status get_bool(const json& j, const char* key, const std::string& path, bool* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  if (!j.at(key).is_boolean()) return invalid_input("{}: '{}' must be true or false", path, key);
  *out = j.at(key).get<bool>();
  return status::ok();
}

status get_string(const json& j, const char* key, const std::string& path, std::string* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  if (!j.at(key).is_string()) return invalid_input("{}: '{}' must be a string", path, key);
  *out = j.at(key).get<std::string>();
  return status::ok();
}

// Sampling settings as generation_config.json and genai_config.json's "search" name them.
status read_generation(const json& j, const std::string& path, generation_defaults* g) {
  GG_RETURN_IF_ERROR(get_bool(j, "do_sample", path, &g->do_sample));
  GG_RETURN_IF_ERROR(get_double(j, "temperature", path, &g->temperature));
  GG_RETURN_IF_ERROR(get_double(j, "top_p", path, &g->top_p));
  GG_RETURN_IF_ERROR(get_int(j, "top_k", path, &g->top_k));
  GG_RETURN_IF_ERROR(get_double(j, "repetition_penalty", path, &g->repetition_penalty));
  GG_RETURN_IF_ERROR(get_int(j, "max_length", path, &g->max_length));
  return status::ok();
}

// A special token in tokenizer_config.json: a string or {"content": "..."}.
status get_token_string(const json& j, const char* key, const std::string& path, std::string* out) {
  if (!j.contains(key) || j.at(key).is_null()) return status::ok();
  const json& v = j.at(key);
  if (v.is_string()) *out = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v.at("content").is_string()) *out = v.at("content").get<std::string>();
  else return invalid_input("{}: '{}' must be a string or an object with 'content'", path, key);
  return status::ok();
}

status read_tokenizer_config(const std::string& dir, model_config* c) {
  std::string jinja = dir + "/chat_template.jinja";
  if (exists(jinja)) {
    GG_ASSIGN_OR_RETURN(c->chat_template, read_text(jinja));
  }
  std::string path = dir + "/tokenizer_config.json";
  if (!exists(path)) return status::ok();
  GG_ASSIGN_OR_RETURN(json j, read_json(path));
  GG_RETURN_IF_ERROR(get_token_string(j, "bos_token", path, &c->bos_token));
  GG_RETURN_IF_ERROR(get_token_string(j, "eos_token", path, &c->eos_token));
  GG_RETURN_IF_ERROR(get_bool(j, "add_bos_token", path, &c->add_bos_token));
  if (!c->chat_template.empty() || !j.contains("chat_template") || j.at("chat_template").is_null()) return status::ok();
  const json& t = j.at("chat_template");
  if (t.is_string()) {
    c->chat_template = t.get<std::string>();
    return status::ok();
  }
  // A list of named templates: the one named "default" is the chat template.
  if (t.is_array()) {
    for (auto& e : t)
      if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
          e.at("template").is_string())
        c->chat_template = e.at("template").get<std::string>();
    if (c->chat_template.empty()) return invalid_input("{}: 'chat_template' lists no template named \"default\"", path);
    return status::ok();
  }
  return invalid_input("{}: 'chat_template' must be a string or a list of named templates", path);
}

status read_genai(const std::string& dir, model_config* c) {
  std::string path = dir + "/genai_config.json";
  GG_ASSIGN_OR_RETURN(json j, read_json(path));
  if (!j.contains("model") || !j.at("model").is_object()) return invalid_input("{}: no 'model' object", path);
  const json& m = j.at("model");
  c->format = model_config::folder_format::genai;
  GG_RETURN_IF_ERROR(get_string(m, "type", path, &c->model_type));
  GG_RETURN_IF_ERROR(get_int(m, "context_length", path, &c->context_length));
  GG_RETURN_IF_ERROR(get_int(m, "vocab_size", path, &c->vocab_size));
  GG_RETURN_IF_ERROR(get_id(m, "bos_token_id", path, &c->bos_token_id));
  GG_RETURN_IF_ERROR(get_id(m, "pad_token_id", path, &c->pad_token_id));
  GG_RETURN_IF_ERROR(get_ids(m, "eos_token_id", path, &c->eos_token_ids));
  std::string file;
  if (m.contains("decoder") && m.at("decoder").is_object()) GG_RETURN_IF_ERROR(get_string(m.at("decoder"), "filename", path, &file));
  if (file.empty()) return invalid_input("{}: no model.decoder.filename", path);
  if (file.find("..") != std::string::npos || file[0] == '/')
    return invalid_input("{}: model.decoder.filename '{}' leaves the model folder", path, file);
  c->model_path = dir + "/" + file;
  if (!exists(c->model_path)) return invalid_input("{}: the decoder file it names is missing", c->model_path);
  if (j.contains("search") && j.at("search").is_object()) GG_RETURN_IF_ERROR(read_generation(j.at("search"), path, &c->generation));
  return status::ok();
}

status read_optimum(const std::string& dir, model_config* c) {
  std::string path = dir + "/config.json";
  if (!exists(path))
    return invalid_input("{}: missing (a model folder needs genai_config.json or config.json)", path);
  GG_ASSIGN_OR_RETURN(json j, read_json(path));
  c->format = model_config::folder_format::optimum;
  GG_RETURN_IF_ERROR(get_string(j, "model_type", path, &c->model_type));
  for (const char* key : {"max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"}) {
    GG_RETURN_IF_ERROR(get_int(j, key, path, &c->context_length));
    if (c->context_length) break;
  }
  GG_RETURN_IF_ERROR(get_int(j, "vocab_size", path, &c->vocab_size));
  GG_RETURN_IF_ERROR(get_id(j, "bos_token_id", path, &c->bos_token_id));
  GG_RETURN_IF_ERROR(get_id(j, "pad_token_id", path, &c->pad_token_id));
  GG_RETURN_IF_ERROR(get_ids(j, "eos_token_id", path, &c->eos_token_ids));
  std::string gen = dir + "/generation_config.json";
  if (exists(gen)) {
    GG_ASSIGN_OR_RETURN(json g, read_json(gen));
    GG_RETURN_IF_ERROR(get_id(g, "bos_token_id", gen, &c->bos_token_id));
    GG_RETURN_IF_ERROR(get_id(g, "pad_token_id", gen, &c->pad_token_id));
    GG_RETURN_IF_ERROR(get_ids(g, "eos_token_id", gen, &c->eos_token_ids));
    GG_RETURN_IF_ERROR(read_generation(g, gen, &c->generation));
  }
  for (const char* name : {"decoder_model_merged.onnx", "model.onnx", "decoder_model.onnx"}) {
    if (exists(dir + "/" + name)) {
      c->model_path = dir + "/" + name;
      return status::ok();
    }
  }
  return invalid_input("{}: no decoder_model_merged.onnx or model.onnx", dir);
}

}  // namespace

expected<model_config> load_model_config(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return invalid_input("{}: not a model folder", dir);
  model_config c;
  c.dir = dir;
  c.tokenizer_path = dir + "/tokenizer.json";
  if (!exists(c.tokenizer_path)) return invalid_input("{}: missing (the model folder has no tokenizer)", c.tokenizer_path);
  if (exists(dir + "/genai_config.json")) {
    GG_RETURN_IF_ERROR(read_genai(dir, &c));
  } else {
    GG_RETURN_IF_ERROR(read_optimum(dir, &c));
  }
  GG_RETURN_IF_ERROR(read_tokenizer_config(dir, &c));
  return c;
}

}  // namespace gpugrid::llm
