#include "serve/openai_service.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/testing/concurrency_gauge.h"

using namespace gpugrid;
using namespace gpugrid::serve;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A byte-level BPE over the lower-case letters and the space (Ġ): one token per character.
std::string letters_tokenizer() {
  json vocab = json::object();
  int id = 0;
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = id++;
  vocab["Ġ"] = id++;
  json t = {{"added_tokens", json::array({{{"id", id}, {"content", "<eos>"}, {"special", true}, {"normalized", false}}})},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  return t.dump();
}

struct model_folder {
  explicit model_folder(int64_t context = 64) {
    root = fs::temp_directory_path() / ("gpugrid-openai-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(root);
    fs::create_directories(root / "m");
    fs::create_directories(root / "not-a-model");
    write("m/tokenizer.json", letters_tokenizer());
    write("m/model.onnx", "");
    write("m/genai_config.json", json{{"model", {{"type", "llama"}, {"context_length", context}, {"vocab_size", 28},
                                                 {"eos_token_id", 27}, {"decoder", {{"filename", "model.onnx"}}}}},
                                      {"search", {{"do_sample", true}, {"temperature", 0.7}, {"top_k", 5}, {"top_p", 0.9}}}}
                                         .dump());
    write("m/tokenizer_config.json",
          R"({"eos_token": "<eos>", "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}"})");
    write("not-a-model/readme.txt", "x");
  }
  ~model_folder() { fs::remove_all(root); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(root / name) << text; }
  fs::path root;
  static inline int counter = 0;
};

// Emits 'a', 'b', 'c', ... up to max_new_tokens; records what it was asked.
class fake_backend : public llm::completion_backend {
 public:
  expected<llm::completion_stats> complete(const llm::completion_request& r, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    {
      std::lock_guard<std::mutex> l(mu);
      requests.push_back(r);
    }
    // Waits (up to 10 s) until `rendezvous` completions have run at once: only a caller that
    // runs them concurrently gets there.
    gpugrid::testing::concurrency_gauge::inside counted(running);
    if (rendezvous > 0 && !running.reached(rendezvous)) return status(error_kind::io, "the other completions never came");
    if (fail_with) return *fail_with;
    llm::completion_stats st;
    st.prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
    st.reason = llm::finish_reason::length;
    for (int64_t i = 0; i < r.stop.max_new_tokens; ++i) {
      if (cancelled && cancelled()) {
        st.reason = llm::finish_reason::cancelled;
        break;
      }
      llm::generated_token t;
      t.id = static_cast<int32_t>(i % 26);
      t.index = i;
      t.text = std::string(1, static_cast<char>('a' + i % 26));
      ++st.generated_tokens;
      st.text += t.text;
      ++decoded;
      if (!sink(t)) {
        st.reason = llm::finish_reason::cancelled;
        break;
      }
    }
    st.providers = {"node-x"};
    st.cost = 0.5;
    return st;
  }
  bool concurrent() const override { return takes_many; }
  std::mutex mu;
  std::vector<llm::completion_request> requests;
  std::optional<status> fail_with;
  std::atomic<int64_t> decoded{0};
  bool takes_many = false;
  int rendezvous = 0;
  gpugrid::testing::concurrency_gauge running;
};

class fake_stream : public response_stream {
 public:
  bool begin(const http_response& head) override {
    begun = true;
    this->head = head;
    return !gone();
  }
  bool write(std::string_view data) override {
    if (gone()) return false;
    writes.emplace_back(data);
    return !gone();
  }
  bool gone() const override { return hang_up_after >= 0 && static_cast<int>(writes.size()) >= hang_up_after; }
  // The JSON of each "data: ..." event (not [DONE]).
  std::vector<json> events() const {
    std::vector<json> out;
    for (const auto& w : writes) {
      REQUIRE(w.compare(0, 6, "data: ") == 0);
      REQUIRE(w.size() >= 8);
      REQUIRE(w.compare(w.size() - 2, 2, "\n\n") == 0);
      std::string body = w.substr(6, w.size() - 8);
      if (body != "[DONE]") out.push_back(json::parse(body));
    }
    return out;
  }
  bool begun = false;
  http_response head;
  std::vector<std::string> writes;
  int hang_up_after = -1;
};

struct fixture {
  explicit fixture(int64_t context = 64) : folder(context), models(folder.root.string(), std::chrono::milliseconds(0)) {
    backend = std::make_shared<fake_backend>();
    openai_options o;
    auto b = backend;
    o.open = [b](const std::string&) -> expected<std::shared_ptr<llm::completion_backend>> {
      return std::shared_ptr<llm::completion_backend>(b);
    };
    service = std::make_unique<openai_service>(&models, o);
  }
  http_response call(const std::string& method, const std::string& target, const std::string& body, fake_stream* s = nullptr) {
    http_request r;
    r.method = method;
    r.target = target;
    r.body = body;
    std::vector<std::string> parts;
    size_t start = 1;
    while (start <= target.size()) {
      size_t end = target.find('/', start);
      if (end == std::string::npos) end = target.size();
      if (end > start) parts.push_back(target.substr(start, end - start));
      start = end + 1;
    }
    http_response resp = service->handle(r, parts);
    if (!resp.deferred) return resp;
    fake_stream own;
    return resp.deferred(s ? *s : own);
  }
  model_folder folder;
  llm_model_list models;
  std::shared_ptr<fake_backend> backend;
  std::unique_ptr<openai_service> service;
};

json body_of(const http_response& r) { return json::parse(r.body); }

}  // namespace

