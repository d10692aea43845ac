#include "actors/generation_client.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include <fmt/format.h>

#include "actors/client.h"
#include "actors/payment.h"
#include "actors/receipt_outbox.h"
#include "net/codec.h"
#include "net/identity.h"

namespace gpugrid::grid {

using steady = std::chrono::steady_clock;

// ------------------------------------------------------------------ payment

namespace {

using u128 = unsigned __int128;
constexpr u128 kMax128 = ~u128(0);

u128 mul_sat(u128 a, u128 b) { return a != 0 && b > kMax128 / a ? kMax128 : a * b; }
u128 add_sat(u128 a, u128 b) { return b > kMax128 - a ? kMax128 : a + b; }

// A price in the chain's token as wei, rounded to the nearest nano-token (as chain::price_wei).
u128 wei_of(double token_price) {
  if (!(token_price > 0) || !std::isfinite(token_price)) return 0;
  double nano = std::round(token_price * 1e9);
  if (nano > 9e18) nano = 9e18;
  return u128(static_cast<uint64_t>(nano)) * 1000000000u;
}

}  // namespace

unsigned __int128 tokens_wei(int64_t prompt, int64_t generated, const net::gen_chain_terms& t) {
  u128 sum = add_sat(mul_sat(static_cast<u128>(std::max<int64_t>(0, prompt)), ledger::word_value(t.price_prompt)),
                     mul_sat(static_cast<u128>(std::max<int64_t>(0, generated)), ledger::word_value(t.terms.price)));
  return sum == kMax128 ? sum : sum / 1000 + (sum % 1000 != 0);
}

// ------------------------------------------------------------------ inbox

namespace {

const net::bytes16* session_of(const net::message& m) {
  if (auto* b = std::get_if<net::gen_bid>(&m)) return &b->session;
  if (auto* t = std::get_if<net::gen_tokens>(&m)) return &t->session;
  if (auto* d = std::get_if<net::bid_decline>(&m)) return &d->job;
  if (auto* e = std::get_if<net::job_error>(&m)) return &e->job;
  return nullptr;
}

}  // namespace

bool generation_inbox::deliver(const key32& from, const net::message& m) {
  const net::bytes16* s = session_of(m);
  if (!s) return false;
  std::lock_guard<std::mutex> lk(mu_);
  auto it = open_.find(*s);
  if (it == open_.end() || it->second.provider != from) return false;
  events_.push_back({*s, from, m, it->second.waiter});
  cv_.notify_all();
  return true;
}

void generation_inbox::peer_down(const key32& from) {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& [s, o] : open_)
    if (o.provider == from) events_.push_back({s, from, std::nullopt, o.waiter});
  cv_.notify_all();
}

void generation_inbox::open(const net::bytes16& session, const key32& provider, uint64_t waiter) {
  std::lock_guard<std::mutex> lk(mu_);
  open_[session] = {provider, waiter};
}

void generation_inbox::close(const net::bytes16& session) {
  std::lock_guard<std::mutex> lk(mu_);
  open_.erase(session);
  events_.erase(std::remove_if(events_.begin(), events_.end(), [&](const event& e) { return e.session == session; }),
                events_.end());
}

std::optional<generation_inbox::event> generation_inbox::wait(steady::time_point until, uint64_t waiter) {
  std::unique_lock<std::mutex> lk(mu_);
  auto mine = events_.end();
  auto find = [&] {
    mine = std::find_if(events_.begin(), events_.end(), [&](const event& e) { return e.waiter == waiter; });
    return mine != events_.end();
  };
  if (!cv_.wait_until(lk, until, find)) return std::nullopt;
  event e = std::move(*mine);
  events_.erase(mine);
  return e;
}

// ------------------------------------------------------------------ stop strings

