// Renders a model's chat template: the Jinja subset that Hugging Face `chat_template`s use.
//
// Supported: text with {{ }}, {% %}, {# #}, whitespace control {%- -%} and the
// trim_blocks/lstrip_blocks settings transformers renders with; statements if/elif/else,
// for (tuple unpacking, loop.index/index0/revindex/first/last/length/previtem/nextitem, an `if`
// filter, else), set (also `set ns.attr` on a namespace(), and block set), break/continue,
// macro (positional, keyword and default parameters; recursion up to 64 calls deep);
// expressions with literals (strings, numbers, lists, dicts, true/false/none), attribute and
// item access, slicing, calls, `x if c else y`, and/or/not, comparisons, in / not in, + - * / //
// % and ~, filters (trim, tojson, length/count, upper, lower, title, capitalize, default/d,
// string, int, float, join, first, last, list, reverse, replace, items, select, reject, selectattr, rejectattr,
// map(attribute=), safe, abs, round, unique, sort), tests (defined, undefined, none, string, number,
// integer, float, boolean, mapping, iterable, sequence, true, false, even, odd, divisibleby,
// eq/equalto/==, ne, in), globals raise_exception, namespace, range, strftime_now, and string/dict
// methods (strip, lstrip, rstrip, split, startswith, endswith, upper, lower, title, replace,
// items, keys, values, get).
// Anything else fails to parse with a one-line error naming the construct and its line.
//
// A parsed template is immutable and may be rendered from several threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace gpugrid::llm {

struct template_node;

struct chat_message {
  std::string role;
  std::string content;
};

// Bounds on one rendering: a template that runs more steps (statements and loop iterations)
// or builds a larger string than this fails with invalid_input instead of hanging or
// exhausting memory.
struct render_limits {
  size_t max_steps = 1'000'000;
  size_t max_bytes = 16u << 20;
};

class chat_template {
 public:
  // Parses `source`; `name` (e.g. "tokenizer_config.json chat_template") prefixes errors.
  static expected<chat_template> parse(std::string_view source, const std::string& name);

  // Renders with the variables of `context_json` (a JSON object, e.g. {"messages": [...],
  // "add_generation_prompt": true, "bos_token": "<s>"}). A raise_exception() in the template, a
  // type error (adding a string to a list) or an undefined value used as an object fails with
  // invalid_input naming it.
  expected<std::string> render_json(std::string_view context_json, const render_limits& limits = {}) const;

  // The usual call: messages plus the flags transformers' apply_chat_template passes (tools and
  // documents are none).
  expected<std::string> apply(const std::vector<chat_message>& messages, bool add_generation_prompt,
                              const std::string& bos_token, const std::string& eos_token) const;

 private:
  std::string name_;
  std::shared_ptr<const template_node> root_;
};

}  // namespace gpugrid::llm
