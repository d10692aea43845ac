#include "cli/command_table.h"

#include <cstdio>
#include <set>
#include <stdexcept>

#include <catch2/catch.hpp>

using namespace gpugrid;
using namespace gpugrid::cli;

namespace {

// Captures what dispatch writes to its out and err streams.
struct captured {
  int code = -1;
  std::string out, err;
};

std::string slurp(std::FILE* f) {
  std::string s;
  std::rewind(f);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

captured run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "gpugrid");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  REQUIRE(out);
  REQUIRE(err);
  captured c;
  c.code = dispatch(static_cast<int>(argv.size()), argv.data(), out, err);
  c.out = slurp(out);
  c.err = slurp(err);
  return c;
}

size_t lines(const std::string& s) {
  size_t n = 0;
  for (char ch : s) n += ch == '\n';
  return n;
}

// Parses a command line with the real table and returns the bound options.
parsed_options parse(std::vector<std::string> args) {
  parsed_options o;
  auto app = make_app(&o);
  args.insert(args.begin(), "gpugrid");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  app->parse(static_cast<int>(argv.size()), argv.data());
  return o;
}

}  // namespace

TEST_CASE("command table: the commands of DESIGN.md, each with a summary", "[command_table]") {
  std::vector<std::string> names;
  for (const auto& c : command_table()) {
    names.emplace_back(c.name);
    CHECK(std::string(c.summary).size() > 10);
    CHECK(std::string(c.summary).find('\n') == std::string::npos);
    CHECK(c.add_flags != nullptr);
    CHECK(c.run != nullptr);
  }
  CHECK(names == std::vector<std::string>{"offer", "run", "serve", "generate", "chat", "peers", "inspect", "selftest",
                                          "bench", "ledger", "identity", "wallet", "config", "completion", "version",
                                          "help"});
  CHECK(find_command("run") != nullptr);
  CHECK(find_command("rnu") == nullptr);
  for (const char* reader : {"run", "offer", "peers", "serve"}) CHECK(find_command(reader)->reads_settings);
  for (const char* pure : {"generate", "chat", "inspect", "selftest", "bench", "config", "completion", "version", "help"})
    CHECK_FALSE(find_command(pure)->reads_settings);
}

TEST_CASE("command table: every flag has help text", "[command_table]") {
  parsed_options o;
  auto app = make_app(&o);
  cli_spec spec = describe_cli(*app);
  REQUIRE(spec.commands.size() == command_table().size());
  for (const auto& c : spec.commands) {
    INFO(c.name);
    for (const auto& f : c.flags) {
      INFO(f.names.back());
      CHECK_FALSE(f.help.empty());
    }
    for (const auto& p : c.positionals) CHECK_FALSE(p.help.empty());
  }
}

