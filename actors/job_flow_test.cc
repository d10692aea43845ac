#include <catch2/catch.hpp>

#include <algorithm>

#include "actors/job_flow.h"
#include "ledger/ledger.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {

std::vector<tensor> out_of(float v) { return {tensor::from_vector<float>({2}, {v, v})}; }
std::vector<tensor> inputs() { return {tensor::from_vector<float>({2}, {1.f, 2.f})}; }

// A client, some providers with real keys, and a job: results and receipts are signed as a
// real provider signs them, so the flow's checks run as in the product.
struct world {
  keypair client = keypair::generate();
  std::vector<keypair> prov;
  flow_job job;
  explicit world(size_t n) {
    for (size_t i = 0; i < n; ++i) prov.push_back(keypair::generate());
    job.job = new_job_id();
    job.client = client.public_key;
    job.model_hash = ledger::blake2b_256("model");
    job.model_bytes = 5;
    job.input_digest = tensors_digest(inputs());
  }
  std::vector<flow_candidate> candidates() const {
    std::vector<flow_candidate> c;
    for (size_t i = 0; i < prov.size(); ++i) {
      flow_candidate x;
      x.key = prov[i].public_key;
      x.url = "ws://10." + std::to_string(i) + ".0.1:7447";
      x.reputation = 0.5;
      x.is_new = false;
      c.push_back(x);
    }
    return c;
  }
  bid_reply bid(size_t i, double price, bool cached = true) const {
    bid_reply b;
    b.job = job.job;
    b.provider = prov[i].public_key;
    b.accepted = true;
    b.price = price;
    b.eta_ms = 10;
    b.model_cached = cached;
    return b;
  }
  bid_reply decline(size_t i, const std::string& why) const {
    bid_reply b;
    b.job = job.job;
    b.provider = prov[i].public_key;
    b.reason = decline_reason::busy;
    b.detail = why;
    return b;
  }
  execute_result_ptr result(size_t i, float v, double price) const {
    auto r = std::make_shared<execute_result>();
    r->job = job.job;
    r->provider = prov[i].public_key;
    r->ok = true;
    r->outputs = out_of(v);
    r->output_digest = tensors_digest(r->outputs);
    ledger::receipt d;
    d.kind = ledger::receipt_kind::dispute;
    d.job_id = job.job;
    d.output_digest = r->output_digest;
    ledger::sign_as_provider(d, prov[i].secret_key);
    r->result_sig = d.provider_sig;
    ledger::receipt& rc = r->receipt;
    rc.kind = ledger::receipt_kind::payment;
    rc.job_id = job.job;
    rc.client_key = job.client;
    rc.provider_key = prov[i].public_key;
    rc.model_hash = job.model_hash;
    rc.input_digest = job.input_digest;
    rc.output_digest = r->output_digest;
    rc.price_micros = static_cast<int64_t>(price * 1e6 + 0.5);
    rc.started_ms = 1;
    rc.finished_ms = 2;
    ledger::sign_as_provider(rc, prov[i].secret_key);
    return r;
  }
  execute_result_ptr failure(size_t i, const std::string& why, bool input) const {
    auto r = std::make_shared<execute_result>();
    r->job = job.job;
    r->provider = prov[i].public_key;
    r->error = why;
    r->error_is_input = input;
    return r;
  }
};

flow_config config(int k = 1) {
  flow_config c;
  c.redundancy = k;
  c.seed = 42;
  return c;
}

