#include "llm/model_config.h"

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <catch2/catch.hpp>

using gpugrid::llm::load_model_config;
using gpugrid::llm::model_config;

namespace {

namespace fs = std::filesystem;

// A fresh folder under the temp directory, removed at the end of the test.
struct temp_dir {
  temp_dir() {
    path = fs::temp_directory_path() / fs::path("gpugrid-llm-config-" + std::to_string(::getpid()) + "-" +
                                                std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
  std::string str() const { return path.string(); }
  fs::path path;
  static inline int counter = 0;
};

}  // namespace

TEST_CASE("model config reads an onnxruntime-genai folder", "[llm][model_config]") {
  temp_dir d;
  d.write("tokenizer.json", "{}");
  d.write("model.onnx", "");
  d.write("genai_config.json", R"({"model": {"type": "qwen2", "context_length": 32768, "vocab_size": 151936,
    "bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
    "decoder": {"filename": "model.onnx"}},
    "search": {"do_sample": true, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "max_length": 32768}})");
  d.write("tokenizer_config.json", R"({"bos_token": null, "eos_token": "<|im_end|>",
    "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})");
  auto c = load_model_config(d.str() + "/");
  if (!c.has_value()) FAIL(c.error().message());
  CHECK(c->format == model_config::folder_format::genai);
  CHECK(c->model_path == d.str() + "/model.onnx");
  CHECK(c->model_type == "qwen2");
  CHECK(c->context_length == 32768);
  CHECK(c->eos_token_ids == std::vector<int32_t>{151645, 151643});
  CHECK(c->bos_token_id == 151643);
  CHECK(c->eos_token == "<|im_end|>");
  CHECK(c->bos_token.empty());
  CHECK(c->chat_template == "{% for m in messages %}{{ m.content }}{% endfor %}");
  CHECK(c->generation.do_sample);
  CHECK(c->generation.temperature == 0.7);
  CHECK(c->generation.top_k == 20);
}

TEST_CASE("model config reads an optimum folder, generation_config overriding config", "[llm][model_config]") {
  temp_dir d;
  d.write("tokenizer.json", "{}");
  d.write("decoder_model_merged.onnx", "");
  d.write("config.json", R"({"model_type": "llama", "max_position_embeddings": 4096, "vocab_size": 32000,
    "bos_token_id": 1, "eos_token_id": 2})");
  d.write("generation_config.json", R"({"eos_token_id": [2, 32000], "temperature": 0.6, "top_p": 0.9})");
  d.write("tokenizer_config.json", R"({"add_bos_token": true, "bos_token": {"content": "<s>", "lstrip": false},
    "eos_token": {"content": "</s>"},
    "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  auto c = load_model_config(d.str());
  if (!c.has_value()) FAIL(c.error().message());
  CHECK(c->format == model_config::folder_format::optimum);
  CHECK(c->model_path == d.str() + "/decoder_model_merged.onnx");
  CHECK(c->context_length == 4096);
  CHECK(c->bos_token_id == 1);
  CHECK(c->eos_token_ids == std::vector<int32_t>{2, 32000});
  CHECK(c->bos_token == "<s>");
  CHECK(c->add_bos_token);
  CHECK(c->chat_template == "D");
  CHECK(c->generation.top_p == 0.9);

  // A chat_template.jinja file wins over the string in tokenizer_config.json.
  d.write("chat_template.jinja", "J");
  CHECK(load_model_config(d.str())->chat_template == "J");
}

TEST_CASE("model config errors name the missing or malformed file", "[llm][model_config]") {
  temp_dir d;
  auto none = load_model_config(d.str());
  REQUIRE_FALSE(none.has_value());
  CHECK(none.error().message() == d.str() + "/tokenizer.json: missing (the model folder has no tokenizer)");
  CHECK(none.error().kind() == gpugrid::error_kind::invalid_input);

  d.write("tokenizer.json", "{}");
  auto no_config = load_model_config(d.str());
  REQUIRE_FALSE(no_config.has_value());
  CHECK(no_config.error().message() ==
        d.str() + "/config.json: missing (a model folder needs genai_config.json or config.json)");

  d.write("config.json", R"({"eos_token_id": "two"})");
  auto bad_type = load_model_config(d.str());
  REQUIRE_FALSE(bad_type.has_value());
  CHECK(bad_type.error().message() == d.str() + "/config.json: 'eos_token_id' must be a token id or a list of token ids");

  d.write("config.json", R"({"eos_token_id": 2})");
  auto no_model = load_model_config(d.str());
  REQUIRE_FALSE(no_model.has_value());
  CHECK(no_model.error().message() == d.str() + ": no decoder_model_merged.onnx or model.onnx");

  d.write("model.onnx", "");
  d.write("tokenizer_config.json", "{not json");
  auto bad_json = load_model_config(d.str());
  REQUIRE_FALSE(bad_json.has_value());
  CHECK(bad_json.error().message() == d.str() + "/tokenizer_config.json: not a JSON object");

  d.write("tokenizer_config.json", "{}");
  d.write("genai_config.json", R"({"model": {"decoder": {"filename": "../escape.onnx"}}})");
  auto escape = load_model_config(d.str());
  REQUIRE_FALSE(escape.has_value());
  CHECK(escape.error().message().find("leaves the model folder") != std::string::npos);

  CHECK_FALSE(load_model_config(d.str() + "/nope").has_value());
}