TEST_CASE("command table: flags bind to the option structs", "[command_table]") {
  auto o = parse({"run", "m.onnx", "a.npy", "--peer", "ws://a:1", "x=b.pb", "--peer", "wss://b:2", "-o", "-",
                  "--redundancy", "3", "--max-price", "0.5", "--timeout", "2.5", "--device", "cuda:1",
                  "--threads", "4", "--local", "--json", "--output-dir", "outs"});
  CHECK(o.run.model == "m.onnx");
  CHECK(o.run.inputs == std::vector<std::string>{"a.npy", "x=b.pb"});
  CHECK(o.run.peers == std::vector<std::string>{"ws://a:1", "wss://b:2"});
  CHECK(o.run.output == "-");
  CHECK(o.run.redundancy == 3);
  CHECK(o.run.max_price == 0.5);
  CHECK(o.run.timeout_s == 2.5);
  CHECK(o.run.device == "cuda:1");
  CHECK(o.run.threads == 4);
  CHECK(o.run.local);
  CHECK(o.run.json);
  CHECK(o.run.output_dir == "outs");
  // On a chain, --max-price also takes the chain's base unit.
  CHECK(parse({"run", "m.onnx", "a.npy", "--max-price", "1000000000000000wei"}).run.max_price == Approx(0.001));
  CHECK(parse({"run", "m.onnx", "a.npy", "--max-price", "5wei"}).run.max_price == Approx(5e-18));
  // So do generate's price limits per 1000 tokens.
  auto gw = parse({"generate", "dir", "--max-price-prompt", "1000wei", "--max-price-generated", "2000000000000000wei"});
  CHECK(gw.generate.max_price_prompt == Approx(1e-15));
  CHECK(gw.generate.max_price_generated == Approx(0.002));

  auto b = parse({"bench", "m.onnx", "in.npy", "--iterations", "7", "--warmup", "0", "--device=cpu"});
  CHECK(b.bench.model == "m.onnx");
  CHECK(b.bench.inputs == std::vector<std::string>{"in.npy"});
  CHECK(b.bench.iterations == 7);
  CHECK(b.bench.warmup == 0);

  auto s = parse({"selftest", "--suite", "cases", "--filter", "relu", "--verbose", "--device", "cuda"});
  CHECK(s.selftest.suite == "cases");
  CHECK(s.selftest.filter == "relu");
  CHECK(s.selftest.verbose);
  CHECK(s.selftest.device == "cuda");

  auto f = parse({"offer", "--listen", "127.0.0.1:9000", "--slots", "2", "--price", "0.01", "--max-model-mb", "64",
                  "--max-memory", "256", "--data-dir", "d"});
  CHECK(f.offer.listen == "127.0.0.1:9000");
  CHECK(f.offer.slots == 2);
  CHECK(f.offer.price == 0.01);
  CHECK(f.offer.max_model_mb == 64);
  CHECK(f.offer.max_memory_mb == 256);
  CHECK(f.offer.data_dir == "d");

  auto sv = parse({"serve", "--listen", "0.0.0.0:8080", "--models", "m", "--local", "--workers", "8", "--rate-limit", "2.5",
                   "--max-body-mb", "3", "--header-timeout", "0.5"});
  CHECK(sv.serve.listen == "0.0.0.0:8080");
  CHECK(sv.serve.models == "m");
  CHECK(sv.serve.local);
  CHECK(sv.serve.workers == 8);
  CHECK(sv.serve.rate_limit == 2.5);
  CHECK(sv.serve.max_body_mb == 3);
  CHECK(sv.serve.header_timeout_s == 0.5);
  auto g = parse({"generate", "dir", "--prompt", "a", "--prompt", "b", "--max-tokens", "7", "--temperature", "0.5",
                  "--top-k", "3", "--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.1", "--seed", "9",
                  "--stop", "x", "--stop", "y", "--system", "s", "--no-template", "--json", "--local", "--threads", "2"});
  CHECK(g.generate.model == "dir");
  CHECK(g.generate.prompts == std::vector<std::string>{"a", "b"});
  CHECK(g.generate.max_tokens == 7);
  CHECK(g.generate.temperature == 0.5);
  CHECK(g.generate.top_k == 3);
  CHECK(g.generate.top_p == 0.9);
  CHECK(g.generate.min_p == 0.05);
  CHECK(g.generate.repetition_penalty == 1.1);
  CHECK(g.generate.seed == 9);
  CHECK(g.generate.stop == std::vector<std::string>{"x", "y"});
  CHECK(g.generate.system == "s");
  CHECK(g.generate.no_template);
  CHECK(g.generate.json);
  CHECK(g.generate.local);
  CHECK(g.generate.threads == 2);
  auto ch = parse({"chat", "dir", "--stats", "--temperature", "0"});
  CHECK(ch.generate.model == "dir");
  CHECK(ch.generate.stats);
  CHECK(ch.generate.temperature == 0);
  auto bt = parse({"run", "m.onnx", "--batch", "-", "--output-dir", "o", "--in-flight", "5", "--attempts", "2"});
  CHECK(bt.run.batch == "-");
  CHECK(bt.run.in_flight == 5);
  CHECK(bt.run.attempts == 2);

  CHECK(parse({"ledger", "verify", "--json"}).ledger.action == "verify");
  CHECK(parse({"identity", "new", "--data-dir", "x"}).identity.data_dir == "x");
  CHECK(parse({"completion", "fish"}).shell == "fish");
  CHECK(parse({"help", "run"}).topic == "run");
  CHECK(parse({"help", "--man"}).man);

  auto l = parse({"ledger", "show", "--limit", "5", "--since", "7d"});
  CHECK(l.ledger.limit == 5);
  CHECK(l.ledger.since == "7d");
  auto c = parse({"config", "set", "price", "0.5"});
  CHECK(c.config.action == "set");
  CHECK(c.config.key == "price");
  CHECK(c.config.value == "0.5");
  CHECK(parse({"run", "m.onnx", "-o", "-", "--output-format", "npy"}).run.output_format == "npy");
}