std::string stop_text_filter::push(const std::string& piece) {
  if (stopped_) return "";
  held_ += piece;
  size_t cut = std::string::npos;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    size_t at = held_.find(s);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of a stop string.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string stop_text_filter::finish() {
  if (stopped_) return "";
  std::string out;
  out.swap(held_);
  return out;
}

// ------------------------------------------------------------------ the client

struct generation_client::segment {
  size_t peer = 0;                     // index into the peers of this completion
  net::bytes16 session{};
  int64_t first_index = 0;             // answer index of its first token
  std::vector<int32_t> prompt;         // what it was given: prompt + answer before it
  std::vector<net::gen_token> tokens;  // what it delivered (checked)
  net::gen_stream_digest digest;
  std::optional<ledger::receipt> receipt;  // the latest valid one
  sig64 signature{};                   // over result_statement(session, digest so far)
  ledger::digest32 signed_digest{};
  bool signed_any = false;
  int64_t started_ms = 0;
  std::string role = "answer";
  bool score_only = false;             // a teacher-forced scoring, not generation
  bool disputed = false;               // cut off for a bad frame: not paid
  // Paid on a chain: the bid's terms, what this session's vouchers added, and the last one
  // (with `price` that sum, as the ledger entry carries it).
  std::optional<net::gen_chain_terms> terms;
  unsigned __int128 paid = 0;
  std::optional<ledger::voucher_claim> last_voucher;
};

namespace {

struct offer {
  size_t peer = 0;
  net::bytes16 session{};
  net::gen_bid bid;
  double cost = 0;
  double reputation = 0.5;
};

bool finite_logprob(float lp) { return std::isfinite(lp) && lp <= 1e-3f; }

double receipt_cost(const ledger::receipt& r) { return static_cast<double>(r.price_micros) / 1e6; }

}  // namespace

generation_client::generation_client(keypair self, folder_manifest model, std::shared_ptr<const llm::tokenizer> tok,
                                     int64_t vocab_size, std::shared_ptr<generation_inbox> inbox,
                                     std::function<std::vector<gen_peer>()> peers, generation_client_options options)
    : self_(self), model_(std::move(model)), tok_(std::move(tok)), vocab_(vocab_size), inbox_(std::move(inbox)),
      peers_(std::move(peers)), options_(std::move(options)) {}

expected<llm::completion_stats> generation_client::complete(const llm::completion_request& request, const llm::token_sink& sink,
                                                            const llm::cancel_check& cancelled) {
  auto note = [&](const std::string& s) {
    if (options_.note) options_.note(s);
  };
  // What this completion did, published for last_providers() however it ends.
  std::vector<generation_provider_use> used;
  std::string verification = "none";
  struct publish {
    generation_client* c;
    std::vector<generation_provider_use>& used;
    std::string& verification;
    ~publish() {
      std::lock_guard<std::mutex> lk(c->mu_);
      c->last_used_ = std::move(used);
      c->last_verification_ = std::move(verification);
    }
  } published{this, used, verification};
  const uint64_t waiter = next_waiter_++;
  auto t0 = steady::now();
  const int64_t max_new = request.stop.max_new_tokens;
  if (request.prompt_ids.empty()) return status(error_kind::invalid_input, "the prompt is empty");
  if (static_cast<int64_t>(request.generated_ids.size()) > max_new)
    return status(error_kind::invalid_input, "the answer so far is longer than max_new_tokens");

  // 1. Open a session with every trusted provider and collect bids.
  std::vector<gen_peer> peers = peers_();
  std::vector<offer> offers;
  std::vector<std::string> declines;
  std::map<net::bytes16, size_t> pending;  // session -> peer
  std::vector<net::bytes16> opened;
  for (size_t i = 0; i < peers.size(); ++i) {
    std::string who = node_hex(peers[i].key);
    if (options_.reputation && !options_.reputation->trusted(who)) continue;
    net::gen_open o;
    o.session = new_job_id();
    o.manifest = model_.hash;
    o.files = model_.files;
    o.prompt_tokens = request.prompt_ids.size() + request.generated_ids.size();
    o.max_new_tokens = static_cast<uint64_t>(std::max<int64_t>(0, max_new));
    o.max_price_prompt = options_.max_price_prompt;
    o.max_price_generated = options_.max_price_generated;
    inbox_->open(o.session, peers[i].key, waiter);
    opened.push_back(o.session);
    if (!peers[i].send(o)) {
      inbox_->close(o.session);
      continue;
    }
    pending[o.session] = i;
  }
  auto close_all = [&] {
    for (const auto& s : opened) inbox_->close(s);
  };
  auto bid_deadline = t0 + std::chrono::milliseconds(options_.bid_window_ms);
  while (!pending.empty()) {
    auto ev = inbox_->wait(bid_deadline, waiter);
    if (!ev) break;
    auto it = pending.find(ev->session);
    if (it == pending.end()) continue;
    size_t pi = it->second;
    pending.erase(it);
    std::string who = short_hex(peers[pi].key);
    if (!ev->msg) {
      declines.push_back(who + ": went away");
    } else if (auto* b = std::get_if<net::gen_bid>(&*ev->msg)) {
      if (!net::verify_gen_bid(*b, peers[pi].key)) {
        declines.push_back(who + ": its bid's signature does not verify");
        if (options_.reputation) options_.reputation->record(node_hex(peers[pi].key), outcome::failed);
        continue;
      }
      if ((options_.max_price_prompt >= 0 && b->price_prompt > options_.max_price_prompt + 1e-12) ||
          (options_.max_price_generated >= 0 && b->price_generated > options_.max_price_generated + 1e-12)) {
        declines.push_back(who + ": bid over the price limit");
        continue;
      }
      if (b->terms && !options_.payer) {
        declines.push_back(who + ": it is paid on a chain; this client has no chain configured (GPUGRID_CHAIN_RPC, "
                                 "chain.toml)");
        continue;
      }
      // The wei it asks must be the prices it bid (and its limits), rounded to a nano-token.
      if (b->terms && (ledger::word_value(b->terms->terms.price) > wei_of(b->price_generated) ||
                       ledger::word_value(b->terms->price_prompt) > wei_of(b->price_prompt))) {
        declines.push_back(who + ": its chain terms ask more wei than its bid's prices");
        continue;
      }
      offer o;
      o.peer = pi;
      o.session = ev->session;
      o.bid = *b;
      o.cost = (static_cast<double>(request.prompt_ids.size()) * b->price_prompt + static_cast<double>(max_new) * b->price_generated) / 1000;
      o.reputation = options_.reputation ? options_.reputation->score(node_hex(peers[pi].key)) : 0.5;
      offers.push_back(o);
    } else if (auto* d = std::get_if<net::bid_decline>(&*ev->msg)) {
      declines.push_back(fmt::format("{}: {}", who, d->detail.empty() ? net::message_name(*ev->msg) : d->detail));
    } else if (auto* e = std::get_if<net::job_error>(&*ev->msg)) {
      declines.push_back(fmt::format("{}: {}", who, e->message));
    }
  }
  for (const auto& [s, pi] : pending) declines.push_back(short_hex(peers[pi].key) + ": no bid in time");
  if (offers.empty()) {
    close_all();
    std::string why = declines.empty() ? "no provider is reachable" : fmt::format("{}", fmt::join(declines, "; "));
    return status(error_kind::no_provider, "no provider could generate: " + why);
  }
  {
    thread_local std::mt19937_64 rng(std::random_device{}());
    std::shuffle(offers.begin(), offers.end(), rng);  // equal offers spread the load
    std::stable_sort(offers.begin(), offers.end(), [](const offer& a, const offer& b) {
      if (std::abs(a.cost - b.cost) > 1e-12) return a.cost < b.cost;
      if (a.bid.tokens_per_s != b.bid.tokens_per_s) return a.bid.tokens_per_s > b.bid.tokens_per_s;
      return a.reputation > b.reputation;
    });
  }
  std::set<size_t> used_offers;
  auto t_bids = steady::now();

  // Sends the folder's files to a provider that lacks them.
  auto upload = [&](const offer& o, bool force) -> status {
    if (o.bid.model_cached && !force) return status::ok();
    const gen_peer& p = peers[o.peer];
    if (!p.upload) return status(error_kind::no_provider, "the provider lacks the model and takes no uploads");
    note(fmt::format("sending the model folder ({} bytes) to {}", model_.total_bytes, short_hex(p.key)));
    for (const auto& f : model_.files) {
      std::unique_lock<std::mutex> lk(mu_);  // read once, by the first completion that needs it
      auto& bytes = file_bytes_[f.hash];
      if (!bytes) {
        std::ifstream in(model_.dir + "/" + f.name, std::ios::binary);
        std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (!in.good() && !in.eof()) return status(error_kind::invalid_input, model_.dir + "/" + f.name + ": cannot be read");
        if (data.size() != f.size) return status(error_kind::invalid_input, model_.dir + "/" + f.name + ": changed since it was hashed");
        bytes = std::make_shared<const std::string>(std::move(data));
      }
      std::shared_ptr<const std::string> file = bytes;
      lk.unlock();
      GG_RETURN_IF_ERROR(p.upload(o.session, f.hash, file));
    }
    return status::ok();
  };

  auto make_prompt = [&](const offer& o, const std::vector<int32_t>& prompt, const std::vector<int32_t>& so_far, bool score) {
    net::gen_prompt p;
    p.session = o.session;
    p.manifest = model_.hash;
    p.prompt_ids = prompt;
    p.generated_ids = so_far;
    const auto& s = request.sampling;
    p.sampling = {s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty, s.seed};
    p.max_new_tokens = score ? static_cast<int64_t>(so_far.size()) : max_new;
    p.stop_strings = request.stop.stop_strings;
    p.stop_token_ids = request.stop.stop_token_ids;
    p.ignore_eos = request.stop.ignore_eos;
    p.price_prompt = o.bid.price_prompt;
    p.price_generated = o.bid.price_generated;
    p.started_ms = unix_ms();
    p.score_only = score;
    return p;
  };

  // A receipt is countersigned only when it states what the client saw.
  auto receipt_ok = [&](const segment& sg, const offer& o, const ledger::receipt& r) {
    ledger::token_terms t = ledger::token_terms::unpack(r.input_digest);
    return r.kind == ledger::receipt_kind::generation && r.job_id == sg.session && r.client_key == self_.public_key &&
           r.provider_key == peers[o.peer].key && r.model_hash == model_.hash &&
           t.prompt_tokens == static_cast<int64_t>(sg.prompt.size() + (sg.score_only ? sg.tokens.size() : 0)) &&
           t.generated_tokens == static_cast<int64_t>(sg.score_only ? 0 : sg.tokens.size()) &&
           t.prompt_micros_per_1k == static_cast<int64_t>(std::llround(o.bid.price_prompt * 1e6)) &&
           t.generated_micros_per_1k == static_cast<int64_t>(std::llround(o.bid.price_generated * 1e6)) &&
           r.price_micros == t.price_micros() && r.output_digest == sg.digest.finish(sg.session);  // signature: at payment
  };
  auto dispute = [&](const segment& sg, const offer& o, const std::string& why) {
    std::string who = node_hex(peers[o.peer].key);
    note(fmt::format("provider {} {}; disputed", short_hex(peers[o.peer].key), why));
    if (options_.reputation) options_.reputation->record(who, outcome::disagreed);
    if (!sg.signed_any ||
        !ledger::verify_signature(peers[o.peer].key, ledger::result_statement(sg.session, sg.signed_digest), sg.signature))
      return;  // no signed evidence
    ledger::receipt d;
    d.kind = ledger::receipt_kind::dispute;
    d.job_id = sg.session;
    d.client_key = self_.public_key;
    d.provider_key = peers[o.peer].key;
    d.model_hash = model_.hash;
    d.output_digest = sg.signed_digest;
    d.provider_sig = sg.signature;
    d.started_ms = sg.started_ms;
    d.finished_ms = unix_ms();
    ledger::sign_as_client(d, self_.secret_key);
    if (options_.ledger && ledger::verify_receipt(d).is_ok()) (void)options_.ledger->append(d);
  };

  // On a chain: a voucher that raises what segment `sg` has paid to `target` wei (none when it
  // has paid that already). The payer persists the channel's new amount before signing.
  std::string pay_error;
  auto pay_to = [&](const offer& o, segment& sg, unsigned __int128 target) -> std::optional<ledger::voucher_claim> {
    pay_error.clear();
    if (!sg.terms || !options_.payer || target <= sg.paid) return std::nullopt;
    ledger::chain_terms t = sg.terms->terms;
    t.price = ledger::word_of(target - sg.paid);
    auto v = options_.payer->pay(peers[o.peer].key, t);
    if (!v) {
      pay_error = v.error().message();
      return std::nullopt;
    }
    sg.paid += ledger::word_value(v->price);
    ledger::voucher_claim filed = *v;
    filed.price = ledger::word_of(sg.paid);
    sg.last_voucher = filed;
    return *v;
  };
  // Held from making a voucher until it is sent (actors/payment.h: job_payer::send_order).
  auto in_payment_order = [&](const segment& sg) {
    return sg.terms && options_.payer ? std::unique_lock<std::mutex>(options_.payer->send_order()) : std::unique_lock<std::mutex>();
  };
  auto prompt_count = [](const net::gen_prompt& p) { return static_cast<int64_t>(p.prompt_ids.size() + p.generated_ids.size()); };

  // Runs one prompt on one offer. Tokens that pass the checks go to `on_token`, which returns
  // false to stop. Returns how it ended.
  enum class ended { done, failed, stalled, garbage, stopped, input_error };
  std::string last_error;
  auto stream = [&](const offer& o, segment& sg, const net::gen_prompt& unpaid, int64_t limit,
                    const std::function<bool(const net::gen_token&)>& on_token, llm::finish_reason* reason) -> ended {
    const gen_peer& peer = peers[o.peer];
    net::gen_prompt p = unpaid;
    sg.terms = o.bid.terms;
    sg.peer = o.peer;
    sg.session = o.session;
    sg.first_index = p.score_only ? 0 : static_cast<int64_t>(p.generated_ids.size());
    sg.prompt = p.prompt_ids;
    if (!p.score_only) sg.prompt.insert(sg.prompt.end(), p.generated_ids.begin(), p.generated_ids.end());
    else sg.prompt = p.prompt_ids;
    sg.started_ms = unix_ms();
    sg.score_only = p.score_only;
    if (status st = upload(o, false); !st.is_ok()) {
      last_error = st.message();
      return st.kind() == error_kind::invalid_input ? ended::input_error : ended::failed;
    }
    auto in_order = in_payment_order(sg);
    if (sg.terms) {  // the prompt's tokens are paid with it
      p.voucher = pay_to(o, sg, tokens_wei(prompt_count(p), 0, *sg.terms));
      if (!pay_error.empty()) {
        last_error = "cannot pay it: " + pay_error;
        return ended::failed;
      }
    }
    bool sent = peer.send(p);
    if (in_order) in_order.unlock();
    if (!sent) {
      last_error = "cannot send to the provider";
      return ended::failed;
    }
    p.voucher.reset();  // paid: sent again (the files were missing), it costs nothing more
    int64_t paid_tokens = 0;  // generated tokens the vouchers sent cover
    auto deadline = steady::now() + std::chrono::milliseconds(options_.first_token_timeout_ms);
    bool resent = false;
    while (true) {
      if (cancelled && cancelled()) {
        *reason = llm::finish_reason::cancelled;
        return ended::stopped;
      }
      // Wake up now and then to look at the cancel check.
      auto ev = inbox_->wait(std::min(deadline, steady::now() + std::chrono::milliseconds(50)), waiter);
      if (!ev) {
        if (steady::now() >= deadline) {
          last_error = fmt::format("sent nothing for {} ms", sg.tokens.empty() ? options_.first_token_timeout_ms : options_.stall_timeout_ms);
          return ended::stalled;
        }
        continue;
      }
      if (ev->session != o.session) continue;  // a late bid or decline of another session
      if (!ev->msg) {
        last_error = "went away";
        return ended::failed;
      }
      if (auto* e = std::get_if<net::job_error>(&*ev->msg)) {
        if (e->code == net::job_error_code::model_missing && !resent && sg.tokens.empty()) {
          // The provider lost files since it bid (its store is bounded): send them once more.
          resent = true;
          if (upload(o, true).is_ok() && peer.send(p)) continue;
        }
        last_error = fmt::format("{}: {}", net::to_string(e->code), e->message);
        return e->code == net::job_error_code::bad_input ? ended::input_error : ended::failed;
      }
      auto* f = std::get_if<net::gen_tokens>(&*ev->msg);
      if (!f) continue;
      deadline = steady::now() + std::chrono::milliseconds(options_.stall_timeout_ms);
      // Check the whole frame before anything of it is used.
      net::gen_stream_digest d = sg.digest;
      int64_t next = sg.first_index + static_cast<int64_t>(sg.tokens.size());
      std::string bad;
      for (const auto& t : f->tokens) {
        if (t.index != next) bad = fmt::format("sent token index {} where {} was due", t.index, next);
        else if (t.id < 0 || (vocab_ > 0 && t.id >= vocab_)) bad = fmt::format("sent token id {} outside the vocabulary", t.id);
        else if (!finite_logprob(t.logprob)) bad = fmt::format("sent log-prob {} for token {}", t.logprob, t.index);
        else if (next - sg.first_index >= limit) bad = fmt::format("sent more than the {} tokens asked", limit);
        else if (p.score_only && t.id != p.generated_ids[static_cast<size_t>(t.index)]) bad = "scored other tokens than asked";
        if (!bad.empty()) break;
        d.add(t);
        ++next;
      }
      // Signatures are checked when they are needed (a dispute, a payment), not per token: two
      // Ed25519 verifications a token would cost more than a small model's decode step.
      ledger::digest32 claimed = d.finish(o.session);
      if (bad.empty() && claimed != f->stream_digest) bad = "sent a frame whose stream digest does not match its tokens";
      if (!bad.empty()) {
        // A bad frame under a valid signature is evidence.
        if (ledger::verify_signature(peer.key, ledger::result_statement(o.session, f->stream_digest), f->signature)) {
          sg.signature = f->signature;
          sg.signed_digest = f->stream_digest;
          sg.signed_any = true;
        }
        last_error = bad;
        return ended::garbage;
      }
      sg.signature = f->signature;
      sg.signed_digest = f->stream_digest;
      sg.signed_any = true;  // checked in dispute()
      bool go_on = true;
      for (const auto& t : f->tokens) {
        sg.tokens.push_back(t);
        sg.digest.add(t);
        if (go_on && !on_token(t)) go_on = false;
      }
      if (f->receipt && receipt_ok(sg, o, *f->receipt)) sg.receipt = *f->receipt;
      else if (f->receipt) note(fmt::format("provider {} sent a receipt that does not match its tokens", short_hex(peer.key)));
      // On a chain: the tokens received are paid as they come, pay_every_tokens at a time (the
      // last ones when the answer is accepted), so the provider's credit is never used up.
      const int64_t got = p.score_only ? 0 : static_cast<int64_t>(sg.tokens.size());
      if (sg.terms && !f->done && got - paid_tokens >= std::max<int64_t>(1, options_.pay_every_tokens)) {
        auto in_order = in_payment_order(sg);
        auto v = pay_to(o, sg, tokens_wei(prompt_count(p), got, *sg.terms));
        if (!pay_error.empty()) {
          last_error = "cannot pay it: " + pay_error;
          return ended::failed;
        }
        if (v && !peer.send(net::gen_pay{o.session, *v})) {
          last_error = "cannot send to the provider";
          return ended::failed;
        }
        paid_tokens = got;
      }
      if (!go_on) {
        *reason = llm::finish_reason::cancelled;
        return ended::stopped;
      }
      if (f->done) {
        *reason = static_cast<llm::finish_reason>(std::min<uint8_t>(f->finish_reason, static_cast<uint8_t>(llm::finish_reason::cancelled)));
        return ended::done;
      }
    }
  };

  // 2. The answer, failing over from bid to bid.
  llm::completion_stats stats;
  stats.prompt_tokens = static_cast<int64_t>(request.prompt_ids.size());
  std::vector<int32_t> answer = request.generated_ids;  // ids so far, the continuation included
  std::vector<segment> segments;
  std::map<size_t, size_t> segment_offer;  // segment -> offer index
  llm::decode_stream text(*tok_);
  for (int32_t id : request.generated_ids) (void)text.step(id);
  stop_text_filter filter(request.stop.stop_strings);
  bool user_stopped = false;
  bool first = true;
  auto on_token = [&](const net::gen_token& t) {
    answer.push_back(t.id);
    if (first) {
      stats.time_to_first_token_ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
      first = false;
    }
    llm::generated_token g;
    g.id = t.id;
    g.index = t.index;
    g.logprob = t.logprob;
    g.text = filter.push(text.step(t.id));
    stats.text += g.text;
    if (!sink(g)) {
      user_stopped = true;
      return false;
    }
    return !filter.stopped();
  };
  llm::finish_reason reason = llm::finish_reason::none;
  size_t next_offer = 0;
  auto first_decode = steady::now();
  int64_t decoded_after_first = 0;
  while (reason == llm::finish_reason::none) {
    if (next_offer >= offers.size()) break;
    size_t oi = next_offer++;
    const offer& o = offers[oi];
    used_offers.insert(oi);
    segments.emplace_back();
    segment& sg = segments.back();
    segment_offer[segments.size() - 1] = oi;
    int64_t before = static_cast<int64_t>(answer.size());
    auto p = make_prompt(o, request.prompt_ids, answer, false);
    llm::finish_reason r = llm::finish_reason::none;
    ended how = stream(o, sg, p, max_new - before, on_token, &r);
    std::string who = node_hex(peers[o.peer].key);
    if (how == ended::done) {
      reason = r;
    } else if (how == ended::stopped) {
      reason = filter.stopped() ? llm::finish_reason::stop_string : llm::finish_reason::cancelled;
      (void)peers[o.peer].send(net::cancel{o.session, user_stopped || reason == llm::finish_reason::cancelled ? "cancelled" : "stop string"});
    } else {
      (void)peers[o.peer].send(net::cancel{o.session, "failover"});
      if (how == ended::input_error) {
        close_all();
        return status(error_kind::invalid_input, last_error);
      }
      if (how == ended::garbage) {
        dispute(sg, o, last_error);
        sg.disputed = true;
      } else {
        note(fmt::format("provider {} {}; {}", short_hex(peers[o.peer].key), last_error,
                         next_offer < offers.size() ? "continuing on the next bid" : "no bid is left"));
        if (options_.reputation) options_.reputation->record(who, how == ended::stalled ? outcome::timed_out : outcome::failed);
      }
      if (static_cast<int64_t>(answer.size()) >= max_new) reason = llm::finish_reason::length;
    }
    if (!sg.tokens.empty() && sg.tokens.size() > 1) decoded_after_first += static_cast<int64_t>(sg.tokens.size());
  }
  if (reason == llm::finish_reason::none) {
    close_all();
    return status(error_kind::no_provider, fmt::format("every provider that bid failed before the answer was complete ({} of at most {} tokens generated): {}",
                                                       answer.size(), max_new, last_error));
  }
  stats.text += filter.finish();
  if (filter.stopped()) reason = llm::finish_reason::stop_string;
  stats.reason = reason;
  stats.token_ids.assign(answer.begin() + static_cast<std::ptrdiff_t>(request.generated_ids.size()), answer.end());
  stats.generated_tokens = static_cast<int64_t>(stats.token_ids.size());
  (void)first_decode;
  (void)decoded_after_first;

  // 3. Verification.
  std::vector<bool> segment_bad(segments.size(), false);
  std::vector<bool> segment_checked(segments.size(), false);
  std::vector<bool> segment_withheld(segments.size(), false);  // disputed by one scorer, not settled
  status verdict = status::ok();
  auto next_free_offer = [&]() -> std::optional<size_t> {
    for (size_t i = 0; i < offers.size(); ++i)
      if (!used_offers.count(i)) {
        used_offers.insert(i);
        return i;
      }
    return std::nullopt;
  };
  std::vector<std::pair<size_t, segment>> extra;  // verification work by other providers (paid too)
  // Teacher-forced log-probs of `answer_ids` after `prompt`, here or by another provider.
  auto score = [&](const std::vector<int32_t>& prompt, const std::vector<int32_t>& ids) -> expected<std::vector<float>> {
    if (options_.local_score) return options_.local_score(prompt, ids);
    while (auto oi = next_free_offer()) {
      segment sc;
      sc.role = "score";
      auto p = make_prompt(offers[*oi], prompt, ids, true);
      std::vector<float> lps;
      llm::finish_reason r;
      ended how = stream(offers[*oi], sc, p, static_cast<int64_t>(ids.size()),
                         [&](const net::gen_token& t) {
                           lps.push_back(t.logprob);
                           return true;
                         },
                         &r);
      (void)peers[offers[*oi].peer].send(net::cancel{offers[*oi].session, "close"});
      extra.push_back({*oi, std::move(sc)});
      if (how == ended::done && lps.size() == ids.size()) return lps;
      note(fmt::format("provider {} could not score the answer: {}", short_hex(peers[offers[*oi].peer].key), last_error));
    }
    return status(error_kind::no_provider, "no provider is left to score the answer");
  };
  // The first step whose streamed log-prob is off the scored one, if any.
  auto first_mismatch = [&](const std::vector<net::gen_token>& tokens, const std::vector<float>& lps) -> std::optional<size_t> {
    for (size_t i = 0; i < tokens.size() && i < lps.size(); ++i) {
      float a = tokens[i].logprob, b = lps[i];
      if (!(std::abs(a - b) <= options_.logprob_tolerance * (1 + std::abs(b) / 10))) return i;
    }
    return std::nullopt;
  };
  // Scores a segment and disputes its provider when the scores disagree. A provider's scores
  // alone never condemn another: when a providing scorer disagrees, a second one settles it,
  // and the side it contradicts is disputed (the first scorer, when the second agrees with the
  // stream). Local scoring is trusted as it is.
  auto check_segment = [&](size_t si) -> expected<bool> {
    const segment& sg = segments[si];
    if (sg.tokens.empty()) return true;
    std::vector<int32_t> ids;
    for (const auto& t : sg.tokens) ids.push_back(t.id);
    auto lps = score(sg.prompt, ids);
    if (!lps) return lps.error();
    std::optional<size_t> bad = first_mismatch(sg.tokens, *lps);
    if (!bad) return true;
    if (!options_.local_score && !extra.empty()) {
      size_t first_scorer = extra.size() - 1;
      auto again = score(sg.prompt, ids);
      if (!again)
        // One word against another: the answer is not accepted, and neither side is condemned.
        return status(error_kind::verification,
                      fmt::format("provider {}'s scores disagree with provider {}'s answer and no other provider could settle it ({}); "
                                  "the answer is withheld and not paid",
                                  short_hex(peers[extra[first_scorer].second.peer].key), short_hex(peers[sg.peer].key),
                                  again.error().message()));
      if (!first_mismatch(sg.tokens, *again)) {
        const segment& liar = extra[first_scorer].second;
        dispute(liar, offers[extra[first_scorer].first],
                fmt::format("scored token {} at {:.4f}, where the answer and another scorer give {:.4f}", sg.tokens[*bad].index,
                            (*lps)[*bad], sg.tokens[*bad].logprob));
        extra[first_scorer].second.disputed = true;
        return true;
      }
      lps = std::move(again);
      bad = first_mismatch(sg.tokens, *lps);
    }
    dispute(sg, offers[segment_offer[si]],
            fmt::format("streamed token {} with log-prob {:.4f}, but scoring gives {:.4f}", sg.tokens[*bad].index,
                        sg.tokens[*bad].logprob, (*lps)[*bad]));
    return false;
  };
  // Whether a redundant stream's log-probs match the answer's, step by step.
  auto same_logprobs = [&](const segment& other) {
    std::map<int64_t, float> mine;
    for (const auto& sg : segments)
      for (const auto& t : sg.tokens) mine[t.index] = t.logprob;
    for (const auto& t : other.tokens) {
      auto it = mine.find(t.index);
      if (it == mine.end()) continue;
      float a = t.logprob, b = it->second;
      if (!(std::abs(a - b) <= options_.logprob_tolerance * (1 + std::abs(b) / 10))) return false;
    }
    return true;
  };
  bool greedy = request.sampling.temperature <= 0;
  if (options_.redundancy >= 2 && greedy && stats.generated_tokens > 0 && reason != llm::finish_reason::cancelled) {
    verification = "redundant";
    std::optional<size_t> oi = next_free_offer();
    if (!oi) {
      note("--redundancy 2: no second provider bid; the answer is not cross-checked");
      verification = "none";
    } else {
      segment second;
      second.role = "redundant";
      auto p = make_prompt(offers[*oi], request.prompt_ids, request.generated_ids, false);
      std::vector<int32_t> ids;
      llm::finish_reason r;
      ended how = stream(offers[*oi], second, p, max_new - static_cast<int64_t>(request.generated_ids.size()),
                         [&](const net::gen_token& t) {
                           ids.push_back(t.id);
                           return ids.size() < stats.token_ids.size();
                         },
                         &r);
      (void)peers[offers[*oi].peer].send(net::cancel{offers[*oi].session, "close"});
      if (how == ended::garbage) {
        dispute(second, offers[*oi], last_error);
        second.disputed = true;
      }
      extra.push_back({*oi, std::move(second)});
      if (how != ended::done && how != ended::stopped) {
        note(fmt::format("--redundancy 2: the second provider failed ({}); the answer is not cross-checked", last_error));
        verification = "none";
      } else if (ids == stats.token_ids && same_logprobs(extra.back().second)) {
        for (size_t si = 0; si < segments.size(); ++si) segment_checked[si] = true;
        extra.back().second.role = "redundant";
      } else {
        note("the two providers' token streams differ; scoring the answer to settle it");
        size_t second_at = extra.size() - 1;  // `extra` grows while scoring: keep the index
        bool answer_holds = true;
        for (size_t si = 0; si < segments.size(); ++si) {
          auto ok = check_segment(si);
          if (!ok) {
            verdict = status(error_kind::verification, "the providers' token streams differ and the answer could not be scored: " + ok.error().message());
            answer_holds = false;
            break;
          }
          segment_checked[si] = *ok;
          segment_bad[si] = !*ok;
          answer_holds = answer_holds && *ok;
        }
        // The answer holds, so the second stream is the one that left greedy decoding: score it
        // up to where it parted and dispute it when its log-probs were made up or its token
        // there is less likely than the answer's (an exact tie is no fault).
        if (answer_holds) {
          size_t d = 0;
          while (d < ids.size() && d < stats.token_ids.size() && ids[d] == stats.token_ids[d]) ++d;
          bool parted = d < ids.size() && d < stats.token_ids.size();
          if (!parted) d = ids.empty() ? 0 : ids.size() - 1;  // same tokens, other log-probs: score them all
          if (!ids.empty()) {
            std::vector<int32_t> upto(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(d) + 1);
            auto lps = score(extra[second_at].second.prompt, upto);
            if (!lps || lps->size() < upto.size()) {
              note("could not score the second provider's stream: " + (lps ? std::string("too few scores") : lps.error().message()));
            } else {
              const segment& sec = extra[second_at].second;
              int64_t at = static_cast<int64_t>(request.generated_ids.size() + d);
              std::optional<float> answer_lp;
              for (const auto& sg : segments)
                for (const auto& t : sg.tokens)
                  if (t.index == at) answer_lp = t.logprob;
              std::string why;
              std::vector<net::gen_token> upto_tokens(sec.tokens.begin(), sec.tokens.begin() + static_cast<std::ptrdiff_t>(std::min(d + 1, sec.tokens.size())));
              if (auto i = first_mismatch(upto_tokens, *lps))
                why = fmt::format("streamed token {} with log-prob {:.4f}, but scoring gives {:.4f}", upto_tokens[*i].index,
                                  upto_tokens[*i].logprob, (*lps)[*i]);
              float mine = (*lps)[d];
              if (why.empty() && parted && answer_lp && mine < *answer_lp - options_.logprob_tolerance * (1 + std::abs(*answer_lp) / 10))
                why = fmt::format("chose token {} at step {} (log-prob {:.4f}) where greedy decoding takes token {} ({:.4f})",
                                  ids[d], at, mine, stats.token_ids[d], *answer_lp);
              if (!why.empty()) {
                dispute(sec, offers[extra[second_at].first], why);
                extra[second_at].second.disputed = true;
              }
            }
          }
        }
      }
    }
  } else if (stats.generated_tokens > 0) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    for (size_t si = 0; si < segments.size(); ++si) {
      if (segments[si].tokens.empty()) continue;
      std::string who = node_hex(peers[segments[si].peer].key);
      double rate = options_.reputation ? options_.reputation->spot_check_rate(who, options_.spot_check_rate) : options_.spot_check_rate;
      if (rate <= 0 || std::uniform_real_distribution<double>(0, 1)(rng) >= rate) continue;
      verification = "spot-check";
      auto ok = check_segment(si);
      if (!ok && ok.error().kind() == error_kind::verification) {  // unsettled: withheld, no one blamed
        verdict = ok.error();
        segment_withheld[si] = true;
        continue;
      }
      if (!ok) {
        note("skipped the spot check: " + ok.error().message());
        continue;
      }
      segment_checked[si] = *ok;
      segment_bad[si] = !*ok;
    }
  }
  for (size_t si = 0; si < segments.size(); ++si) {
    if (segment_bad[si]) verdict = status(error_kind::verification,
                                          fmt::format("provider {}'s tokens fail verification; it is disputed and not paid",
                                                      short_hex(peers[segments[si].peer].key)));
    else if (segment_checked[si] && options_.reputation) options_.reputation->record(node_hex(peers[segments[si].peer].key), outcome::agreed);
  }

  // 4. Receipts: every provider is paid for the tokens it delivered, once.
  std::vector<std::pair<provider_actor, ledger::receipt>> to_send;
  auto pay = [&](segment& sg, const offer& o, bool bad, bool checked) {
    generation_provider_use u;
    u.node = node_hex(peers[o.peer].key);
    u.url = peers[o.peer].url;
    u.price_prompt = o.bid.price_prompt;
    u.price_generated = o.bid.price_generated;
    u.prompt_tokens = static_cast<int64_t>(sg.prompt.size() + (sg.score_only ? sg.tokens.size() : 0));
    u.generated_tokens = sg.score_only ? 0 : static_cast<int64_t>(sg.tokens.size());
    u.verified = checked;
    u.role = sg.role;
    if (sg.receipt && !ledger::verify_provider_signature(*sg.receipt).is_ok()) {
      note(fmt::format("provider {} signed its receipt wrongly; not paid", short_hex(peers[o.peer].key)));
      sg.receipt.reset();
    }
    if (sg.receipt && !bad && !sg.disputed) {
      ledger::receipt rc = *sg.receipt;
      u.cost = receipt_cost(rc);
      if (sg.terms) {  // the rest of what its receipt states, before the receipt goes
        ledger::token_terms tt = ledger::token_terms::unpack(rc.input_digest);
        auto in_order = in_payment_order(sg);
        auto v = pay_to(o, sg, tokens_wei(tt.prompt_tokens, tt.generated_tokens, *sg.terms));
        if (!pay_error.empty()) note(fmt::format("cannot pay provider {} the rest: {}", short_hex(peers[o.peer].key), pay_error));
        else if (v) (void)peers[o.peer].send(net::gen_pay{sg.session, *v});
      }
      ledger::sign_as_client(rc, self_.secret_key);
      // The outbox keeps the receipt before the ledger takes it (see actors/receipt_outbox.h).
      if (options_.outbox) {
        status st = options_.outbox->add(rc);
        if (!st.is_ok()) note("cannot keep the receipt for redelivery: " + st.message());
      }
      if (options_.ledger) {
        auto h = options_.ledger->append_verified(rc, sg.last_voucher ? &*sg.last_voucher : nullptr);
        if (!h) note("cannot record the receipt: " + h.error().message());
      }
      if (peers[o.peer].actor) to_send.push_back({peers[o.peer].actor, rc});
      u.paid = true;
      stats.cost += u.cost;
    }
    if (sg.terms) {
      u.settlement = "chain";
      u.paid_wei = ledger::decimal(sg.paid);
      note(fmt::format("provider {}: {} prompt and {} generated tokens settled on chain, {} wei", short_hex(peers[o.peer].key),
                       u.prompt_tokens, u.generated_tokens, u.paid_wei));
    }
    used.push_back(u);
    stats.payments.push_back({u.node, u.role, u.settlement, u.paid_wei, u.cost, u.paid});
    if (u.generated_tokens > 0 || sg.role == "answer") stats.providers.push_back(u.node);
  };
  for (size_t si = 0; si < segments.size(); ++si) pay(segments[si], offers[segment_offer[si]], segment_bad[si] || segment_withheld[si], segment_checked[si]);
  for (auto& [oi, sg] : extra) pay(sg, offers[oi], false, !sg.disputed);
  // Every session of this answer is closed: those that bid and were not used, and the used ones.
  for (size_t i = 0; i < offers.size(); ++i) (void)peers[offers[i].peer].send(net::cancel{offers[i].session, "close"});
  close_all();
  if (!to_send.empty() && options_.system)
    (void)deliver_receipts(*options_.system, to_send, options_.outbox, std::chrono::seconds(5), options_.note);
  if (options_.reputation) (void)options_.reputation->save();

  auto t_end = steady::now();
  stats.total_ms = std::chrono::duration<double, std::milli>(t_end - t0).count();
  double decode_ms = stats.total_ms - stats.time_to_first_token_ms;
  if (stats.generated_tokens > 1 && decode_ms > 0) stats.decode_tokens_per_s = (stats.generated_tokens - 1) * 1000.0 / decode_ms;
  (void)t_bids;
  if (!verdict.is_ok()) return verdict;
  return stats;
}

std::vector<generation_provider_use> generation_client::last_providers() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_used_;
}

std::string generation_client::last_verification() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_verification_;
}

}  // namespace gpugrid::grid
