#include "serve/v2_service.h"

#include <chrono>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "serve/http_common.h"
#include "serve/v2_codec.h"

namespace gpugrid::serve {

using json = nlohmann::json;

namespace {

http_response json_response(int status, const json& doc) {
  http_response r;
  r.status = status;
  r.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

json shape_json(const value_info& v) {
  json shape = json::array();
  if (v.shape)
    for (const dim_t& d : *v.shape) shape.push_back(d.value >= 0 ? d.value : -1);
  return shape;
}

json tensor_metadata(const graph& g, const std::vector<int>& ids) {
  json list = json::array();
  for (int id : ids) {
    const value_info& v = g.values[id];
    std::string_view dt = v2_datatype(v.type);
    list.push_back({{"name", v.name}, {"datatype", dt.empty() ? std::string(dtype_name(v.type)) : std::string(dt)},
                    {"shape", shape_json(v)}});
  }
  return list;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// The route label for metrics (never the model name: clients choose those).
std::string route_label(const std::vector<std::string>& p) {
  if (p.size() >= 3 && p[0] == "v2" && p[1] == "models") {
    const std::string& last = p.back();
    if (last == "infer") return "infer";
    if (last == "ready") return "model_ready";
    return "model_metadata";
  }
  if (p.size() == 3 && p[0] == "v2" && p[1] == "health") return p[2] == "live" ? "live" : "ready";
  if (p.size() == 1 && p[0] == "v2") return "server_metadata";
  if (p.size() == 1 && (p[0] == "metrics" || p[0] == "healthz")) return p[0];
  if (p.size() == 3 && p[0] == "v2" && p[1] == "repository") return "repository_index";
  if (!p.empty() && p[0] == "v1") {
    if (p.size() >= 2 && p[1] == "models") return "v1_models";
    if (p.size() == 3 && p[1] == "chat" && p[2] == "completions") return "v1_chat_completions";
    if (p.size() == 2 && p[1] == "completions") return "v1_completions";
  }
  return "other";
}

// Matches the graph's inputs to the request's by name and checks dtypes and shapes.
status match_inputs(const graph& g, infer_request& req, std::vector<tensor>* ordered) {
  ordered->assign(g.inputs.size(), tensor());
  std::vector<bool> seen(g.inputs.size(), false);
  for (size_t i = 0; i < req.input_names.size(); ++i) {
    size_t k = 0;
    while (k < g.inputs.size() && g.values[g.inputs[k]].name != req.input_names[i]) ++k;
    if (k == g.inputs.size()) return invalid_input("the model has no input '{}'", req.input_names[i]);
    if (seen[k]) return invalid_input("input '{}' is given twice", req.input_names[i]);
    seen[k] = true;
    const value_info& v = g.values[g.inputs[k]];
    const tensor& t = req.inputs[i];
    if (v.type != dtype::undefined && t.type() != v.type)
      return invalid_input("input '{}' must be {}, not {}", v.name, v2_datatype(v.type), v2_datatype(t.type()));
    if (v.shape) {
      bool ok = v.shape->size() == t.rank();
      for (size_t d = 0; ok && d < t.rank(); ++d) ok = (*v.shape)[d].value < 0 || (*v.shape)[d].value == t.dim(d);
      if (!ok) return invalid_input("input '{}' must have shape {}, not {}", v.name, shape_json(v).dump(), shape_str(t.shape()));
    }
    (*ordered)[k] = std::move(req.inputs[i]);
  }
  for (size_t k = 0; k < g.inputs.size(); ++k)
    if (!seen[k]) return invalid_input("input '{}' is missing", g.values[g.inputs[k]].name);
  return status::ok();
}

std::string fmt_number(double v) {
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

}  // namespace

http_response error_response(int status, const std::string& message) {
  http_response r;
  r.status = status;
  r.body = error_json(message);
  return r;
}

v2_service::v2_service(model_repository* repo, infer_backend* backend, service_options options)
    : repo_(repo), backend_(backend), options_(std::move(options)), limiter_(options_.rate_limit, options_.rate_burst),
      latency_bounds_ms_{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000},
      latency_buckets_(latency_bounds_ms_.size() + 1, 0) {}

http_response v2_service::handle(const http_request& r) {
  std::string path = r.target.substr(0, r.target.find('?'));
  auto parts = split_path(path);
  std::string label = route_label(parts);
  http_response resp;
  bool open = label == "live" || label == "ready" || label == "healthz";
  int client = -1;
  if (options_.require_keys && !open) {
    std::string auth = r.header("authorization");
    client = options_.keys.match(auth);
    if (client < 0) {
      ++auth_failures_;
      resp = error_for(path, 401, auth.empty() ? "this server needs an API key (Authorization: Bearer KEY)"
                                              : "the API key is not valid");
      resp.headers.emplace_back("WWW-Authenticate", "Bearer");
    }
  }
  double retry_after = 0;
  if (resp.status == 200 && !open && !limiter_.take(client, std::chrono::steady_clock::now(), &retry_after)) {
    ++rate_limited_;
    resp = error_for(path, 429, "rate limit exceeded for this API key");
    resp.headers.emplace_back("Retry-After", std::to_string(static_cast<int>(std::ceil(retry_after))));
  }
  if (resp.status == 200) resp = route(r, path);
  std::lock_guard<std::mutex> l(mu_);
  ++responses_[{label, resp.status}];
  return resp;
}

http_response v2_service::error_for(const std::string& target, int status, const std::string& message) const {
  if (options_.v1 && (target == "/v1" || target.compare(0, 4, "/v1/") == 0 || target.compare(0, 4, "/v1?") == 0))
    return options_.v1->error(status, message);
  return error_response(status, message);
}

http_response v2_service::route(const http_request& r, const std::string& path) {
  auto p = split_path(path);
  if (options_.v1 && !p.empty() && p[0] == "v1") return options_.v1->handle(r, p);
  bool get = r.method == "GET" || r.method == "HEAD";
  bool post = r.method == "POST";
  auto method_not_allowed = [&] { return error_response(405, "method " + r.method + " is not allowed on " + path); };

  if (p.size() == 1 && p[0] == "healthz") {
    if (!get) return method_not_allowed();
    http_response h;
    h.content_type = "text/plain";
    h.body = "ok\n";
    return h;
  }
  if (p.size() == 1 && p[0] == "metrics") {
    if (!get) return method_not_allowed();
    http_response m;
    m.content_type = "text/plain; version=0.0.4";
    m.body = metrics_text();
    return m;
  }
  if (p.empty() || p[0] != "v2") return error_response(404, "no such route: " + path.substr(0, 200));
  if (p.size() == 1) {
    if (!get) return method_not_allowed();
    return json_response(200, {{"name", "gpugrid"},
                               {"version", options_.version},
                               {"extensions", {"binary_tensor_data"}}});
  }
  if (p.size() == 3 && p[1] == "health" && (p[2] == "live" || p[2] == "ready")) {
    if (!get) return method_not_allowed();
    http_response h;
    h.content_type = "text/plain";
    if (p[2] == "ready") {
      status st = repo_->refresh();
      if (!st.is_ok()) return error_response(503, st.message());
    }
    return h;
  }
  if (p.size() == 3 && p[1] == "repository" && p[2] == "index") {
    if (!post) return method_not_allowed();
    return repository_index();
  }
  if (p.size() >= 3 && p[1] == "models") {
    std::vector<std::string> rest(p.begin() + 3, p.end());
    if (rest.size() >= 2 && rest[0] == "versions") {
      if (rest[1] != "1") return error_response(404, fmt::format("model '{}' has no version '{}' (only 1)", p[2], rest[1].substr(0, 40)));
      rest.erase(rest.begin(), rest.begin() + 2);
    }
    if (rest.size() > 1 || (rest.size() == 1 && rest[0] != "ready" && rest[0] != "infer"))
      return error_response(404, "no such route: " + path.substr(0, 200));
    status st = repo_->refresh();
    if (!st.is_ok()) return error_response(503, st.message());
    auto m = repo_->find(p[2]);
    if (!m) return error_response(404, fmt::format("unknown model '{}'", p[2].substr(0, 200)));
    if (rest.empty()) {
      if (!get) return method_not_allowed();
      if (!m->ready()) return error_response(503, m->error);
      return model_metadata(*m);
    }
    if (rest[0] == "ready") {
      if (!get) return method_not_allowed();
      if (!m->ready()) return error_response(503, m->error);
      http_response ok;
      ok.content_type = "text/plain";
      return ok;
    }
    if (!post) return method_not_allowed();
    if (!m->ready()) return error_response(503, m->error);
    return infer(r, m);
  }
  return error_response(404, "no such route: " + path.substr(0, 200));
}

http_response v2_service::model_metadata(const model_entry& m) const {
  const graph& g = *m.model;
  return json_response(200, {{"name", m.name},
                             {"versions", {"1"}},
                             {"platform", "onnx"},
                             {"inputs", tensor_metadata(g, g.inputs)},
                             {"outputs", tensor_metadata(g, g.outputs)}});
}

http_response v2_service::repository_index() {
  status st = repo_->refresh();
  if (!st.is_ok()) return error_response(503, st.message());
  json list = json::array();
  for (const auto& m : repo_->list()) {
    json e = {{"name", m->name}, {"version", "1"}, {"state", m->ready() ? "READY" : "UNAVAILABLE"}};
    if (!m->ready()) e["reason"] = m->error;
    list.push_back(std::move(e));
  }
  return json_response(200, list);
}

http_response v2_service::infer(const http_request& r, const std::shared_ptr<const model_entry>& m) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t header_length = -1;
  std::string hl = r.header("inference-header-content-length");
  if (!hl.empty()) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(hl.c_str(), &end, 10);
    if (errno != 0 || !end || *end != '\0' || v < 0) return error_response(400, "Inference-Header-Content-Length is not a byte count");
    header_length = v;
  }
  auto req = parse_infer_request(r.body, header_length);
  if (!req) {
    ++inferences_failed_;
    return error_response(400, req.error().message());
  }
  std::vector<tensor> inputs;
  status st = match_inputs(*m->model, *req, &inputs);
  if (!st.is_ok()) {
    ++inferences_failed_;
    return error_response(400, st.message());
  }
  std::vector<std::string> names;
  for (int id : m->model->outputs) names.push_back(m->model->values[id].name);
  for (const auto& o : req->outputs) {
    bool found = false;
    for (const auto& n : names) found = found || n == o.name;
    if (!found) {
      ++inferences_failed_;
      return error_response(400, fmt::format("the model has no output '{}'", o.name.substr(0, 200)));
    }
  }
  if (r.cancelled && r.cancelled->load()) {
    ++cancelled_;
    return error_response(499, "the client closed the connection before the request ran");
  }
  ++in_flight_;
  auto outcome = backend_->infer(*m, std::move(inputs), r.cancelled.get());
  --in_flight_;
  if (r.cancelled && r.cancelled->load()) {
    // Nobody reads the answer: a job stopped on the way is not a failure of the backend.
    ++cancelled_;
    return error_response(499, "the client closed the connection while the request ran");
  }
  if (!outcome) {
    ++inferences_failed_;
    return error_response(http_status_for(outcome.error().kind()), outcome.error().message());
  }
  auto encoded = encode_infer_response(m->name, *req, names, outcome->outputs);
  if (!encoded) {
    ++inferences_failed_;
    return error_response(500, encoded.error().message());
  }
  ++inferences_ok_;
  http_response resp;
  resp.body = std::move(encoded->body);
  if (encoded->header_length >= 0) {
    resp.content_type = "application/octet-stream";
    resp.headers.emplace_back("Inference-Header-Content-Length", std::to_string(encoded->header_length));
  }
  std::string providers;
  for (size_t i = 0; i < outcome->providers.size(); ++i) providers += (i ? "," : "") + outcome->providers[i];
  resp.headers.emplace_back("X-Gpugrid-Cost", fmt::format("{}", outcome->cost));
  resp.headers.emplace_back("X-Gpugrid-Providers", providers);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> l(mu_);
  size_t b = 0;
  while (b < latency_bounds_ms_.size() && ms > latency_bounds_ms_[b]) ++b;
  ++latency_buckets_[b];
  latency_sum_ms_ += ms;
  cost_total_ += outcome->cost;
  return resp;
}

std::string v2_service::metrics_text() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, int64_t v) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, v);
  };
  counter("gpugrid_serve_inferences_total", "inference requests answered with outputs", inferences_ok_.load());
  counter("gpugrid_serve_inference_failures_total", "inference requests that failed (bad input, model or backend)",
          inferences_failed_.load());
  counter("gpugrid_serve_auth_failures_total", "requests refused for a missing or wrong API key", auth_failures_.load());
  counter("gpugrid_serve_rate_limited_total", "requests refused by the per-key rate limit", rate_limited_.load());
  counter("gpugrid_serve_cancelled_total", "inference requests dropped or stopped because their client hung up",
          cancelled_.load());
  counter("gpugrid_serve_connections_total", "TCP connections accepted", transport_.connections.load());
  counter("gpugrid_serve_too_large_total", "requests refused for a body over the limit", transport_.too_large.load());
  counter("gpugrid_serve_timeouts_total", "connections closed for reading too slowly", transport_.timeouts.load());
  counter("gpugrid_serve_bad_http_total", "connections closed for unparsable HTTP", transport_.bad_requests.load());
  counter("gpugrid_serve_disconnects_total", "clients gone before their response was written",
          transport_.disconnects.load());
  counter("gpugrid_serve_overloaded_total", "requests refused because too many were waiting", transport_.overloaded.load());
  counter("gpugrid_serve_model_reloads_total", "model files loaded again after they changed", repo_->reloads());
  out += fmt::format("# HELP gpugrid_serve_in_flight inference requests running now\n# TYPE gpugrid_serve_in_flight gauge\n"
                     "gpugrid_serve_in_flight {}\n", in_flight_.load());
  std::lock_guard<std::mutex> l(mu_);
  out += "# HELP gpugrid_serve_responses_total HTTP responses by route and status\n# TYPE gpugrid_serve_responses_total counter\n";
  for (const auto& [k, v] : responses_)
    out += fmt::format("gpugrid_serve_responses_total{{route=\"{}\",code=\"{}\"}} {}\n", k.first, k.second, v);
  out += fmt::format("# HELP gpugrid_serve_cost_credits_total credits paid for inferences\n"
                     "# TYPE gpugrid_serve_cost_credits_total counter\ngpugrid_serve_cost_credits_total {}\n",
                     fmt_number(cost_total_));
  out += "# HELP gpugrid_serve_inference_ms inference request latency in milliseconds\n# TYPE gpugrid_serve_inference_ms histogram\n";
  int64_t cumulative = 0;
  for (size_t b = 0; b < latency_bounds_ms_.size(); ++b) {
    cumulative += latency_buckets_[b];
    out += fmt::format("gpugrid_serve_inference_ms_bucket{{le=\"{}\"}} {}\n", latency_bounds_ms_[b], cumulative);
  }
  cumulative += latency_buckets_.back();
  out += fmt::format("gpugrid_serve_inference_ms_bucket{{le=\"+Inf\"}} {}\n", cumulative);
  out += fmt::format("gpugrid_serve_inference_ms_sum {}\ngpugrid_serve_inference_ms_count {}\n", fmt_number(latency_sum_ms_),
                     cumulative);
  if (options_.v1) out += options_.v1->metrics_text();
  return out;
}

}  // namespace gpugrid::serve
