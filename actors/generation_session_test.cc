// Generation sessions, client and provider logic together over in-process links: bids,
// streaming, failover on a lost or stalled provider, garbage and over-long streams, cancel,
// eviction, spot checks and redundancy.
#include <catch2/catch.hpp>

#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "actors/client.h"
#include "actors/generation_client.h"
#include "actors/generation_host.h"
#include "actors/testing/fake_gen_engine.h"
#include "net/codec.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using gpugrid::grid::testing::fake_gen_engine;

namespace {

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

folder_manifest fake_manifest() {
  folder_manifest m;
  m.dir = "/nonexistent";
  m.files = {net::gen_file{"model.onnx", ledger::blake2b_256("weights"), 7}};
  m.hash = manifest_hash(m.files);
  m.total_bytes = 7;
  return m;
}

// One provider: a host around a fake engine, reached in-process.
struct provider {
  std::shared_ptr<fake_gen_engine> engine = std::make_shared<fake_gen_engine>();
  std::shared_ptr<generation_host> host;
  std::shared_ptr<std::atomic<bool>> cut = std::make_shared<std::atomic<bool>>(false);
  int64_t clock = 1000000;

  explicit provider(generation_host_options o = {}) {
    auto store = std::shared_ptr<folder_store>(folder_store::local_only());
    store->add_local(fake_manifest().hash, "/nonexistent");
    if (o.price_prompt == 0) o.price_prompt = 1.0;
    if (o.price_generated == 0) o.price_generated = 10.0;
    o.clock = [this] { return clock; };
    auto e = engine;
    host = std::make_shared<generation_host>(net::identity::generate(), store,
                                             [e](const std::string&) -> expected<std::shared_ptr<gen_engine>> { return std::shared_ptr<gen_engine>(e); },
                                             o);
  }
  std::string node() const { return node_hex(host->key()); }
};

struct grid_fixture {
  keypair me = keypair::generate();
  std::shared_ptr<generation_inbox> inbox = std::make_shared<generation_inbox>();
  std::vector<std::unique_ptr<provider>> providers;
  reputation_book reputation;
  std::vector<std::string> notes;
  generation_client_options options;