std::vector<const flow_action*> of_kind(const std::vector<flow_action>& a, action_kind k) {
  std::vector<const flow_action*> out;
  for (const auto& x : a)
    if (x.kind == k) out.push_back(&x);
  return out;
}
bool has(const std::vector<flow_action>& a, action_kind k) { return !of_kind(a, k).empty(); }
bool noted(const std::vector<flow_action>& a, const std::string& text) {
  for (const auto* x : of_kind(a, action_kind::note))
    if (x->text.find(text) != std::string::npos) return true;
  return false;
}
bool rep(const std::vector<flow_action>& a, size_t provider, outcome o) {
  for (const auto* x : of_kind(a, action_kind::record_reputation))
    if (x->provider == provider && x->rep == o) return true;
  return false;
}
std::vector<size_t> sent_to(const std::vector<flow_action>& a) {
  std::vector<size_t> out;
  for (const auto* x : of_kind(a, action_kind::send_job)) out.push_back(x->provider);
  return out;
}
std::vector<flow_action> cat(std::vector<flow_action> a, const std::vector<flow_action>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("job flow: start asks every trusted provider and opens the bid window", "[client][flow]") {
  world w(3);
  auto c = w.candidates();
  c[1].trusted = false;
  c[2].cooling = true;
  job_flow f(w.job, config(1));
  auto a = f.start(c);
  CHECK(f.phase() == flow_phase::bidding);
  auto asks = of_kind(a, action_kind::request_bids);
  REQUIRE(asks.size() == 1);  // the distrusted one is never asked, the cooling one not while another is there
  CHECK(asks[0]->provider == 0);
  auto timer = of_kind(a, action_kind::close_bids_after);
  REQUIRE(timer.size() == 1);
  CHECK(timer[0]->delay_ms == 250);

  job_flow g(w.job, config(2));  // K = 2: the cooling one is asked too, since others are too few
  CHECK(of_kind(g.start(c), action_kind::request_bids).size() == 2);
}

TEST_CASE("job flow: no trusted provider fails at once", "[client][flow]") {
  world w(2);
  auto c = w.candidates();
  for (auto& x : c) x.trusted = false;
  job_flow f(w.job, config());
  auto a = f.start(c);
  CHECK(has(a, action_kind::finish));
  CHECK(f.result().kind() == error_kind::no_provider);
  CHECK(f.result().message().find("no trusted provider") != std::string::npos);
}

TEST_CASE("job flow: the best bid gets the job with its bid, and the model only when not cached", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  CHECK(f.on_bid(0, w.bid(0, 2.0, true)).empty());  // still waiting for provider 1
  auto a = f.on_bid(1, w.bid(1, 0.5, false));       // all answered: award without waiting for the window
  CHECK(f.phase() == flow_phase::executing);
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0]->provider == 1);
  CHECK(sends[0]->bid.price == 0.5);   // the payment hook sees the bid it was awarded from
  CHECK(sends[0]->send_model);
  CHECK(noted(a, "sending the model"));
  // The window closing afterwards changes nothing.
  CHECK(f.on_bid_window_closed().empty());
}

TEST_CASE("job flow: a bid after the window closed is ignored", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 1.0));
  auto a = f.on_bid_window_closed();
  REQUIRE(sent_to(a) == std::vector<size_t>{0});
  CHECK(f.on_bid(1, w.bid(1, 0.1)).empty());
  CHECK(f.bid_of(1) == nullptr);
}

TEST_CASE("job flow: when every provider declines, one error lists every reason", "[client][flow]") {
  world w(3);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.decline(0, "3 jobs running or queued"));
  f.on_bid_failed(1, "request_timeout");
  auto a = f.on_bid_window_closed();  // provider 2 never answered
  REQUIRE(has(a, action_kind::finish));
  CHECK(f.result().kind() == error_kind::no_provider);
  const std::string& m = f.result().message();
  CHECK(m.find("no provider could run the job") == 0);
  CHECK(m.find(short_hex(w.prov[0].public_key) + ": 3 jobs running or queued") != std::string::npos);
  CHECK(m.find(short_hex(w.prov[1].public_key) + ": no bid (request_timeout)") != std::string::npos);
  CHECK(m.find(short_hex(w.prov[2].public_key) + ": no bid within the bid window") != std::string::npos);
  CHECK(m.find('\n') == std::string::npos);
}

TEST_CASE("job flow: bids over the price limit are not taken", "[client][flow]") {
  world w(1);
  auto cfg = config();
  cfg.max_price = 1.0;
  job_flow f(w.job, cfg);
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 2.0));
  CHECK(f.finished());
  CHECK(f.result().message().find("no acceptable bid") != std::string::npos);
}

