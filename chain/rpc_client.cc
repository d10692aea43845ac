#include "chain/rpc_client.h"

#include <thread>

#include "chain/abi.h"

namespace gpugrid::chain {

using nlohmann::json;

namespace {

expected<std::string> get_string(const json& j, const char* key, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return invalid_input("{}: '{}' is missing or not a string", what, key);
  return it->get<std::string>();
}

expected<u256> quantity_of(const json& j, const std::string& what) {
  if (!j.is_string()) return invalid_input("{}: expected a hex quantity, got {}", what, j.dump().substr(0, 60));
  return parse_quantity(j.get<std::string>(), what);
}

expected<u256> quantity_field(const json& j, const char* key, const std::string& what) {
  GG_ASSIGN_OR_RETURN(std::string s, get_string(j, key, what));
  return parse_quantity(s, what + ": " + key);
}

json call_object(const call_request& c) {
  json o = json::object();
  if (c.from) o["from"] = c.from->checksummed();
  if (c.to) o["to"] = c.to->checksummed();
  if (c.value != 0) o["value"] = to_quantity(c.value);
  o["data"] = to_hex(c.data);
  return o;
}

}  // namespace

rpc_client::rpc_client(std::unique_ptr<http_transport> transport, rpc_options options)
    : transport_(std::move(transport)), options_(options) {}

expected<json> rpc_client::call(const std::string& method, json params) {
  uint64_t id = next_id_++;
  json req = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
  std::string body = req.dump();
  std::string where = fmt::format("chain RPC {} {}", transport_->url(), method);
  auto pause = options_.backoff;
  status last;
  for (int attempt = 0; attempt <= options_.retries; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(pause);
      pause *= 2;
    }
    auto text = transport_->post(body, options_.timeout);
    if (!text) {
      last = text.error();
      continue;
    }
    json res = json::parse(*text, nullptr, false);
    if (res.is_discarded() || !res.is_object()) {
      last = io_error("{}: the answer is not JSON ({} bytes)", where, text->size());
      continue;
    }
    auto err = res.find("error");
    if (err != res.end() && !err->is_null()) {
      std::string message = err->is_object() && err->contains("message") && (*err)["message"].is_string()
                                ? (*err)["message"].get<std::string>()
                                : err->dump();
      if (err->is_object() && err->contains("data") && (*err)["data"].is_string()) {
        auto data = from_hex((*err)["data"].get<std::string>(), "revert data");
        std::string reason = data ? abi::revert_reason(*data) : "";
        if (!reason.empty() && message.find(reason) == std::string::npos) message += ": " + reason;
      }
      return invalid_input("{}: the node refused: {}", where, message.substr(0, 300));
    }
    auto idit = res.find("id");
    if (idit == res.end() || !idit->is_number_unsigned() || idit->get<uint64_t>() != id) {
      last = io_error("{}: the answer is for another request (id {})",
                      where, idit == res.end() ? "missing" : idit->dump().substr(0, 30));
      continue;
    }
    auto result = res.find("result");
    if (result == res.end()) {
      last = io_error("{}: the answer has neither result nor error", where);
      continue;
    }
    return std::move(*result);
  }
  if (options_.retries > 0) return status(last.kind(), fmt::format("{} (after {} attempts)", last.message(), options_.retries + 1));
  return last;
}

expected<u256> rpc_client::chain_id() {
  GG_ASSIGN_OR_RETURN(json r, call("eth_chainId", json::array()));
  return quantity_of(r, "eth_chainId");
}

expected<u256> rpc_client::block_number() {
  GG_ASSIGN_OR_RETURN(json r, call("eth_blockNumber", json::array()));
  return quantity_of(r, "eth_blockNumber");
}

expected<u256> rpc_client::balance(const address& a) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_getBalance", json::array({a.checksummed(), "latest"})));
  return quantity_of(r, "eth_getBalance");
}

expected<u256> rpc_client::transaction_count(const address& a) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_getTransactionCount", json::array({a.checksummed(), "pending"})));
  return quantity_of(r, "eth_getTransactionCount");
}

expected<u256> rpc_client::estimate_gas(const call_request& c) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_estimateGas", json::array({call_object(c)})));
  return quantity_of(r, "eth_estimateGas");
}

expected<bytes> rpc_client::eth_call(const call_request& c) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_call", json::array({call_object(c), "latest"})));
  if (!r.is_string()) return invalid_input("eth_call: the result is not a hex string");
  return from_hex(r.get<std::string>(), "eth_call result");
}

expected<hash32> rpc_client::send_raw_transaction(const bytes& raw) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_sendRawTransaction", json::array({to_hex(raw)})));
  if (!r.is_string()) return invalid_input("eth_sendRawTransaction: the result is not a hash");
  return hash_from_hex(r.get<std::string>(), "eth_sendRawTransaction result");
}

expected<std::optional<receipt>> rpc_client::transaction_receipt(const hash32& hash) {
  GG_ASSIGN_OR_RETURN(json r, call("eth_getTransactionReceipt", json::array({to_hex(hash)})));
  if (r.is_null()) return std::optional<receipt>();
  GG_ASSIGN_OR_RETURN(receipt rc, parse_receipt(r, "eth_getTransactionReceipt"));
  return std::optional<receipt>(std::move(rc));
}

