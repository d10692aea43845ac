#include "cli/completion.h"

#include <algorithm>

#include <catch2/catch.hpp>

#include "cli/command_table.h"

using namespace gpugrid;
using namespace gpugrid::cli;

namespace {

cli_spec table_spec() {
  parsed_options o;
  auto app = make_app(&o);
  return describe_cli(*app);
}

const command_spec& find(const cli_spec& spec, const std::string& name) {
  for (const auto& c : spec.commands)
    if (c.name == name) return c;
  FAIL("no command " << name);
  static const command_spec none;
  return none;
}

const flag_spec* find_flag(const command_spec& c, const std::string& name) {
  for (const auto& f : c.flags)
    if (std::find(f.names.begin(), f.names.end(), name) != f.names.end()) return &f;
  return nullptr;
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("completion: the description follows the command table", "[completion]") {
  cli_spec spec = table_spec();
  CHECK(spec.program == "gpugrid");
  REQUIRE(spec.commands.size() == command_table().size());
  for (size_t i = 0; i < spec.commands.size(); ++i) {
    CHECK(spec.commands[i].name == command_table()[i].name);
    CHECK(spec.commands[i].summary == command_table()[i].summary);
  }
  std::vector<std::string> global;
  for (const auto& f : spec.global_flags) global.insert(global.end(), f.names.begin(), f.names.end());
  CHECK(global == std::vector<std::string>{"-h", "--help", "-V", "--version", "-q", "--quiet", "-v", "--verbose"});
}

TEST_CASE("completion: value kinds of flags and positionals", "[completion]") {
  cli_spec spec = table_spec();
  const auto& run = find(spec, "run");
  REQUIRE(run.positionals.size() == 2);
  CHECK(run.positionals[0].name == "MODEL");
  CHECK(run.positionals[0].kind == value_kind::model);
  CHECK_FALSE(run.positionals[0].repeats);
  CHECK(run.positionals[1].kind == value_kind::input);
  CHECK(run.positionals[1].repeats);

  REQUIRE(find_flag(run, "--redundancy"));
  CHECK(find_flag(run, "--redundancy")->kind == value_kind::text);
  CHECK(find_flag(run, "--local")->kind == value_kind::none);
  CHECK(find_flag(run, "-o") == find_flag(run, "--output"));
  CHECK(find_flag(run, "--output")->kind == value_kind::file);
  CHECK(find_flag(run, "--output-dir")->kind == value_kind::directory);
  CHECK(find_flag(run, "--data-dir")->kind == value_kind::directory);
  CHECK(find_flag(run, "--peer")->repeatable);
  CHECK(find_flag(run, "--peer")->kind == value_kind::url);
  CHECK_FALSE(find_flag(run, "--redundancy")->repeatable);
  CHECK(find_flag(run, "--device")->choices == std::vector<std::string>{"auto", "cpu", "cuda"});

  CHECK(find_flag(find(spec, "selftest"), "--suite")->kind == value_kind::directory);
  CHECK(find_flag(find(spec, "selftest"), "--device")->choices == std::vector<std::string>{"cpu", "cuda"});
  CHECK(find_flag(find(spec, "offer"), "--fault") == nullptr);
  CHECK(find_flag(find(spec, "offer"), "--tls-cert")->kind == value_kind::file);
  CHECK(find(spec, "inspect").positionals.at(0).kind == value_kind::model);
  CHECK(find(spec, "bench").positionals.at(1).kind == value_kind::input);

  CHECK(find(spec, "ledger").positionals.at(0).choices == std::vector<std::string>{"show", "verify", "balance", "anchor"});
  CHECK(find(spec, "identity").positionals.at(0).choices == std::vector<std::string>{"show", "new"});
  CHECK(find(spec, "completion").positionals.at(0).choices == completion_shells());
  CHECK(find(spec, "help").positionals.at(0).choices.size() == command_table().size());
  CHECK(find(spec, "config").positionals.at(0).choices == std::vector<std::string>{"show", "path", "set"});
}

TEST_CASE("completion: every script names every command and flag", "[completion]") {
  cli_spec spec = table_spec();
  for (const auto& shell : completion_shells()) {
    auto script = completion_script(spec, shell);
    REQUIRE(script.has_value());
    INFO(shell);
    for (const auto& c : spec.commands) {
      CHECK(contains(*script, c.name));
      for (const auto& f : c.flags)
        for (const auto& n : f.names) {
          // fish writes --peer as "-l peer" and -o as "-s o".
          std::string written = shell != "fish" ? n : (n.rfind("--", 0) == 0 ? "-l " + n.substr(2) : "-s " + n.substr(1));
          CHECK(contains(*script, written));
        }
    }
  }
  CHECK(contains(bash_completion(spec), "complete -F _gpugrid gpugrid"));
  CHECK(zsh_completion(spec).rfind("#compdef gpugrid\n", 0) == 0);
  CHECK(contains(fish_completion(spec), "complete -c gpugrid"));
  auto bad = completion_script(spec, "tcsh");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().kind() == error_kind::usage);
}

TEST_CASE("completion: quotes in help text are escaped for each shell", "[completion]") {
  cli_spec spec;
  spec.program = "gpugrid";
  command_spec c;
  c.name = "demo";
  c.summary = "it's [a] demo: really";
  flag_spec f;
  f.names = {"--what"};
  f.help = "don't [panic]";
  f.value_name = "HOST:PORT";
  f.kind = value_kind::text;
  c.flags.push_back(f);
  spec.commands.push_back(c);
  CHECK(contains(bash_completion(spec), "'demo --what'"));
  std::string zsh = zsh_completion(spec);
  CHECK(contains(zsh, "'demo:it'\\''s [a] demo: really'"));
  CHECK(contains(zsh, "'--what=[don'\\''t \\[panic\\]]:HOST\\:PORT: '"));
  CHECK(contains(fish_completion(spec), "-d 'it\\'s [a] demo: really'"));
}

TEST_CASE("completion: preferred extensions", "[completion]") {
  CHECK(preferred_extensions(value_kind::model) == std::vector<std::string>{"onnx"});
  CHECK(preferred_extensions(value_kind::input) == std::vector<std::string>{"npy", "pb", "bin"});
  CHECK(preferred_extensions(value_kind::file).empty());
}