TEST_CASE("job flow: a timeout fails over to the next bid and the late answer is ignored", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.5));
  auto a = f.on_bid(1, w.bid(1, 1.0));
  REQUIRE(sent_to(a) == std::vector<size_t>{0});
  size_t first = of_kind(a, action_kind::send_job)[0]->attempt;
  auto b = f.on_exec_failed(first, "request_timeout", true);
  CHECK(rep(b, 0, outcome::timed_out));
  CHECK(has(b, action_kind::drop_quote));
  auto cancels = of_kind(b, action_kind::cancel);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0]->attempt == first);
  CHECK(noted(b, "timed out; trying the next bid"));
  REQUIRE(sent_to(b) == std::vector<size_t>{1});
  size_t second = of_kind(b, action_kind::send_job)[0]->attempt;
  // Provider 0 answers after its time ran out: nothing happens.
  CHECK(f.on_result(first, w.result(0, 9.f, 0.5)).empty());
  auto c = f.on_result(second, w.result(1, 1.f, 1.0));
  auto pays = of_kind(c, action_kind::pay);
  REQUIRE(pays.size() == 1);
  CHECK(pays[0]->provider == 1);
  CHECK(f.phase() == flow_phase::paying);
  auto d = f.on_receipt_answer(second, net::receipt_status::recorded);
  CHECK(has(d, action_kind::finish));
  REQUIRE(f.result().is_ok());
  CHECK(f.outputs()[0].data<float>()[0] == 1.f);
  CHECK(f.method() == "single");
  REQUIRE(f.providers_used().size() == 1);
  CHECK(f.providers_used()[0].paid);
}

TEST_CASE("job flow: a provider's failure fails over but a bad job does not", "[client][flow]") {
  world w(3);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  f.on_bid(1, w.bid(1, 0.2));
  auto a = f.on_bid(2, w.bid(2, 0.3));
  size_t at = of_kind(a, action_kind::send_job)[0]->attempt;
  auto b = f.on_result(at, w.failure(0, "out of memory", false));
  CHECK(rep(b, 0, outcome::failed));
  CHECK(noted(b, "failed: out of memory; trying the next bid"));
  REQUIRE(sent_to(b) == std::vector<size_t>{1});
  auto c = f.on_result(of_kind(b, action_kind::send_job)[0]->attempt, w.failure(1, "input 0 has shape [3]", true));
  CHECK(has(c, action_kind::finish));
  CHECK(sent_to(c).empty());
  CHECK(f.result().kind() == error_kind::invalid_input);
}

TEST_CASE("job flow: every attempt failing ends in one error naming each", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  auto a = f.on_bid(1, w.bid(1, 0.2));
  auto b = f.on_exec_failed(of_kind(a, action_kind::send_job)[0]->attempt, "disconnected", false);
  f.on_exec_failed(of_kind(b, action_kind::send_job)[0]->attempt, "request_timeout", true);
  CHECK(f.finished());
  CHECK(f.result().kind() == error_kind::no_provider);
  CHECK(f.result().message().find("every provider that bid failed or timed out") == 0);
  CHECK(f.result().message().find(short_hex(w.prov[1].public_key) + ": timed out") != std::string::npos);
}

TEST_CASE("job flow: a provider that disconnects fails its attempt at once", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  f.on_bid(1, w.bid(1, 0.2));
  auto a = f.on_provider_gone(0);
  CHECK(rep(a, 0, outcome::failed));
  CHECK(sent_to(a) == std::vector<size_t>{1});
  // While bidding, a provider that goes away counts as one that did not bid.
  job_flow g(w.job, config());
  g.start(w.candidates());
  g.on_bid(1, w.bid(1, 0.2));
  CHECK(sent_to(g.on_provider_gone(0)) == std::vector<size_t>{1});
}