expected<std::vector<log_entry>> rpc_client::get_logs(const log_filter& f) {
  json filter = {{"fromBlock", to_quantity(f.from_block)},
                 {"toBlock", f.to_block ? to_quantity(*f.to_block) : std::string("latest")}};
  if (f.emitter) filter["address"] = f.emitter->checksummed();
  json topics = json::array();
  for (const auto& alternatives : f.topics) {
    if (alternatives.empty()) {
      topics.push_back(nullptr);
      continue;
    }
    json alt = json::array();
    for (const auto& t : alternatives) alt.push_back(to_hex(t));
    topics.push_back(alternatives.size() == 1 ? alt[0] : alt);
  }
  if (!topics.empty()) filter["topics"] = topics;
  GG_ASSIGN_OR_RETURN(json r, call("eth_getLogs", json::array({filter})));
  if (!r.is_array()) return invalid_input("eth_getLogs: the result is not a list");
  std::vector<log_entry> out;
  for (size_t i = 0; i < r.size(); ++i) {
    GG_ASSIGN_OR_RETURN(log_entry l, parse_log(r[i], fmt::format("eth_getLogs entry {}", i)));
    out.push_back(std::move(l));
  }
  return out;
}

expected<u256> rpc_client::base_fee() {
  GG_ASSIGN_OR_RETURN(json r, call("eth_getBlockByNumber", json::array({"latest", false})));
  if (!r.is_object()) return invalid_input("eth_getBlockByNumber: the result is not a block");
  return quantity_field(r, "baseFeePerGas", "eth_getBlockByNumber (a chain without EIP-1559?)");
}

expected<u256> rpc_client::max_priority_fee() {
  GG_ASSIGN_OR_RETURN(json r, call("eth_maxPriorityFeePerGas", json::array()));
  return quantity_of(r, "eth_maxPriorityFeePerGas");
}

expected<log_entry> parse_log(const json& j, const std::string& what) {
  if (!j.is_object()) return invalid_input("{}: not an object", what);
  log_entry l;
  GG_ASSIGN_OR_RETURN(std::string a, get_string(j, "address", what));
  GG_ASSIGN_OR_RETURN(l.emitter, parse_address(a, what + ": address"));
  auto topics = j.find("topics");
  if (topics == j.end() || !topics->is_array() || topics->size() > 4)
    return invalid_input("{}: 'topics' is missing or not a list of at most 4", what);
  for (const auto& t : *topics) {
    if (!t.is_string()) return invalid_input("{}: a topic is not a string", what);
    GG_ASSIGN_OR_RETURN(hash32 h, hash_from_hex(t.get<std::string>(), what + ": topic"));
    l.topics.push_back(h);
  }
  GG_ASSIGN_OR_RETURN(std::string d, get_string(j, "data", what));
  GG_ASSIGN_OR_RETURN(l.data, from_hex(d, what + ": data"));
  GG_ASSIGN_OR_RETURN(l.block_number, quantity_field(j, "blockNumber", what));
  GG_ASSIGN_OR_RETURN(std::string h, get_string(j, "transactionHash", what));
  GG_ASSIGN_OR_RETURN(l.transaction_hash, hash_from_hex(h, what + ": transactionHash"));
  return l;
}

expected<receipt> parse_receipt(const json& j, const std::string& what) {
  if (!j.is_object()) return invalid_input("{}: not an object", what);
  receipt r;
  GG_ASSIGN_OR_RETURN(std::string h, get_string(j, "transactionHash", what));
  GG_ASSIGN_OR_RETURN(r.transaction_hash, hash_from_hex(h, what + ": transactionHash"));
  GG_ASSIGN_OR_RETURN(r.block_number, quantity_field(j, "blockNumber", what));
  GG_ASSIGN_OR_RETURN(u256 st, quantity_field(j, "status", what));
  if (st > 1) return invalid_input("{}: status {} is not 0 or 1", what, to_decimal(st));
  r.success = st == 1;
  GG_ASSIGN_OR_RETURN(r.gas_used, quantity_field(j, "gasUsed", what));
  if (j.contains("effectiveGasPrice")) {
    GG_ASSIGN_OR_RETURN(r.effective_gas_price, quantity_field(j, "effectiveGasPrice", what));
  }
  auto ca = j.find("contractAddress");
  if (ca != j.end() && ca->is_string()) {
    GG_ASSIGN_OR_RETURN(address a, parse_address(ca->get<std::string>(), what + ": contractAddress"));
    r.contract_address = a;
  }
  auto logs = j.find("logs");
  if (logs == j.end() || !logs->is_array()) return invalid_input("{}: 'logs' is missing or not a list", what);
  for (size_t i = 0; i < logs->size(); ++i) {
    GG_ASSIGN_OR_RETURN(log_entry l, parse_log((*logs)[i], fmt::format("{}: log {}", what, i)));
    r.logs.push_back(std::move(l));
  }
  return r;
}

}  // namespace gpugrid::chain