TEST_CASE("openai service: models list and lookup", "[serve][openai]") {
  fixture f;
  auto list = f.call("GET", "/v1/models", "");
  REQUIRE(list.status == 200);
  auto j = body_of(list);
  REQUIRE(j["data"].size() == 1);
  CHECK(j["data"][0]["id"] == "m");
  CHECK(body_of(f.call("GET", "/v1/models/m", ""))["id"] == "m");
  auto missing = f.call("GET", "/v1/models/zz", "");
  CHECK(missing.status == 404);
  CHECK(body_of(missing)["error"]["code"] == "model_not_found");
  CHECK(f.call("POST", "/v1/models", "").status == 405);
  CHECK(f.call("GET", "/v1/chat/completions", "").status == 405);
  CHECK(f.call("POST", "/v1/embeddings", "{}").status == 404);

  // A folder that appears is listed on the next scan; one that goes is dropped.
  fs::copy(f.folder.root / "m", f.folder.root / "m2");
  CHECK(body_of(f.call("GET", "/v1/models", ""))["data"].size() == 2);
  fs::remove_all(f.folder.root / "m");
  auto after = body_of(f.call("GET", "/v1/models", ""));
  REQUIRE(after["data"].size() == 1);
  CHECK(after["data"][0]["id"] == "m2");
}

TEST_CASE("openai service: a chat answer with usage, sampling from the model's defaults", "[serve][openai]") {
  fixture f;
  auto r = f.call("POST", "/v1/chat/completions",
                  R"({"model":"m","messages":[{"role":"system","content":"be"},{"role":"user","content":"hi there"}],
                      "max_tokens":5,"stop":"zz"})");
  REQUIRE(r.status == 200);
  auto j = body_of(r);
  CHECK(j["object"] == "chat.completion");
  CHECK(j["choices"][0]["message"]["content"] == "abcde");
  CHECK(j["choices"][0]["finish_reason"] == "length");
  // "be hi there " is 12 characters, one token each.
  CHECK(j["usage"]["prompt_tokens"] == 12);
  CHECK(j["usage"]["completion_tokens"] == 5);
  CHECK(j["usage"]["total_tokens"] == 17);
  CHECK(j["x_gpugrid"]["providers"][0] == "node-x");
  bool cost_header = false;
  for (const auto& [k, v] : r.headers) cost_header = cost_header || (k == "X-Gpugrid-Cost" && v == "0.5");
  CHECK(cost_header);
  REQUIRE(f.backend->requests.size() == 1);
  const auto& req = f.backend->requests[0];
  CHECK(req.prompt_ids.size() == 12);
  CHECK(req.stop.max_new_tokens == 5);
  CHECK(req.stop.stop_strings == std::vector<std::string>{"zz"});
  CHECK(req.sampling.temperature == Approx(0.7));
  CHECK(req.sampling.top_k == 5);

  // Without max_tokens a chat answer may fill the context; a client temperature drops top-k.
  f.call("POST", "/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":9})");
  REQUIRE(f.backend->requests.size() == 2);
  CHECK(f.backend->requests[1].stop.max_new_tokens == 64 - 3);
  CHECK(f.backend->requests[1].sampling.temperature == 0);
  CHECK(f.backend->requests[1].sampling.top_k == 0);
  CHECK(f.backend->requests[1].sampling.seed == 9);
}

TEST_CASE("openai service: completions with several prompts and n choices", "[serve][openai]") {
  fixture f;
  auto r = f.call("POST", "/v1/completions", R"({"model":"m","prompt":["ab","abc"],"n":2,"seed":40,"max_tokens":2,"echo":true})");
  REQUIRE(r.status == 200);
  auto j = body_of(r);
  REQUIRE(j["choices"].size() == 4);
  CHECK(j["choices"][0]["text"] == "abab");
  CHECK(j["choices"][3]["text"] == "abcab");
  CHECK(j["choices"][3]["index"] == 3);
  CHECK(j["usage"]["prompt_tokens"] == 5);
  CHECK(j["usage"]["completion_tokens"] == 8);
  REQUIRE(f.backend->requests.size() == 4);
  CHECK(f.backend->requests[0].sampling.seed == 40);
  CHECK(f.backend->requests[1].sampling.seed == 41);
  CHECK(f.backend->requests[2].sampling.seed == 40);
  // Completions default to 16 tokens.
  f.call("POST", "/v1/completions", R"({"model":"m","prompt":"ab"})");
  CHECK(f.backend->requests.back().stop.max_new_tokens == 16);
}