TEST_CASE("job flow: redundancy K with fewer bidders fails unless fewer were allowed", "[client][flow]") {
  world w(3);
  {
    job_flow f(w.job, config(3));
    f.start(w.candidates());
    f.on_bid(0, w.bid(0, 0.1));
    f.on_bid(1, w.bid(1, 0.1));
    auto a = f.on_bid(2, w.decline(2, "the provider is shutting down"));
    CHECK(sent_to(a).empty());  // nothing runs, nothing is paid
    REQUIRE(f.finished());
    CHECK(f.result().kind() == error_kind::no_provider);
    CHECK(f.result().message().find("--redundancy 3 needs 3 providers; only 2 bid") == 0);
    CHECK(f.result().message().find("--min-redundancy") != std::string::npos);
    CHECK(f.result().message().find("shutting down") != std::string::npos);
  }
  {
    auto cfg = config(3);
    cfg.min_results = 2;
    job_flow f(w.job, cfg);
    f.start(w.candidates());
    f.on_bid(0, w.bid(0, 0.1));
    f.on_bid(1, w.bid(1, 0.1));
    auto a = f.on_bid(2, w.decline(2, "busy"));
    auto sends = of_kind(a, action_kind::send_job);
    REQUIRE(sends.size() == 2);
    f.on_result(sends[0]->attempt, w.result(sends[0]->provider, 1.f, 0.1));
    auto c = f.on_result(sends[1]->attempt, w.result(sends[1]->provider, 1.f, 0.1));
    CHECK(noted(c, "--redundancy 3: only 2 providers could run the job"));
    CHECK(of_kind(c, action_kind::pay).size() == 2);
    f.on_receipt_answer(sends[0]->attempt, net::receipt_status::recorded);
    f.on_receipt_answer(sends[1]->attempt, net::receipt_status::recorded);
    REQUIRE(f.result().is_ok());
    CHECK(f.agreeing() == 2);
    CHECK(f.method() == "redundant");
  }
}

TEST_CASE("job flow: too few results after failures fail the job, but the agreeing work is paid", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config(2));
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  auto a = f.on_bid(1, w.bid(1, 0.2));
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 2);
  f.on_result(sends[0]->attempt, w.result(sends[0]->provider, 1.f, sends[0]->bid.price));
  auto b = f.on_exec_failed(sends[1]->attempt, "request_timeout", true);
  auto pays = of_kind(b, action_kind::pay);
  REQUIRE(pays.size() == 1);
  CHECK_FALSE(rep(b, sends[0]->provider, outcome::agreed));  // not verified: no credit
  f.on_receipt_answer(pays[0]->attempt, net::receipt_status::recorded);
  REQUIRE(f.finished());
  CHECK(f.result().kind() == error_kind::no_provider);
  CHECK(f.result().message().find("--redundancy 2 needs 2 results; only 1 provider returned one") == 0);
}

TEST_CASE("job flow: agreeing redundant results are all paid and credited", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config(2));
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  auto a = f.on_bid(1, w.bid(1, 0.2));
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 2);
  CHECK(f.on_result(sends[0]->attempt, w.result(sends[0]->provider, 1.f, sends[0]->bid.price)).empty() == false);
  auto b = f.on_result(sends[1]->attempt, w.result(sends[1]->provider, 1.00001f, sends[1]->bid.price));
  CHECK(rep(b, 0, outcome::agreed));
  CHECK(rep(b, 1, outcome::agreed));
  CHECK(of_kind(b, action_kind::pay).size() == 2);
  CHECK_FALSE(f.finished());
  f.on_receipt_answer(sends[0]->attempt, net::receipt_status::recorded);
  CHECK_FALSE(f.finished());
  auto c = f.on_receipt_answer(sends[1]->attempt, net::receipt_status::retry_later);
  CHECK(noted(c, "has not recorded its receipt yet"));
  REQUIRE(f.finished());
  CHECK(f.result().is_ok());
  CHECK(f.agreeing() == 2);
}