  grid_fixture() {
    options.bid_window_ms = 1000;
    options.stall_timeout_ms = 300;
    options.first_token_timeout_ms = 2000;
    options.spot_check_rate = 0;
    options.reputation = &reputation;
    options.note = [this](const std::string& s) { notes.push_back(s); };
  }
  // Notes may come from several completions at once.
  void notes_from_threads() {
    options.note = [this](const std::string& s) {
      std::lock_guard<std::mutex> l(notes_mu);
      notes.push_back(s);
    };
  }
  std::mutex notes_mu;
  provider& add(generation_host_options o = {}) {
    providers.push_back(std::make_unique<provider>(o));
    return *providers.back();
  }
  generation_client client() {
    return generation_client(me, fake_manifest(), letters_tokenizer(), fake_gen_engine::kVocab, inbox,
                             [this] {
                               std::vector<gen_peer> v;
                               for (size_t i = 0; i < providers.size(); ++i)
                                 v.push_back(in_process_peer(providers[i]->host, inbox, me.public_key, i + 1, providers[i]->cut));
                               return v;
                             },
                             options);
  }
  // Kills provider i as a dead connection looks to the client.
  void kill(size_t i) {
    providers[i]->cut->store(true);
    providers[i]->host->on_disconnect(i + 1);
    inbox->peer_down(providers[i]->host->key());
  }
};

llm::completion_request request(int64_t n) {
  llm::completion_request r;
  r.prompt_ids = {3, 1, 4, 1, 5};
  r.stop.max_new_tokens = n;
  return r;
}

// The fake model's greedy answer.
std::vector<int32_t> expected_answer(const llm::completion_request& r, int32_t variant = 0) {
  std::vector<int32_t> seq = r.prompt_ids, out;
  for (int64_t i = 0; i < r.stop.max_new_tokens; ++i) {
    int32_t t = fake_gen_engine::next_of(seq, variant);
    seq.push_back(t);
    out.push_back(t);
  }
  return out;
}

struct recorder {
  std::vector<llm::generated_token> seen;
  std::function<bool(const llm::generated_token&)> also;
  llm::token_sink sink() {
    return [this](const llm::generated_token& t) {
      seen.push_back(t);
      return also ? also(t) : true;
    };
  }
  std::vector<int64_t> indexes() const {
    std::vector<int64_t> v;
    for (auto& t : seen) v.push_back(t.index);
    return v;
  }
};

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("a provider bids per 1000 tokens, signed, and declines what it cannot take", "[grid][gen]") {
  generation_host_options o;
  o.price_prompt = 2;
  o.price_generated = 20;
  o.max_memory_bytes = 1000;
  provider p(o);
  std::vector<net::message> got;
  auto reply = [&](const net::message& m) {
    got.push_back(m);
    return true;
  };
  key32 client = keypair::generate().public_key;
  net::gen_open open;
  open.session = new_job_id();
  open.manifest = fake_manifest().hash;
  open.files = fake_manifest().files;
  open.prompt_tokens = 5;
  open.max_new_tokens = 10;
  REQUIRE(p.host->on_message(client, 1, open, reply));
  REQUIRE(got.size() == 1);
  auto& b = std::get<net::gen_bid>(got[0]);
  CHECK(b.price_prompt == 2);
  CHECK(b.price_generated == 20);
  CHECK(b.model_cached);
  CHECK(net::verify_gen_bid(b, p.host->key()));
  CHECK(p.host->sessions() == 1);

  open.session = new_job_id();
  open.max_price_generated = 10;  // below the provider's 20
  p.host->on_message(client, 1, open, reply);
  CHECK(std::get<net::bid_decline>(got[1]).reason == net::decline_reason::too_cheap);

  open.max_price_generated = -1;
  open.files[0].size = 5000;  // over the memory budget; the manifest no longer matches either
  open.manifest = manifest_hash(open.files);
  p.host->on_message(client, 1, open, reply);
  CHECK(std::get<net::bid_decline>(got[2]).reason == net::decline_reason::too_big);

  open.manifest = ledger::blake2b_256("another");
  p.host->on_message(client, 1, open, reply);
  CHECK(std::get<net::bid_decline>(got[3]).detail.find("manifest") != std::string::npos);
  CHECK_FALSE(p.host->on_message(client, 1, net::ping{}, reply));
}

TEST_CASE("an answer streams in order, priced per token, from the cheapest bid", "[grid][gen]") {
  grid_fixture g;
  generation_host_options dear;
  dear.price_generated = 50;
  g.add(dear);
  g.add();  // 10 per 1000 generated tokens
  auto c = g.client();
  recorder rec;
  auto r = request(12);
  auto st = c.complete(r, rec.sink(), nullptr);
  REQUIRE(st.has_value());
  CHECK(st->token_ids == expected_answer(r));
  CHECK(rec.indexes() == iota(12));
  CHECK(st->reason == llm::finish_reason::length);
  CHECK(st->generated_tokens == 12);
  std::string text;
  for (auto& t : rec.seen) text += t.text;
  CHECK(text == st->text);
  CHECK(text.size() == 12);
  REQUIRE(c.last_providers().size() == 1);
  const auto u = c.last_providers()[0];
  CHECK(u.node == g.providers[1]->node());
  CHECK(u.paid);
  CHECK(u.generated_tokens == 12);
  CHECK(u.prompt_tokens == 5);
  // 5 prompt tokens at 1 and 12 generated at 10 per 1000.
  CHECK(u.cost == Approx((5 * 1.0 + 12 * 10.0) / 1000).epsilon(1e-6));
  CHECK(st->cost == Approx(u.cost));
}

TEST_CASE("completions at once on one client: each gets its own sessions' tokens", "[grid][gen]") {
  grid_fixture g;
  g.notes_from_threads();
  generation_host_options three;
  three.slots = 3;
  g.add(three).engine->rendezvous = 3;  // no answer goes on until three are generated at once
  g.options.first_token_timeout_ms = 20000;
  auto c = g.client();
  const int n = 3;
  std::vector<llm::completion_request> reqs;
  for (int k = 0; k < n; ++k) {
    auto r = request(6 + k);
    r.prompt_ids.push_back(10 + k);  // other prompts, other answers
    reqs.push_back(r);
  }
  std::vector<expected<llm::completion_stats>> got(n, status(error_kind::internal, "not run"));
  std::vector<recorder> recs(n);
  std::vector<std::thread> ts;
  for (int k = 0; k < n; ++k) ts.emplace_back([&, k] { got[k] = c.complete(reqs[k], recs[k].sink(), nullptr); });
  for (auto& t : ts) t.join();
  for (int k = 0; k < n; ++k) {
    INFO("completion " << k);
    REQUIRE(got[k].has_value());
    CHECK(got[k]->token_ids == expected_answer(reqs[k]));
    CHECK(recs[k].indexes() == iota(6 + k));
  }
  CHECK(g.providers[0]->engine->running.most == 3);
}

TEST_CASE("prompts that find every slot of the one provider busy wait their turn", "[grid][gen]") {
  grid_fixture g;
  g.notes_from_threads();
  g.options.first_token_timeout_ms = 20000;
  auto& p = g.add();  // one slot
  p.engine->sleep_us_per_token = 3000;
  auto c = g.client();
  const int n = 3;
  std::vector<expected<llm::completion_stats>> got(n, status(error_kind::internal, "not run"));
  std::vector<recorder> recs(n);
  std::vector<std::thread> ts;
  for (int k = 0; k < n; ++k) ts.emplace_back([&, k] { got[k] = c.complete(request(5 + k), recs[k].sink(), nullptr); });
  for (auto& t : ts) t.join();
  for (int k = 0; k < n; ++k) {
    INFO("completion " << k);
    REQUIRE(got[k].has_value());
    CHECK(got[k]->token_ids == expected_answer(request(5 + k)));
  }
  CHECK(p.engine->running.most == 1);
  CHECK(p.host->running() == 0);
}

TEST_CASE("a provider lost mid-answer: the next bid continues where the stream stopped", "[grid][gen]") {
  grid_fixture g;
  g.add();
  generation_host_options dear;
  dear.price_generated = 11;
  g.add(dear);
  g.providers[0]->engine->sleep_us_per_token = 2000;
  auto c = g.client();
  recorder rec;
  rec.also = [&](const llm::generated_token& t) {
    if (t.index == 4) g.kill(0);
    return true;
  };
  auto r = request(16);
  auto st = c.complete(r, rec.sink(), nullptr);
  REQUIRE(st.has_value());
  CHECK(st->token_ids == expected_answer(r));
  CHECK(rec.indexes() == iota(16));  // each index once: none lost, none repeated
  REQUIRE(c.last_providers().size() == 2);
  const auto a = c.last_providers()[0];
  const auto b = c.last_providers()[1];
  CHECK(a.node == g.providers[0]->node());
  CHECK(b.node == g.providers[1]->node());
  CHECK(a.generated_tokens + b.generated_tokens == 16);
  CHECK(a.generated_tokens >= 5);
  CHECK(b.prompt_tokens == 5 + a.generated_tokens);  // the prompt plus the tokens so far
  CHECK(a.paid);  // paid for what it delivered, from its last frame's receipt
  CHECK(b.paid);
  CHECK(st->providers.size() == 2);
}

TEST_CASE("a provider that stalls is left after the stall timeout", "[grid][gen]") {
  grid_fixture g;
  g.add().engine->stall_after = 3;
  generation_host_options dear;
  dear.price_generated = 11;
  g.add(dear);
  auto c = g.client();
  recorder rec;
  auto r = request(10);
  auto st = c.complete(r, rec.sink(), nullptr);
  REQUIRE(st.has_value());
  CHECK(st->token_ids == expected_answer(r));
  CHECK(rec.indexes() == iota(10));
  CHECK(g.reputation.entry(g.providers[0]->node()).timed_out == 1);
  // The client's cancel stopped the stalled worker.
  for (int i = 0; i < 200 && !g.providers[0]->engine->saw_cancel; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(g.providers[0]->engine->saw_cancel);
}

TEST_CASE("garbage frames and over-long streams are cut off and disputed", "[grid][gen]") {
  for (int mode = 0; mode < 2; ++mode) {
    grid_fixture g;
    auto& bad = g.add();
    if (mode == 0) bad.engine->out_of_order = true;
    else bad.engine->ignore_limit = true;
    generation_host_options dear;
    dear.price_generated = 11;
    g.add(dear);
    auto c = g.client();
    recorder rec;
    auto r = request(8);
    auto st = c.complete(r, rec.sink(), nullptr);
    INFO("mode " << mode);
    REQUIRE(st.has_value());
    CHECK(st->token_ids == expected_answer(r));
    CHECK(rec.indexes() == iota(8));
    CHECK(g.reputation.entry(bad.node()).disagreed == 1);
    CHECK(g.reputation.score(bad.node()) < reputation_book::threshold);
  }
}

TEST_CASE("the client's cancel stops the provider's work at once", "[grid][gen]") {
  grid_fixture g;
  auto& p = g.add();
  p.engine->sleep_us_per_token = 1000;
  auto c = g.client();
  recorder rec;
  rec.also = [](const llm::generated_token& t) { return t.index < 2; };
  auto st = c.complete(request(500), rec.sink(), nullptr);
  REQUIRE(st.has_value());
  CHECK(st->reason == llm::finish_reason::cancelled);
  CHECK(rec.seen.size() == 3);
  for (int i = 0; i < 200 && p.host->running() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(p.host->running() == 0);
  CHECK(p.engine->steps < 100);
  CHECK(p.host->sessions() == 0);
  REQUIRE(c.last_providers().size() == 1);
  CHECK(c.last_providers()[0].paid);  // for the tokens it streamed
}

TEST_CASE("sessions are evicted when idle and when memory is wanted", "[grid][gen]") {
  generation_host_options o;
  o.idle_timeout_ms = 1000;
  o.max_memory_bytes = 7 + 1000 * 40;  // the folder plus 40 tokens of cache
  provider p(o);
  key32 client = keypair::generate().public_key;
  std::mutex mu;  // replies come from the host's worker too
  std::vector<net::message> got;
  auto reply = [&](const net::message& m) {
    std::lock_guard<std::mutex> lk(mu);
    got.push_back(m);
    return true;
  };
  auto last = [&] {
    std::lock_guard<std::mutex> lk(mu);
    return got.back();
  };
  auto open = [&](uint64_t new_tokens) {
    net::gen_open m;
    m.session = new_job_id();
    m.manifest = fake_manifest().hash;
    m.files = fake_manifest().files;
    m.prompt_tokens = 5;
    m.max_new_tokens = new_tokens;
    p.host->on_message(client, 1, m, reply);
    return m.session;
  };
  auto prompt = [&](const net::bytes16& s, int64_t n) {
    net::gen_prompt m;
    m.session = s;
    m.manifest = fake_manifest().hash;
    m.prompt_ids = {1, 2, 3, 4, 5};
    m.max_new_tokens = n;
    m.price_prompt = 1;
    m.price_generated = 10;
    p.host->on_message(client, 1, m, reply);
  };
  auto s1 = open(20);
  prompt(s1, 20);
  auto done = [&] {
    auto m = last();
    return std::holds_alternative<net::gen_tokens>(m) && std::get<net::gen_tokens>(m).done;
  };
  for (int i = 0; i < 400 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(done());
  for (int i = 0; i < 400 && p.host->running() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(p.host->sessions() == 1);
  CHECK(p.host->reserved_bytes() == 7 + 25 * 1000);  // the folder and the session's cache
  // Idle past the timeout: evicted, its memory released.
  p.clock += 1500;
  p.host->tick();
  CHECK(p.host->sessions() == 0);
  CHECK(p.host->counters().evictions == 1);
  CHECK(p.host->reserved_bytes() == 7);
  // A bid that needs the memory of an idle session evicts it.
  auto s2 = open(20);
  CHECK(std::holds_alternative<net::gen_bid>(got.back()));
  CHECK(p.host->reserved_bytes() == 7 + 25 * 1000);
  p.clock += 10;
  open(30);  // 35 tokens of cache: only room once s2 is gone
  CHECK(std::holds_alternative<net::gen_bid>(got.back()));
  CHECK(p.host->counters().evictions == 2);
  CHECK(p.host->sessions() == 1);
  CHECK(p.host->reserved_bytes() == 7 + 35 * 1000);
  open(60);  // more than all the memory: declined, and nothing evicted for it
  CHECK(std::holds_alternative<net::bid_decline>(got.back()));
  CHECK(p.host->sessions() == 1);
  got.clear();
  prompt(s2, 5);
  REQUIRE(got.size() == 1);
  CHECK(std::get<net::job_error>(got[0]).code == net::job_error_code::not_awarded);
}

TEST_CASE("a spot check catches a provider running another model", "[grid][gen]") {
  for (bool local : {true, false}) {
    INFO((local ? "scored here" : "scored by other providers"));
    grid_fixture g;
    auto& cheat = g.add();
    cheat.engine->variant = 1;  // a cheaper model: other tokens, other log-probs
    generation_host_options dear;
    dear.price_generated = 11;
    g.add(dear);
    if (!local) {  // a second scorer settles the first one's word against the answer's
      generation_host_options dearer;
      dearer.price_generated = 12;
      g.add(dearer);
    }
    g.options.spot_check_rate = 1;
    auto honest = std::make_shared<fake_gen_engine>();
    if (local)
      g.options.local_score = [honest](const std::vector<int32_t>& p, const std::vector<int32_t>& a) { return honest->score(p, a); };
    auto c = g.client();
    recorder rec;
    auto st = c.complete(request(8), rec.sink(), nullptr);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().kind() == error_kind::verification);
    CHECK(g.reputation.entry(cheat.node()).disagreed == 1);
    REQUIRE(!c.last_providers().empty());
    CHECK_FALSE(c.last_providers()[0].paid);
    if (!local) {
      REQUIRE(c.last_providers().size() == 3);
      CHECK(c.last_providers()[1].role == "score");
      CHECK(c.last_providers()[1].paid);
      CHECK(c.last_providers()[2].paid);
    }
  }
  // Only one other provider to score: its word against the answer's settles nothing. The answer
  // is withheld (not accepted, not paid) and neither side is condemned.
  {
    grid_fixture g;
    auto& cheat = g.add();
    cheat.engine->variant = 1;
    generation_host_options dear;
    dear.price_generated = 11;
    g.add(dear);
    g.options.spot_check_rate = 1;
    auto c = g.client();
    recorder rec;
    auto st = c.complete(request(8), rec.sink(), nullptr);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().kind() == error_kind::verification);
    CHECK(g.reputation.entry(cheat.node()).disagreed == 0);
    REQUIRE(!c.last_providers().empty());
    CHECK_FALSE(c.last_providers()[0].paid);
  }
  // An honest provider passes and earns a verified agreement.
  grid_fixture g;
  g.add();
  g.options.spot_check_rate = 1;
  auto honest = std::make_shared<fake_gen_engine>();
  g.options.local_score = [honest](const std::vector<int32_t>& p, const std::vector<int32_t>& a) { return honest->score(p, a); };
  auto c = g.client();
  recorder rec;
  REQUIRE(c.complete(request(8), rec.sink(), nullptr).has_value());
  CHECK(c.last_verification() == "spot-check");
  CHECK(g.reputation.entry(g.providers[0]->node()).agreed == 1);
}

TEST_CASE("redundancy 2 with greedy decoding compares two token streams", "[grid][gen]") {
  grid_fixture g;
  g.add();
  g.add();
  g.options.redundancy = 2;
  auto c = g.client();
  recorder rec;
  auto r = request(8);
  auto st = c.complete(r, rec.sink(), nullptr);
  REQUIRE(st.has_value());
  CHECK(c.last_verification() == "redundant");
  CHECK(rec.indexes() == iota(8));  // the second stream is not shown
  REQUIRE(c.last_providers().size() == 2);
  CHECK(c.last_providers()[0].paid);
  CHECK(c.last_providers()[1].paid);
  CHECK(c.last_providers()[1].role == "redundant");

  // One of them runs another model: the streams differ, scoring settles who is wrong.
  grid_fixture h;
  h.add();
  h.add().engine->variant = 2;
  h.options.redundancy = 2;
  auto honest = std::make_shared<fake_gen_engine>();
  h.options.local_score = [honest](const std::vector<int32_t>& p, const std::vector<int32_t>& a) { return honest->score(p, a); };
  auto c2 = h.client();
  recorder rec2;
  auto st2 = c2.complete(request(8), rec2.sink(), nullptr);
  // Whichever answered first: a cheat that answered is disputed (exit 4); an honest answer stands.
  if (st2.has_value()) CHECK(st2->token_ids == expected_answer(request(8)));
  else CHECK(st2.error().kind() == error_kind::verification);
}

TEST_CASE("stop strings cut the text and hold back what may become one", "[grid][gen]") {
  stop_text_filter f({"XYZ", "\n\n"});
  CHECK(f.push("abc") == "abc");
  CHECK(f.push("dX") == "d");
  CHECK(f.push("Y") == "");
  CHECK(f.push("q") == "XYq");
  CHECK(f.push("ok\n") == "ok");
  CHECK(f.push("\nrest") == "");
  CHECK(f.stopped());
  CHECK(f.finish() == "");
  stop_text_filter g({"END"});
  CHECK(g.push("the EN") == "the ");
  CHECK(g.finish() == "EN");
}