TEST_CASE("openai service: a chat stream in OpenAI's order", "[serve][openai]") {
  fixture f;
  fake_stream s;
  f.call("POST", "/v1/chat/completions",
         R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true,
             "stream_options":{"include_usage":true}})",
         &s);
  REQUIRE(s.begun);
  CHECK(s.head.content_type == "text/event-stream");
  CHECK(s.writes.back() == "data: [DONE]\n\n");
  auto ev = s.events();
  REQUIRE(ev.size() == 6);   // role, a, b, c, finish, usage
  CHECK(ev[0]["choices"][0]["delta"]["role"] == "assistant");
  CHECK(ev[1]["choices"][0]["delta"]["content"] == "a");
  CHECK(ev[3]["choices"][0]["delta"]["content"] == "c");
  CHECK(ev[3]["choices"][0]["finish_reason"].is_null());
  CHECK(ev[4]["choices"][0]["finish_reason"] == "length");
  CHECK(ev[4]["usage"].is_null());
  CHECK(ev[5]["choices"].empty());
  CHECK(ev[5]["usage"]["completion_tokens"] == 3);
  CHECK(ev[5]["x_gpugrid"]["cost"] == 0.5);
  for (const auto& e : ev) CHECK(e["object"] == "chat.completion.chunk");
  for (const auto& e : ev) CHECK(e["id"] == ev[0]["id"]);

  // Without include_usage the finish chunk is last and carries where the answer came from.
  fake_stream t;
  f.call("POST", "/v1/completions", R"({"model":"m","prompt":"ab","max_tokens":2,"stream":true})", &t);
  auto tv = t.events();
  REQUIRE(tv.size() == 3);
  CHECK(tv[0]["choices"][0]["text"] == "a");
  CHECK(tv[2]["choices"][0]["finish_reason"] == "length");
  CHECK(tv[2]["x_gpugrid"]["providers"][0] == "node-x");
  CHECK_FALSE(tv[2].contains("usage"));
}

TEST_CASE("openai service: a client that goes away stops the generation", "[serve][openai]") {
  fixture f(100000);
  fake_stream s;
  s.hang_up_after = 4;
  f.call("POST", "/v1/completions", R"({"model":"m","prompt":"ab","max_tokens":5000,"stream":true})", &s);
  CHECK(s.writes.size() == 4);
  CHECK(f.backend->decoded <= 5);
  CHECK(f.service->stats().cancelled == 1);
  CHECK(f.service->stats().running == 0);
  CHECK(f.service->stats().completions == 0);
  CHECK(f.service->stats().batches == 1);
}

TEST_CASE("openai service: requests for one model take turns, and one whose client left while waiting never runs", "[serve][openai]") {
  fixture f;
  REQUIRE(f.call("GET", "/v1/models", "").status == 200);
  auto m = f.models.find("m");
  REQUIRE(m);
  // Another request holds the model until `release` is set.
  std::promise<void> started, release;
  auto release_f = release.get_future().share();
  llm_model::job blocker;
  blocker.runs.resize(1);
  blocker.gone = [] { return false; };
  std::thread holder([&] {
    m->run_job(&blocker, 1, [&](std::vector<llm_model::job*>&) {
      started.set_value();
      release_f.wait();
    });
  });
  started.get_future().wait();
  fake_stream s;
  s.hang_up_after = 0;          // this client is gone while it waits
  auto r = f.call("POST", "/v1/completions", R"({"model":"m","prompt":"ab","stream":true})", &s);
  CHECK(r.status == 499);
  CHECK(f.backend->requests.empty());
  CHECK(f.service->stats().cancelled == 1);
  release.set_value();
  holder.join();
  CHECK(blocker.done);
  CHECK(f.call("POST", "/v1/completions", R"({"model":"m","prompt":"ab","max_tokens":1})").status == 200);
  CHECK(f.backend->requests.size() == 1);
}

