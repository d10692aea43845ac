// Generation sessions paid per token on a chain, client and provider logic together over
// in-process links, with a fake payer and gate standing for the chain (cli/chain_payment.h
// implements them for real): the prompt is paid before any work, tokens are paid as they come,
// a client that stops paying is cut off within the provider's credit, and a failover pays each
// provider for its own tokens, once.
#include <catch2/catch.hpp>

#include <map>
#include <mutex>

#include <fmt/format.h>

#include "actors/client.h"
#include "actors/generation_client.h"
#include "actors/generation_host.h"
#include "actors/payment.h"
#include "actors/testing/fake_gen_engine.h"
#include "net/codec.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using gpugrid::grid::testing::fake_gen_engine;

namespace {

using u128 = unsigned __int128;

ledger::addr20 payee_of(int i) {
  ledger::addr20 a{};
  a[19] = static_cast<uint8_t>(i);
  return a;
}

u128 wei(double token) { return static_cast<u128>(token * 1e9 + 0.5) * 1000000000u; }

// The client's wallet: one channel per payee, cumulative amounts and nonces. Every voucher it
// signs is kept, by payee.
struct fake_payer : job_payer {
  std::mutex mu;
  struct channel {
    u128 amount = 0, nonce = 0;
    std::vector<ledger::voucher_claim> signed_vouchers;
  };
  std::map<ledger::addr20, channel> channels;
  expected<ledger::voucher_claim> pay(const key32&, const ledger::chain_terms& terms) override {
    std::lock_guard<std::mutex> lk(mu);
    channel& c = channels[terms.payee];
    c.amount += ledger::word_value(terms.price);
    c.nonce += 1;
    ledger::voucher_claim v;
    v.chain_id = terms.chain_id;
    v.contract = terms.contract;
    std::copy(terms.payee.begin(), terms.payee.end(), v.channel.begin() + 12);  // the channel: its payee
    v.amount = ledger::word_of(c.amount);
    v.nonce = ledger::word_of(c.nonce);
    v.price = terms.price;
    c.signed_vouchers.push_back(v);
    return v;
  }
  u128 total(const ledger::addr20& payee) {
    std::lock_guard<std::mutex> lk(mu);
    return channels[payee].amount;
  }
};

// One provider's wallet: the channel with its payee, the rules of chain/voucher_check.h that a
// fake can keep (channel, nonce and amount rising, at least the price added).
struct fake_gate : payment_gate {
  explicit fake_gate(int index) : payee(payee_of(index)) {}
  ledger::addr20 payee;
  std::mutex mu;
  u128 last_amount = 0, last_nonce = 0;
  std::map<job_id, ledger::voucher_claim> by_session;
  int accepted = 0;
  std::vector<int64_t> engine_steps_at_voucher;  // how far generation had gone at each voucher
  std::function<int64_t()> steps;

