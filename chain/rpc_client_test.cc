#include "chain/rpc_client.h"

#include <deque>

#include <catch2/catch.hpp>

#include "chain/abi.h"
#include "chain/payment_channel.h"

using namespace gpugrid;
using namespace gpugrid::chain;

namespace {

// Answers posts from a script; each entry is a body, or an error when it starts with "!".
class scripted_transport final : public http_transport {
 public:
  explicit scripted_transport(std::deque<std::string> answers, int* posts) : answers_(std::move(answers)), posts_(posts) {}
  expected<std::string> post(const std::string& body, std::chrono::milliseconds) override {
    ++*posts_;
    last_request = nlohmann::json::parse(body);
    if (answers_.empty()) return io_error("no more answers");
    std::string a = answers_.front();
    answers_.pop_front();
    if (!a.empty() && a[0] == '!') return io_error("{}", a.substr(1));
    // Echo the request id into "{id}".
    size_t at = a.find("{id}");
    if (at != std::string::npos) a.replace(at, 4, last_request["id"].dump());
    return a;
  }
  const std::string& url() const override { return url_; }
  nlohmann::json last_request;

 private:
  std::deque<std::string> answers_;
  int* posts_;
  std::string url_ = "http://test";
};

rpc_client client_with(std::deque<std::string> answers, int* posts, int retries = 2) {
  rpc_options o;
  o.retries = retries;
  o.backoff = std::chrono::milliseconds(1);
  return rpc_client(std::make_unique<scripted_transport>(std::move(answers), posts), o);
}

}  // namespace

TEST_CASE("rpc: transport failures and malformed answers are retried, then reported", "[chain]") {
  int posts = 0;
  auto c = client_with({"!connection refused", "{\"jsonrpc\":", R"({"jsonrpc":"2.0","id":{id},"result":"0x89"})"}, &posts);
  auto id = c.chain_id();
  REQUIRE(id);
  CHECK(*id == 137);
  CHECK(posts == 3);

  posts = 0;
  auto d = client_with({"not json", "not json", "not json", "never read"}, &posts);
  auto r = d.chain_id();
  REQUIRE(!r);
  CHECK(r.error().kind() == error_kind::io);
  CHECK(r.error().message().find("not JSON") != std::string::npos);
  CHECK(r.error().message().find("3 attempts") != std::string::npos);
  CHECK(posts == 3);
}

TEST_CASE("rpc: a node's error is not retried and carries the revert reason", "[chain]") {
  int posts = 0;
  std::string data = to_hex(abi::call_encoder("Error(string)").add_string("channel not expired").finish());
  auto c = client_with({R"({"jsonrpc":"2.0","id":{id},"error":{"code":3,"message":"execution reverted","data":")" + data + "\"}}"}, &posts);
  auto r = c.estimate_gas({});
  REQUIRE(!r);
  CHECK(posts == 1);
  CHECK(r.error().kind() == error_kind::invalid_input);
  CHECK(r.error().message().find("channel not expired") != std::string::npos);
  CHECK(r.error().message().find("eth_estimateGas") != std::string::npos);
}

TEST_CASE("rpc: answers of the wrong shape are refused", "[chain]") {
  int posts = 0;
  auto c = client_with({R"({"jsonrpc":"2.0","id":999999,"result":"0x1"})", R"({"jsonrpc":"2.0","id":{id},"result":"0x1"})",
                        R"({"jsonrpc":"2.0","id":{id},"result":12})", R"({"jsonrpc":"2.0","id":{id},"result":"0xzz"})",
                        R"({"jsonrpc":"2.0","id":{id},"result":{"transactionHash":"0x12"}})"},
                       &posts, 0);
  CHECK(!c.block_number());  // answer for another id
  CHECK(c.block_number().value() == 1);
  CHECK(!c.block_number());  // a number, not a quantity
  CHECK(!c.balance(address{}));
  hash32 h{};
  auto rc = c.transaction_receipt(h);
  REQUIRE(!rc);
  CHECK(rc.error().message().find("transactionHash") != std::string::npos);
}

TEST_CASE("rpc: receipts, logs and the Opened event", "[chain]") {
  address contract;
  contract.b[19] = 7;
  hash32 id_topic = to_word(42);
  nlohmann::json log = {{"address", contract.checksummed()},
                        {"topics", {to_hex(payment_channel::opened_topic()), to_hex(id_topic), to_hex(hash32{}), to_hex(hash32{})}},
                        {"data", "0x"},
                        {"blockNumber", "0x5"},
                        {"transactionHash", to_hex(hash32{})}};
  nlohmann::json receipt_json = {{"transactionHash", to_hex(hash32{})}, {"blockNumber", "0x5"}, {"status", "0x1"},
                                 {"gasUsed", "0x5208"}, {"effectiveGasPrice", "0x3b9aca00"}, {"logs", {log}}};
  auto r = parse_receipt(receipt_json, "receipt");
  REQUIRE(r);
  CHECK(r->success);
  CHECK(r->gas_used == 21000);
  CHECK(payment_channel::opened_channel(*r, contract).value() == 42);
  address other;
  CHECK(!payment_channel::opened_channel(*r, other));
  receipt_json["status"] = "0x2";
  CHECK(!parse_receipt(receipt_json, "receipt"));
  receipt_json["status"] = "0x0";
  receipt_json["logs"][0]["topics"] = {1, 2};
  CHECK(!parse_receipt(receipt_json, "receipt"));
}

TEST_CASE("rpc: URLs", "[chain]") {
  auto u = parse_http_url("https://rpc.example.org/v1/key");
  REQUIRE(u);
  CHECK(u->tls);
  CHECK(u->host == "rpc.example.org");
  CHECK(u->port == "443");
  CHECK(u->target == "/v1/key");
  auto v = parse_http_url("http://127.0.0.1:8545");
  REQUIRE(v);
  CHECK(v->port == "8545");
  CHECK(v->target == "/");
  CHECK(parse_http_url("http://[::1]:8545/").value().host == "::1");
  CHECK(!parse_http_url("ws://x"));
  CHECK(!parse_http_url("http://:80"));
  CHECK(!parse_http_url("http://host:99999"));
  CHECK(!parse_http_url("http://user:pw@host"));
}

TEST_CASE("rpc: channels are looked up in windows of blocks from the deployment block", "[chain]") {
  int posts = 0;
  std::deque<std::string> answers = {R"({"jsonrpc":"2.0","id":{id},"result":"0x4e84"})"};  // head 20100
  for (int i = 0; i < 6; ++i) answers.push_back(R"({"jsonrpc":"2.0","id":{id},"result":[]})");
  auto* t = new scripted_transport(answers, &posts);
  rpc_options o;
  o.retries = 0;
  rpc_client c(std::unique_ptr<http_transport>(t), o);
  address contract, who;
  auto list = payment_channel::channels_of(c, contract, who, 100, 10000);
  REQUIRE(list);
  CHECK(list->empty());
  CHECK(posts == 7);  // the head, then windows [100, 10099], [10100, 20099], [20100, 20100] x client and provider
  CHECK(t->last_request["params"][0]["fromBlock"] == "0x4e84");
  CHECK(t->last_request["params"][0]["toBlock"] == "0x4e84");
}
