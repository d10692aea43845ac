#include "serve/openai_codec.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "serve/http_common.h"

namespace gpugrid::serve {

using json = nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

// Fails with `e` naming `param`; returns false so that callers can `return fail(...)`.
bool fail(api_error* e, std::string param, std::string message) {
  *e = make_api_error(400, std::move(message), std::move(param));
  return false;
}

// A number field within [lo, hi]; absent or null leaves *out alone.
bool number_field(const json& doc, const char* name, double lo, double hi, std::optional<double>* out, api_error* e) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return true;
  if (!it->is_number()) return fail(e, name, fmt::format("'{}' must be a number", name));
  double v = it->get<double>();
  if (!(v >= lo && v <= hi)) return fail(e, name, fmt::format("'{}' must be between {} and {}, not {}", name, lo, hi, v));
  *out = v;
  return true;
}

bool integer_field(const json& doc, const char* name, int64_t lo, int64_t hi, std::optional<int64_t>* out, api_error* e) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return true;
  int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())
            ? std::numeric_limits<int64_t>::max()
            : it->get<int64_t>();
  } else if (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
             std::fabs(it->get<double>()) < 9.2e18) {
    v = static_cast<int64_t>(it->get<double>());
  } else {
    return fail(e, name, fmt::format("'{}' must be an integer", name));
  }
  if (v < lo || v > hi) return fail(e, name, fmt::format("'{}' must be between {} and {}, not {}", name, lo, hi, v));
  *out = v;
  return true;
}

bool bool_field(const json& doc, const char* name, bool* out, api_error* e) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return true;
  if (!it->is_boolean()) return fail(e, name, fmt::format("'{}' must be true or false", name));
  *out = it->get<bool>();
  return true;
}

// A message's content: a string, or a list of parts of which only {"type":"text"} are taken.
bool message_content(const json& c, size_t i, std::string* out, api_error* e) {
  std::string param = fmt::format("messages[{}].content", i);
  if (c.is_null()) return true;
  if (c.is_string()) {
    *out = c.get<std::string>();
    return true;
  }
  if (!c.is_array()) return fail(e, param, fmt::format("'{}' must be a string or a list of content parts", param));
  for (size_t k = 0; k < c.size(); ++k) {
    const json& part = c[k];
    std::string pp = fmt::format("{}[{}]", param, k);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      return fail(e, pp, fmt::format("'{}' must be an object with a 'type'", pp));
    std::string type = part["type"].get<std::string>();
    if (type != "text")
      return fail(e, pp + ".type", fmt::format("'{}' has type '{}'; only text parts are supported", pp, type.substr(0, 40)));
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) return fail(e, pp + ".text", fmt::format("'{}.text' must be a string", pp));
    *out += t->get<std::string>();
  }
  return true;
}

bool parse_messages(const json& doc, api_request* r, api_error* e) {
  auto it = doc.find("messages");
  if (it == doc.end() || it->is_null()) return fail(e, "messages", "'messages' is required");
  if (!it->is_array() || it->empty()) return fail(e, "messages", "'messages' must be a non-empty list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) return fail(e, param, fmt::format("'{}' must be an object", param));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return fail(e, param + ".role", fmt::format("'{}.role' must be a string", param));
    llm::chat_message msg;
    msg.role = role->get<std::string>();
    if (msg.role == "developer") msg.role = "system";   // OpenAI's newer name for it
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      return fail(e, param + ".role",
                  fmt::format("'{}.role' is '{}'; supported roles are system, developer, user and assistant", param,
                              msg.role.substr(0, 40)));
    auto content = m.find("content");
    if (content == m.end() || (content->is_null() && msg.role != "assistant"))
      return fail(e, param + ".content", fmt::format("'{}.content' is required", param));
    if (!message_content(*content, i, &msg.content, e)) return false;
    if (m.contains("tool_calls") && !m["tool_calls"].is_null() && !(m["tool_calls"].is_array() && m["tool_calls"].empty()))
      return fail(e, param + ".tool_calls", "tool calls are not supported");
    r->messages.push_back(std::move(msg));
  }
  return true;
}

bool parse_prompts(const json& doc, api_request* r, api_error* e) {
  auto it = doc.find("prompt");
  if (it == doc.end() || it->is_null()) return fail(e, "prompt", "'prompt' is required");
  if (it->is_string()) {
    r->prompts.push_back(it->get<std::string>());
    return true;
  }
  if (!it->is_array() || it->empty()) return fail(e, "prompt", "'prompt' must be a string or a non-empty list of strings");
  if (it->size() > max_prompts) return fail(e, "prompt", fmt::format("'prompt' holds {} prompts; at most {} are taken", it->size(), max_prompts));
  for (const auto& p : *it) {
    if (!p.is_string()) return fail(e, "prompt", "'prompt' must be a string or a list of strings (token-id prompts are not supported)");
    r->prompts.push_back(p.get<std::string>());
  }
  return true;
}