  u128 inflate = 1;  // > 1: the bid's wei terms ask more than its prices say
  ledger::chain_terms terms(double price) override {
    ledger::chain_terms t;
    t.chain_id = ledger::word_of(31337);
    t.payee = payee;
    t.price = ledger::word_of(wei(price) * inflate);
    return t;
  }
  status admit(const execute_request&) override { return status(error_kind::invalid_input, "jobs are not tested here"); }
  std::optional<ledger::voucher_claim> claim_for(const job_id& job) override {
    std::lock_guard<std::mutex> lk(mu);
    auto it = by_session.find(job);
    if (it == by_session.end()) return std::nullopt;
    return it->second;
  }
  expected<ledger::word32> admit_session_voucher(const job_id& session, const ledger::voucher_claim& v,
                                                 const ledger::word32& min_add) override {
    std::lock_guard<std::mutex> lk(mu);
    if (!std::equal(payee.begin(), payee.end(), v.channel.begin() + 12))
      return status(error_kind::invalid_input, "the voucher is for another channel");
    u128 amount = ledger::word_value(v.amount), nonce = ledger::word_value(v.nonce);
    if (nonce <= last_nonce || amount <= last_amount) return status(error_kind::invalid_input, "replayed or stale");
    if (amount - last_amount < ledger::word_value(min_add)) return status(error_kind::invalid_input, "the voucher adds too little");
    u128 added = amount - last_amount;
    last_amount = amount;
    last_nonce = nonce;
    ++accepted;
    if (steps) engine_steps_at_voucher.push_back(steps());
    ledger::voucher_claim filed = v;
    u128 before = by_session.count(session) ? ledger::word_value(by_session[session].price) : 0;
    filed.price = ledger::word_of(before + added);
    by_session[session] = filed;
    return ledger::word_of(added);
  }
  u128 session_total(const job_id& s) {
    auto c = claim_for(s);
    return c ? ledger::word_value(c->price) : 0;
  }
  u128 earned() {
    std::lock_guard<std::mutex> lk(mu);
    return last_amount;
  }
};

folder_manifest fake_manifest() {
  folder_manifest m;
  m.dir = "/nonexistent";
  m.files = {net::gen_file{"model.onnx", ledger::blake2b_256("weights"), 7}};
  m.hash = manifest_hash(m.files);
  m.total_bytes = 7;
  return m;
}

std::shared_ptr<const llm::tokenizer> letters_tokenizer() {
  std::string vocab;
  for (int i = 0; i < 50; ++i) {
    char c = static_cast<char>(i < 26 ? 'a' + i : 'A' + (i - 26));
    vocab += fmt::format("{}\"{}\": {}", i ? ", " : "", c, i);
  }
  std::string json = R"({"version": "1.0", "added_tokens": [], "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": null, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {)" + vocab + R"(}, "merges": []}})";
  auto t = llm::tokenizer::from_json(json, "letters.json");
  REQUIRE(t.has_value());
  return std::make_shared<const llm::tokenizer>(std::move(t).value());
}

struct provider {
  std::shared_ptr<fake_gen_engine> engine = std::make_shared<fake_gen_engine>();
  std::shared_ptr<fake_gate> gate;
  std::shared_ptr<generation_host> host;
  std::shared_ptr<std::atomic<bool>> cut = std::make_shared<std::atomic<bool>>(false);

  provider(int index, generation_host_options o) : gate(std::make_shared<fake_gate>(index)) {
    auto store = std::shared_ptr<folder_store>(folder_store::local_only());
    store->add_local(fake_manifest().hash, "/nonexistent");
    o.price_prompt = 0.001;      // per 1000 prompt tokens, in the chain's token
    o.price_generated = 0.003;   // per 1000 generated tokens
    o.payment = gate;
    auto e = engine;
    gate->steps = [e] { return e->steps.load(); };
    host = std::make_shared<generation_host>(net::identity::generate(), store,
                                             [e](const std::string&) -> expected<std::shared_ptr<gen_engine>> {
                                               return std::shared_ptr<gen_engine>(e);
                                             },
                                             o);
  }
  net::gen_chain_terms terms() {
    net::gen_chain_terms t;
    t.terms = gate->terms(0.003);
    t.price_prompt = gate->terms(0.001).price;
    return t;
  }
};

struct paid_grid {
  keypair me = keypair::generate();
  std::shared_ptr<generation_inbox> inbox = std::make_shared<generation_inbox>();
  std::vector<std::unique_ptr<provider>> providers;
  fake_payer payer;
  bool drop_payments = false;  // a client that stops paying after the prompt
  std::vector<std::string> notes;
  generation_client_options options;

