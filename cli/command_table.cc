#include "cli/command_table.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <new>

#include <fmt/format.h>

#include "base/json.h"
#include "cli/log.h"
#include "cli/man_page.h"
#include "cli/cmd_wallet.h"
#include "engine/backend.h"

#ifndef GPUGRID_VERSION
#define GPUGRID_VERSION "unknown"
#endif

namespace gpugrid::cli {

namespace {

// ---- flag values: validators (no description, so help shows only our type names) ----

CLI::Validator whole_number(long long lo, long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(s.c_str(), &end, 10);
        bool ok = !s.empty() && end && *end == '\0' && errno == 0 && v >= lo && v <= hi;
        if (ok) return {};
        if (hi == std::numeric_limits<int>::max()) return fmt::format("must be a whole number of at least {}, not '{}'", lo, s);
        return fmt::format("must be a whole number from {} to {}, not '{}'", lo, hi, s);
      },
      "");
}

CLI::Validator number_above(double lo, bool inclusive) {
  return CLI::Validator(
      [lo, inclusive](std::string& s) -> std::string {
        char* end = nullptr;
        double v = std::strtod(s.c_str(), &end);
        bool ok = !s.empty() && end && *end == '\0' && v == v && (inclusive ? v >= lo : v > lo) &&
                  v < std::numeric_limits<double>::infinity();
        if (ok) return {};
        return fmt::format("must be a number {} {}, not '{}'", inclusive ? "of at least" : "above", lo, s);
      },
      "");
}

// A price in the chain's base unit ("1000wei") as the token amount it is (18 decimals), so
// that --max-price takes both forms; anything else is left for the number check.
CLI::Validator wei_suffix() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (s.size() <= 3 || s.compare(s.size() - 3, 3, "wei") != 0) return {};
        std::string digits = s.substr(0, s.size() - 3);
        if (digits.size() > 36 || digits.find_first_not_of("0123456789") != std::string::npos)
          return fmt::format("must be a whole number of wei (1000wei), not '{}'", s);
        while (digits.size() < 19) digits.insert(digits.begin(), '0');
        s = digits.substr(0, digits.size() - 18) + "." + digits.substr(digits.size() - 18);
        return {};
      },
      "");
}

CLI::Validator number_between(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        char* end = nullptr;
        double v = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0' && v >= lo && v <= hi) return {};
        return fmt::format("must be a number from {} to {}, not '{}'", lo, hi, s);
      },
      "");
}

CLI::Validator one_of(std::vector<std::string> choices) {
  return CLI::Validator(
      [choices](std::string& s) -> std::string {
        if (std::find(choices.begin(), choices.end(), s) != choices.end()) return {};
        std::string list;
        for (size_t i = 0; i < choices.size(); ++i) list += (i ? ", " : "") + choices[i];
        return fmt::format("'{}' is not one of {}", s, list);
      },
      "");
}

CLI::Validator device_spec() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (valid_device_spec(s)) return {};
        return fmt::format("'{}' is not a device (use auto, cpu, cuda or cuda:N)", s);
      },
      "");
}

CLI::Validator peer_url() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        bool ws = s.rfind("ws://", 0) == 0 && s.size() > 5;
        bool wss = s.rfind("wss://", 0) == 0 && s.size() > 6;
        if (ws || wss) return {};
        return fmt::format("'{}' is not a peer URL (use ws://HOST:PORT or wss://HOST:PORT)", s);
      },
      "");
}

CLI::Validator listen_address() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        size_t colon = s.rfind(':');
        bool ok = colon != std::string::npos && colon + 1 < s.size() && s.size() - colon <= 6;
        long port = 0;
        for (size_t i = colon + 1; ok && i < s.size(); ++i) {
          ok = s[i] >= '0' && s[i] <= '9';
          port = port * 10 + (s[i] - '0');
        }
        if (ok && port >= 0 && port <= 65535) return {};  // 0: any free port
        return fmt::format("'{}' is not HOST:PORT (e.g. 0.0.0.0:7447)", s);
      },
      "");
}

CLI::Validator existing_file() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        struct stat st {};
        if (::stat(s.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return {};
        return fmt::format("'{}' is not a readable file", s);
      },
      "");
}

constexpr int kMaxInt = std::numeric_limits<int>::max();

constexpr const char* kExitCodes =
    "Exit codes: 0 ok; 2 bad usage or input; 3 no provider could run the job; 4 providers disagree; 1 other errors.";

// ---- flags shared by several commands ----

void add_json(CLI::App& sub, bool& v, const char* what) { sub.add_flag("--json", v, what); }

void add_data_dir(CLI::App& sub, std::string& v) {
  sub.add_option("--data-dir", v,
                 "folder for the identity key, ledger and model cache (default: data_dir in config.toml, "
                 "else $XDG_DATA_HOME/gpugrid, else ~/.local/share/gpugrid)")
      ->type_name("DIR");
}

void add_peers(CLI::App& sub, std::vector<std::string>& v) {
  sub.add_option("--peer", v,
                 "a bootstrap peer (ws://HOST:PORT or wss://HOST:PORT); repeat the flag for more "
                 "(--peer A --peer B); replaces GPUGRID_PEERS and the peers in config.toml")
      ->type_name("URL")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(peer_url());
}

void add_device(CLI::App& sub, std::string& v, const char* type, const char* help) {
  sub.add_option("--device", v, help)->type_name(type)->check(device_spec());
}

void add_threads(CLI::App& sub, int& v) {
  sub.add_option("--threads", v, "CPU threads for the engine (default 0: one per core)")
      ->type_name("N")
      ->check(whole_number(0, 4096));
}

void add_precision(CLI::App& sub, std::string& v) {
  sub.add_option("--precision", v,
                 "float matrix products and convolutions on CUDA: fp32 (default) or tf32 (tensor cores, "
                 "about three significant digits)")
      ->type_name("fp32|tf32")
      ->check(one_of({"fp32", "tf32"}));
}

void add_model(CLI::App& sub, std::string& v) {
  sub.add_option("MODEL", v, "the ONNX model file")->type_name("")->required();
}

