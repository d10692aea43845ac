// The options each command takes and the function that runs it. The command table
// (cli/command_table.cc) binds flags to these structs; each cmd_*.cc implements one command.
// Every function returns the process exit code and prints errors as one line on stderr.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/provider.h"

namespace gpugrid::cli {

struct run_options {
  std::string model;
  std::vector<std::string> inputs;     // FILE or NAME=FILE; "-" is stdin
  std::string output;                  // -o FILE or "-"
  std::string output_format;           // npy|pb|raw; empty: by -o's extension (raw for "-")
  std::string output_dir;
  std::vector<std::string> peers;
  bool local = false;
  int redundancy = 1;
  int min_redundancy = 0;              // fewest results accepted; 0: all of --redundancy
  double max_price = -1;               // < 0: no limit
  double timeout_s = 60;
  std::string device = "auto";         // for --local: auto|cpu|cuda[:N]
  int threads = 0;                     // 0: all cores
  std::string precision = "fp32";      // fp32|tf32 (CUDA float products, --local and the embedded grid)
  std::string data_dir;
  bool json = false;
  // --batch SOURCE: a folder of inputs, a list file, or "-" (NDJSON on stdin); see batch_run.h
  std::string batch;
  int in_flight = 0;                   // --in-flight: jobs running at once (0: 2 per provider)
  int batch_max = 16;                  // the embedded grid's dynamic batching (see offer)
  int64_t batch_wait_us = 500;
  int attempts = 3;                    // --attempts: tries per batch job
};
int run_command(const run_options& o);
// run --batch (cli/batch_run.cc).
int batch_run_command(const run_options& o);

struct serve_options {
  std::string listen = "127.0.0.1:8080";
  std::string models = ".";            // the model repository: DIR/*.onnx
  std::vector<std::string> peers;
  bool local = false;
  std::string device = "auto";
  int threads = 0;
  int workers = 4;                     // requests run at once
  int batch_max = 16;                  // the embedded grid's dynamic batching (see offer)
  int64_t batch_wait_us = 500;
  std::string api_key_file;
  std::vector<std::string> config_keys;  // [serve] api_keys in config.toml
  double rate_limit = 0;               // requests per second per key; 0: none
  double rate_burst = 0;               // 0: same as the rate
  int max_body_mb = 64;
  int max_model_mb = 1024;
  double header_timeout_s = 10;
  double body_timeout_s = 30;
  double reload_interval_s = 1;
  std::string tls_cert, tls_key;
  int redundancy = 1;
  double max_price = -1;
  double timeout_s = 60;
  std::string data_dir;
  bool json = false;
};
int serve_command(const serve_options& o);

struct inspect_options {
  std::string model;
  std::string device = "cpu";
  bool json = false;
};
int inspect_command(const inspect_options& o);

struct bench_options {
  bool profile = false;                // time every op type and node (slower; no device graphs)
  std::string model;
  std::vector<std::string> inputs;
  std::string device = "cpu";
  int iterations = 20;
  int warmup = 3;
  int threads = 0;
  std::string precision = "fp32";  // fp32|tf32
  bool json = false;
};
int bench_command(const bench_options& o);

struct selftest_options {
  std::string suite;                   // a folder of test_*/ cases
  std::string device = "cpu";
  std::string filter;                  // substring a case name must contain
  int threads = 0;
  std::string precision = "fp32";  // fp32|tf32
  bool json = false;
  bool verbose = false;
};
int selftest_command(const selftest_options& o);

struct offer_options {
  std::string listen = "0.0.0.0:7447";
  std::vector<std::string> peers;
  std::string device = "auto";
  double price = -1;                   // < 0: from config, else the default
  int slots = 1;
  int max_model_mb = 1024;
  int max_memory_mb = 0;               // loaded models kept in memory; 0: 4 x max_model_mb
  std::string data_dir;
  std::string tls_cert, tls_key;
  bool json = false;
  bool relay = false;                  // serve as a relay (net/relay.h)
  int relay_max_circuits = 256;
  std::string relay_max_bandwidth;     // "" (no limit) or RATE: bytes/s with an optional K, M or G
  std::vector<std::string> via_relays;
  // Anchoring the ledger head on chain (cli/ledger_anchor.h); unset: anchor_every and
  // anchor_interval in DATA_DIR/chain.toml, else no anchoring.
  int64_t anchor_every = -1;           // entries; 0: not by count
  std::string anchor_interval;         // DURATION, or "0": not by time
  // Paid on a chain (cli/chain_payment.h): the endpoint and contract (else GPUGRID_CHAIN_* or
  // DATA_DIR/chain.toml); none configured: unsettled credits.
  std::string chain_rpc, contract, chain_id;
  std::string min_deposit;             // "" or AMOUNT: channels with less are declined
  std::string redeem_threshold;        // "" (default 0.01) or AMOUNT: redeem a channel past this
  int batch_max = 16;                  // --batch-max: jobs merged into one execution (1: off)
  int64_t batch_wait_us = 500;         // --batch-wait-us: the longest a job waits for others
};
int offer_command(const offer_options& o);
// Test doubles only: changes what `offer --relay` passes on (a tampering relay); unset in the
// product. tests/faulty_offer_main.cc sets it before dispatching.
using relay_tamper = std::function<std::vector<std::string>(std::string data, bool upstream)>;
relay_tamper& offer_relay_tamper();
// "10M", "500K", "1.5G", "2000" (bytes per second; K = 1000) -> the rate; bad input names RATE.
expected<double> parse_rate(const std::string& text);
// How `offer` makes its provider; unset: the product's grid::provider_core. A test binary
// (tests/faulty_offer_main.cc) sets it to a misbehaving test double before dispatching.
using provider_factory = std::function<std::shared_ptr<grid::provider_core>(
    grid::keypair, std::shared_ptr<grid::model_cache>, grid::provider_options, std::shared_ptr<ledger::ledger_file>)>;
provider_factory& offer_provider_factory();

struct peers_options {
  std::vector<std::string> peers;
  std::string data_dir;
  bool json = false;
};
int peers_command(const peers_options& o);

struct ledger_options {
  std::string action;                  // show | verify | balance | anchor
  std::string data_dir;
  int limit = 0;                       // show: at most this many (the newest); 0: all
  std::string since;                   // show: only entries finished at or after this time
  bool json = false;
  bool chain = false;                  // verify: also against the anchors on chain
  bool anchors = false;                // show: the anchors sent (DATA_DIR/anchors.tsv)
  std::string chain_rpc;               // default: GPUGRID_CHAIN_RPC, else chain.toml
  std::string contract;                // default: GPUGRID_CHAIN_CONTRACT, else chain.toml
  std::string address;                 // verify --chain: whose anchors (default: this wallet's)
};
int ledger_command(const ledger_options& o);

struct identity_options {
  std::string action;                  // show | new
  std::string data_dir;
  bool json = false;
};
int identity_command(const identity_options& o);

struct config_options {
  std::string action;                  // show | path | set
  std::string key;                     // set: a config.toml key
  std::string value;                   // set: its value
  bool json = false;
};
int config_command(const config_options& o);

struct version_options {
  bool json = false;
};

// `gpugrid generate` and `gpugrid chat` (cli/cmd_generate.cc, cli/cmd_chat.cc). Sampling flags
// left unset (negative) take the model's generation_config / genai_config defaults.
struct generate_options {
  std::string model;                 // MODEL_DIR
  // --prompt TEXT, or "-" for stdin; several prompts are generated together as one batch.
  std::vector<std::string> prompts;
  std::string system;                // --system TEXT
  bool no_template = false;          // the prompt is raw text, not a chat message
  bool json = false;
  int64_t max_tokens = 256;
  double temperature = -1, top_p = -1, min_p = -1, repetition_penalty = -1;
  int64_t top_k = -1;
  uint64_t seed = 0;
  std::vector<std::string> stop;     // stop strings, repeatable
  bool stats = false;                // chat: show tokens/s after each answer (toggled by /stats)
  // Where the tokens are made (see cli/llm_backend.h).
  bool local = false;
  std::vector<std::string> peers;
  std::string device = "cpu";
  int threads = 0;
  std::string data_dir;
  int redundancy = 1;                // grid: 2 compares two providers' token streams (greedy)
  double max_price_prompt = -1;      // grid: credits per 1000 prompt tokens; < 0: no limit
  double max_price_generated = -1;   // grid: credits per 1000 generated tokens; < 0: no limit
  double timeout_s = 300;            // grid: first token (uploads, model load, prefill)
  double stall_timeout_s = 10;       // grid: a provider silent this long mid-answer is left
  double spot_check_rate = 0.05;     // grid: floor of the adaptive spot-check rate
  std::string spot_check_by = "local";  // grid: "local" scores on this machine, "peers" asks another provider
};
int generate_command(const generate_options& o, std::FILE* in, std::FILE* out, std::FILE* err);
int chat_command(const generate_options& o, std::FILE* in, std::FILE* out, std::FILE* err);

}  // namespace gpugrid::cli
