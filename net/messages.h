// The wire protocol's messages as plain C++ structs (one per table of schemas/gpugrid.fbs).
//
// Only net/codec.cc converts them to and from FlatBuffers; nothing else includes generated
// code (STYLE rule 8). Field meanings and units are documented once, in the schema. Structs
// are plain values: copy, move and compare them freely from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "discovery/messages.h"
#include "engine/dtype.h"
#include "ledger/receipt.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::net {

using key32 = ledger::key32;
using digest32 = ledger::digest32;
using sig64 = ledger::sig64;
using bytes16 = std::array<uint8_t, 16>;
using job_id = bytes16;
using nonce32 = std::array<uint8_t, 32>;

// The newest and oldest protocol versions this build speaks. Two peers speak
// min(their newest); they refuse each other when that is below either one's oldest.
// 2: a provider answers each Receipt with a ReceiptAck (version 1 peers get none and send
// none).
constexpr uint16_t kProtocolVersion = 2;
constexpr uint16_t kMinProtocolVersion = 1;
constexpr uint16_t kReceiptAckVersion = 2;

enum class node_role : uint8_t { client = 0, provider = 1, both = 2 };

struct device_info {
  std::string name;
  std::string kind;             // "cuda" | "cpu"
  int64_t memory_bytes = 0;
  int32_t cc_major = 0, cc_minor = 0;
  double gflops = 0;
  int32_t index = 0;
};

struct ledger_head {
  digest32 hash{};
  uint64_t count = 0;
};

struct hello {
  uint16_t protocol_version = kProtocolVersion;
  uint16_t min_version = kMinProtocolVersion;
  key32 node_key{};
  nonce32 challenge{};
  std::optional<key32> ephemeral_key;   // X25519; present: the sender wants session MACs
  std::string listen_url;
  node_role role = node_role::client;
  std::vector<device_info> devices;
  ledger_head ledger;
  double price_per_gflop = 0;
  int32_t slots = 0;
  uint64_t max_frame_bytes = 0;
  uint64_t max_model_bytes = 0;
  std::string software;
};

struct hello_ack {
  uint16_t protocol_version = kProtocolVersion;
  sig64 signature{};
};

enum class goodbye_reason : uint8_t {
  normal = 0, version_mismatch = 1, protocol_error = 2, shutting_down = 3, overloaded = 4,
  auth_failed = 5, timeout = 6
};
const char* to_string(goodbye_reason r);

struct goodbye {
  goodbye_reason reason = goodbye_reason::normal;
  std::string message;
};

struct peer_info {
  key32 node_key{};
  std::string url;
  int64_t last_seen_ms = 0;
  node_role role = node_role::provider;
};

struct peer_exchange {
  std::vector<peer_info> peers;
  bool want_reply = false;
};

struct ping { uint64_t nonce = 0; };
struct pong { uint64_t nonce = 0; };

struct bid_request {
  job_id job{};
  digest32 model_hash{};
  uint64_t model_bytes = 0;
  double gflops = 0;
  uint64_t input_bytes = 0;
  double max_price = -1;        // < 0: no limit
  int64_t deadline_ms = 0;      // 0: none
};

struct bid {
  job_id job{};
  double price = 0;
  int64_t eta_ms = 0;
  bool model_cached = false;
  std::optional<device_info> device;
  int64_t valid_ms = 0;
  std::optional<sig64> signature;   // over bid_statement() (codec.h)
  std::optional<ledger::chain_terms> terms;  // paid on a chain
  int32_t capacity = 0;  // jobs it runs or queues at once (advisory, unsigned); 0: not said
};

// Same values as grid::decline_reason.
enum class decline_reason : uint8_t { none = 0, busy, unsupported, too_big, too_cheap, draining, internal };

struct bid_decline {
  job_id job{};
  decline_reason reason = decline_reason::none;
  std::string detail;
};

struct award {
  job_id job{};
  double price = 0;
};

struct cancel {
  job_id job{};
  std::string reason;
};

struct model_put {
  digest32 model_hash{};
  uint64_t total_bytes = 0;
  uint32_t chunk_bytes = 0;
  std::optional<job_id> job;
};

struct model_chunk {
  digest32 model_hash{};
  uint32_t index = 0;
  std::string data;
};

struct model_need {
  digest32 model_hash{};
  std::optional<job_id> job;
};

// A tensor on the wire. The decoder guarantees data.size() == product(shape) * dtype_size(type)
// for every dtype the engine knows (string tensors are refused).
struct wire_tensor {
  std::string name;
  dtype type = dtype::undefined;
  std::vector<int64_t> shape;
  std::string data;
};

struct execute {
  job_id job{};
  digest32 model_hash{};
  std::vector<wire_tensor> inputs;
  digest32 input_digest{};
  double price = 0;
  int64_t started_ms = 0;
  std::optional<ledger::voucher_claim> voucher;  // payment on a chain
};