void add_inputs(CLI::App& sub, std::vector<std::string>& v) {
  sub.add_option("INPUT", v,
                 "an input: FILE (matched to the model's inputs in order) or NAME=FILE; - is stdin; "
                 ".npy, .pb (TensorProto) or raw bytes of the declared dtype and shape")
      ->type_name("");
}

void add_batching(CLI::App& sub, int& max, int64_t& wait_us, const char* where) {
  sub.add_option("--batch-max", max,
                 std::string("dynamic batching") + where +
                     ": jobs for one model with a free batch dimension merged into one execution, at most N "
                     "(default 16; 1: off)")
      ->type_name("N")
      ->check(whole_number(1, 4096));
  sub.add_option("--batch-wait-us", wait_us,
                 std::string("dynamic batching") + where + ": the longest a job waits for others to join it, in "
                     "microseconds (default 500)")
      ->type_name("US")
      ->check(whole_number(0, 10000000));
}

// ---- the commands ----

void offer_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.offer;
  sub.add_option("--listen", v.listen, "address to accept peers on (default 0.0.0.0:7447; port 0 picks a free one)")
      ->type_name("HOST:PORT")
      ->check(listen_address());
  add_peers(sub, v.peers);
  add_device(sub, v.device, "auto|cpu|cuda[:N]",
             "the device to offer (default auto: the GPU if there is one, else the CPU)");
  sub.add_option("--price", v.price, "credits asked per GFLOP when idle (default: price in config.toml, else 0.001)")
      ->type_name("P")
      ->check(number_above(0, true));
  sub.add_option("--slots", v.slots, "jobs run at once (default 1)")->type_name("N")->check(whole_number(1, 1024));
  add_batching(sub, v.batch_max, v.batch_wait_us, "");
  sub.add_option("--max-model-mb", v.max_model_mb, "the largest model accepted, in MiB (default 1024)")
      ->type_name("N")
      ->check(whole_number(1, 1 << 20));
  sub.add_option("--max-memory", v.max_memory_mb,
                 "MiB of loaded models kept in memory; least recently used ones are unloaded (default 4 x --max-model-mb)")
      ->type_name("MB")
      ->check(whole_number(1, 1 << 24));
  add_data_dir(sub, v.data_dir);
  sub.add_option("--tls-cert", v.tls_cert, "TLS certificate (PEM) to serve wss:// with; give --tls-key too")
      ->type_name("FILE")
      ->check(existing_file());
  sub.add_option("--tls-key", v.tls_key, "TLS private key (PEM) of --tls-cert")->type_name("FILE")->check(existing_file());
  sub.add_flag("--relay", v.relay, "also serve as a relay for providers behind NAT (this node must be reachable)");
  sub.add_option("--relay-max-circuits", v.relay_max_circuits, "relay: circuits carried at once (default 256)")
      ->type_name("N")
      ->check(whole_number(1, 1 << 20));
  sub.add_option("--relay-max-bandwidth", v.relay_max_bandwidth,
                 "relay: bytes per second over all circuits, e.g. 10M or 500K (default: no limit)")
      ->type_name("RATE");
  sub.add_option("--via-relay", v.via_relays,
                 "behind NAT: serve through this relay (ws://HOST:PORT of a node offering with --relay); repeat "
                 "for more")
      ->type_name("URL")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(peer_url());
  sub.add_option("--anchor-every", v.anchor_every,
                 "anchor the ledger's head on chain every N entries (0: not by count; default: anchor_every in "
                 "DATA_DIR/chain.toml)")
      ->type_name("N")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  sub.add_option("--anchor-interval", v.anchor_interval,
                 "anchor the ledger's head on chain this often when it has new entries: 90s, 10m, 2h, 1d (0: not "
                 "by time; default: anchor_interval in DATA_DIR/chain.toml)")
      ->type_name("DURATION");
  sub.add_option("--chain-rpc", v.chain_rpc,
                 "be paid on this EVM chain's JSON-RPC endpoint (default: GPUGRID_CHAIN_RPC, else rpc in "
                 "DATA_DIR/chain.toml; none: unsettled credits); --price is then in the chain's token")
      ->type_name("URL");
  sub.add_option("--contract", v.contract, "the payment-channel contract (default: GPUGRID_CHAIN_CONTRACT or chain.toml)")
      ->type_name("ADDRESS");
  sub.add_option("--chain-id", v.chain_id, "refuse an endpoint that serves another chain")->type_name("N");
  sub.add_option("--min-deposit", v.min_deposit, "decline jobs paid from channels with a smaller deposit (0.05, or 1000wei)")
      ->type_name("AMOUNT");
  sub.add_option("--redeem-threshold", v.redeem_threshold,
                 "redeem a channel's latest voucher once this much is unredeemed (default 0.01; also on drain, "
                 "before the channel expires and at start)")
      ->type_name("AMOUNT");
  add_json(sub, v.json,
           "print the node id, URL and events on stdout as JSON Lines (one object per event, with "
           "\"event\" and \"time\")");
}

void run_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.run;
  add_model(sub, v.model);
  add_inputs(sub, v.inputs);
  sub.add_option("-o,--output", v.output,
                 "write the first output to FILE (.npy, .pb or raw bytes, by extension or --output-format); "
                 "- is stdout (never a terminal)")
      ->type_name("FILE|-");
  sub.add_option("--output-format", v.output_format,
                 "the format of -o FILE or of stdout: npy, pb (TensorProto) or raw bytes")
      ->type_name("npy|pb|raw")
      ->check(one_of({"npy", "pb", "raw"}));
  sub.add_option("--output-dir", v.output_dir, "write every output as DIR/<name>.npy")->type_name("DIR");
  add_peers(sub, v.peers);
  sub.add_flag("--local", v.local, "run in this process, with no grid at all");
  sub.add_option("--redundancy", v.redundancy, "run on K distinct providers and compare the results (default 1)")
      ->type_name("K")
      ->check(whole_number(1, 64));
  sub.add_option("--min-redundancy", v.min_redundancy,
                 "accept as few as N results when fewer than K providers can run the job (default: K, else exit 3)")
      ->type_name("N")
      ->check(whole_number(1, 64));
  sub.add_option("--max-price", v.max_price,
                 "the most to pay for the job: in credits, or when paying on a chain in its token (0.001, or "
                 "1000wei) (default: no limit)")
      ->type_name("P")
      ->transform(wei_suffix())
      ->check(number_above(0, true));
  sub.add_option("--timeout", v.timeout_s, "give up after this many seconds (default 60)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  add_device(sub, v.device, "auto|cpu|cuda[:N]",
             "the device for --local and the embedded local grid (default auto)");
  add_threads(sub, v.threads);
  add_precision(sub, v.precision);
  add_data_dir(sub, v.data_dir);
    add_json(sub, v.json, "print one JSON object: outputs (with their values), providers, verification and timing");
  sub.add_option("--batch", v.batch,
                 "run many jobs: SOURCE is a folder of input files, a list file (one job per line: FILE or "
                 "NAME=FILE ...), or - for NDJSON on stdin ({\"NAME\": \"FILE\", ...} per line); needs --output-dir")
      ->type_name("SOURCE");
  sub.add_option("--in-flight", v.in_flight, "batch jobs running at once (default: what each provider takes, at most 8 per provider)")
      ->type_name("N")
      ->check(whole_number(1, 1024));
  sub.add_option("--attempts", v.attempts, "tries per batch job before it is listed as failed (default 3)")
      ->type_name("N")
      ->check(whole_number(1, 100));
  add_batching(sub, v.batch_max, v.batch_wait_us, " on the embedded grid");
}