  paid_grid() {
    options.bid_window_ms = 1000;
    options.stall_timeout_ms = 300;
    options.first_token_timeout_ms = 2000;
    options.spot_check_rate = 0;
    options.payer = &payer;
    options.note = [this](const std::string& s) { notes.push_back(s); };
  }
  provider& add(generation_host_options o = {}) {
    providers.push_back(std::make_unique<provider>(static_cast<int>(providers.size()) + 1, o));
    return *providers.back();
  }
  generation_client client() {
    return generation_client(me, fake_manifest(), letters_tokenizer(), fake_gen_engine::kVocab, inbox,
                             [this] {
                               std::vector<gen_peer> v;
                               for (size_t i = 0; i < providers.size(); ++i) {
                                 gen_peer p = in_process_peer(providers[i]->host, inbox, me.public_key, i + 1, providers[i]->cut);
                                 auto real = p.send;
                                 bool* drop = &drop_payments;
                                 p.send = [real, drop](const net::message& m) {
                                   if (*drop && std::holds_alternative<net::gen_pay>(m)) return true;  // "sent"
                                   return real(m);
                                 };
                                 v.push_back(p);
                               }
                               return v;
                             },
                             options);
  }
  std::string all_notes() const {
    std::string s;
    for (const auto& n : notes) s += n + "\n";
    return s;
  }
};

llm::completion_request request(int64_t n) {
  llm::completion_request r;
  r.prompt_ids = {3, 1, 4, 1, 5};
  r.stop.max_new_tokens = n;
  return r;
}

}  // namespace

TEST_CASE("owed wei rounds up per 1000 tokens and saturates", "[grid][gen][payment]") {
  net::gen_chain_terms t;
  t.price_prompt = ledger::word_of(1000);   // 1 wei a prompt token
  t.terms.price = ledger::word_of(2500);    // 2.5 wei a generated token
  CHECK(tokens_wei(0, 0, t) == 0);
  CHECK(tokens_wei(5, 0, t) == 5);
  CHECK(tokens_wei(5, 1, t) == 8);           // 7.5 rounded up
  CHECK(tokens_wei(5, 2, t) == 10);
  CHECK(tokens_wei(-3, -1, t) == 0);
  t.terms.price = ledger::word_of(~u128(0));
  CHECK(tokens_wei(1, 2, t) == ~u128(0));
}