TEST_CASE("command table: -q and -v on every command and before it", "[command_table]") {
  CHECK(parse({"-q", "version"}).quiet);
  CHECK(parse({"-v", "version"}).verbose);
  for (const auto& cmd : command_table()) {
    INFO(cmd.name);
    parsed_options o;
    auto app = make_app(&o);
    const CLI::App* sub = app->get_subcommand(cmd.name);
    CHECK(sub->get_option_no_throw("-q") != nullptr);
    CHECK(sub->get_option_no_throw("--quiet") != nullptr);
    CHECK(sub->get_option_no_throw("-v") != nullptr);
  }
  CHECK(parse({"run", "m.onnx", "-q"}).quiet);
  CHECK(parse({"peers", "--verbose"}).verbose);
}

TEST_CASE("command table: --peer takes one URL per use", "[command_table]") {
  CHECK(parse({"peers", "--peer", "ws://a:1", "--peer", "ws://b:2"}).peers.peers ==
        std::vector<std::string>{"ws://a:1", "ws://b:2"});
  auto c = run_cli({"peers", "--peer", "ws://a:1", "ws://b:2"});
  CHECK(c.code == 2);
  CHECK(c.err == "gpugrid: peers: unexpected argument 'ws://b:2'\n");
  // Help shows "--peer URL" without the "..." that promised a list.
  auto h = run_cli({"help", "peers"});
  CHECK(h.out.find("--peer URL ") != std::string::npos);
  CHECK(h.out.find("--peer URL ...") == std::string::npos);
}

TEST_CASE("dispatch: help is wrapped and free of CLI11's decorations", "[command_table]") {
  for (const auto& cmd : command_table()) {
    auto h = run_cli({"help", cmd.name});
    INFO(cmd.name << "\n" << h.out);
    CHECK(h.out.find("Needs:") == std::string::npos);
    CHECK(h.out.find("REQUIRED") == std::string::npos);
    CHECK(h.out.find("Subcommands") == std::string::npos);
  }
  auto root = run_cli({"--help"});
  CHECK(root.out.find("Subcommands") == std::string::npos);
  CHECK(root.out.find("Commands:") != std::string::npos);
  // With no terminal and COLUMNS unset, 80 columns; a narrow and a wide width both hold.
  for (int width : {60, 100}) {
    parsed_options o;
    auto app = make_app(&o, width);
    std::string help = app->get_subcommand("run")->help("gpugrid");
    size_t start = 0;
    while (start < help.size()) {
      size_t nl = help.find('\n', start);
      if (nl == std::string::npos) nl = help.size();
      INFO(help.substr(start, nl - start));
      CHECK(nl - start <= static_cast<size_t>(width));
      start = nl + 1;
    }
  }
}

TEST_CASE("dispatch: version and -V", "[command_table]") {
  auto v = run_cli({"version"});
  CHECK(v.code == 0);
  auto V = run_cli({"-V"});
  CHECK(V.code == 0);
  CHECK(V.out == v.out);
  CHECK(v.out.rfind("gpugrid ", 0) == 0);
}

TEST_CASE("dispatch: help --man is a man page of every command", "[command_table]") {
  auto m = run_cli({"help", "--man"});
  CHECK(m.code == 0);
  CHECK(m.out.rfind(".TH GPUGRID 1", 0) == 0);
  for (const auto& cmd : command_table()) CHECK(m.out.find(".SS gpugrid " + std::string(cmd.name)) != std::string::npos);
  CHECK(m.out.find("\\fB\\-\\-redundancy\\fR") != std::string::npos);
  CHECK(m.out.find(".SH EXIT STATUS") != std::string::npos);
  CHECK(run_cli({"help", "run", "--man"}).code == 2);
}

TEST_CASE("command table: a word that names a command is an argument after the command", "[command_table]") {
  auto o = parse({"run", "m.onnx", "peers", "help"});
  CHECK(o.run.inputs == std::vector<std::string>{"peers", "help"});
}

TEST_CASE("dispatch: --help lists every command on stdout", "[command_table]") {
  for (auto args : {std::vector<std::string>{"--help"}, std::vector<std::string>{}, std::vector<std::string>{"help"}}) {
    auto c = run_cli(args);
    CHECK(c.code == 0);
    CHECK(c.err.empty());
    for (const auto& cmd : command_table()) CHECK(c.out.find(cmd.name) != std::string::npos);
  }
}

TEST_CASE("dispatch: help COMMAND and COMMAND --help show that command's flags", "[command_table]") {
  auto h = run_cli({"help", "run"});
  CHECK(h.code == 0);
  CHECK(h.out.find("--redundancy") != std::string::npos);
  CHECK(h.out.find("gpugrid run") != std::string::npos);
  auto r = run_cli({"run", "--help"});
  CHECK(r.code == 0);
  CHECK(r.out == h.out);
}