TEST_CASE("openai service: a back end that takes completions at once runs a model's requests at once", "[serve][openai]") {
  fixture f;
  f.backend->takes_many = true;  // as the grid's client does
  f.backend->rendezvous = 3;
  std::vector<int> codes(3, 0);
  std::vector<std::string> texts(3);
  std::vector<std::thread> ts;
  for (int k = 0; k < 3; ++k)
    ts.emplace_back([&, k] {
      auto r = f.call("POST", "/v1/chat/completions",
                      fmt::format(R"({{"model":"m","messages":[{{"role":"user","content":"q{}"}}],"max_tokens":{}}})", k, 2 + k));
      codes[k] = r.status;
      if (r.status == 200) texts[k] = body_of(r)["choices"][0]["message"]["content"];
    });
  for (auto& t : ts) t.join();
  CHECK(codes == std::vector<int>{200, 200, 200});
  CHECK(texts == std::vector<std::string>{"ab", "abc", "abcd"});
  CHECK(f.backend->running.most == 3);
  CHECK(f.service->stats().batches == 3);

  // A client that left before its request started: nothing runs, 499.
  f.backend->rendezvous = 0;
  fake_stream left;
  left.hang_up_after = 0;
  auto r = f.call("POST", "/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"q"}],"max_tokens":3})", &left);
  CHECK(r.status == 499);
  CHECK(f.backend->requests.size() == 3);
  CHECK(f.service->stats().cancelled == 1);
}

TEST_CASE("openai service: jobs waiting together run as one batch, in order, within the limit", "[serve][openai]") {
  fixture f;
  REQUIRE(f.call("GET", "/v1/models", "").status == 200);
  auto m = f.models.find("m");
  std::promise<void> started, release;
  auto release_f = release.get_future().share();
  llm_model::job blocker;
  blocker.runs.resize(1);
  blocker.gone = [] { return false; };
  std::thread holder([&] {
    m->run_job(&blocker, 8, [&](std::vector<llm_model::job*>&) {
      started.set_value();
      release_f.wait();
    });
  });
  started.get_future().wait();
  // Three jobs queue up while the model is busy (2 + 2 + 1 runs; the batch limit is 4).
  std::vector<std::vector<size_t>> batches;
  std::mutex mu;
  std::vector<llm_model::job> jobs(3);
  std::vector<std::thread> waiters;
  for (size_t k = 0; k < jobs.size(); ++k) {
    jobs[k].runs.resize(k == 2 ? 1 : 2);
    jobs[k].gone = [] { return false; };
    waiters.emplace_back([&, k] {
      m->run_job(&jobs[k], 4, [&](std::vector<llm_model::job*>& taken) {
        std::lock_guard<std::mutex> l(mu);
        std::vector<size_t> ids;
        for (auto* j : taken) ids.push_back(static_cast<size_t>(j - jobs.data()));
        batches.push_back(ids);
      });
    });
    // Queued in order.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  release.set_value();
  holder.join();
  for (auto& t : waiters) t.join();
  for (auto& j : jobs) CHECK(j.done);
  REQUIRE(batches.size() == 2);
  CHECK(batches[0] == std::vector<size_t>{0, 1});
  CHECK(batches[1] == std::vector<size_t>{2});
}

TEST_CASE("openai service: errors before the answer start", "[serve][openai]") {
  fixture f(16);
  fake_stream s;
  auto r = f.call("POST", "/v1/completions", R"({"model":"m","prompt":"abcdefghijklmnopqrstuvwxyz","stream":true})", &s);
  CHECK_FALSE(s.begun);
  CHECK(r.status == 400);
  auto e = body_of(r)["error"];
  CHECK(e["code"] == "context_length_exceeded");
  CHECK(e["param"] == "prompt");
  CHECK(e["message"].get<std::string>().find("context is 16") != std::string::npos);
  auto over = f.call("POST", "/v1/completions", R"({"model":"m","prompt":"abc","max_tokens":14})");
  CHECK(over.status == 400);
  CHECK(body_of(over)["error"]["param"] == "max_tokens");
  CHECK(f.backend->requests.empty());

  auto unknown = f.call("POST", "/v1/chat/completions", R"({"model":"x","messages":[{"role":"user","content":"hi"}]})");
  CHECK(unknown.status == 404);
  CHECK(body_of(unknown)["error"]["param"] == "model");
  auto bad = f.call("POST", "/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"hi"}],"n":"2"})");
  CHECK(bad.status == 400);
  CHECK(body_of(bad)["error"]["param"] == "n");
  auto not_utf8 = f.call("POST", "/v1/completions", "{\"model\":\"m\",\"prompt\":\"\xff\"}");
  CHECK(not_utf8.status == 400);

  f.backend->fail_with = status(error_kind::no_provider, "no provider is reachable right now");
  fake_stream s2;
  auto none = f.call("POST", "/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true})", &s2);
  CHECK_FALSE(s2.begun);
  CHECK(none.status == 503);
  CHECK(body_of(none)["error"]["type"] == "server_error");
  CHECK(f.service->stats().failed == 1);

  auto auth = f.service->error(401, "the API key is not valid");
  CHECK(auth.status == 401);
  CHECK(body_of(auth)["error"]["type"] == "authentication_error");
}
