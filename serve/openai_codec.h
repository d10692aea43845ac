// The OpenAI-compatible API's JSON: requests of POST /v1/chat/completions and /v1/completions
// parsed into one request type, and the responses, stream chunks (server-sent events), model
// lists and errors written in OpenAI's shapes.
//
// Requests are untrusted: a failure is an api_error (400, type invalid_request_error) whose
// message and `param` name the field at fault. Unknown fields are ignored, as OpenAI does; a
// field gpugrid cannot honour (presence_penalty, frequency_penalty, logprobs, tools, ...) with a
// value that would change the answer is refused naming it, never silently dropped. Nesting of
// JSON deeper than max_json_depth is refused before parsing. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm/chat_template.h"
#include "llm/generation.h"

namespace gpugrid::serve {

// An error as OpenAI writes it: {"error":{"message","type","param","code"}} with an HTTP status.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;   // "" -> null
  std::string code;    // "" -> null
};
// The error for `status` with OpenAI's type for it (invalid_request_error, authentication_error,
// not_found_error, rate_limit_error, server_error).
api_error make_api_error(int status, std::string message, std::string param = "", std::string code = "");
std::string api_error_json(const api_error& e);

enum class api_kind { chat, completion };

struct api_request {
  api_kind kind = api_kind::chat;
  std::string model;
  std::vector<llm::chat_message> messages;   // chat
  std::vector<std::string> prompts;          // completion: one or more prompts
  int64_t max_tokens = -1;                   // -1: not given
  std::optional<double> temperature, top_p;  // not given: the model's defaults
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  bool include_usage = false;                // stream_options.include_usage
  bool echo = false;                         // completions: the prompt before the answer
  bool ignore_eos = false;                   // vLLM's extension: generate max_tokens regardless
};

// Limits on what a request may ask for.
constexpr int max_choices = 16;          // n
constexpr size_t max_prompts = 64;       // prompts in one completions request
constexpr size_t max_stop_strings = 4;   // as OpenAI
constexpr size_t max_answers = 64;       // prompts times n in one request
constexpr int max_api_json_depth = 32;

// Parses and checks a request body. Returns false with *error set on bad input.
bool parse_api_request(std::string_view body, api_kind kind, api_request* out, api_error* error);

// OpenAI's finish_reason for a finished completion: "stop" (EOS, stop token or string) or
// "length" (max_tokens or the context reached).
const char* api_finish_reason(llm::finish_reason r);

struct api_usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

struct api_choice {
  std::string text;
  std::string finish_reason;   // "stop" / "length"
};

// Where the answer came from, added as "x_gpugrid" to whole responses and the last stream chunk.
struct api_billing {
  double cost = 0;
  std::vector<std::string> providers;
};

// A whole (non-streamed) response: object "chat.completion" or "text_completion".
std::string api_response_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                              const std::vector<api_choice>& choices, const api_usage& usage,
                              const api_billing* billing);

// One stream chunk (object "chat.completion.chunk" or "text_completion"), as JSON. For chat:
// `role` non-empty puts delta.role (with content ""), else delta.content = text when `text` is
// set; an empty finish_reason is null. With include_usage, "usage": null is added (OpenAI sends
// it on every chunk but the last).
struct api_chunk {
  int index = 0;
  std::string role;
  std::optional<std::string> text;
  std::string finish_reason;
};
std::string api_chunk_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                           const api_chunk& chunk, bool include_usage, const api_billing* billing);
// The usage chunk sent last when stream_options.include_usage: empty choices, usage set.
std::string api_usage_chunk_json(api_kind kind, const std::string& id, int64_t created, const std::string& model,
                                 const api_usage& usage, const api_billing* billing);
// "data: JSON\n\n"; api_sse_done is "data: [DONE]\n\n".
std::string api_sse(const std::string& json);
extern const char* const api_sse_done;

// GET /v1/models and /v1/models/{id}.
std::string api_model_json(const std::string& name, int64_t created);
std::string api_model_list_json(const std::vector<std::pair<std::string, int64_t>>& models);

}  // namespace gpugrid::serve