void serve_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.serve;
  sub.add_option("--listen", v.listen,
                 "address to serve HTTP on (default 127.0.0.1:8080; port 0 picks a free one; anything but "
                 "loopback needs API keys)")
      ->type_name("HOST:PORT")
      ->check(listen_address());
  sub.add_option("--models", v.models, "the model repository: its .onnx files are the /v2 models and its generation model folders the /v1 "
                 "(OpenAI-compatible) models, rescanned when they change (default .)")
      ->type_name("DIR");
  add_peers(sub, v.peers);
  sub.add_flag("--local", v.local, "run requests on this process's engine, with no grid at all");
  add_device(sub, v.device, "auto|cpu|cuda[:N]", "the device for --local and the embedded local grid (default auto)");
  add_threads(sub, v.threads);
  sub.add_option("--workers", v.workers, "requests run at once (default 4)")->type_name("N")->check(whole_number(1, 1024));
  add_batching(sub, v.batch_max, v.batch_wait_us, " on the embedded grid");
  sub.add_option("--api-key-file", v.api_key_file,
                 "bearer-token API keys, one per line (added to [serve] api_keys of config.toml); with any key "
                 "every request but the health checks needs one")
      ->type_name("FILE")
      ->check(existing_file());
  sub.add_option("--rate-limit", v.rate_limit, "requests per second per API key (default: no limit)")
      ->type_name("R")
      ->check(number_above(0, false));
  sub.add_option("--rate-burst", v.rate_burst, "requests one key may send at once before the rate applies (default: R)")
      ->type_name("N")
      ->check(number_above(1, true));
  sub.add_option("--max-body-mb", v.max_body_mb, "largest request body in MiB (default 64)")
      ->type_name("N")
      ->check(whole_number(1, 4096));
  sub.add_option("--max-model-mb", v.max_model_mb, "largest model file served, in MiB (default 1024)")
      ->type_name("N")
      ->check(whole_number(1, 1 << 20));
  sub.add_option("--header-timeout", v.header_timeout_s,
                 "seconds a client has to send a request's header, and the longest idle keep-alive (default 10)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  sub.add_option("--body-timeout", v.body_timeout_s, "seconds a client has to send a request's body (default 30)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  auto* cert = sub.add_option("--tls-cert", v.tls_cert, "TLS certificate (PEM) to serve https with; needs --tls-key")
                   ->type_name("FILE")
                   ->check(existing_file());
  auto* key = sub.add_option("--tls-key", v.tls_key, "TLS private key (PEM) of --tls-cert")
                  ->type_name("FILE")
                  ->check(existing_file());
  cert->needs(key);
  key->needs(cert);
  sub.add_option("--redundancy", v.redundancy, "run each request on K distinct providers and compare (default 1)")
      ->type_name("K")
      ->check(whole_number(1, 64));
  sub.add_option("--max-price", v.max_price, "the most to pay per request, in credits (default: no limit)")
      ->type_name("P")
      ->check(number_above(0, true));
  sub.add_option("--timeout", v.timeout_s, "seconds per execution attempt on a provider (default 60)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  add_data_dir(sub, v.data_dir);
  add_json(sub, v.json, "print the URL and state as one JSON object");
}

void peers_flags(CLI::App& sub, parsed_options& o) {
  add_peers(sub, o.peers.peers);
  add_data_dir(sub, o.peers.data_dir);
  add_json(sub, o.peers.json, "print one JSON array, one provider per line");
}

void inspect_flags(CLI::App& sub, parsed_options& o) {
  add_model(sub, o.inspect.model);
  add_device(sub, o.inspect.device, "auto|cpu|cuda[:N]",
             "also show which ops this device runs and which fall back to the CPU (default cpu)");
  add_json(sub, o.inspect.json, "print one JSON object");
}

// generate and chat share their flags; generate adds --prompt and --json, chat adds --stats.
void llm_flags(CLI::App& sub, generate_options& v) {
  sub.add_option("MODEL_DIR", v.model,
                 "a generation model folder: onnxruntime-genai's (genai_config.json) or optimum's (config.json), "
                 "with tokenizer.json")
      ->type_name("DIR")
      ->required();
  sub.add_option("--system", v.system, "a system message before the conversation")->type_name("TEXT");
  sub.add_flag("--no-template", v.no_template, "use the text as it is, without the model's chat template");
  sub.add_option("--max-tokens", v.max_tokens, "the most tokens to generate per answer (default 256)")
      ->type_name("N")
      ->check(whole_number(1, 1 << 24));
  sub.add_option("--temperature", v.temperature,
                 "sampling temperature; 0 is greedy (default: the model's generation config, else greedy)")
      ->type_name("T")
      ->check(number_above(0, true));
  sub.add_option("--top-k", v.top_k, "sample among the K likeliest tokens only (0: no cut)")
      ->type_name("K")
      ->check(whole_number(0, std::numeric_limits<int>::max()));
  sub.add_option("--top-p", v.top_p, "sample from the smallest set of tokens whose probability reaches P (1: no cut)")
      ->type_name("P")
      ->check(number_between(0, 1));
  sub.add_option("--min-p", v.min_p, "drop tokens less likely than P times the likeliest (0: none)")
      ->type_name("P")
      ->check(number_between(0, 1));
  sub.add_option("--repetition-penalty", v.repetition_penalty,
                 "divide the scores of tokens already in the text by R (1: none)")
      ->type_name("R")
      ->check(number_above(0, false));
  sub.add_option("--seed", v.seed, "the random seed of sampling: the same seed gives the same answer (default 0)")
      ->type_name("N");
  sub.add_option("--stop", v.stop, "end the answer before TEXT (not printed); repeat for more")
      ->type_name("TEXT")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub.add_flag("--local", v.local, "generate in this process, with no grid at all");
  sub.add_option("--redundancy", v.redundancy,
                 "grid: with greedy decoding, generate on K providers and compare the token streams (default 1)")
      ->type_name("K")
      ->check(whole_number(1, 2));
  sub.add_option("--max-price-prompt", v.max_price_prompt,
                 "grid: the most to pay per 1000 prompt tokens: in credits, or when paying on a chain in its token "
                 "(0.001, or 1000wei) (default: no limit)")
      ->type_name("PRICE")
      ->transform(wei_suffix())
      ->check(number_above(0, true));
  sub.add_option("--max-price-generated", v.max_price_generated,
                 "grid: the most to pay per 1000 generated tokens: in credits, or when paying on a chain in its token "
                 "(0.001, or 1000wei) (default: no limit)")
      ->type_name("PRICE")
      ->transform(wei_suffix())
      ->check(number_above(0, true));
  sub.add_option("--timeout", v.timeout_s,
                 "grid: seconds to wait for the first token (uploads, model load, prompt) (default 300)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  sub.add_option("--stall-timeout", v.stall_timeout_s,
                 "grid: a provider silent this long mid-answer is left for the next bid, which continues (default 10)")
      ->type_name("SECONDS")
      ->check(number_above(0, false));
  sub.add_option("--spot-check-rate", v.spot_check_rate,
                 "grid: the least share of answers scored again to check the provider (default 0.05; new providers more)")
      ->type_name("R")
      ->check(number_between(0, 1));
  sub.add_option("--spot-check-by", v.spot_check_by,
                 "grid: who scores a spot check: local (this machine's engine, default) or peers (another provider that bid)")
      ->type_name("local|peers")
      ->check(one_of({"local", "peers"}));
  add_peers(sub, v.peers);
  add_device(sub, v.device, "auto|cpu|cuda[:N]", "the device for --local (default cpu)");
  add_threads(sub, v.threads);
}

void generate_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.generate;
  llm_flags(sub, v);
  sub.add_option("--prompt", v.prompts,
                 "the prompt; - (or no --prompt with stdin not a terminal) reads stdin; repeat the flag to "
                 "generate several answers together in one batch (--local; printed when all are done)")
      ->type_name("TEXT")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  add_json(sub, v.json,
           "print one JSON object at the end: text, token ids, timings, finish reason, providers and cost");
}