// A field that must be absent, null, or `neutral` (what would not change the answer).
bool refuse_unless(const json& doc, const char* name, const json& neutral, const char* why, api_error* e) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null() || *it == neutral) return true;
  return fail(e, name, fmt::format("'{}' is not supported: {}", name, why));
}

}  // namespace

api_error make_api_error(int status, std::string message, std::string param, std::string code) {
  api_error e;
  e.status = status;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  switch (status) {
    case 401: e.type = "authentication_error"; if (e.code.empty()) e.code = "invalid_api_key"; break;
    case 403: e.type = "permission_error"; break;
    case 404: e.type = "not_found_error"; break;
    case 429: e.type = "rate_limit_error"; if (e.code.empty()) e.code = "rate_limit_exceeded"; break;
    default: e.type = status >= 500 ? "server_error" : "invalid_request_error";
  }
  return e;
}

std::string api_error_json(const api_error& e) {
  return dump(json{{"error", {{"message", e.message}, {"type", e.type}, {"param", null_or(e.param)}, {"code", null_or(e.code)}}}});
}

bool parse_api_request(std::string_view body, api_kind kind, api_request* out, api_error* e) {
  *out = api_request();
  out->kind = kind;
  if (json_depth(body, max_api_json_depth) > max_api_json_depth)
    return fail(e, "", fmt::format("the request JSON nests deeper than {} levels", max_api_json_depth));
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail(e, "", "the request body is not valid JSON");
  if (!doc.is_object()) return fail(e, "", "the request body must be a JSON object");

  auto model = doc.find("model");
  if (model == doc.end() || model->is_null()) return fail(e, "model", "'model' is required");
  if (!model->is_string() || model->get<std::string>().empty()) return fail(e, "model", "'model' must be a non-empty string");
  out->model = model->get<std::string>();

  if (kind == api_kind::chat ? !parse_messages(doc, out, e) : !parse_prompts(doc, out, e)) return false;

  std::optional<int64_t> max_tokens, n;
  const char* max_name = "max_tokens";
  if (kind == api_kind::chat && doc.contains("max_completion_tokens") && !doc["max_completion_tokens"].is_null())
    max_name = "max_completion_tokens";
  if (!integer_field(doc, max_name, 1, int64_t{1} << 30, &max_tokens, e)) return false;
  out->max_tokens = max_tokens.value_or(-1);
  if (!number_field(doc, "temperature", 0.0, 2.0, &out->temperature, e)) return false;
  if (!number_field(doc, "top_p", 0.0, 1.0, &out->top_p, e)) return false;
  if (out->top_p && *out->top_p <= 0.0) return fail(e, "top_p", "'top_p' must be above 0");
  if (!integer_field(doc, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &out->seed, e))
    return false;
  if (!integer_field(doc, "n", 1, max_choices, &n, e)) return false;
  out->n = static_cast<int>(n.value_or(1));
  if (out->n * std::max<size_t>(1, out->prompts.size()) > max_answers)
    return fail(e, "n", fmt::format("the request asks for {} answers ({} prompts, n = {}); at most {} are taken",
                                    out->n * out->prompts.size(), out->prompts.size(), out->n, max_answers));

  if (auto s = doc.find("stop"); s != doc.end() && !s->is_null()) {
    if (s->is_string()) {
      out->stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > max_stop_strings)
        return fail(e, "stop", fmt::format("'stop' holds {} strings; at most {} are allowed", s->size(), max_stop_strings));
      for (const auto& x : *s) {
        if (!x.is_string()) return fail(e, "stop", "'stop' must be a string or a list of strings");
        out->stop.push_back(x.get<std::string>());
      }
    } else {
      return fail(e, "stop", "'stop' must be a string or a list of strings");
    }
    for (const auto& x : out->stop)
      if (x.empty()) return fail(e, "stop", "'stop' strings must not be empty");
  }

  if (!bool_field(doc, "stream", &out->stream, e)) return false;
  if (auto so = doc.find("stream_options"); so != doc.end() && !so->is_null()) {
    if (!so->is_object()) return fail(e, "stream_options", "'stream_options' must be an object");
    if (!out->stream) return fail(e, "stream_options", "'stream_options' is only allowed with 'stream': true");
    if (!bool_field(*so, "include_usage", &out->include_usage, e)) {
      e->param = "stream_options.include_usage";
      return false;
    }
  }
  if (kind == api_kind::completion && !bool_field(doc, "echo", &out->echo, e)) return false;
  if (!bool_field(doc, "ignore_eos", &out->ignore_eos, e)) return false;

  // What would change the answer but is not implemented: refused by name, never ignored.
  if (!refuse_unless(doc, "presence_penalty", 0, "only 0 is accepted (no additive penalty is implemented)", e)) return false;
  if (!refuse_unless(doc, "frequency_penalty", 0, "only 0 is accepted (no additive penalty is implemented)", e)) return false;
  if (!refuse_unless(doc, "logprobs", kind == api_kind::chat ? json(false) : json(nullptr), "log probabilities are not returned", e))
    return false;
  if (!refuse_unless(doc, "top_logprobs", 0, "log probabilities are not returned", e)) return false;
  if (!refuse_unless(doc, "logit_bias", json::object(), "logit bias is not implemented", e)) return false;
  if (!refuse_unless(doc, "tools", json::array(), "tool calling is not implemented", e)) return false;
  if (!refuse_unless(doc, "functions", json::array(), "function calling is not implemented", e)) return false;
  if (!refuse_unless(doc, "suffix", "", "insertion (suffix) is not implemented", e)) return false;
  if (kind == api_kind::completion && !refuse_unless(doc, "best_of", 1, "only 1 is accepted", e)) return false;
  if (auto rf = doc.find("response_format"); rf != doc.end() && !rf->is_null()) {
    auto type = rf->is_object() ? rf->find("type") : rf->end();
    if (!rf->is_object() || type == rf->end() || !type->is_string() || type->get<std::string>() != "text")
      return fail(e, "response_format", "'response_format' is not supported: only {\"type\": \"text\"} is accepted");
  }
  return true;
}