TEST_CASE("job flow: a disagreement is broken by the next provider and the dissenter is disputed", "[client][flow]") {
  world w(3);
  job_flow f(w.job, config(2));
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  f.on_bid(1, w.bid(1, 0.1));
  auto a = f.on_bid(2, w.bid(2, 0.3));
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 2);
  size_t liar = sends[0]->provider;
  f.on_result(sends[0]->attempt, w.result(liar, 7.f, 0.1));
  auto b = f.on_result(sends[1]->attempt, w.result(sends[1]->provider, 1.f, 0.1));
  CHECK(noted(b, "results disagree; running a tie-break"));
  CHECK(f.phase() == flow_phase::tie_break);
  REQUIRE(sent_to(b) == std::vector<size_t>{2});
  auto c = f.on_result(of_kind(b, action_kind::send_job)[0]->attempt, w.result(2, 1.f, 0.3));
  auto disputes = of_kind(c, action_kind::dispute);
  REQUIRE(disputes.size() == 1);
  CHECK(disputes[0]->provider == liar);
  CHECK(disputes[0]->result->outputs[0].data<float>()[0] == 7.f);
  CHECK(rep(c, liar, outcome::disagreed));
  CHECK(of_kind(c, action_kind::pay).size() == 2);
  for (const auto* p : of_kind(c, action_kind::pay)) CHECK(p->provider != liar);
}

TEST_CASE("job flow: with nobody left, the local engine breaks the tie, else verification fails", "[client][flow]") {
  world w(2);
  auto cfg = config(2);
  cfg.has_local = true;
  job_flow f(w.job, cfg);
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  auto a = f.on_bid(1, w.bid(1, 0.1));
  auto sends = of_kind(a, action_kind::send_job);
  f.on_result(sends[0]->attempt, w.result(sends[0]->provider, 1.f, 0.1));
  auto b = f.on_result(sends[1]->attempt, w.result(sends[1]->provider, 7.f, 0.1));
  REQUIRE(has(b, action_kind::run_local));
  auto c = f.on_local_result(out_of(1.f));
  CHECK(f.method() == "redundant+local");
  REQUIRE(of_kind(c, action_kind::dispute).size() == 1);
  CHECK(of_kind(c, action_kind::dispute)[0]->provider == sends[1]->provider);
  f.on_receipt_answer(sends[0]->attempt, net::receipt_status::recorded);
  CHECK(f.result().is_ok());

  job_flow g(w.job, config(2));  // no local engine
  g.start(w.candidates());
  g.on_bid(0, w.bid(0, 0.1));
  auto d = g.on_bid(1, w.bid(1, 0.1));
  auto s2 = of_kind(d, action_kind::send_job);
  g.on_result(s2[0]->attempt, w.result(s2[0]->provider, 1.f, 0.1));
  g.on_result(s2[1]->attempt, w.result(s2[1]->provider, 7.f, 0.1));
  REQUIRE(g.finished());
  CHECK(g.result().kind() == error_kind::verification);
}

TEST_CASE("job flow: with a local engine the tie-break runs here before any other bid", "[client][flow]") {
  // Two colluders (same wrong answer) and one honest provider: the partner of the one that
  // disagreed must not be the judge.
  world w(3);
  auto cfg = config(2);
  cfg.has_local = true;
  job_flow f(w.job, cfg);
  f.start(w.candidates());
  f.on_bid(0, w.bid(0, 0.1));
  f.on_bid(1, w.bid(1, 0.1));
  auto a = f.on_bid(2, w.bid(2, 0.05));  // the colluder's partner bids lowest of all
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 2);
  size_t colluder = sends[0]->provider == 2 ? sends[0]->provider : sends[1]->provider;
  REQUIRE(colluder == 2);
  size_t honest = sends[0]->provider == 2 ? sends[1]->provider : sends[0]->provider;
  for (const auto* sj : sends) f.on_result(sj->attempt, w.result(sj->provider, sj->provider == colluder ? 7.f : 1.f, 0.1));
  REQUIRE(f.phase() == flow_phase::local_check);
  auto c = f.on_local_result(out_of(1.f));
  CHECK(f.method() == "redundant+local");
  REQUIRE(of_kind(c, action_kind::dispute).size() == 1);
  CHECK(of_kind(c, action_kind::dispute)[0]->provider == colluder);
  REQUIRE(of_kind(c, action_kind::pay).size() == 1);
  CHECK(of_kind(c, action_kind::pay)[0]->provider == honest);

  // A local engine that cannot run the job hands the tie to the next bid.
  job_flow g(w.job, cfg);
  g.start(w.candidates());
  g.on_bid(0, w.bid(0, 0.1));
  g.on_bid(1, w.bid(1, 0.1));
  auto d = g.on_bid(2, w.bid(2, 0.3));
  auto s2 = of_kind(d, action_kind::send_job);
  g.on_result(s2[0]->attempt, w.result(s2[0]->provider, 7.f, 0.1));
  g.on_result(s2[1]->attempt, w.result(s2[1]->provider, 1.f, 0.1));
  auto e = g.on_local_result(status(error_kind::unsupported_here, "an operator this machine lacks"));
  CHECK(noted(e, "the local engine cannot break the tie"));
  REQUIRE(sent_to(e) == std::vector<size_t>{2});
}