void chat_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.generate;
  llm_flags(sub, v);
  sub.add_flag("--stats", v.stats, "show tokens/s after each answer (/stats toggles it)");
}

void selftest_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.selftest;
  sub.add_option("--suite", v.suite, "a folder of ONNX backend test cases (DIR/test_*/model.onnx + test_data_set_*)")
      ->type_name("DIR");
  add_device(sub, v.device, "cpu|cuda", "the backend to test (default cpu)");
  sub.add_option("--filter", v.filter, "run only the cases whose name contains TEXT")->type_name("TEXT");
  add_threads(sub, v.threads);
  add_precision(sub, v.precision);
  add_json(sub, v.json, "print one JSON object with every case's result");
  sub.add_flag("-v,--verbose", v.verbose, "print every case, not only the failures");
}

void bench_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.bench;
  add_model(sub, v.model);
  sub.add_option("INPUT", v.inputs, "an input as for run (default: random values of the declared shapes)")
      ->type_name("");
  add_device(sub, v.device, "auto|cpu|cuda[:N]", "the device to measure (default cpu)");
  sub.add_option("--iterations", v.iterations, "timed runs (default 20)")->type_name("N")->check(whole_number(1, kMaxInt));
  sub.add_option("--warmup", v.warmup, "untimed runs first (default 3)")->type_name("N")->check(whole_number(0, kMaxInt));
  sub.add_flag("--profile", v.profile, "time every op type and node, and list the slowest nodes (waits for the device after each node; slower)");
  add_threads(sub, v.threads);
  add_precision(sub, v.precision);
  add_json(sub, v.json, "print one JSON object (median, p90, peak memory)");
}

void ledger_flags(CLI::App& sub, parsed_options& o) {
  sub.add_option("ACTION", o.ledger.action,
                 "show: list the receipts; verify: check every link and signature; balance: credits per node; "
                 "anchor: publish the ledger's head on chain now")
      ->type_name("show|verify|balance|anchor")
      ->required()
      ->check(one_of({"show", "verify", "balance", "anchor"}));
  add_data_dir(sub, o.ledger.data_dir);
  sub.add_option("--limit", o.ledger.limit, "show: only the newest N receipts")->type_name("N")->check(whole_number(1, kMaxInt));
  sub.add_option("--since", o.ledger.since,
                 "show: only receipts finished at or after TIME (2026-12-01, 2026-12-01T10:00:00Z, or an age: "
                 "30m, 12h, 7d)")
      ->type_name("TIME");
  sub.add_flag("--chain", o.ledger.chain,
               "verify: also check the ledger against the heads this wallet anchored on chain (exit 5 when the "
               "chain cannot be read)");
  sub.add_flag("--anchors", o.ledger.anchors, "show: list the anchors this node sent (DATA_DIR/anchors.tsv)");
  sub.add_option("--chain-rpc", o.ledger.chain_rpc,
                 "anchor, verify --chain: the chain's JSON-RPC endpoint (default: GPUGRID_CHAIN_RPC, else rpc in "
                 "DATA_DIR/chain.toml)")
      ->type_name("URL");
  sub.add_option("--contract", o.ledger.contract,
                 "anchor, verify --chain: the payment-channel contract (default: GPUGRID_CHAIN_CONTRACT or chain.toml)")
      ->type_name("ADDRESS");
  sub.add_option("--address", o.ledger.address,
                 "verify --chain: the wallet whose anchors to check (default: this data dir's wallet)")
      ->type_name("ADDRESS");
  add_json(sub, o.ledger.json, "print JSON (show and balance: an array, one entry per line)");
}