const char* api_finish_reason(llm::finish_reason r) {
  switch (r) {
    case llm::finish_reason::length:
    case llm::finish_reason::context_full: return "length";
    default: return "stop";
  }
}

namespace {

json usage_json(const api_usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json billing_json(const api_billing& b) { return {{"cost", b.cost}, {"providers", b.providers}}; }

json head(api_kind kind, bool chunk, const std::string& id, int64_t created, const std::string& model) {
  const char* object = kind == api_kind::chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  json j = {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
  j["system_fingerprint"] = nullptr;
  return j;
}

}  // namespace

std::string api_response_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                              const std::vector<api_choice>& choices, const api_usage& usage, const api_billing* billing) {
  json j = head(kind, false, id, created, model);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i}};
    if (kind == api_kind::chat) c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    else c["text"] = choices[i].text;
    c["logprobs"] = nullptr;
    c["finish_reason"] = choices[i].finish_reason;
    list.push_back(std::move(c));
  }
  j["choices"] = std::move(list);
  j["usage"] = usage_json(usage);
  if (billing) j["x_gpugrid"] = billing_json(*billing);
  return dump(j);
}

std::string api_chunk_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                           const api_chunk& chunk, bool include_usage, const api_billing* billing) {
  json j = head(kind, true, id, created, model);
  json c = {{"index", chunk.index}};
  if (kind == api_kind::chat) {
    json delta = json::object();
    if (!chunk.role.empty()) {
      delta["role"] = chunk.role;
      delta["content"] = "";
    } else if (chunk.text) {
      delta["content"] = *chunk.text;
    }
    c["delta"] = std::move(delta);
  } else {
    c["text"] = chunk.text.value_or("");
  }
  c["logprobs"] = nullptr;
  c["finish_reason"] = null_or(chunk.finish_reason);
  j["choices"] = json::array({std::move(c)});
  if (include_usage) j["usage"] = nullptr;
  if (billing) j["x_gpugrid"] = billing_json(*billing);
  return dump(j);
}

std::string api_usage_chunk_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                                 const api_usage& usage, const api_billing* billing) {
  json j = head(kind, true, id, created, model);
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  if (billing) j["x_gpugrid"] = billing_json(*billing);
  return dump(j);
}

std::string api_sse(const std::string& json_text) { return "data: " + json_text + "\n\n"; }
const char* const api_sse_done = "data: [DONE]\n\n";

std::string api_model_json(const std::string& name, int64_t created) {
  return dump(json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "gpugrid"}});
}

std::string api_model_list_json(const std::vector<std::pair<std::string, int64_t>>& models) {
  json data = json::array();
  for (const auto& [name, created] : models)
    data.push_back({{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "gpugrid"}});
  return dump(json{{"object", "list"}, {"data", std::move(data)}});
}

}  // namespace gpugrid::serve
