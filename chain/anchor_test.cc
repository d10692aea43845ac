#include "chain/anchor.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "chain/keccak.h"
#include "chain/payment_channel.h"
#include "chain/wallet.h"

using namespace gpugrid;
using namespace gpugrid::chain;
using namespace std::chrono_literals;

namespace {

std::string temp_file(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("gg-anchors-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove(p);
  return p.string();
}

hash32 filled(uint8_t b) {
  hash32 h{};
  h.fill(b);
  return h;
}

// Answers posts in order from a list of JSON-RPC results (the request's id echoed back).
class canned_transport final : public http_transport {
 public:
  explicit canned_transport(std::deque<nlohmann::json> results) : results_(std::move(results)) {}
  expected<std::string> post(const std::string& body, std::chrono::milliseconds) override {
    auto req = nlohmann::json::parse(body);
    requests.push_back(req);
    if (results_.empty()) return io_error("connection refused");
    nlohmann::json r = {{"jsonrpc", "2.0"}, {"id", req["id"]}, {"result", results_.front()}};
    results_.pop_front();
    return r.dump();
  }
  const std::string& url() const override { return url_; }
  std::vector<nlohmann::json> requests;

 private:
  std::deque<nlohmann::json> results_;
  std::string url_ = "http://test";
};

nlohmann::json anchored_log(const address& contract, const address& who, int block, uint8_t tx, uint8_t head, int seq) {
  hash32 who_topic{};
  std::copy(who.b.begin(), who.b.end(), who_topic.begin() + 12);
  const hash32 h = filled(head);
  bytes data(h.begin(), h.end());
  hash32 w = to_word(u256(seq));
  data.insert(data.end(), w.begin(), w.end());
  return {{"address", to_hex(contract.b)},
          {"topics", {to_hex(payment_channel::anchored_topic()), to_hex(who_topic)}},
          {"data", to_hex(data)},
          {"blockNumber", to_quantity(u256(block))},
          {"transactionHash", to_hex(filled(tx))}};
}

}  // namespace

TEST_CASE("anchor durations: units, bounds and bad input", "[chain][anchor]") {
  CHECK(parse_duration("90s", "--anchor-interval").value() == 90s);
  CHECK(parse_duration("10m", "x").value() == 600s);
  CHECK(parse_duration("2h", "x").value() == 7200s);
  CHECK(parse_duration("1d", "x").value() == 86400s);
  CHECK(parse_duration("45", "x").value() == 45s);
  for (const char* bad : {"", "0", "0s", "-5m", "5 m", "m", "1.5h", "400d", "99999999999999", "10x"}) {
    auto r = parse_duration(bad, "--anchor-interval");
    REQUIRE(!r);
    CHECK(r.error().kind() == error_kind::invalid_input);
    CHECK(r.error().message().find("--anchor-interval") != std::string::npos);
  }
}

TEST_CASE("the anchor record appends lines, survives a torn line and finds the last anchor", "[chain][anchor]") {
  std::string path = temp_file("rec");
  auto none = read_anchor_records(path);
  REQUIRE(none);
  CHECK(none->empty());
  CHECK(anchored_count(*none) == 0);

  anchor_record sent{1000, "sent", 4, filled(0xaa), filled(0x01), std::nullopt, ""};
  anchor_record mined{1001, "mined", 4, filled(0xaa), filled(0x01), u256(77), ""};
  anchor_record failed{1002, "failed", 9, filled(0xbb), std::nullopt, std::nullopt, "chain RPC http://x: refused\twith a tab"};
  REQUIRE(append_anchor_record(path, sent).is_ok());
  REQUIRE(append_anchor_record(path, mined).is_ok());
  {  // a crash in the middle of a line
    std::ofstream out(path, std::ios::app);
    out << "1003\tsent\t12\t0xcc";
  }
  REQUIRE(append_anchor_record(path, failed).is_ok());
  size_t skipped = 0;
  auto rs = read_anchor_records(path, &skipped);
  REQUIRE(rs);
  REQUIRE(rs->size() == 3);
  CHECK(skipped == 1);
  CHECK((*rs)[0].state == "sent");
  CHECK((*rs)[0].tx == filled(0x01));
  CHECK(!(*rs)[0].block);
  CHECK((*rs)[1].block == u256(77));
  CHECK((*rs)[1].head == filled(0xaa));
  CHECK((*rs)[2].state == "failed");
  CHECK((*rs)[2].note == "chain RPC http://x: refused with a tab");
  CHECK(anchored_count(*rs) == 5);  // the failed anchor of entry 9 does not count

  {  // a torn line at the very end is skipped too
    std::ofstream out(path, std::ios::app);
    out << "1004\tmined\t20";
  }
  rs = read_anchor_records(path, &skipped);
  REQUIRE(rs);
  CHECK(rs->size() == 3);
  CHECK(skipped == 2);
  std::filesystem::remove(path);
}

TEST_CASE("anchor policy: every N entries, every interval, and a growing pause after failures", "[chain][anchor]") {
  using clock = anchor_policy::clock;
  const auto t0 = clock::now();

  anchor_policy every({3, 0s}, 0, t0);
  CHECK(!every.due(0, t0));
  CHECK(!every.due(2, t0 + 1h));  // time alone does not count without an interval
  CHECK(every.due(3, t0));
  every.anchored(3, t0);
  CHECK(!every.due(5, t0));
  CHECK(every.due(6, t0));
  every.failed(t0);
  CHECK(!every.due(6, t0 + 1s));
  CHECK(every.due(6, t0 + anchor_policy::first_retry));
  every.failed(t0 + 2s);             // the second failure: 4 s
  CHECK(!every.due(6, t0 + 5s));
  CHECK(every.due(6, t0 + 6s));
  for (int i = 0; i < 20; ++i) every.failed(t0);
  CHECK(every.retry_at() == t0 + anchor_policy::max_retry);
  every.anchored(6, t0 + 1h);        // a success resets the pause
  every.failed(t0 + 1h);
  CHECK(every.retry_at() == t0 + 1h + anchor_policy::first_retry);

  anchor_policy timed({0, 60s}, 10, t0);  // 10 entries anchored before a restart
  CHECK(!timed.due(10, t0 + 1h));         // nothing new
  CHECK(!timed.due(11, t0 + 59s));
  CHECK(timed.due(11, t0 + 60s));
  timed.anchored(11, t0 + 60s);
  CHECK(!timed.due(12, t0 + 100s));
  CHECK(timed.due(12, t0 + 120s));

  anchor_policy both({100, 60s}, 0, t0);
  CHECK(both.due(100, t0));
  CHECK(both.due(1, t0 + 60s));

  anchor_policy off({0, 0s}, 0, t0);
  CHECK(!off.due(1000, t0 + 24h));
}

TEST_CASE("anchors_of reads a wallet's Anchored logs window by window and refuses malformed ones", "[chain][anchor]") {
  address contract = parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "c").value();
  address who = parse_address("0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "w").value();
  auto t = std::make_unique<canned_transport>(std::deque<nlohmann::json>{
      "0x4e1f",  // latest block 19,999
      nlohmann::json::array({anchored_log(contract, who, 12, 0x01, 0xaa, 3)}),
      nlohmann::json::array({anchored_log(contract, who, 15000, 0x02, 0xbb, 7), anchored_log(contract, who, 15001, 0x03, 0xcc, 8)})});
  auto* seen = t.get();
  rpc_options ro;
  ro.retries = 0;
  rpc_client rpc(std::move(t), ro);
  auto as = anchors_of(rpc, contract, who, 5, 10000);
  INFO((as ? std::string() : as.error().message()));
  std::string reqs;
  for (const auto& r : seen->requests) reqs += r.dump() + "\n";
  INFO(reqs);
  REQUIRE(as);
  REQUIRE(as->size() == 3);
  CHECK((*as)[0].block == 12);
  CHECK((*as)[0].sequence == 3);
  CHECK((*as)[0].head == filled(0xaa));
  CHECK((*as)[0].tx == filled(0x01));
  CHECK((*as)[2].sequence == 8);
  REQUIRE(seen->requests.size() == 3);
  auto& f1 = seen->requests[1]["params"][0];
  CHECK(f1["fromBlock"] == "0x5");
  CHECK(f1["toBlock"] == to_quantity(u256(10004)));
  CHECK(f1["topics"][0] == to_hex(payment_channel::anchored_topic()));
  CHECK(seen->requests[2]["params"][0]["fromBlock"] == to_quantity(u256(10005)));
  CHECK(seen->requests[2]["params"][0]["toBlock"] == to_quantity(u256(19999)));

  auto bad_log = anchored_log(contract, who, 12, 0x09, 0xaa, 3);
  bad_log["data"] = "0x1234";
  rpc_client rpc2(std::make_unique<canned_transport>(std::deque<nlohmann::json>{"0x20", nlohmann::json::array({bad_log})}), ro);
  auto bad = anchors_of(rpc2, contract, who);
  REQUIRE(!bad);
  CHECK(bad.error().message().find(to_hex(filled(0x09))) != std::string::npos);

  rpc_client down(std::make_unique<canned_transport>(std::deque<nlohmann::json>{}), ro);
  auto r = anchors_of(down, contract, who);
  REQUIRE(!r);
  CHECK(r.error().kind() == error_kind::io);
}

namespace {

// Just enough of a chain for tx_sender: fails the first `fail_first` posts, then mines every
// transaction at once in the next block.
struct fake_chain {
  std::mutex mu;
  int fail_first = 0;
  int posts = 0;
  uint64_t block = 100;
  uint64_t nonce = 0;
  std::map<std::string, uint64_t> mined;  // tx hash -> block
};

class fake_chain_transport final : public http_transport {
 public:
  explicit fake_chain_transport(std::shared_ptr<fake_chain> c) : c_(std::move(c)) {}
  expected<std::string> post(const std::string& body, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lk(c_->mu);
    if (c_->posts++ < c_->fail_first) return io_error("connection refused");
    auto req = nlohmann::json::parse(body);
    std::string m = req["method"];
    nlohmann::json result;
    if (m == "eth_chainId") result = "0x7";
    else if (m == "eth_estimateGas") result = to_quantity(u256(23525));
    else if (m == "eth_getBlockByNumber") result = {{"baseFeePerGas", "0x1"}};
    else if (m == "eth_maxPriorityFeePerGas") result = "0x1";
    else if (m == "eth_getTransactionCount") result = to_quantity(u256(c_->nonce));
    else if (m == "eth_blockNumber") result = to_quantity(u256(c_->block));
    else if (m == "eth_sendRawTransaction") {
      auto raw = from_hex(req["params"][0].get<std::string>(), "raw").value();
      std::string h = to_hex(keccak256(raw));
      c_->mined[h] = ++c_->block;
      ++c_->nonce;
      result = h;
    } else if (m == "eth_getTransactionReceipt") {
      std::string h = req["params"][0];
      auto it = c_->mined.find(h);
      if (it == c_->mined.end()) result = nullptr;
      else
        result = {{"transactionHash", h}, {"blockNumber", to_quantity(u256(it->second))}, {"status", "0x1"},
                  {"gasUsed", to_quantity(u256(23525))}, {"logs", nlohmann::json::array()}};
    } else {
      return io_error("unexpected method {}", m);
    }
    return nlohmann::json{{"jsonrpc", "2.0"}, {"id", req["id"]}, {"result", result}}.dump();
  }
  const std::string& url() const override { return url_; }