void identity_flags(CLI::App& sub, parsed_options& o) {
  sub.add_option("ACTION", o.identity.action, "show: print this node's id and public key; new: make a new key")
      ->type_name("show|new")
      ->required()
      ->check(one_of({"show", "new"}));
  add_data_dir(sub, o.identity.data_dir);
  add_json(sub, o.identity.json, "print one JSON object");
}

void config_flags(CLI::App& sub, parsed_options& o) {
  auto& v = o.config;
  sub.add_option("ACTION", v.action,
                 "show: the settings in effect and where each comes from; path: the config file's path; "
                 "set KEY VALUE: write one setting to the config file")
      ->type_name("show|path|set")
      ->required()
      ->check(one_of({"show", "path", "set"}));
  sub.add_option("KEY", v.key, "set: peers, price, device, slots, listen, data_dir or max_model_mb")
      ->type_name("peers|price|device|slots|listen|data_dir|max_model_mb");
  sub.add_option("VALUE", v.value, "set: the value (peers: comma-separated URLs; \"\" removes the key)")->type_name("");
  add_json(sub, v.json, "print one JSON object");
}

void version_flags(CLI::App& sub, parsed_options& o) { add_json(sub, o.version.json, "print one JSON object"); }

void completion_flags(CLI::App& sub, parsed_options& o) {
  sub.add_option("SHELL", o.shell, "the shell to print a completion script for")
      ->type_name("bash|zsh|fish")
      ->required()
      ->check(one_of(completion_shells()));
  sub.footer(
      "Install (installed packages already carry these):\n"
      "  bash: gpugrid completion bash > ~/.local/share/bash-completion/completions/gpugrid\n"
      "  zsh: gpugrid completion zsh > ~/.zfunc/_gpugrid, with fpath+=(~/.zfunc) before compinit in ~/.zshrc\n"
      "  fish: gpugrid completion fish > ~/.config/fish/completions/gpugrid.fish\n"
      "Then open a new shell.");
}

void help_flags(CLI::App& sub, parsed_options& o) {
  sub.add_option("COMMAND", o.topic, "the command to show the help of")->type_name("");
  sub.add_flag("--man", o.man, "print the manual page (roff) of every command");
}

// ---- applying settings: a flag given on the command line wins over config and environment ----

void apply_peers(const invocation& inv, std::vector<std::string>* peers) {
  if (!inv.given("--peer")) *peers = inv.config->peers;
}

void apply_data_dir(const invocation& inv, std::string* data_dir) {
  auto dir = resolve_data_dir(*data_dir, *inv.config);
  if (dir) *data_dir = *dir;  // else left empty: the handler reports it if it needs the folder
}

void apply_device(const invocation& inv, std::string* device) {
  if (!inv.given("--device") && inv.config->device) *device = *inv.config->device;
}

int run_offer(const invocation& inv) {
  auto& v = inv.options.offer;
  const settings& c = *inv.config;
  if (v.tls_cert.empty() != v.tls_key.empty()) {
    fmt::print(inv.err, "gpugrid: offer: --tls-cert and --tls-key go together: give both or neither\n");
    return 2;
  }
  apply_peers(inv, &v.peers);
  apply_device(inv, &v.device);
  apply_data_dir(inv, &v.data_dir);
  if (!inv.given("--price") && c.price) v.price = *c.price;
  if (!inv.given("--slots") && c.slots) v.slots = *c.slots;
  if (!inv.given("--listen") && c.listen) v.listen = *c.listen;
  if (!inv.given("--max-model-mb") && c.max_model_mb) v.max_model_mb = *c.max_model_mb;
  return offer_command(v);
}

int run_run(const invocation& inv) {
  auto& v = inv.options.run;
  apply_peers(inv, &v.peers);
  apply_device(inv, &v.device);
  apply_data_dir(inv, &v.data_dir);
  return run_command(v);
}

int run_serve(const invocation& inv) {
  auto& v = inv.options.serve;
  apply_peers(inv, &v.peers);
  apply_device(inv, &v.device);
  apply_data_dir(inv, &v.data_dir);
  const settings& c = *inv.config;
  v.config_keys = c.serve.api_keys;
  if (v.api_key_file.empty() && c.serve.api_key_file) v.api_key_file = *c.serve.api_key_file;
  if (!inv.given("--rate-limit") && c.serve.rate_limit) v.rate_limit = *c.serve.rate_limit;
  if (!inv.given("--max-body-mb") && c.serve.max_body_mb) v.max_body_mb = *c.serve.max_body_mb;
  return serve_command(v);
}

int run_peers(const invocation& inv) {
  auto& v = inv.options.peers;
  apply_peers(inv, &v.peers);
  apply_data_dir(inv, &v.data_dir);
  return peers_command(v);
}

int run_inspect(const invocation& inv) { return inspect_command(inv.options.inspect); }
int run_config(const invocation& inv) { return config_command(inv.options.config); }
int run_version(const invocation& inv) {
  if (inv.options.version.json) fmt::print(inv.out, "{}\n", dump_json(json{{"version", GPUGRID_VERSION}}));
  else fmt::print(inv.out, "gpugrid {}\n", GPUGRID_VERSION);
  return 0;
}
int run_selftest(const invocation& inv) { return selftest_command(inv.options.selftest); }
int run_generate(const invocation& inv) { return generate_command(inv.options.generate, stdin, inv.out, inv.err); }
int run_chat(const invocation& inv) { return chat_command(inv.options.generate, stdin, inv.out, inv.err); }
int run_bench(const invocation& inv) { return bench_command(inv.options.bench); }

int run_ledger(const invocation& inv) {
  apply_data_dir(inv, &inv.options.ledger.data_dir);
  return ledger_command(inv.options.ledger);
}

int run_identity(const invocation& inv) {
  apply_data_dir(inv, &inv.options.identity.data_dir);
  return identity_command(inv.options.identity);
}