TEST_CASE("job flow: providers that agree but were never verified are checked here and colluders are disputed", "[client][flow]") {
  world w(2);
  auto cfg = config(2);
  cfg.has_local = true;
  auto cands = w.candidates();
  for (auto& c : cands) c.spot_check_rate = 1.0;  // new to this client
  job_flow f(w.job, cfg);
  f.start(cands);
  f.on_bid(0, w.bid(0, 0.1));
  auto a = f.on_bid(1, w.bid(1, 0.1));
  auto sends = of_kind(a, action_kind::send_job);
  REQUIRE(sends.size() == 2);
  f.on_result(sends[0]->attempt, w.result(sends[0]->provider, 7.f, 0.1));
  auto b = f.on_result(sends[1]->attempt, w.result(sends[1]->provider, 7.f, 0.1));
  REQUIRE(has(b, action_kind::run_local));
  auto c = f.on_local_result(out_of(1.f));
  CHECK(noted(c, "disagrees with the local engine"));
  CHECK(of_kind(c, action_kind::dispute).size() == 2);
  CHECK_FALSE(has(c, action_kind::pay));
  REQUIRE(f.finished());
  CHECK(f.result().kind() == error_kind::verification);

  // Honest ones pass the check and are paid; established ones (rate 0) are not checked at all.
  job_flow g(w.job, cfg);
  g.start(cands);
  g.on_bid(0, w.bid(0, 0.1));
  auto d = g.on_bid(1, w.bid(1, 0.1));
  auto s2 = of_kind(d, action_kind::send_job);
  g.on_result(s2[0]->attempt, w.result(s2[0]->provider, 1.f, 0.1));
  g.on_result(s2[1]->attempt, w.result(s2[1]->provider, 1.f, 0.1));
  auto e = g.on_local_result(out_of(1.f));
  CHECK(of_kind(e, action_kind::pay).size() == 2);
  CHECK(g.method() == "redundant+local");

  cands[0].spot_check_rate = 0;
  job_flow h(w.job, cfg);
  h.start(cands);
  h.on_bid(0, w.bid(0, 0.1));
  auto k = h.on_bid(1, w.bid(1, 0.1));
  auto s3 = of_kind(k, action_kind::send_job);
  h.on_result(s3[0]->attempt, w.result(s3[0]->provider, 1.f, 0.1));
  auto m = h.on_result(s3[1]->attempt, w.result(s3[1]->provider, 1.f, 0.1));
  CHECK_FALSE(has(m, action_kind::run_local));
  CHECK(of_kind(m, action_kind::pay).size() == 2);
}

TEST_CASE("job flow: a spot check that disagrees disputes the provider and fails verification", "[client][flow]") {
  world w(1);
  auto cfg = config();
  cfg.has_local = true;
  auto c = w.candidates();
  c[0].spot_check_rate = 1.0;
  job_flow f(w.job, cfg);
  f.start(c);
  auto a = f.on_bid(0, w.bid(0, 0.1));
  auto b = f.on_result(of_kind(a, action_kind::send_job)[0]->attempt, w.result(0, 7.f, 0.1));
  REQUIRE(has(b, action_kind::run_local));
  CHECK(f.phase() == flow_phase::local_check);
  auto d = f.on_local_result(out_of(1.f));
  CHECK(noted(d, "disagrees with the local engine"));
  CHECK(has(d, action_kind::dispute));
  CHECK(rep(d, 0, outcome::disagreed));
  CHECK_FALSE(has(d, action_kind::pay));
  REQUIRE(f.finished());
  CHECK(f.result().kind() == error_kind::verification);
}

