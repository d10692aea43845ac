// What `gpugrid generate` and `gpugrid chat` share: the model folder's prompt side (config,
// tokenizer, chat template), turning messages into prompt ids, flags into a completion request,
// and the choice of back end.
//
// Everything here runs on the command's main thread. Failures are one-line values: a folder
// without its config or tokenizer, an unknown tokenizer kind, a template construct the renderer
// does not support (invalid_input, exit 2).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "cli/commands.h"
#include "llm/chat_template.h"
#include "llm/generation.h"
#include "llm/model_config.h"
#include "llm/tokenizer.h"

namespace gpugrid::cli {

struct llm_prompter {
  llm::model_config config;
  llm::tokenizer tok;
  std::optional<llm::chat_template> tmpl;  // none when the folder has no chat template

  static expected<llm_prompter> load(const std::string& model_dir);
  // The prompt ids: messages rendered through the chat template (with the generation prompt),
  // or, with raw (or without a template), the messages' contents joined by blank lines.
  expected<std::vector<int32_t>> prompt_ids(const std::vector<llm::chat_message>& messages, bool raw) const;
};

// Sampling and stop settings from the flags, the model's defaults filling what was not given.
llm::completion_request make_request(const generate_options& o, const llm::model_config& config);

// The back end the tokens come from: THE one place that chooses (grid back ends are added here).
// `note` gets a line for the user when the choice needs explaining (empty otherwise).
expected<std::unique_ptr<llm::completion_backend>> make_completion_backend(const generate_options& o, std::string* note);

// A one-line summary of a finished completion for humans: tokens, tokens/s, time to first token.
std::string stats_line(const llm::completion_stats& s);

}  // namespace gpugrid::cli