int run_completion(const invocation& inv) {
  auto script = completion_script(describe_cli(inv.root), inv.options.shell);
  if (!script) {
    fmt::print(inv.err, "gpugrid: completion: {}\n", script.error().message());
    return 2;
  }
  fmt::print(inv.out, "{}", *script);
  return 0;
}

std::vector<std::string> table_names() {
  std::vector<std::string> names;
  for (const auto& c : command_table()) names.emplace_back(c.name);
  return names;
}

void print_unknown_command(std::FILE* err, const std::string& typed) {
  std::string guess = closest_match(typed, table_names());
  if (!guess.empty())
    fmt::print(err, "gpugrid: unknown command '{}'; did you mean '{}'?\n", typed, guess);
  else
    fmt::print(err, "gpugrid: unknown command '{}' (see 'gpugrid --help')\n", typed);
}

std::string root_help(const CLI::App& root) {
  return root.get_formatter()->make_help(&root, root.get_name(), CLI::AppFormatMode::Normal);
}

int run_help(const invocation& inv) {
  const std::string& topic = inv.options.topic;
  if (inv.options.man) {
    if (!topic.empty()) {
      fmt::print(inv.err, "gpugrid: help: --man prints the page of every command; give no COMMAND\n");
      return 2;
    }
    fmt::print(inv.out, "{}", man_page(describe_cli(inv.root), GPUGRID_VERSION));
    return 0;
  }
  if (topic.empty()) {
    fmt::print(inv.out, "{}", root_help(inv.root));
    return 0;
  }
  if (!find_command(topic)) {
    print_unknown_command(inv.err, topic);
    return 2;
  }
  fmt::print(inv.out, "{}", inv.root.get_subcommand(topic)->help(inv.root.get_name()));
  return 0;
}

// ---- parsing ----

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool looks_like_number(const std::string& s) {
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0' && end != s.c_str();
}

// Flags have expected(0); options expect one value (or one per use, like --peer).
bool takes_value(const CLI::Option& opt) { return opt.get_items_expected_max() > 0; }

std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& l : opt->get_lnames()) names.push_back("--" + l);
    for (const auto& s : opt->get_snames()) names.push_back("-" + s);
  }
  return names;
}

// The first token of `args[from, to)` that is not an option `app` knows, as a one-line
// message; "" when every option is known. Skips the value after an option that takes one.
std::string find_unknown_option(const CLI::App& app, const std::vector<std::string>& args, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-' || looks_like_number(a)) continue;
    std::string name = a;
    bool attached = false;
    if (starts_with(a, "--")) {
      size_t eq = a.find('=');
      if (eq != std::string::npos) {
        name = a.substr(0, eq);
        attached = true;
      }
    } else if (a.size() > 2) {
      name = a.substr(0, 2);
      attached = true;
    }
    const CLI::Option* opt = app.get_option_no_throw(name);
    if (!opt) {
      std::string guess = closest_match(name, option_names(app));
      std::string where = app.get_parent() ? app.get_name() + ": " : "";
      if (!guess.empty()) return fmt::format("{}unknown option '{}'; did you mean '{}'?", where, name, guess);
      return fmt::format("{}unknown option '{}' (see 'gpugrid {}--help')", where, name,
                         app.get_parent() ? app.get_name() + " " : "");
    }
    if (takes_value(*opt) && !attached) ++i;  // its value
  }
  return {};
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int dispatch_unguarded(int argc, const char* const* argv, std::FILE* out, std::FILE* err) {
  log::configure(err, log::verbosity::normal);
  parsed_options options;
  std::unique_ptr<CLI::App> app = make_app(&options);
  std::vector<std::string> args(argv + 1, argv + std::max(argc, 1));

  // The command is the first argument that is not an option (the root takes no values).
  size_t ci = 0;
  while (ci < args.size() && (args[ci].size() > 1 && args[ci][0] == '-')) ++ci;
  if (std::string m = find_unknown_option(*app, args, 0, ci); !m.empty()) {
    fmt::print(err, "gpugrid: {}\n", m);
    return 2;
  }
  if (ci == args.size() && ci == 0) {
    fmt::print(out, "{}", root_help(*app));
    return 0;
  }
  std::string name = ci < args.size() ? args[ci] : "";
  if (!name.empty()) {
    if (!find_command(name)) {
      print_unknown_command(err, name);
      return 2;
    }
    const CLI::App* sub = app->get_subcommand(name);
    if (std::string m = find_unknown_option(*sub, args, ci + 1, args.size()); !m.empty()) {
      fmt::print(err, "gpugrid: {}\n", m);
      return 2;
    }
  }

  try {
    app->parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    fmt::print(out, "{}", app->help());
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    fmt::print(out, "{}", app->help("", CLI::AppFormatMode::All));
    return 0;
  } catch (const CLI::CallForVersion& e) {
    fmt::print(out, "{}\n", e.what());
    return 0;
  } catch (const CLI::ExtrasError& e) {
    // CLI11 says "The following arguments were not expected: a b".
    std::string what = e.what();
    size_t colon = what.find(": ");
    std::string extras = colon == std::string::npos ? what : what.substr(colon + 2);
    fmt::print(err, "gpugrid: {}{}unexpected argument{} '{}'\n", name, name.empty() ? "" : ": ",
               extras.find(' ') == std::string::npos ? "" : "s", one_line(extras));
    return 2;
  } catch (const CLI::ParseError& e) {
    std::string where = name.empty() ? "" : name + ": ";
    fmt::print(err, "gpugrid: {}{}\n", where, one_line(e.what()));
    return 2;
  }

  auto chosen = app->get_subcommands();
  if (chosen.empty()) {
    fmt::print(out, "{}", root_help(*app));
    return 0;
  }
  const command* cmd = find_command(chosen.front()->get_name());
  if (!cmd) {  // cannot happen: every subcommand comes from the table
    fmt::print(err, "gpugrid: internal error: no handler for '{}'\n", chosen.front()->get_name());
    return 1;
  }
  std::optional<settings> config;
  if (cmd->reads_settings) {
    auto loaded = load_settings();
    if (!loaded) {
      fmt::print(err, "gpugrid: {}\n", one_line(loaded.error().message()));
      return 2;
    }
    config = std::move(loaded).value();
  }
  log::configure(err, options.quiet ? log::verbosity::quiet
                      : options.verbose || (cmd->run == run_selftest && options.selftest.verbose)
                          ? log::verbosity::verbose
                          : log::verbosity::normal);
  if (config && !config->source.empty()) log::debug("settings from {}", config->source);
  invocation inv{options, *app, *chosen.front(), config ? &*config : nullptr, out, err};
  return guarded([&] { return cmd->run(inv); }, err);
}

}  // namespace

