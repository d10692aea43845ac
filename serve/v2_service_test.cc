#include "serve/v2_service.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <chrono>
#include <thread>

#include <catch2/catch.hpp>

#include "actors/test_models.h"

using namespace gpugrid;
using namespace gpugrid::serve;

namespace {

// Adds 1 to every element of the first input: enough to see that inputs reach the backend in
// the model's order and that outputs come back encoded.
class fake_backend : public infer_backend {
 public:
  expected<infer_outcome> infer(const model_entry&, std::vector<tensor> inputs, const std::atomic<bool>* cancelled) override {
    ++calls;
    if (block) {
      // Runs until the request is cancelled (or 10 s pass), as a grid job on a slow provider.
      started = true;
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!(cancelled && cancelled->load()) && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      saw_cancel = cancelled && cancelled->load();
      if (saw_cancel) return status(error_kind::io, "the job was cancelled before a result came back");
    }
    if (fail_with != error_kind::ok) return status(fail_with, "backend says no");
    tensor y = inputs[0].clone();
    for (int64_t i = 0; i < y.numel(); ++i) y.data<float>()[i] += 1;
    infer_outcome r;
    r.outputs = {y};
    r.cost = 0.25;
    r.providers = {"p1"};
    return r;
  }
  std::string describe() const override { return "fake"; }
  std::atomic<int> calls{0};
  error_kind fail_with = error_kind::ok;
  bool block = false;
  std::atomic<bool> started{false}, saw_cancel{false};
};

struct fixture {
  fixture() {
    dir = std::filesystem::temp_directory_path() / ("gg_serve_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "addrelu.onnx", std::ios::binary) << grid::testing::add_relu_model();
    std::ofstream(dir / "broken.onnx", std::ios::binary) << "not a model";
  }
  ~fixture() { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
};

http_request get(const std::string& target) {
  http_request r;
  r.method = "GET";
  r.target = target;
  return r;
}
http_request post(const std::string& target, const std::string& body) {
  http_request r;
  r.method = "POST";
  r.target = target;
  r.body = body;
  return r;
}

}  // namespace

TEST_CASE("v2 service: health, metadata, infer, errors", "[serve]") {
  fixture f;
  model_repository repo(f.dir.string(), std::chrono::milliseconds(0), 1 << 20);
  fake_backend backend;
  v2_service svc(&repo, &backend, {});

  CHECK(svc.handle(get("/v2/health/live")).status == 200);
  CHECK(svc.handle(get("/v2/health/ready")).status == 200);
  CHECK(svc.handle(get("/healthz")).status == 200);
  auto meta = svc.handle(get("/v2/models/addrelu"));
  REQUIRE(meta.status == 200);
  CHECK(meta.body.find(R"("inputs":[{"datatype":"FP32","name":"x","shape":[-1,3]}])") != std::string::npos);
  CHECK(svc.handle(get("/v2/models/addrelu/versions/1/ready")).status == 200);
  CHECK(svc.handle(get("/v2/models/addrelu/versions/2")).status == 404);
  auto unknown = svc.handle(get("/v2/models/nope"));
  CHECK(unknown.status == 404);
  CHECK(unknown.body == R"({"error":"unknown model 'nope'"})");
  auto broken = svc.handle(get("/v2/models/broken/ready"));
  CHECK(broken.status == 503);
  CHECK(svc.handle(post("/v2/health/live", "")).status == 405);
  CHECK(svc.handle(get("/v1/chat/completions")).status == 404);

  auto ok = svc.handle(post("/v2/models/addrelu/infer",
                            R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})"));
  REQUIRE(ok.status == 200);
  CHECK(ok.body.find(R"("data":[2.0,3.0,4.0])") != std::string::npos);
  bool has_cost = false;
  for (auto& [k, v] : ok.headers) has_cost = has_cost || (k == "X-Gpugrid-Cost" && v == "0.25");
  CHECK(has_cost);

  CHECK(svc.handle(post("/v2/models/addrelu/infer", "{bad")).status == 400);
  auto shape = svc.handle(post("/v2/models/addrelu/infer",
                               R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})"));
  CHECK(shape.status == 400);
  CHECK(shape.body.find("must have shape [-1,3]") != std::string::npos);
  auto type = svc.handle(post("/v2/models/addrelu/infer",
                              R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"INT32","data":[1,2,3]}]})"));
  CHECK(type.status == 400);
  CHECK(type.body.find("must be FP32") != std::string::npos);
  CHECK(svc.handle(post("/v2/models/addrelu/infer", R"({"inputs":[]})")).status == 400);
  CHECK(svc.handle(post("/v2/models/addrelu/infer",
                        R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"zz"}]})"))
            .status == 400);
  CHECK(backend.calls == 1);   // nothing malformed reached the backend

  auto gone = post("/v2/models/addrelu/infer", R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})");
  gone.cancelled = std::make_shared<std::atomic<bool>>(true);
  CHECK(svc.handle(gone).status == 499);
  CHECK(backend.calls == 1);   // a request whose client hung up never runs

  backend.fail_with = error_kind::no_provider;
  CHECK(svc.handle(post("/v2/models/addrelu/infer",
                        R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})")).status == 503);
  auto metrics = svc.handle(get("/metrics"));
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("gpugrid_serve_inferences_total 1") != std::string::npos);
  CHECK(metrics.body.find(R"(gpugrid_serve_responses_total{route="infer",code="400"} 5)") != std::string::npos);
}