 private:
  std::shared_ptr<fake_chain> c_;
  std::string url_ = "http://fake";
};

}  // namespace

TEST_CASE("the anchorer anchors in the background, retries a failure and anchors the rest on stop", "[chain][anchor]") {
  auto chain = std::make_shared<fake_chain>();
  chain->fail_first = 3;  // the first eth_chainId and its two retries
  std::string path = temp_file("anchorer");
  std::atomic<uint64_t> count{2};
  std::mutex mu;
  std::vector<anchor_event> events;

  anchorer_options o;
  o.target.rpc = "http://fake";
  o.target.rpc_opts.backoff = 1ms;
  o.target.contract = parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "c").value();
  o.target.confirm.poll = 5ms;
  o.target.transport = [chain](const std::string&) -> expected<std::unique_ptr<http_transport>> {
    return std::unique_ptr<http_transport>(new fake_chain_transport(chain));
  };
  o.schedule.every = 2;
  o.record_path = path;
  o.poll = 10ms;
  o.head = [&] {
    anchor_head h;
    h.count = count.load();
    h.hash = filled(static_cast<uint8_t>(h.count));
    return h;
  };
  o.on_event = [&](const anchor_event& e) {
    std::lock_guard<std::mutex> lk(mu);
    events.push_back(e);
  };
  auto key = secret_key::generate();
  auto a = anchorer::start(o, key);
  REQUIRE(a);
  auto anchored = [&] {
    std::lock_guard<std::mutex> lk(mu);
    return std::count_if(events.begin(), events.end(), [](const anchor_event& e) { return e.kind == "anchored"; });
  };
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (anchored() < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  REQUIRE(anchored() == 1);
  count = 3;  // one entry more: not due (every 2), but anchored on the way out
  std::this_thread::sleep_for(50ms);
  CHECK(anchored() == 1);
  (*a)->stop();

  std::vector<std::string> kinds;
  for (const auto& e : events) kinds.push_back(e.kind);
  CHECK(kinds == std::vector<std::string>{"anchor_failed", "anchor_sent", "anchored", "anchor_sent", "anchored"});
  CHECK(events[0].error.find("connection refused") != std::string::npos);
  CHECK(events[2].sequence == 1);
  CHECK(events[2].head == filled(2));
  CHECK(events[2].block == u256(101));
  CHECK(events[4].sequence == 2);
  CHECK(events[1].tx == events[2].tx);

  auto rs = read_anchor_records(path);
  REQUIRE(rs);
  std::vector<std::string> states;
  for (const auto& r : *rs) states.push_back(r.state + " " + std::to_string(r.sequence));
  CHECK(states == std::vector<std::string>{"failed 1", "sent 1", "mined 1", "sent 2", "mined 2"});
  CHECK(anchored_count(*rs) == 3);

  // After a restart the record says what is anchored: nothing more is sent for the same head.
  int posts_before = chain->posts;
  auto again = anchorer::start(o, key);
  REQUIRE(again);
  std::this_thread::sleep_for(50ms);
  (*again)->stop();
  CHECK(chain->posts == posts_before);
  std::filesystem::remove(path);
}

TEST_CASE("chain.toml: anchor_every and anchor_interval are read and checked", "[chain][anchor]") {
  auto dir = std::filesystem::temp_directory_path() / ("gg-anchor-toml-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "chain.toml") << text;
  };
  write("anchor_every = 50\nanchor_interval = \"2h\"\n");
  auto s = load_chain_settings(dir.string());
  REQUIRE(s);
  CHECK(s->anchor_every == uint64_t{50});
  CHECK(s->anchor_interval == std::chrono::seconds(7200));
  write("anchor_interval = \"soon\"\n");
  auto bad = load_chain_settings(dir.string());
  REQUIRE(!bad);
  CHECK(bad.error().message().find("chain.toml: anchor_interval") != std::string::npos);
  write("anchor_every = -1\n");
  REQUIRE(!load_chain_settings(dir.string()));
  write("anchor_every = \"10\"\n");
  REQUIRE(!load_chain_settings(dir.string()));
  std::filesystem::remove_all(dir);
}