struct result {
  job_id job{};
  std::vector<wire_tensor> outputs;
  digest32 output_digest{};
  sig64 signature{};                        // over ledger::result_statement(job, output_digest)
  double compute_ms = 0;
  bool model_was_cached = false;
  std::optional<ledger::receipt> receipt;   // signed by the provider
};

enum class job_error_code : uint8_t {
  internal = 0, bad_input = 1, unsupported = 2, model_missing = 3, model_too_big = 4, timeout = 5,
  busy = 6, cancelled = 7, draining = 8, not_awarded = 9
};
const char* to_string(job_error_code c);

struct job_error {
  job_id job{};
  job_error_code code = job_error_code::internal;
  std::string message;
};

// The provider's answer to a countersigned receipt (see the schema's ReceiptAck).
enum class receipt_status : uint8_t { recorded = 0, rejected = 1, retry_later = 2 };

struct receipt_ack {
  job_id job{};
  receipt_status status = receipt_status::recorded;
  std::string detail;
};

// ---- generation sessions (see the schema's GenOpen..GenTokens) ----

struct gen_file {
  std::string name;             // a plain file name: [A-Za-z0-9._-], not starting with '.'
  digest32 hash{};
  uint64_t size = 0;
};

struct gen_open {
  bytes16 session{};
  digest32 manifest{};
  std::vector<gen_file> files;
  uint64_t prompt_tokens = 0;
  uint64_t max_new_tokens = 0;
  double max_price_prompt = -1;      // per 1000 tokens; < 0: no limit
  double max_price_generated = -1;
};

// What a chain-paid generation bid announces (the schema's GenBid.chain_terms).
struct gen_chain_terms {
  ledger::chain_terms terms;          // terms.price: wei per 1000 generated tokens
  ledger::word32 price_prompt{};      // wei per 1000 prompt tokens
  bool operator==(const gen_chain_terms& o) const { return terms == o.terms && price_prompt == o.price_prompt; }
};

struct gen_bid {
  bytes16 session{};
  double price_prompt = 0;           // per 1000 prompt tokens
  double price_generated = 0;        // per 1000 generated tokens
  double tokens_per_s = 0;
  bool model_cached = false;
  int64_t valid_ms = 0;
  std::optional<sig64> signature;    // over gen_bid_statement() (codec.h)
  std::optional<gen_chain_terms> terms;  // paid on a chain
};

struct gen_sampling {
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1;
  double min_p = 0;
  double repetition_penalty = 1;
  uint64_t seed = 0;
};

struct gen_prompt {
  bytes16 session{};
  digest32 manifest{};
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  gen_sampling sampling;
  int64_t max_new_tokens = 0;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  double price_prompt = 0;
  double price_generated = 0;
  int64_t started_ms = 0;
  bool score_only = false;
  std::optional<ledger::voucher_claim> voucher;  // pays the prompt, on a chain
};

struct gen_pay {
  bytes16 session{};
  ledger::voucher_claim voucher;     // raises what the session has paid
};

struct gen_token {
  int32_t id = 0;
  float logprob = 0;
  int64_t index = 0;
};

struct gen_tokens {
  bytes16 session{};
  std::vector<gen_token> tokens;
  bool done = false;
  uint8_t finish_reason = 0;         // llm::finish_reason
  digest32 stream_digest{};          // of the stream so far
  sig64 signature{};                 // over ledger::result_statement(session, stream_digest)
  std::optional<ledger::receipt> receipt;  // for the tokens so far, signed by the provider
  double tokens_per_s = 0;
};

// Reachability and relays (net/relay.h; the schema documents the fields).
struct dial_back { uint64_t nonce = 0; };

struct dial_back_result {
  uint64_t nonce = 0;
  bool reachable = false;
  std::string url;
  std::string detail;
};

struct relay_attach { bool attach = true; };

struct relay_attach_ack {
  bool accepted = false;
  std::string relayed_url;
  std::string detail;
};

struct relay_incoming { bytes16 token{}; };

struct node_status {
  bool reachable = false;
  std::string url;
  bool relay = false;
};

// The DHT's messages (discovery/messages.h).
using dht_query = discovery::dht_query;
using dht_reply = discovery::dht_reply;

// The order of the alternatives is the order of the schema's union (index + 1 = union tag).
using message = std::variant<hello, hello_ack, goodbye, peer_exchange, ping, pong, bid_request, bid,
                             bid_decline, award, cancel, model_put, model_chunk, model_need, execute,
                             result, job_error, ledger::receipt, receipt_ack, gen_open, gen_bid, gen_prompt,
                             gen_tokens, dial_back, dial_back_result, relay_attach, relay_attach_ack, relay_incoming,
                             node_status,
                             dht_query, dht_reply, gen_pay>;

// The schema name of the message held ("Hello", "BidRequest", ...).
const char* message_name(const message& m);
const char* message_name(size_t variant_index);

}  // namespace gpugrid::net