TEST_CASE("v2 service: API keys and rate limits", "[serve]") {
  fixture f;
  model_repository repo(f.dir.string(), std::chrono::milliseconds(0), 1 << 20);
  fake_backend backend;
  service_options o;
  o.keys = key_ring({"key-aaaaaaaaaaaaaaaa"});
  o.require_keys = true;
  o.rate_limit = 1;
  o.rate_burst = 2;
  v2_service svc(&repo, &backend, o);
  CHECK(svc.handle(get("/v2/health/live")).status == 200);   // health checks stay open
  auto no_key = svc.handle(get("/v2/models/addrelu"));
  CHECK(no_key.status == 401);
  CHECK(no_key.body.find("needs an API key") != std::string::npos);
  auto wrong = get("/v2/models/addrelu");
  wrong.headers["authorization"] = "Bearer key-bbbbbbbbbbbbbbbb";
  CHECK(svc.handle(wrong).status == 401);
  auto right = get("/v2/models/addrelu");
  right.headers["authorization"] = "Bearer key-aaaaaaaaaaaaaaaa";
  CHECK(svc.handle(right).status == 200);
  CHECK(svc.handle(right).status == 200);
  auto limited = svc.handle(right);
  CHECK(limited.status == 429);
  CHECK(limited.headers.at(0).first == "Retry-After");
}

TEST_CASE("v2 service: models reload when their file changes", "[serve]") {
  fixture f;
  model_repository repo(f.dir.string(), std::chrono::milliseconds(0), 1 << 20);
  fake_backend backend;
  v2_service svc(&repo, &backend, {});
  CHECK(svc.handle(get("/v2/models/later/ready")).status == 404);
  std::ofstream(f.dir / "later.onnx", std::ios::binary) << grid::testing::add_relu_model();
  CHECK(svc.handle(get("/v2/models/later/ready")).status == 200);
  auto first = repo.find("later");
  std::ofstream(f.dir / "later.onnx", std::ios::binary) << "garbage now, and longer than before";
  CHECK(svc.handle(get("/v2/models/later/ready")).status == 503);
  CHECK(repo.find("later")->generation != first->generation);
  CHECK(first->ready());   // a request holding the old entry keeps it
  std::filesystem::remove(f.dir / "later.onnx");
  CHECK(svc.handle(get("/v2/models/later")).status == 404);
}

TEST_CASE("v2 service: a request whose client hangs up while it runs is cancelled in the backend", "[serve]") {
  fixture f;
  model_repository repo(f.dir.string(), std::chrono::milliseconds(0), 1 << 20);
  fake_backend backend;
  backend.block = true;
  v2_service svc(&repo, &backend, {});
  auto req = post("/v2/models/addrelu/infer", R"({"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})");
  req.cancelled = std::make_shared<std::atomic<bool>>(false);
  http_response resp;
  auto t0 = std::chrono::steady_clock::now();
  std::thread t([&] { resp = svc.handle(req); });
  while (!backend.started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  req.cancelled->store(true);   // what the HTTP layer does when the socket reports EOF
  t.join();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  CHECK(backend.saw_cancel);
  CHECK(resp.status == 499);
  auto metrics = svc.handle(get("/metrics")).body;
  CHECK(metrics.find("gpugrid_serve_cancelled_total 1\n") != std::string::npos);
  CHECK(metrics.find("gpugrid_serve_inference_failures_total 0\n") != std::string::npos);
  CHECK(metrics.find("gpugrid_serve_cost_credits_total 0\n") != std::string::npos);
}
