#include "serve/openai_codec.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace gpugrid;
using namespace gpugrid::serve;
using json = nlohmann::json;

namespace {

api_request parse_ok(const std::string& body, api_kind kind) {
  api_request r;
  api_error e;
  INFO(body);
  bool ok = parse_api_request(body, kind, &r, &e);
  INFO(e.message);
  REQUIRE(ok);
  return r;
}

api_error parse_bad(const std::string& body, api_kind kind) {
  api_request r;
  api_error e;
  INFO(body);
  REQUIRE_FALSE(parse_api_request(body, kind, &r, &e));
  CHECK(e.status == 400);
  CHECK(e.type == "invalid_request_error");
  return e;
}

}  // namespace

TEST_CASE("openai codec: chat request fields", "[serve][openai]") {
  auto r = parse_ok(R"({"model":"m","messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hello "},{"type":"text","text":"there"}]},
      {"role":"assistant","content":"Hi."},{"role":"developer","content":"d"}],
      "max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"seed":-3,"stop":["\n","END"],"n":2,
      "stream":true,"stream_options":{"include_usage":true},"presence_penalty":0,"frequency_penalty":0.0,
      "user":"someone","some_future_field":{"x":1}})",
                    api_kind::chat);
  CHECK(r.model == "m");
  REQUIRE(r.messages.size() == 4);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[1].content == "Hello there");
  CHECK(r.messages[2].role == "assistant");
  CHECK(r.messages[3].role == "system");
  CHECK(r.max_tokens == 7);
  CHECK(*r.temperature == 0.5);
  CHECK(*r.top_p == 0.9);
  CHECK(*r.seed == -3);
  CHECK(r.stop == std::vector<std::string>{"\n", "END"});
  CHECK(r.n == 2);
  CHECK(r.stream);
  CHECK(r.include_usage);

  auto d = parse_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":3,"stop":"."})", api_kind::chat);
  CHECK(d.max_tokens == 3);
  CHECK_FALSE(d.temperature.has_value());
  CHECK_FALSE(d.seed.has_value());
  CHECK(d.stop == std::vector<std::string>{"."});
  CHECK(d.n == 1);
  CHECK_FALSE(d.stream);
}

TEST_CASE("openai codec: completion prompts", "[serve][openai]") {
  auto one = parse_ok(R"({"model":"m","prompt":"Once upon"})", api_kind::completion);
  CHECK(one.prompts == std::vector<std::string>{"Once upon"});
  CHECK(one.max_tokens == -1);
  auto two = parse_ok(R"({"model":"m","prompt":["a","b"],"echo":true,"best_of":1,"logprobs":null})", api_kind::completion);
  CHECK(two.prompts.size() == 2);
  CHECK(two.echo);
  CHECK_FALSE(two.ignore_eos);
  CHECK(parse_ok(R"({"model":"m","prompt":"x","ignore_eos":true})", api_kind::completion).ignore_eos);
  CHECK(parse_bad(R"({"model":"m","prompt":"x","ignore_eos":1})", api_kind::completion).param == "ignore_eos");
  CHECK(parse_bad(R"({"model":"m","prompt":[1,2,3]})", api_kind::completion).param == "prompt");
  CHECK(parse_bad(R"({"model":"m","prompt":["a","b","c","d","e"],"n":16})", api_kind::completion).param == "n");
  CHECK(parse_bad(R"({"model":"m"})", api_kind::completion).param == "prompt");
  CHECK(parse_bad(R"({"model":"m","prompt":"x","best_of":3})", api_kind::completion).param == "best_of");
  CHECK(parse_bad(R"({"model":"m","prompt":"x","logprobs":2})", api_kind::completion).param == "logprobs");
}

