// The standard Ethereum JSON-RPC (any EVM chain's endpoint) over an http_transport.
//
// call() retries what may pass on a second try (the endpoint down or slow, HTTP errors, a
// body that is not JSON-RPC) up to `retries` more times with a doubling pause, and never
// retries an answer the node gave on purpose (a JSON-RPC error such as a revert). Every
// failure is one line naming the endpoint and the method:
//   io               the endpoint cannot be reached or keeps failing
//   invalid_input    the node answered with an error (revert, bad nonce) or an answer of the
//                    wrong shape
// The eth_* helpers decode the answers and check their shapes (quantities, 32-byte hashes,
// addresses). An rpc_client is not thread-safe (one call at a time); it owns its transport.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chain/address.h"
#include "chain/bytes.h"
#include "chain/http_transport.h"

namespace gpugrid::chain {

struct rpc_options {
  std::chrono::milliseconds timeout{10000};   // per attempt
  int retries = 2;                            // extra attempts after a transport failure
  std::chrono::milliseconds backoff{250};     // pause before the first retry; doubles
};

struct log_entry {
  address emitter;
  std::vector<hash32> topics;
  bytes data;
  u256 block_number;
  hash32 transaction_hash{};
};

struct receipt {
  hash32 transaction_hash{};
  u256 block_number;
  bool success = false;
  u256 gas_used;
  u256 effective_gas_price;
  std::optional<address> contract_address;
  std::vector<log_entry> logs;
};

struct call_request {
  std::optional<address> from;
  std::optional<address> to;
  u256 value;
  bytes data;
};

struct log_filter {
  u256 from_block;
  std::optional<u256> to_block;   // none: latest
  std::optional<address> emitter;
  // Position i: topic i must equal one of these; an empty list matches anything.
  std::vector<std::vector<hash32>> topics;
};

class rpc_client {
 public:
  rpc_client(std::unique_ptr<http_transport> transport, rpc_options options = {});

  // One JSON-RPC call; returns the "result" member.
  expected<nlohmann::json> call(const std::string& method, nlohmann::json params);

  expected<u256> chain_id();
  expected<u256> block_number();
  expected<u256> balance(const address& a);
  // The next nonce counting pending transactions ("pending" block tag).
  expected<u256> transaction_count(const address& a);
  expected<u256> estimate_gas(const call_request& c);
  expected<bytes> eth_call(const call_request& c);
  // Returns the transaction's hash as the node reports it.
  expected<hash32> send_raw_transaction(const bytes& raw);
  // nullopt while the transaction is not mined (or unknown).
  expected<std::optional<receipt>> transaction_receipt(const hash32& hash);
  expected<std::vector<log_entry>> get_logs(const log_filter& f);
  // The latest block's base fee per gas.
  expected<u256> base_fee();
  expected<u256> max_priority_fee();

  const std::string& url() const { return transport_->url(); }

 private:
  std::unique_ptr<http_transport> transport_;
  rpc_options options_;
  uint64_t next_id_ = 1;
};

// Decoders shared with tests: fail with invalid_input naming `what`.
expected<receipt> parse_receipt(const nlohmann::json& j, const std::string& what);
expected<log_entry> parse_log(const nlohmann::json& j, const std::string& what);

}  // namespace gpugrid::chain