TEST_CASE("dispatch: --version", "[command_table]") {
  auto c = run_cli({"--version"});
  CHECK(c.code == 0);
  CHECK(c.out.rfind("gpugrid ", 0) == 0);
  CHECK(lines(c.out) == 1);
}

TEST_CASE("dispatch: a mistyped command gets one line with a suggestion and exit 2", "[command_table]") {
  auto c = run_cli({"rnu", "model.onnx"});
  CHECK(c.code == 2);
  CHECK(c.out.empty());
  CHECK(c.err == "gpugrid: unknown command 'rnu'; did you mean 'run'?\n");
  auto far = run_cli({"frobnicate"});
  CHECK(far.code == 2);
  CHECK(lines(far.err) == 1);
  CHECK(far.err.find("did you mean") == std::string::npos);
  auto h = run_cli({"help", "inspetc"});
  CHECK(h.code == 2);
  CHECK(h.err == "gpugrid: unknown command 'inspetc'; did you mean 'inspect'?\n");
}

TEST_CASE("dispatch: bad flags and values are one line on stderr and exit 2", "[command_table]") {
  const std::vector<std::vector<std::string>> bad = {
      {"run", "m.onnx", "--redundency", "2"},
      {"run", "m.onnx", "--redundancy", "zero"},
      {"run", "m.onnx", "--redundancy", "0"},
      {"run", "m.onnx", "--timeout", "0"},
      {"run", "m.onnx", "--device", "gpu"},
      {"run", "m.onnx", "--peer", "http://x"},
      {"run", "m.onnx", "--redundancy"},
      {"run"},
      {"inspect", "a.onnx", "b.onnx"},
      {"ledger"},
      {"ledger", "frob"},
      {"identity", "old"},
      {"config"},
      {"config", "frob"},
      {"run", "m.onnx", "--output-format", "png"},
      {"ledger", "show", "--limit", "0"},
      {"completion", "tcsh"},
      {"offer", "--fault", "stall"},  // test misbehaviour lives in a test binary, not here
      {"offer", "--max-memory", "0"},
      {"offer", "--listen", "nowhere"},
      {"offer", "--slots", "-3"},
      {"selftest", "--threads", "many"},
      {"--bogus"},
  };
  for (const auto& args : bad) {
    auto c = run_cli(args);
    INFO(args.front() << " ... -> " << c.err);
    CHECK(c.code == 2);
    CHECK(lines(c.err) == 1);
    CHECK(c.err.rfind("gpugrid: ", 0) == 0);
    CHECK(c.out.empty());
  }
  auto typo = run_cli({"run", "m.onnx", "--redundency", "2"});
  CHECK(typo.err == "gpugrid: run: unknown option '--redundency'; did you mean '--redundancy'?\n");
}

TEST_CASE("guarded: an escaped exception is one line and exit 1", "[command_table]") {
  std::FILE* err = std::tmpfile();
  REQUIRE(err);
  int code = guarded([]() -> int { throw std::runtime_error("boom\nsecond line"); }, err);
  CHECK(code == 1);
  std::string text = slurp(err);
  CHECK(text == "gpugrid: internal error: boom second line\n");
  std::FILE* err2 = std::tmpfile();
  CHECK(guarded([]() -> int { throw 42; }, err2) == 1);
  CHECK(lines(slurp(err2)) == 1);
  std::FILE* err3 = std::tmpfile();
  CHECK(guarded([] { return 3; }, err3) == 3);
  CHECK(slurp(err3).empty());
}

TEST_CASE("edit distance and suggestions", "[command_table]") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("run", "run") == 0);
  CHECK(edit_distance("rnu", "run") == 1);  // one transposition
  CHECK(edit_distance("rn", "run") == 1);
  CHECK(edit_distance("kitten", "sitting") == 3);
  std::vector<std::string> names = {"offer", "run", "peers", "inspect", "identity", "ledger"};
  CHECK(closest_match("rnu", names) == "run");
  CHECK(closest_match("ofer", names) == "offer");
  CHECK(closest_match("insp", names) == "inspect");  // a unique prefix
  CHECK(closest_match("ledgr", names) == "ledger");
  CHECK(closest_match("i", names).empty());
  CHECK(closest_match("-x", {"-h", "-o"}).empty());
  CHECK(closest_match("zzz", names).empty());
  CHECK(closest_match("--redundency", {"--redundancy", "--local"}) == "--redundancy");
}
