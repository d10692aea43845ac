// What a generation model folder says about itself, read from its JSON files:
//   onnxruntime-genai's model builder: genai_config.json (+ tokenizer files)
//   optimum's export: config.json, generation_config.json (optional) (+ tokenizer files)
// and in both, tokenizer_config.json (optional: chat template, BOS/EOS strings) and a
// chat_template.jinja file when the template is kept apart from it.
//
// load_model_config reads only these small files; it does not open the ONNX model or build the
// tokenizer. Failures are one-line invalid_input errors naming the file (exit 2): a folder
// without tokenizer.json, without genai_config.json and config.json, without the model file
// they name, or with a file that is not the JSON it should be.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid::llm {

struct generation_defaults {
  bool do_sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;  // 0: no top-k cut
  double repetition_penalty = 1.0;
  int64_t max_length = 0;  // 0: not stated
};

struct model_config {
  enum class folder_format { genai, optimum };
  folder_format format = folder_format::optimum;
  std::string dir;
  std::string model_path;      // the decoder's .onnx file
  std::string tokenizer_path;  // tokenizer.json
  std::string model_type;      // "llama", "qwen2", "phi3", "gpt2", ...
  int64_t context_length = 0;  // 0 when no file states it
  int64_t vocab_size = 0;
  int32_t bos_token_id = -1;  // -1: none
  int32_t pad_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // generation stops at any of them
  std::string bos_token, eos_token;    // as tokenizer_config.json spells them; may be empty
  bool add_bos_token = false;          // tokenizer_config.json's add_bos_token
  std::string chat_template;           // empty when the folder has none
  generation_defaults generation;
};

expected<model_config> load_model_config(const std::string& dir);

}  // namespace gpugrid::llm