TEST_CASE("job flow: a spot check that agrees credits and pays and rate 0 never checks", "[client][flow]") {
  world w(1);
  auto cfg = config();
  cfg.has_local = true;
  auto c = w.candidates();
  c[0].spot_check_rate = 1.0;
  job_flow f(w.job, cfg);
  f.start(c);
  auto a = f.on_bid(0, w.bid(0, 0.1));
  size_t at = of_kind(a, action_kind::send_job)[0]->attempt;
  f.on_result(at, w.result(0, 1.f, 0.1));
  auto d = f.on_local_result(out_of(1.f));
  CHECK(rep(d, 0, outcome::agreed));
  CHECK(has(d, action_kind::pay));
  f.on_receipt_answer(at, net::receipt_status::recorded);
  CHECK(f.result().is_ok());
  CHECK(f.method() == "spot-check");

  c[0].spot_check_rate = 0;
  job_flow g(w.job, cfg);
  g.start(c);
  auto e = g.on_bid(0, w.bid(0, 0.1));
  auto h = g.on_result(of_kind(e, action_kind::send_job)[0]->attempt, w.result(0, 1.f, 0.1));
  CHECK_FALSE(has(h, action_kind::run_local));
  CHECK_FALSE(rep(h, 0, outcome::agreed));  // an unverified result earns nothing
  CHECK(has(h, action_kind::pay));
}

TEST_CASE("job flow: a receipt that does not match the job is not paid", "[client][flow]") {
  world w(1);
  job_flow f(w.job, config());
  f.start(w.candidates());
  auto a = f.on_bid(0, w.bid(0, 0.1));
  auto b = f.on_result(of_kind(a, action_kind::send_job)[0]->attempt, w.result(0, 1.f, 5.0));  // asks 5, bid 0.1
  CHECK_FALSE(has(b, action_kind::pay));
  CHECK(noted(b, "does not match the job; not paid"));
  REQUIRE(f.finished());
  CHECK(f.result().is_ok());
  CHECK_FALSE(f.providers_used()[0].paid);
}

TEST_CASE("job flow: standing quotes skip the bidding round and a failure is not held against them", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  auto a = f.start(w.candidates(), {{1, w.bid(1, 0.2)}});
  CHECK_FALSE(has(a, action_kind::request_bids));
  CHECK(f.used_quotes());
  REQUIRE(sent_to(a) == std::vector<size_t>{1});
  auto b = f.on_result(of_kind(a, action_kind::send_job)[0]->attempt, w.failure(1, "model not cached", false));
  CHECK_FALSE(rep(b, 1, outcome::failed));
  CHECK(has(b, action_kind::drop_quote));
  REQUIRE(f.finished());
  CHECK(f.result().kind() == error_kind::no_provider);
}

TEST_CASE("job flow: a bid with a bad signature is skipped and a fatal driver error ends the job", "[client][flow]") {
  world w(2);
  job_flow f(w.job, config());
  f.start(w.candidates());
  auto bad = w.bid(0, 0.01);
  bad.signature = sig64{};  // all zero: does not verify
  f.on_bid(0, bad);
  auto a = f.on_bid(1, w.bid(1, 0.5));
  CHECK(noted(a, "signature does not verify"));
  CHECK(rep(a, 0, outcome::failed));
  REQUIRE(sent_to(a) == std::vector<size_t>{1});
  auto b = f.on_fatal(status(error_kind::io, "disk full"));
  CHECK(has(b, action_kind::finish));
  CHECK(has(b, action_kind::cancel));  // the open attempt is abandoned
  CHECK(f.result().kind() == error_kind::io);
  CHECK(f.on_fatal(status(error_kind::io, "again")).empty());
}