TEST_CASE("a chain-paid answer is paid ahead for its prompt and as its tokens come", "[grid][gen][payment]") {
  paid_grid g;
  provider& p = g.add();
  auto c = g.client();
  auto r = c.complete(request(100), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE(r.has_value());
  CHECK(r->generated_tokens == 100);
  // The prompt's voucher came before the first token was made.
  REQUIRE(!p.gate->engine_steps_at_voucher.empty());
  CHECK(p.gate->engine_steps_at_voucher[0] == 0);
  // Tokens are paid as they stream (frames batch them, so fewer than one voucher per 16):
  // vouchers came while the answer was being made, not only at its end.
  CHECK(p.gate->accepted >= 3);
  bool mid_answer = false;
  for (int64_t at : p.gate->engine_steps_at_voucher) mid_answer = mid_answer || (at > 0 && at < 100);
  CHECK(mid_answer);
  // What the client paid is what the provider took, the answer's price to the wei.
  const u128 owed = tokens_wei(5, 100, p.terms());
  CHECK(g.payer.total(p.gate->payee) == owed);
  CHECK(p.gate->earned() == owed);
  const auto& used = c.last_providers();
  REQUIRE(used.size() == 1);
  CHECK(used[0].settlement == "chain");
  CHECK(used[0].paid_wei == ledger::decimal(owed));
  REQUIRE(r->payments.size() == 1);
  CHECK(r->payments[0].settlement == "chain");
  CHECK(r->payments[0].paid_wei == ledger::decimal(owed));
  CHECK(p.host->counters().payment_cutoffs == 0);
}

TEST_CASE("a client that stops paying is cut off within the credit", "[grid][gen][payment]") {
  paid_grid g;
  g.drop_payments = true;
  generation_host_options o;
  o.credit_tokens = 32;
  o.payment_wait_ms = 200;
  provider& p = g.add(o);
  auto c = g.client();
  auto r = c.complete(request(200), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message().find("payment") != std::string::npos);
  // The prompt was paid; not one token beyond the credit was generated unpaid.
  CHECK(p.engine->steps.load() == 32);
  CHECK(p.host->counters().payment_cutoffs == 1);
  CHECK(p.gate->earned() == tokens_wei(5, 0, p.terms()));
}

TEST_CASE("a refused voucher mid-answer stops the provider", "[grid][gen][payment]") {
  paid_grid g;
  generation_host_options o;
  o.credit_tokens = 32;
  provider& p = g.add(o);
  auto c = g.client();
  // The provider has seen a later voucher on this channel already (a replay of the client's
  // state): every voucher the client now signs is stale.
  p.gate->last_nonce = 1000;
  auto r = c.complete(request(100), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message().find("payment refused: replayed or stale") != std::string::npos);
  CHECK(p.engine->steps.load() == 0);  // the prompt's voucher was refused: no work at all
}

TEST_CASE("failover mid-answer pays each provider for its own tokens, once", "[grid][gen][payment]") {
  paid_grid g;
  provider& a = g.add();
  provider& b = g.add();
  // Both bid the same; whichever answers first stalls after 20 tokens.
  a.engine->stall_after = 20;
  b.engine->stall_after = 20;
  std::vector<int64_t> seen;
  auto c = g.client();
  // The second provider to be used must not stall: clear the fault on the other when the first
  // token comes.
  auto r = c.complete(request(60),
                      [&](const llm::generated_token& t) {
                        if (seen.empty()) {
                          bool a_first = a.engine->steps.load() > 0;
                          (a_first ? b : a).engine->stall_after = -1;
                        }
                        seen.push_back(t.index);
                        return true;
                      },
                      nullptr);
  REQUIRE(r.has_value());
  INFO(g.all_notes());
  CHECK(r->generated_tokens == 60);
  REQUIRE(seen.size() == 60);
  for (size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == static_cast<int64_t>(i));
  const auto& used = c.last_providers();
  REQUIRE(used.size() == 2);
  provider& first = used[0].node == node_hex(a.host->key()) ? a : b;
  provider& second = &first == &a ? b : a;
  CHECK(used[1].node == node_hex(second.host->key()));
  // The first delivered some tokens and stalled; the second read the prompt plus those tokens
  // as its prompt and made the rest.
  CHECK(used[0].generated_tokens >= 1);
  CHECK(used[0].generated_tokens + used[1].generated_tokens == 60);
  CHECK(used[1].prompt_tokens == 5 + used[0].generated_tokens);
  // Each is paid for what its receipt states, to the wei; nothing more to either, nothing twice.
  const u128 first_owed = tokens_wei(used[0].prompt_tokens, used[0].generated_tokens, first.terms());
  const u128 second_owed = tokens_wei(used[1].prompt_tokens, used[1].generated_tokens, second.terms());
  CHECK(g.payer.total(first.gate->payee) == first_owed);
  CHECK(first.gate->earned() == first_owed);
  CHECK(g.payer.total(second.gate->payee) == second_owed);
  CHECK(second.gate->earned() == second_owed);
  for (const auto& u : used) {
    CHECK(u.settlement == "chain");
    CHECK(u.paid);
  }
  CHECK(used[0].paid_wei == ledger::decimal(first_owed));
  CHECK(used[1].paid_wei == ledger::decimal(second_owed));
  // The ledger entries' claims: each session's last voucher, carrying the session's total.
  REQUIRE(first.gate->by_session.size() == 1);
  CHECK(ledger::word_value(first.gate->by_session.begin()->second.price) == first_owed);
  REQUIRE(second.gate->by_session.size() == 1);
  CHECK(ledger::word_value(second.gate->by_session.begin()->second.price) == second_owed);
}

TEST_CASE("a client without a chain passes over chain-paid bids", "[grid][gen][payment]") {
  paid_grid g;
  g.options.payer = nullptr;
  g.add();
  auto c = g.client();
  auto r = c.complete(request(10), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind() == error_kind::no_provider);
  CHECK(r.error().message().find("no chain configured") != std::string::npos);
}

TEST_CASE("a bid whose wei terms ask more than its prices is passed over", "[grid][gen][payment]") {
  paid_grid g;
  provider& p = g.add();
  p.gate->inflate = 2;
  auto c = g.client();
  auto r = c.complete(request(10), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message().find("chain terms ask more wei") != std::string::npos);
  CHECK(p.gate->accepted == 0);
}

TEST_CASE("with redundancy both chain-paid providers are paid for their own streams", "[grid][gen][payment]") {
  paid_grid g;
  g.options.redundancy = 2;
  provider& a = g.add();
  provider& b = g.add();
  auto c = g.client();
  auto r = c.complete(request(40), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE(r.has_value());
  INFO(g.all_notes());
  CHECK(c.last_verification() == "redundant");
  const auto& used = c.last_providers();
  REQUIRE(used.size() == 2);
  for (const auto& u : used) {
    provider& p = u.node == node_hex(a.host->key()) ? a : b;
    const u128 owed = tokens_wei(u.prompt_tokens, u.generated_tokens, p.terms());
    CHECK(u.generated_tokens == 40);
    CHECK(u.paid);
    CHECK(u.paid_wei == ledger::decimal(owed));
    CHECK(g.payer.total(p.gate->payee) == owed);
    CHECK(p.gate->earned() == owed);
  }
}

TEST_CASE("a chain-paid scorer is paid for its teacher-forced pass as prompt tokens", "[grid][gen][payment]") {
  paid_grid g;
  g.options.spot_check_rate = 1;  // every answer is scored, by the other provider
  provider& a = g.add();
  provider& b = g.add();
  auto c = g.client();
  auto r = c.complete(request(30), [](const llm::generated_token&) { return true; }, nullptr);
  REQUIRE(r.has_value());
  INFO(g.all_notes());
  CHECK(c.last_verification() == "spot-check");
  const auto& used = c.last_providers();
  REQUIRE(used.size() == 2);
  CHECK(used[1].role == "score");
  CHECK(used[1].generated_tokens == 0);
  CHECK(used[1].prompt_tokens == 5 + 30);
  for (const auto& u : used) {
    provider& p = u.node == node_hex(a.host->key()) ? a : b;
    const u128 owed = tokens_wei(u.prompt_tokens, u.generated_tokens, p.terms());
    CHECK(u.paid_wei == ledger::decimal(owed));
    CHECK(p.gate->earned() == owed);
  }
}

TEST_CASE("only a session's own client pays into it", "[grid][gen][payment]") {
  paid_grid g;
  provider& p = g.add();
  std::vector<net::message> replies;
  std::mutex mu;
  generation_host::reply_fn reply = [&](const net::message& m) {
    std::lock_guard<std::mutex> lk(mu);
    replies.push_back(m);
    return true;
  };
  net::gen_open o;
  o.session = new_job_id();
  o.manifest = fake_manifest().hash;
  o.files = fake_manifest().files;
  o.prompt_tokens = 5;
  o.max_new_tokens = 10;
  REQUIRE(p.host->on_message(g.me.public_key, 1, o, reply));
  REQUIRE(replies.size() == 1);
  auto* bid = std::get_if<net::gen_bid>(&replies[0]);
  REQUIRE(bid);
  REQUIRE(bid->terms.has_value());
  CHECK(bid->terms->terms.payee == p.gate->payee);
  CHECK(net::verify_gen_bid(*bid, p.host->key()));
  auto pay = [&](const key32& who, const net::bytes16& session) {
    ledger::chain_terms t = p.gate->terms(0.003);
    auto v = g.payer.pay(p.host->key(), t);
    REQUIRE(v.has_value());
    replies.clear();
    REQUIRE(p.host->on_message(who, 2, net::gen_pay{session, *v}, reply));
  };
  // Another client, or a session id never opened here: refused, nothing filed.
  pay(keypair::generate().public_key, o.session);
  REQUIRE(replies.size() == 1);
  auto* e = std::get_if<net::job_error>(&replies[0]);
  REQUIRE(e);
  CHECK(e->code == net::job_error_code::not_awarded);
  pay(g.me.public_key, new_job_id());
  REQUIRE(replies.size() == 1);
  CHECK(std::holds_alternative<net::job_error>(replies[0]));
  CHECK(p.gate->accepted == 0);
  // The session's own client, after the session closed: taken (the rest of an answer).
  REQUIRE(p.host->on_message(g.me.public_key, 1, net::cancel{o.session, "close"}, reply));
  pay(g.me.public_key, o.session);
  CHECK(replies.empty());
  CHECK(p.gate->accepted == 1);
}
