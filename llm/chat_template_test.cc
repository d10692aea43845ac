#include "llm/chat_template.h"

#include <cstdlib>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using gpugrid::llm::chat_message;
using gpugrid::llm::chat_template;

namespace {

std::string render(const char* source, const char* context) {
  auto t = chat_template::parse(source, "t");
  REQUIRE(t.has_value());
  auto out = t->render_json(context);
  INFO(source);
  REQUIRE(out.has_value());
  return *out;
}

}  // namespace

TEST_CASE("chat template renders ChatML with the generation prompt", "[llm][chat_template]") {
  auto t = chat_template::parse(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
      "chatml");
  REQUIRE(t.has_value());
  std::vector<chat_message> msgs = {{"system", "Be brief."}, {"user", "Hi"}};
  CHECK(*t->apply(msgs, true, "<s>", "</s>") ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(*t->apply(msgs, false, "<s>", "</s>") == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST_CASE("chat template whitespace control and trim/lstrip blocks", "[llm][chat_template]") {
  CHECK(render("a  {%- if true -%}  b  {%- endif -%}  c", "{}") == "abc");
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indent before one.
  CHECK(render("{% if true %}\n    x\n    {% endif %}\ny", "{}") == "    x\ny");
  CHECK(render("{{ 'a' }}\n{{ 'b' }}", "{}") == "a\nb");
  CHECK(render("{# note #}\nz", "{}") == "z");
}

TEST_CASE("chat template expressions follow Jinja semantics", "[llm][chat_template]") {
  CHECK(render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 1 / 2 }} {{ 2 ** 10 }}", "{}") ==
        "7 3 -4 -2 0.5 1024");
  CHECK(render("{{ 'a' ~ 1 ~ none ~ true }} {{ [1, 'x'] }} {{ {'k': none} }}", "{}") ==
        "a1NoneTrue [1, 'x'] {'k': None}");
  CHECK(render("{{ x | default('d') }} {{ x is defined }} {{ none is none }} {{ 'ab' in 'cab' }}", "{}") ==
        "d False True True");
  CHECK(render("{{ m[0]['role'] }} {{ m[-1].content | upper }} {{ m | length }} {{ m[1:] | length }}",
               R"({"m": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]})") == "user YO 2 1");
  CHECK(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
               "{}") == "6");
  CHECK(render("{% for i in 'ab' %}{{ loop.index }}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}", "{}") ==
        "1a,2b");
  CHECK(render("{{ {'a': 'é', 'b': [1, 2.0]} | tojson }}", "{}") == R"({"a": "é", "b": [1, 2.0]})");
  CHECK(render("{{ '  x  ' | trim }}|{{ 'a b' if false else 'c' }}|{{ 'x,y'.split(',') | join('-') }}", "{}") ==
        "x|c|x-y");
}

TEST_CASE("chat template macros take defaults and keywords and may recurse", "[llm][chat_template]") {
  CHECK(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
               "{{ greet('a') }} {{ greet('b', '?') }} {{ greet(punct='.', name='c') }}",
               "{}") == "Hi a! Hi b? Hi c.");
  CHECK(render("{% macro py(t) %}{% if t.type == 'array' %}list[{{ py(t['items']) }}]{% else %}{{ t.type }}{% endif %}"
               "{% endmacro %}{{ py(spec) }}",
               R"({"spec": {"type": "array", "items": {"type": "array", "items": {"type": "int"}}}})") ==
        "list[list[int]]");
  auto loop = chat_template::parse("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "t");
  REQUIRE(loop.has_value());
  CHECK_FALSE(loop->render_json("{}").has_value());
}