TEST_CASE("openai codec: bad requests name the field", "[serve][openai]") {
  const api_kind chat = api_kind::chat;
  CHECK(parse_bad("{not json", chat).message.find("not valid JSON") != std::string::npos);
  CHECK(parse_bad("[1]", chat).message.find("JSON object") != std::string::npos);
  CHECK(parse_bad(std::string(100, '[') + std::string(100, ']'), chat).message.find("nests deeper") != std::string::npos);
  CHECK(parse_bad(R"({"messages":[{"role":"user","content":"x"}]})", chat).param == "model");
  CHECK(parse_bad(R"({"model":"m","messages":[]})", chat).param == "messages");
  CHECK(parse_bad(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", chat).param == "messages[0].role");
  CHECK(parse_bad(R"({"model":"m","messages":[{"role":"user"}]})", chat).param == "messages[0].content");
  CHECK(parse_bad(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})", chat).param ==
        "messages[0].content[0].type");
  const std::string msg = R"("messages":[{"role":"user","content":"x"}])";
  auto bad = [&](const std::string& extra) { return parse_bad("{\"model\":\"m\"," + msg + "," + extra + "}", chat); };
  CHECK(bad(R"("temperature":3)").param == "temperature");
  CHECK(bad(R"("temperature":"hot")").param == "temperature");
  CHECK(bad(R"("top_p":0)").param == "top_p");
  CHECK(bad(R"("max_tokens":0)").param == "max_tokens");
  CHECK(bad(R"("max_tokens":1.5)").param == "max_tokens");
  CHECK(bad(R"("max_completion_tokens":-1)").param == "max_completion_tokens");
  CHECK(bad(R"("n":0)").param == "n");
  CHECK(bad(R"("n":100)").param == "n");
  CHECK(bad(R"("stop":["a","b","c","d","e"])").param == "stop");
  CHECK(bad(R"("stop":[""])").param == "stop");
  CHECK(bad(R"("stop":5)").param == "stop");
  CHECK(bad(R"("stream":"yes")").param == "stream");
  CHECK(bad(R"("stream_options":{"include_usage":true})").param == "stream_options");
  CHECK(bad(R"("stream":true,"stream_options":{"include_usage":1})").param == "stream_options.include_usage");
  auto pp = bad(R"("presence_penalty":0.5)");
  CHECK(pp.param == "presence_penalty");
  CHECK(pp.message.find("presence_penalty") != std::string::npos);
  CHECK(bad(R"("frequency_penalty":-1)").param == "frequency_penalty");
  CHECK(bad(R"("logprobs":true)").param == "logprobs");
  CHECK(bad(R"("tools":[{"type":"function"}])").param == "tools");
  CHECK(bad(R"("response_format":{"type":"json_object"})").param == "response_format");
  // Neutral values of the refused fields pass.
  parse_ok("{\"model\":\"m\"," + msg + R"(,"logprobs":false,"tools":[],"logit_bias":{},"response_format":{"type":"text"}})", chat);
}

TEST_CASE("openai codec: errors in OpenAI's shape", "[serve][openai]") {
  auto j = json::parse(api_error_json(make_api_error(404, "The model 'x' does not exist", "model", "model_not_found")));
  CHECK(j["error"]["message"] == "The model 'x' does not exist");
  CHECK(j["error"]["type"] == "not_found_error");
  CHECK(j["error"]["param"] == "model");
  CHECK(j["error"]["code"] == "model_not_found");
  auto k = json::parse(api_error_json(make_api_error(401, "no key")));
  CHECK(k["error"]["type"] == "authentication_error");
  CHECK(k["error"]["param"].is_null());
  CHECK(make_api_error(429, "slow down").type == "rate_limit_error");
  CHECK(make_api_error(503, "no provider").type == "server_error");
  CHECK(make_api_error(413, "too large").type == "invalid_request_error");
}

TEST_CASE("openai codec: responses and chunks", "[serve][openai]") {
  api_usage u{5, 3};
  api_billing b{0.25, {"node1"}};
  auto chat = json::parse(api_response_json(api_kind::chat, "chatcmpl-1", 1700000000, "m", {{"Hi!", "stop"}}, u, &b));
  CHECK(chat["object"] == "chat.completion");
  CHECK(chat["id"] == "chatcmpl-1");
  CHECK(chat["created"] == 1700000000);
  CHECK(chat["choices"][0]["index"] == 0);
  CHECK(chat["choices"][0]["message"]["role"] == "assistant");
  CHECK(chat["choices"][0]["message"]["content"] == "Hi!");
  CHECK(chat["choices"][0]["finish_reason"] == "stop");
  CHECK(chat["usage"]["total_tokens"] == 8);
  CHECK(chat["x_gpugrid"]["providers"][0] == "node1");

  auto text = json::parse(api_response_json(api_kind::completion, "cmpl-1", 1, "m", {{"a", "length"}, {"b", "stop"}}, u, nullptr));
  CHECK(text["object"] == "text_completion");
  CHECK(text["choices"][1]["text"] == "b");
  CHECK(text["choices"][1]["index"] == 1);
  CHECK(text["choices"][0]["finish_reason"] == "length");
  CHECK_FALSE(text.contains("x_gpugrid"));

  api_chunk role;
  role.role = "assistant";
  auto c1 = json::parse(api_chunk_json(api_kind::chat, "c", 1, "m", role, true, nullptr));
  CHECK(c1["object"] == "chat.completion.chunk");
  CHECK(c1["choices"][0]["delta"]["role"] == "assistant");
  CHECK(c1["choices"][0]["finish_reason"].is_null());
  CHECK(c1["usage"].is_null());
  CHECK(c1.contains("usage"));
  api_chunk content;
  content.text = "wor";
  auto c2 = json::parse(api_chunk_json(api_kind::chat, "c", 1, "m", content, false, nullptr));
  CHECK(c2["choices"][0]["delta"]["content"] == "wor");
  CHECK_FALSE(c2["choices"][0]["delta"].contains("role"));
  CHECK_FALSE(c2.contains("usage"));
  api_chunk fin;
  fin.finish_reason = "length";
  auto c3 = json::parse(api_chunk_json(api_kind::chat, "c", 1, "m", fin, false, &b));
  CHECK(c3["choices"][0]["delta"].empty());
  CHECK(c3["choices"][0]["finish_reason"] == "length");
  CHECK(c3["x_gpugrid"]["cost"] == 0.25);
  auto c4 = json::parse(api_chunk_json(api_kind::completion, "c", 1, "m", content, false, nullptr));
  CHECK(c4["object"] == "text_completion");
  CHECK(c4["choices"][0]["text"] == "wor");
  auto usage = json::parse(api_usage_chunk_json(api_kind::chat, "c", 1, "m", u, nullptr));
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"]["completion_tokens"] == 3);

  CHECK(api_sse("{}") == "data: {}\n\n");
  CHECK(std::string(api_sse_done) == "data: [DONE]\n\n");
  CHECK(api_finish_reason(llm::finish_reason::context_full) == std::string("length"));
  CHECK(api_finish_reason(llm::finish_reason::stop_string) == std::string("stop"));
  CHECK(api_finish_reason(llm::finish_reason::stop_token) == std::string("stop"));

  auto list = json::parse(api_model_list_json({{"chat", 5}, {"tiny", 6}}));
  CHECK(list["object"] == "list");
  CHECK(list["data"][1]["id"] == "tiny");
  CHECK(list["data"][0]["object"] == "model");
  CHECK(json::parse(api_model_json("chat", 5))["owned_by"] == "gpugrid");
}

TEST_CASE("openai codec: invalid UTF-8 in text is replaced, not thrown", "[serve][openai]") {
  api_chunk c;
  c.text = std::string("a\xff", 2);
  auto j = json::parse(api_chunk_json(api_kind::chat, "c", 1, "m", c, false, nullptr));
  CHECK(j["choices"][0]["delta"]["content"] == "a\xEF\xBF\xBD");
}

TEST_CASE("openai codec: any JSON value in any field is an answer, never an exception", "[serve][openai]") {
  const json values = json::array({nullptr, true, false, 0, 5, -1, 1.5, 1e300, "", "s", json::array(), json::object(),
                                   json::array({1}), json::array({"a", 2}), json{{"type", 5}}, json{{"type", "text"}},
                                   json{{"include_usage", "x"}}, json::array({json{{"type", "text"}, {"text", 3}}})});
  const json base = json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],"prompt":"p","max_tokens":3,
      "max_completion_tokens":2,"temperature":1,"top_p":1,"seed":1,"n":1,"stop":"x","stream":true,
      "stream_options":{"include_usage":true},"echo":false,"ignore_eos":false,"presence_penalty":0,
      "frequency_penalty":0,"logprobs":null,"top_logprobs":0,"logit_bias":{},"tools":[],"functions":[],
      "suffix":"","best_of":1,"response_format":{"type":"text"},"user":"u"})");
  std::vector<std::string> bodies;
  for (const auto& [key, _] : base.items()) {
    for (const auto& v : values) {
      json b = base;
      b[key] = v;
      bodies.push_back(b.dump());
      b = base;
      b.erase(key);
      bodies.push_back(b.dump());
    }
  }
  for (const char* field : {"role", "content", "tool_calls", "name"}) {
    for (const auto& v : values) {
      json b = base;
      b["messages"][0][field] = v;
      bodies.push_back(b.dump());
    }
  }
  for (const auto& v : values) {
    json b = base;
    b["messages"] = json::array({v});
    bodies.push_back(b.dump());
    b = base;
    b["response_format"]["type"] = v;
    bodies.push_back(b.dump());
    b = base;
    b["stream_options"]["include_usage"] = v;
    bodies.push_back(b.dump());
  }
  const std::string whole = base.dump();
  for (size_t n = 0; n < whole.size(); n += 7) bodies.push_back(whole.substr(0, n));
  for (const auto& body : bodies) {
    for (api_kind kind : {api_kind::chat, api_kind::completion}) {
      api_request r;
      api_error e;
      INFO(body);
      bool ok = false;
      REQUIRE_NOTHROW(ok = parse_api_request(body, kind, &r, &e));
      if (!ok) {
        CHECK(e.status == 400);
        CHECK_FALSE(e.message.empty());
      }
    }
  }
}