bool invocation::given(const std::string& flag) const {
  const CLI::Option* opt = command.get_option_no_throw(flag);
  return opt && opt->count() > 0;
}

const std::vector<command>& command_table() {
  static const std::vector<command> table = {
      {"offer", "sell this machine's GPU (or CPU) time: serve jobs until SIGINT or SIGTERM", true, offer_flags, run_offer},
      {"run", "run one inference on the grid (or, with --local, in this process)", true, run_flags, run_run},
      {"serve", "serve models over HTTP (Open Inference Protocol v2, OpenAI-compatible /v1) until SIGINT or SIGTERM", true, serve_flags, run_serve},
      {"generate", "generate text with an LLM folder: prompt from --prompt or stdin, text to stdout as it comes", false, generate_flags, run_generate},
      {"chat", "chat with an LLM folder interactively (streamed answers, history, /reset, /system, /stats)", false, chat_flags, run_chat},
      {"peers", "list the providers reachable through the bootstrap peers", true, peers_flags, run_peers},
      {"inspect", "show a model's inputs, outputs, ops, backend support and FLOPs", false, inspect_flags, run_inspect},
      {"selftest", "run ONNX backend node test cases on a backend", false, selftest_flags, run_selftest},
      {"bench", "measure the engine's latency on a model in this process (no grid)", false, bench_flags, run_bench},
      {"ledger", "show, verify or total the hash-chained ledger of paid jobs", true, ledger_flags, run_ledger},
      {"identity", "show this node's Ed25519 identity, or make a new one", true, identity_flags, run_identity},
      {"wallet", "the chain wallet and payment channels: show, new, balance, deposit, withdraw, channels, voucher, redeem", true, wallet_flags, run_wallet},
      {"config", "show the settings in effect, the config file's path, or set one setting", false, config_flags, run_config},
      {"completion", "print a shell completion script (bash, zsh or fish) and how to install it", false, completion_flags, run_completion},
      {"version", "print the version", false, version_flags, run_version},
      {"help", "show the help of a command", false, help_flags, run_help},
  };
  return table;
}

const command* find_command(std::string_view name) {
  for (const auto& c : command_table())
    if (name == c.name) return &c;
  return nullptr;
}

namespace {

// Words of `text` in lines of at most `width` columns; '\n' in the text starts a new line.
std::vector<std::string> wrap_words(const std::string& text, size_t width) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    std::string para = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    // Keep a paragraph's leading indentation on each of its lines.
    size_t indent = para.find_first_not_of(' ');
    if (indent == std::string::npos) indent = para.size();
    std::string pad(indent, ' ');
    std::string line = pad;
    size_t pos = indent;
    while (pos < para.size()) {
      size_t sp = para.find(' ', pos);
      std::string word = para.substr(pos, sp == std::string::npos ? std::string::npos : sp - pos);
      pos = sp == std::string::npos ? para.size() : sp + 1;
      if (word.empty()) continue;
      if (line.size() > pad.size() && line.size() + 1 + word.size() > width) {
        lines.push_back(line);
        line = pad;
      }
      if (line.size() > pad.size()) line += ' ';
      line += word;
    }
    lines.push_back(line);
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

// CLI11's layout with descriptions wrapped to the terminal, and without the "Needs:",
// "REQUIRED" and "=default" decorations (the descriptions say those in words).
class wrapping_formatter final : public CLI::Formatter {
 public:
  explicit wrapping_formatter(size_t width) : width_(width) {}

  std::string make_option_opts(const CLI::Option* opt) const override {
    if (opt->get_type_size() == 0) return {};
    std::string s = opt->get_type_name().empty() ? "" : " " + opt->get_type_name();
    if (opt->get_expected_max() == CLI::detail::expected_max_vector_size) s += " ...";
    return s;
  }
  std::string make_option(const CLI::Option* opt, bool is_positional) const override {
    return row(make_option_name(opt, is_positional) + make_option_opts(opt), make_option_desc(opt));
  }
  std::string make_subcommand(const CLI::App* sub) const override {
    return row(sub->get_display_name(), sub->get_description());
  }
  std::string make_description(const CLI::App* app) const override {
    if (app->get_description().empty()) return {};
    return join_lines(wrap_words(app->get_description(), width_)) + "\n";
  }
  std::string make_footer(const CLI::App* app) const override {
    if (app->get_footer().empty()) return {};
    return join_lines(wrap_words(app->get_footer(), width_));
  }

 private:
  static std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
  std::string row(const std::string& name, const std::string& desc) const {
    std::string left = "  " + name;
    size_t col = column_width_;
    std::string out = left;
    if (desc.empty()) return out + "\n";
    if (left.size() + 1 > col) out += "\n" + std::string(col, ' ');
    else out += std::string(col - left.size(), ' ');
    auto lines = wrap_words(desc, std::max<size_t>(width_ > col ? width_ - col : 0, 24));
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? std::string(col, ' ') : "") + lines[i] + "\n";
    return out;
  }
  size_t width_;
};

size_t help_width(int requested) {
  if (requested > 0) return static_cast<size_t>(requested);
  long cols = 0;
  struct winsize ws {};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) cols = ws.ws_col;
  if (cols <= 0) {
    if (const char* c = std::getenv("COLUMNS")) cols = std::strtol(c, nullptr, 10);
  }
  if (cols <= 0) cols = 80;
  return static_cast<size_t>(std::clamp(cols, 50L, 200L));
}

// -q and -v, which every command takes (cli/log.h).
void add_log_flags(CLI::App& app, parsed_options& o) {
  app.add_flag("-q,--quiet", o.quiet, "print no notes, only warnings and errors");
  if (!app.get_option_no_throw("--verbose")) app.add_flag("-v,--verbose", o.verbose, "also print debug lines");
}

}  // namespace