TEST_CASE("chat template errors are one line and name the construct", "[llm][chat_template]") {
  auto call = chat_template::parse("{% call f() %}x{% endcall %}", "tokenizer_config.json");
  REQUIRE_FALSE(call.has_value());
  CHECK(call.error().message() == "tokenizer_config.json: line 1: unsupported statement 'call'");
  auto filt = chat_template::parse("\n{{ x | wordwrap }}", "t");
  REQUIRE_FALSE(filt.has_value());
  CHECK(filt.error().message() == "t: line 2: unsupported filter 'wordwrap'");
  CHECK_FALSE(chat_template::parse("{% if x %}never closed", "t").has_value());
  CHECK_FALSE(chat_template::parse("{{ 'unterminated }}", "t").has_value());
  auto t = chat_template::parse("{{ raise_exception('roles must alternate') }}", "t");
  REQUIRE(t.has_value());
  auto r = t->render_json("{}");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message() == "t: the template raised: roles must alternate");
  auto deep = chat_template::parse("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}", "t");
  REQUIRE_FALSE(deep.has_value());
  CHECK(deep.error().message().find("nesting deeper than") != std::string::npos);
  auto big = chat_template::parse(
      "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "t");
  REQUIRE(big.has_value());
  gpugrid::llm::render_limits small{100000, 1 << 16};
  auto big_out = big->render_json("{}", small);
  REQUIRE_FALSE(big_out.has_value());
  CHECK(big_out.error().message() == "t: line 1: the result of '+' is larger than 65536 bytes");
  auto slow = chat_template::parse("{% for i in range(2000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "t");
  REQUIRE(slow.has_value());
  auto slow_out = slow->render_json("{}", small);
  REQUIRE_FALSE(slow_out.has_value());
  CHECK(slow_out.error().message() == "t: line 1: the template runs more than 100000 steps");
  auto u = chat_template::parse("{{ messages[0].content + 1 }}", "t");
  REQUIRE(u.has_value());
  CHECK_FALSE(u->render_json(R"({"messages": [{"content": "x"}]})").has_value());
  CHECK_FALSE(u->render_json(R"({})").has_value());  // messages is undefined
}

// Parity with jinja2 set up as transformers' apply_chat_template sets it up, on the templates of
// tests/llm/make_chat_templates.py; run by tests/llm_chat_template_parity_test.sh, which sets
// GPUGRID_LLM_TEMPLATES to the folder it wrote.
TEST_CASE("chat template parity with jinja2 as transformers uses it", "[.llm_parity]") {
  const char* dir = std::getenv("GPUGRID_LLM_TEMPLATES");
  REQUIRE(dir != nullptr);
  std::ifstream f(std::string(dir) + "/cases.json");
  REQUIRE(f.good());
  // ordered_json keeps the key order of the messages, which tojson output depends on.
  auto cases = nlohmann::ordered_json::parse(f);
  REQUIRE(cases.size() > 50);
  for (auto& c : cases) {
    INFO(c["name"].get<std::string>());
    auto t = chat_template::parse(c["template"].get<std::string>(), c["name"].get<std::string>());
    if (!t.has_value()) FAIL(t.error().message());
    auto out = t->render_json(c["context"].dump());
    if (c.contains("error")) {
      REQUIRE_FALSE(out.has_value());
      CHECK(out.error().message().find(c["error"].get<std::string>()) != std::string::npos);
    } else {
      if (!out.has_value()) FAIL(out.error().message());
      CHECK(*out == c["output"].get<std::string>());
    }
  }
}

// Mutated templates (bytes dropped, duplicated, replaced by template syntax) must parse or fail
// with a status, and render or fail with a status: never crash, hang or throw.
TEST_CASE("chat template survives mutated sources", "[llm][chat_template]") {
  const std::string base =
      "{%- set ns = namespace(a=0) -%}{% macro m(x, y=2) %}{{ x ~ y }}{% endmacro %}"
      "{%- for message in messages if message.role != 'x' %}{% if loop.first and messages[0]['role'] == 'system' %}"
      "{{ m(message.content | trim, y=loop.index) }}{% elif message.content is string %}{% set ns.a = ns.a + 1 %}"
      "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'][1:-1] ~ (ns.a // 2) }}{% else %}"
      "{{ raise_exception('bad') }}{% endif %}{% endfor %}{{ {'k': [1, 2.5, none]} | tojson }}"
      "{% if add_generation_prompt %}{{ 'x' if true else 'y' }}{% endif %}";
  const char* pieces[] = {"{{", "}}", "{%", "%}", "{%-", "-%}", "(", ")", "[", "]", "'", "\"", "|", ".", ",", "=",
                          "endfor", "endif", "if", "for", "in", "not", "is", "~", "+", "-", "*", "//", "{", "}", "\\"};
  const std::string ctx = R"({"messages": [{"role": "system", "content": " s "}, {"role": "user", "content": "hello"},
                              {"role": "user", "content": 5}], "add_generation_prompt": true})";
  uint32_t seed = 12345;
  auto rnd = [&](uint32_t n) {
    seed = seed * 1664525u + 1013904223u;
    return (seed >> 8) % n;
  };
  int parsed = 0, rendered = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string s = base;
    for (int k = 0, edits = 1 + static_cast<int>(rnd(4)); k < edits; ++k) {
      size_t at = rnd(static_cast<uint32_t>(s.size()));
      switch (rnd(3)) {
        case 0: s.erase(at, 1 + rnd(6)); break;
        case 1: s.insert(at, pieces[rnd(sizeof pieces / sizeof *pieces)]); break;
        default: s.insert(at, s.substr(rnd(static_cast<uint32_t>(s.size())), rnd(12))); break;
      }
    }
    auto t = chat_template::parse(s, "m");
    if (!t.has_value()) {
      CHECK(t.error().message().find('\n') == std::string::npos);
      continue;
    }
    ++parsed;
    auto out = t->render_json(ctx, gpugrid::llm::render_limits{20000, 1 << 16});
    if (out.has_value()) ++rendered;
  }
  CHECK(parsed > 0);  // the mutations leave some templates valid
  CHECK(rendered > 0);
}