std::unique_ptr<CLI::App> make_app(parsed_options* o, int width) {
  auto app = std::make_unique<CLI::App>(
      "gpugrid: a peer-to-peer GPU inference grid. Sell inference time with 'gpugrid offer'; "
      "run an ONNX model with 'gpugrid run MODEL INPUT...'.",
      "gpugrid");
  app->formatter(std::make_shared<wrapping_formatter>(help_width(width)));
  app->set_help_flag("-h,--help", "print this help and exit");
  app->set_version_flag("-V,--version", std::string("gpugrid ") + GPUGRID_VERSION, "print the version and exit");
  add_log_flags(*app, *o);
  app->require_subcommand(0, 1);  // a later word that names a command is an argument, not a command
  app->get_formatter()->column_width(32);
  app->get_formatter()->label("SUBCOMMAND", "COMMAND");
  for (const auto& c : command_table()) {
    CLI::App* sub = app->add_subcommand(c.name, c.summary);
    sub->group("Commands");
    c.add_flags(*sub, *o);
    add_log_flags(*sub, *o);
    sub->footer(sub->get_footer().empty() ? std::string(kExitCodes) : sub->get_footer() + "\n" + kExitCodes);
  }
  app->footer(
      "Run 'gpugrid help COMMAND' for a command's flags.\n"
      "Settings: $XDG_CONFIG_HOME/gpugrid/config.toml ('gpugrid config path'); GPUGRID_PEERS (comma-separated "
      "URLs) overrides its peers.\n"
      "JSON: with --json a command prints one JSON document on stdout; offer prints one object per event.\n" +
      std::string(kExitCodes));
  return app;
}

namespace {

std::vector<std::string> split_choices(const std::string& type_name) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= type_name.size()) {
    size_t bar = type_name.find('|', start);
    if (bar == std::string::npos) bar = type_name.size();
    std::string item = type_name.substr(start, bar - start);
    item = item.substr(0, item.find('['));  // "cuda[:N]" completes as "cuda"
    if (!item.empty()) out.push_back(item);
    start = bar + 1;
  }
  return out;
}

// What an argument completes to: positionals by name (MODEL, INPUT, COMMAND), then by type
// name (DIR, FILE, choices written "a|b|c"); anything else is free text.
value_kind kind_for(const std::string& name, const std::string& type_name, std::vector<std::string>* choices) {
  if (name == "MODEL") return value_kind::model;
  if (name == "INPUT") return value_kind::input;
  if (name == "COMMAND") {
    *choices = table_names();
    return value_kind::choice;
  }
  if (type_name == "URL") return value_kind::url;
  if (type_name == "DIR") return value_kind::directory;
  if (type_name == "FILE" || type_name == "FILE|-") return value_kind::file;
  if (type_name.find('|') != std::string::npos) {
    *choices = split_choices(type_name);
    return value_kind::choice;
  }
  return value_kind::text;
}

std::vector<flag_spec> describe_flags(const CLI::App& app) {
  std::vector<flag_spec> flags;
  for (const CLI::Option* opt : app.get_options()) {
    if (!opt->nonpositional()) continue;
    flag_spec f;
    for (const auto& s : opt->get_snames()) f.names.push_back("-" + s);
    for (const auto& l : opt->get_lnames()) f.names.push_back("--" + l);
    f.help = opt->get_description();
    if (takes_value(*opt)) {
      f.value_name = opt->get_type_name();
      f.kind = kind_for(opt->get_single_name(), f.value_name, &f.choices);
      f.repeatable = opt->get_expected_max() > 1 || opt->get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll;
    }
    flags.push_back(std::move(f));
  }
  return flags;
}

}  // namespace

cli_spec describe_cli(const CLI::App& app) {
  cli_spec spec;
  spec.program = app.get_name();
  spec.global_flags = describe_flags(app);
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    command_spec c;
    c.name = sub->get_name();
    c.summary = sub->get_description();
    c.flags = describe_flags(*sub);
    for (const CLI::Option* opt : sub->get_options()) {
      if (opt->nonpositional()) continue;
      positional_spec p;
      p.name = opt->get_single_name();
      p.help = opt->get_description();
      p.kind = kind_for(p.name, opt->get_type_name(), &p.choices);
      p.repeats = opt->get_items_expected_max() >= CLI::detail::expected_max_vector_size;
      c.positionals.push_back(std::move(p));
    }
    spec.commands.push_back(std::move(c));
  }
  return spec;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string closest_match(std::string_view typed, const std::vector<std::string>& candidates) {
  std::string_view bare = typed;
  while (!bare.empty() && bare.front() == '-') bare.remove_prefix(1);
  if (bare.size() < 2) return {};  // "-x" is too short to guess from
  // A unique prefix ("insp" for inspect).
  const std::string* prefixed = nullptr;
  int prefix_hits = 0;
  for (const auto& c : candidates) {
    if (starts_with(c, typed) && c != typed) {
      prefixed = &c;
      ++prefix_hits;
    }
  }
  if (prefix_hits == 1) return *prefixed;
  // Else the nearest within a budget that grows with the length typed.
  size_t budget = bare.size() <= 3 ? 1 : bare.size() <= 6 ? 2 : 3;
  const std::string* best = nullptr;
  size_t best_distance = budget + 1;
  for (const auto& c : candidates) {
    size_t dist = edit_distance(typed, c);
    if (dist < best_distance) {
      best = &c;
      best_distance = dist;
    }
  }
  return best ? *best : std::string();
}

int guarded(const std::function<int()>& fn, std::FILE* err) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    fmt::print(err, "gpugrid: out of memory\n");
  } catch (const std::exception& e) {
    fmt::print(err, "gpugrid: internal error: {}\n", one_line(e.what()));
  } catch (...) {
    fmt::print(err, "gpugrid: internal error: unknown exception\n");
  }
  return 1;
}

int dispatch(int argc, const char* const* argv, std::FILE* out, std::FILE* err) {
  int code = guarded([&] { return dispatch_unguarded(argc, argv, out, err); }, err);
  log::configure(stderr, log::verbosity::normal);  // `err` may be closed once we return
  return code;
}

}  // namespace gpugrid::cli
