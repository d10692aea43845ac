#include "actors/generation_host.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "actors/node.h"
#include "net/codec.h"

namespace gpugrid::grid {

struct generation_host::session {
  net::bytes16 id{};
  key32 client{};
  uint64_t conn = 0;
  ledger::digest32 manifest{};
  std::vector<net::gen_file> files;
  int64_t folder_bytes = 0;
  double price_prompt = 0, price_generated = 0;
  int64_t bid_expires_ms = 0;
  int64_t last_used_ms = 0;
  int64_t reserved = 0;  // KV-cache bytes held for it (from its bid, or its first prompt, until it closes)
  bool running = false;
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  // Paid on a chain (options.payment): the bid's terms, and what this prompt's vouchers paid.
  std::optional<net::gen_chain_terms> terms;
  unsigned __int128 paid = 0;     // what all its vouchers added
  unsigned __int128 charged = 0;  // what its finished prompts cost (prefill and tokens)
  std::string payment_error;      // a refused GenPay: the worker stops with it
};

namespace {

int64_t micros_per_1k(double price) { return static_cast<int64_t>(std::llround(price * 1e6)); }

void send_decline(const generation_host::reply_fn& reply, const net::bytes16& session, net::decline_reason why,
                  std::string detail) {
  net::bid_decline d;
  d.job = session;
  d.reason = why;
  d.detail = std::move(detail);
  (void)reply(d);
}

void send_error(const generation_host::reply_fn& reply, const net::bytes16& session, net::job_error_code code,
                std::string text) {
  net::job_error e;
  e.job = session;
  e.code = code;
  e.message = std::move(text);
  (void)reply(e);
}

}  // namespace

generation_host::generation_host(const net::identity& id, std::shared_ptr<folder_store> store, gen_engine_loader loader,
                                 generation_host_options options)
    : id_(id), store_(std::move(store)), loader_(std::move(loader)), options_(std::move(options)) {
  keypair kp = keypair_of(id_);
  key_ = kp.public_key;
  secret_ = kp.secret_key;
  options_.slots = std::max(1, options_.slots);
  options_.max_tokens_per_frame = std::max(1, options_.max_tokens_per_frame);
  if (options_.payment) payment_thread_ = std::thread([this] { payment_loop(); });
}

generation_host::~generation_host() {
  stop();
  std::vector<std::thread> ws;
  {
    std::unique_lock<std::mutex> lk(mu_);
    ws.swap(workers_);
  }
  for (auto& w : ws)
    if (w.joinable()) w.join();
  if (payment_thread_.joinable()) payment_thread_.join();
}

int64_t generation_host::now() const { return options_.clock ? options_.clock() : unix_ms(); }

void generation_host::stop() {
  std::lock_guard<std::mutex> lk(mu_);
  stopping_ = true;
  for (auto& [id, s] : sessions_) s->cancel->store(true);
  paid_cv_.notify_all();
  pays_cv_.notify_all();
}

size_t generation_host::sessions() const {
  std::lock_guard<std::mutex> lk(mu_);
  return sessions_.size();
}

int64_t generation_host::reserved_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return reserved_ + engine_bytes_;
}

size_t generation_host::running() const {
  std::lock_guard<std::mutex> lk(mu_);
  return running_;
}

bool generation_host::on_message(const key32& client, uint64_t conn, const net::message& m, const reply_fn& reply) {
  if (auto* o = std::get_if<net::gen_open>(&m)) {
    on_open(client, conn, *o, reply);
    return true;
  }
  if (auto* p = std::get_if<net::gen_prompt>(&m)) {
    on_prompt(client, *p, reply);
    return true;
  }
  if (auto* g = std::get_if<net::gen_pay>(&m)) {
    on_pay(client, *g, reply);
    return true;
  }
  if (auto* c = std::get_if<net::cancel>(&m)) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = sessions_.find(c->job);
    if (it == sessions_.end() || it->second->client != client) return false;
    ++counters_.cancels;
    it->second->cancel->store(true);  // the worker stops at its next step
    close_locked(c->job);
    paid_cv_.notify_all();
    return true;
  }
  return false;
}

void generation_host::close_locked(const net::bytes16& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (it->second->terms && closed_.emplace(id, it->second->client).second) {
    closed_order_.push_back(id);
    while (closed_order_.size() > 4096) {
      closed_.erase(closed_order_.front());
      closed_order_.pop_front();
    }
  }
  reserved_ -= it->second->reserved;
  it->second->reserved = 0;
  sessions_.erase(it);
}

bool generation_host::make_room_locked(int64_t bytes) {
  if (options_.max_memory_bytes <= 0) return true;
  auto over = [&] { return reserved_ + engine_bytes_ + bytes > options_.max_memory_bytes; };
  // Evict nothing when even evicting everything idle would not make room.
  int64_t freeable = 0;
  for (auto& [id, s] : sessions_)
    if (!s->running) freeable += s->reserved;
  for (auto& [h, e] : engines_)
    if (e.users == 0) freeable += e.bytes;
  if (reserved_ + engine_bytes_ - freeable + bytes > options_.max_memory_bytes) return false;
  // Idle sessions first (least recently used), then folders no session is using.
  while (over()) {
    std::shared_ptr<session> oldest;
    for (auto& [id, s] : sessions_)
      if (!s->running && (!oldest || s->last_used_ms < oldest->last_used_ms)) oldest = s;
    if (!oldest) break;
    ++counters_.evictions;
    close_locked(oldest->id);
  }
  while (over()) {
    auto victim = engines_.end();
    for (auto it = engines_.begin(); it != engines_.end(); ++it)
      if (it->second.users == 0 && (victim == engines_.end() || it->second.last_used < victim->second.last_used)) victim = it;
    if (victim == engines_.end()) break;
    engine_bytes_ -= victim->second.bytes;
    engines_.erase(victim);
  }
  return !over();
}

void generation_host::on_open(const key32& client, uint64_t conn, const net::gen_open& m, const reply_fn& reply) {
  auto decline = [&](net::decline_reason why, std::string detail) {
    ++counters_.declines;
    send_decline(reply, m.session, why, std::move(detail));
  };
  if (manifest_hash(m.files) != m.manifest) return decline(net::decline_reason::unsupported, "the file list does not match its manifest hash");
  int64_t folder_bytes = 0;
  for (const auto& f : m.files) folder_bytes += static_cast<int64_t>(std::min<uint64_t>(f.size, INT64_MAX / 512));
  if (m.max_price_prompt >= 0 && options_.price_prompt > m.max_price_prompt + 1e-12)
    return decline(net::decline_reason::too_cheap,
                   fmt::format("the limit {:.6g} per 1000 prompt tokens is below {:.6g}", m.max_price_prompt, options_.price_prompt));
  if (m.max_price_generated >= 0 && options_.price_generated > m.max_price_generated + 1e-12)
    return decline(net::decline_reason::too_cheap, fmt::format("the limit {:.6g} per 1000 generated tokens is below {:.6g}",
                                                               m.max_price_generated, options_.price_generated));
  double tps = 0;
  int64_t kv = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return decline(net::decline_reason::draining, "the provider is shutting down");
    if (options_.max_memory_bytes > 0 && folder_bytes > options_.max_memory_bytes)
      return decline(net::decline_reason::too_big, fmt::format("the model's {} bytes are over this provider's memory of {} bytes",
                                                               folder_bytes, options_.max_memory_bytes));
    auto e = engines_.find(m.manifest);
    if (e != engines_.end()) {
      tps = e->second.engine->tokens_per_s();
      int64_t ctx = e->second.engine->context_length();
      if (ctx > 0 && static_cast<int64_t>(std::min<uint64_t>(m.prompt_tokens, INT64_MAX / 2)) > ctx)
        return decline(net::decline_reason::unsupported,
                       fmt::format("the prompt has {} tokens; the model's context is {}", m.prompt_tokens, ctx));
      // The answer stops at the context's end, so no session needs more cache than that.
      int64_t tokens = static_cast<int64_t>(std::min<uint64_t>(m.prompt_tokens + m.max_new_tokens, INT64_MAX / 2));
      if (ctx > 0) tokens = std::min(tokens, ctx);
      kv = std::max<int64_t>(0, e->second.engine->kv_bytes_per_token()) * tokens;
      if (!make_room_locked(kv)) return decline(net::decline_reason::busy, "no memory free for the session's cache");
    }
    if (sessions_.size() >= options_.max_sessions && !sessions_.count(m.session)) {
      std::shared_ptr<session> oldest;  // the least recently used idle one makes way
      for (auto& [id, s] : sessions_)
        if (!s->running && (!oldest || s->last_used_ms < oldest->last_used_ms)) oldest = s;
      if (!oldest) return decline(net::decline_reason::busy, fmt::format("{} sessions are open here", sessions_.size()));
      ++counters_.evictions;
      close_locked(oldest->id);
    }
    auto s = std::make_shared<session>();
    s->id = m.session;
    s->client = client;
    s->conn = conn;
    s->manifest = m.manifest;
    s->files = m.files;
    s->folder_bytes = folder_bytes;
    s->price_prompt = options_.price_prompt;
    s->price_generated = options_.price_generated;
    s->bid_expires_ms = now() + options_.bid_valid_ms;
    s->last_used_ms = now();
    if (options_.payment) {
      net::gen_chain_terms t;
      t.terms = options_.payment->terms(options_.price_generated);
      t.price_prompt = options_.payment->terms(options_.price_prompt).price;
      s->terms = t;
    }
    close_locked(m.session);  // the same id again: the new session replaces it
    s->reserved = kv;
    reserved_ += kv;
    sessions_[m.session] = s;
  }
  net::gen_bid b;
  b.session = m.session;
  b.price_prompt = options_.price_prompt;
  b.price_generated = options_.price_generated;
  b.tokens_per_s = tps;
  b.model_cached = store_->has_all(m.manifest, m.files);
  b.valid_ms = options_.bid_valid_ms;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = sessions_.find(m.session);
    if (it != sessions_.end()) b.terms = it->second->terms;
  }
  net::sign_gen_bid(b, id_);
  ++counters_.bids;
  (void)reply(b);
}

bool generation_host::wants_file(const net::bytes16& session, const ledger::digest32& hash) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return false;
  for (const auto& f : it->second->files)
    if (f.hash == hash) return true;
  return false;
}

status generation_host::put_file(const ledger::digest32& hash, const std::string& bytes) {
  GG_RETURN_IF_ERROR(store_->put_file(hash, bytes));
  ++counters_.files;
  return status::ok();
}

void generation_host::on_disconnect(uint64_t conn) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<net::bytes16> gone;
  for (auto& [id, s] : sessions_)
    if (s->conn == conn) {
      s->cancel->store(true);
      gone.push_back(id);
    }
  for (const auto& id : gone) close_locked(id);
  paid_cv_.notify_all();
}

void generation_host::tick() {
  std::vector<std::thread> done;
  {
    std::lock_guard<std::mutex> lk(mu_);
    int64_t t = now();
    std::vector<net::bytes16> idle;
    for (auto& [id, s] : sessions_)
      if (!s->running && t - s->last_used_ms > options_.idle_timeout_ms) idle.push_back(id);
    for (const auto& id : idle) {
      ++counters_.evictions;
      close_locked(id);
    }
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (std::find(finished_.begin(), finished_.end(), it->get_id()) != finished_.end()) {
        finished_.erase(std::find(finished_.begin(), finished_.end(), it->get_id()));
        done.push_back(std::move(*it));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : done) w.join();
}

void generation_host::on_prompt(const key32& client, const net::gen_prompt& m, const reply_fn& reply) {
  auto error = [&](net::job_error_code code, std::string text) { send_error(reply, m.session, code, std::move(text)); };
  std::shared_ptr<session> s;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = sessions_.find(m.session);
    if (it == sessions_.end() || it->second->client != client)
      return error(net::job_error_code::not_awarded, "no session with this id is open here (it was closed or evicted)");
    s = it->second;
    if (stopping_) return error(net::job_error_code::draining, "the provider is shutting down");
    if (s->running) return error(net::job_error_code::busy, "the session is answering another prompt");
    if (m.manifest != s->manifest) return error(net::job_error_code::bad_input, "the prompt names another model than the session");
    if (m.price_prompt + 1e-12 < s->price_prompt * (1 - 1e-9) || m.price_generated + 1e-12 < s->price_generated * (1 - 1e-9))
      return error(net::job_error_code::not_awarded,
                   fmt::format("the prompt offers {:.6g}/{:.6g} per 1000 tokens, below this provider's bid {:.6g}/{:.6g}",
                               m.price_prompt, m.price_generated, s->price_prompt, s->price_generated));
    if (m.generated_ids.size() > static_cast<size_t>(std::max<int64_t>(0, m.max_new_tokens)) && !m.score_only)
      return error(net::job_error_code::bad_input, "the answer so far is longer than max_new_tokens");
    s->payment_error.clear();
    s->running = true;  // from now on the session's: a second prompt is refused, it is never evicted
    s->last_used_ms = now();
    s->cancel->store(false);
    // Every slot busy: it waits its turn (the client allows for that until its first token).
    waiting_.push_back({s, m, reply});
    start_waiting_locked();
  }
}

void generation_host::start_waiting_locked() {
  while (running_ < static_cast<size_t>(options_.slots) && !waiting_.empty()) {
    waiting_prompt w = std::move(waiting_.front());
    waiting_.pop_front();
    if (stopping_ || w.s->cancel->load()) {  // cancelled, closed or shut down while it waited
      w.s->running = false;
      continue;
    }
    ++running_;
    // The worker holds the session; finish_run() hands back its slot.
    workers_.emplace_back([this, s = std::move(w.s), m = std::move(w.p), reply = std::move(w.reply)] { run(s, m, reply); });
  }
}

void generation_host::on_pay(const key32& client, const net::gen_pay& m, const reply_fn& reply) {
  if (!options_.payment) return send_error(reply, m.session, net::job_error_code::bad_input, "this provider is not paid on a chain");
  std::unique_lock<std::mutex> lk(mu_);
  if (stopping_) return;
  auto it = sessions_.find(m.session);
  std::shared_ptr<session> s = it != sessions_.end() && it->second->client == client ? it->second : nullptr;
  if (!s) {  // only the client of a session that was paid here pays into it
    auto c = closed_.find(m.session);
    if (c == closed_.end() || c->second != client) {
      ++counters_.payment_refusals;
      return send_error(reply, m.session, net::job_error_code::not_awarded,
                        "payment refused: no chain-paid session of this client has this id here");
    }
  }
  if (s && s->running) {  // its worker waits for it: checked by the payment thread, in order
    if (pays_.size() >= 4096) {  // a client flooding vouchers: refused, its session stops
      s->payment_error = "too many vouchers at once";
      paid_cv_.notify_all();
      return;
    }
    pays_.push_back({client, m, reply});
    pays_cv_.notify_all();
    return;
  }
  // The rest of an answer that has ended (or of a session the client closed: cancelled,
  // stopped, left for another provider): checked here, after any voucher of the session still
  // queued, so that it is filed before the session's receipt comes (same connection, later).
  pays_cv_.wait_for(lk, std::chrono::seconds(2), [&] {
    if (stopping_ || paying_ == m.session) return stopping_;
    for (const auto& q : pays_)
      if (q.pay.session == m.session) return false;
    return true;
  });
  lk.unlock();
  settle_pay({client, m, reply}, s);
}

void generation_host::settle_pay(const pending_pay& next, const std::shared_ptr<session>& s) {
  if (s && !s->terms) {
    send_error(next.reply, next.pay.session, net::job_error_code::bad_input, "this session is not paid on a chain");
    return;
  }
  auto added = options_.payment->admit_session_voucher(next.pay.session, next.pay.voucher, ledger::word_of(1));
  std::lock_guard<std::mutex> lk(mu_);
  if (!added) {
    ++counters_.payment_refusals;
    if (options_.log) options_.log("a generation voucher was refused: " + added.error().message());
    if (s) {
      s->payment_error = added.error().message();  // a running worker stops at its next token
      if (!s->running) send_error(next.reply, next.pay.session, net::job_error_code::not_awarded, "payment refused: " + s->payment_error);
    }
  } else {
    ++counters_.vouchers;
    if (s) s->paid += ledger::word_value(*added);
  }
  paid_cv_.notify_all();
}

void generation_host::payment_loop() {
  for (;;) {
    pending_pay next;
    std::shared_ptr<session> s;
    {
      std::unique_lock<std::mutex> lk(mu_);
      paying_ = {};
      pays_cv_.notify_all();
      pays_cv_.wait(lk, [&] { return stopping_ || !pays_.empty(); });
      if (stopping_) return;
      next = std::move(pays_.front());
      pays_.pop_front();
      paying_ = next.pay.session;
      auto it = sessions_.find(next.pay.session);
      if (it != sessions_.end() && it->second->client == next.client) s = it->second;
    }
    settle_pay(next, s);
  }
}

status generation_host::admit_prompt(session& s, const net::gen_prompt& p) {
  unsigned __int128 need, paid;
  {
    std::lock_guard<std::mutex> lk(mu_);
    need = s.charged + tokens_wei(static_cast<int64_t>(p.prompt_ids.size() + p.generated_ids.size()), 0, *s.terms);
    paid = s.paid;
  }
  if (!p.voucher) {
    if (paid >= need) return status::ok();  // paid already (a prompt sent again)
    return status(error_kind::invalid_input, "payment refused: this provider is paid on a chain; the prompt came without a voucher");
  }
  auto added = options_.payment->admit_session_voucher(s.id, *p.voucher, ledger::word_of(need > paid ? need - paid : 1));
  std::lock_guard<std::mutex> lk(mu_);
  if (!added) {
    ++counters_.payment_refusals;
    return status(error_kind::invalid_input, "payment refused: " + added.error().message());
  }
  ++counters_.vouchers;
  s.paid += ledger::word_value(*added);
  paid_cv_.notify_all();
  return status::ok();
}

expected<std::shared_ptr<gen_engine>> generation_host::engine_for(const ledger::digest32& manifest,
                                                                  const std::vector<net::gen_file>& files,
                                                                  int64_t folder_bytes) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = engines_.find(manifest);
    if (it != engines_.end()) {
      ++it->second.users;
      it->second.last_used = now();
      return it->second.engine;
    }
  }
  std::lock_guard<std::mutex> load_lock(load_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = engines_.find(manifest);  // loaded by another worker meanwhile
    if (it != engines_.end()) {
      ++it->second.users;
      return it->second.engine;
    }
    if (!make_room_locked(folder_bytes)) return status(error_kind::io, "no memory free for the model here");
  }
  auto dir = store_->folder(manifest, files);
  if (!dir) return dir.error();
  auto e = loader_(*dir);
  if (!e) return e.error();
  std::lock_guard<std::mutex> lk(mu_);
  engines_[manifest] = {*e, folder_bytes, now(), 1};
  engine_bytes_ += folder_bytes;
  return *e;
}

void generation_host::finish_run(const std::shared_ptr<session>& s) {
  std::lock_guard<std::mutex> lk(mu_);
  s->running = false;
  s->last_used_ms = now();
  auto e = engines_.find(s->manifest);
  if (e != engines_.end() && e->second.users > 0) --e->second.users;
  --running_;
  finished_.push_back(std::this_thread::get_id());
  start_waiting_locked();
}

void generation_host::run(std::shared_ptr<session> s, net::gen_prompt p, reply_fn reply) {
  int64_t started = now();
  bool have_engine = false;
  auto fail = [&](net::job_error_code code, std::string text) {
    send_error(reply, s->id, code, std::move(text));
    if (!have_engine) {  // engine_for took no user count
      std::lock_guard<std::mutex> lk(mu_);
      s->running = false;
      s->last_used_ms = now();
      --running_;
      finished_.push_back(std::this_thread::get_id());
      start_waiting_locked();
      return;
    }
    finish_run(s);
  };
  // Paid on a chain: the prompt's tokens are paid before any work.
  if (s->terms) {
    status paid = admit_prompt(*s, p);
    if (!paid.is_ok()) return fail(net::job_error_code::not_awarded, paid.message());
  }
  if (!store_->has_all(s->manifest, s->files))
    return fail(net::job_error_code::model_missing, "the model folder's files have not all arrived");
  auto engine = engine_for(s->manifest, s->files, s->folder_bytes);
  if (!engine) {
    auto code = engine.error().kind() == error_kind::invalid_input ? net::job_error_code::unsupported
                : engine.error().kind() == error_kind::no_provider ? net::job_error_code::model_missing
                                                                     : net::job_error_code::internal;
    return fail(code, engine.error().message());
  }
  have_engine = true;
  gen_engine& eng = **engine;
  int64_t vocab = eng.vocab_size();
  for (int32_t id : p.prompt_ids)
    if (id < 0 || (vocab > 0 && id >= vocab)) return fail(net::job_error_code::bad_input, fmt::format("prompt token id {} is outside the vocabulary", id));
  for (int32_t id : p.generated_ids)
    if (id < 0 || (vocab > 0 && id >= vocab)) return fail(net::job_error_code::bad_input, fmt::format("answer token id {} is outside the vocabulary", id));
  // A prompt (with the answer so far, or the answer to score) past the context is refused; an
  // answer that would run past it stops there (finish_reason::context_full), as --local does.
  int64_t given = static_cast<int64_t>(p.prompt_ids.size() + p.generated_ids.size());
  if (eng.context_length() > 0 && given > eng.context_length())
    return fail(net::job_error_code::bad_input,
                fmt::format("the prompt has {} tokens; the model's context is {}", given, eng.context_length()));
  int64_t tokens = p.score_only ? given : static_cast<int64_t>(p.prompt_ids.size()) + p.max_new_tokens;
  if (eng.context_length() > 0) tokens = std::min(tokens, eng.context_length());
  bool room = true;
  {
    std::lock_guard<std::mutex> lk(mu_);
    int64_t want = std::max<int64_t>(0, eng.kv_bytes_per_token()) * tokens;
    if (want > s->reserved) {
      if (make_room_locked(want - s->reserved)) {
        reserved_ += want - s->reserved;
        s->reserved = want;
      } else {
        room = false;
      }
    }
  }
  if (!room) return fail(net::job_error_code::busy, "no memory free for the answer's cache");

  // Stream: tokens are batched per frame; every frame is stamped with the signed digest of the
  // stream so far and a receipt for the tokens so far.
  net::gen_stream_digest digest;
  net::gen_tokens frame;
  frame.session = s->id;
  int64_t prompt_tokens = static_cast<int64_t>(p.prompt_ids.size() + p.generated_ids.size());
  int64_t generated = 0;
  bool send_failed = false;
  ledger::token_terms terms;
  terms.prompt_tokens = prompt_tokens;
  terms.prompt_micros_per_1k = micros_per_1k(s->price_prompt);
  terms.generated_micros_per_1k = micros_per_1k(s->price_generated);
  auto stamp = [&] {
    frame.stream_digest = digest.finish(s->id);
    frame.signature = id_.sign(ledger::result_statement(s->id, frame.stream_digest));
    terms.generated_tokens = generated;
    ledger::receipt r;
    r.kind = ledger::receipt_kind::generation;
    r.job_id = s->id;
    r.client_key = s->client;
    r.provider_key = key_;
    r.model_hash = s->manifest;
    r.input_digest = terms.pack();
    r.output_digest = frame.stream_digest;
    r.price_micros = terms.price_micros();
    r.started_ms = started;
    r.finished_ms = now();
    ledger::sign_as_provider(r, secret_);
    frame.receipt = r;
  };
  auto last_flush = std::chrono::steady_clock::now() - std::chrono::hours(1);  // the first token goes at once
  auto flush = [&] {
    if (frame.tokens.empty()) return;
    stamp();
    if (!reply(frame)) {
      send_failed = true;
      s->cancel->store(true);
    }
    frame.tokens.clear();
  };
  uint8_t reason = 0;
  double tps = 0;
  std::string payment_cut;
  // Tokens the session's payments cover (for the message of a cut-off).
  auto paid_tokens = [&](const session& ss) -> int64_t {
    int64_t lo = 0, hi = generated;
    while (lo < hi) {
      int64_t mid = (lo + hi + 1) / 2;
      if (ss.charged + tokens_wei(prompt_tokens, mid, *ss.terms) <= ss.paid) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  // What this prompt costs once the engine has run (prefill and tokens), whatever the outcome.
  auto charge = [&] {
    if (!s->terms) return;
    std::lock_guard<std::mutex> lk(mu_);
    s->charged += tokens_wei(prompt_tokens, generated, *s->terms);
  };
  if (p.score_only) {
    auto lp = eng.score(p.prompt_ids, p.generated_ids);
    charge();
    if (!lp) return fail(net::job_error_code::internal, lp.error().message());
    for (size_t i = 0; i < lp->size() && i < p.generated_ids.size(); ++i) {
      net::gen_token t{p.generated_ids[i], (*lp)[i], static_cast<int64_t>(i)};
      digest.add(t);
      frame.tokens.push_back(t);
    }
    reason = static_cast<uint8_t>(llm::finish_reason::length);
  } else {
    llm::completion_request req;
    req.prompt_ids = p.prompt_ids;
    req.generated_ids = p.generated_ids;
    req.sampling = {p.sampling.temperature, p.sampling.top_k, p.sampling.top_p, p.sampling.min_p,
                    p.sampling.repetition_penalty, p.sampling.seed};
    req.stop.max_new_tokens = p.max_new_tokens;
    req.stop.stop_strings = p.stop_strings;
    req.stop.stop_token_ids = p.stop_token_ids;
    req.stop.ignore_eos = p.ignore_eos;
    auto cancel = s->cancel;
    // On a chain: the next token is generated only while the tokens not yet paid stay within
    // the credit; else what is made goes out, and the worker waits for a voucher.
    const int64_t credit = std::max<int64_t>(1, options_.credit_tokens);
    auto paid_enough = [&]() -> bool {
      if (!s->terms) return true;
      std::unique_lock<std::mutex> lk(mu_);
      if (!s->payment_error.empty()) {  // a voucher was refused: no more tokens
        if (payment_cut.empty()) payment_cut = "payment refused: " + s->payment_error;
        return false;
      }
      if (generated + 1 <= credit) return true;
      const unsigned __int128 need = s->charged + tokens_wei(prompt_tokens, generated + 1 - credit, *s->terms);
      if (s->paid >= need) return true;
      lk.unlock();
      flush();
      last_flush = std::chrono::steady_clock::now();
      lk.lock();
      auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.payment_wait_ms);
      paid_cv_.wait_until(lk, until, [&] { return s->paid >= need || cancel->load() || !s->payment_error.empty(); });
      if (s->paid >= need) return true;
      if (cancel->load()) return false;
      if (payment_cut.empty())
        payment_cut = !s->payment_error.empty()
                          ? "payment refused: " + s->payment_error
                          : fmt::format("payment: the client paid for {} of the {} tokens generated; this provider "
                                        "generates at most {} tokens ahead of payment",
                                        paid_tokens(*s), generated, credit);
      return false;
    };
    auto stats = eng.complete(
        req,
        [&](const llm::generated_token& g) {
          net::gen_token t{g.id, g.logprob, g.index};
          digest.add(t);
          frame.tokens.push_back(t);
          ++generated;
          ++counters_.tokens;
          auto at = std::chrono::steady_clock::now();
          if (static_cast<int>(frame.tokens.size()) >= options_.max_tokens_per_frame ||
              at - last_flush >= std::chrono::microseconds(options_.frame_interval_us)) {
            flush();
            last_flush = at;
          }
          return !send_failed && paid_enough();
        },
        [cancel] { return cancel->load(); });
    charge();
    if (!stats) {
      frame.tokens.clear();
      return fail(stats.error().kind() == error_kind::invalid_input ? net::job_error_code::bad_input : net::job_error_code::internal,
                  stats.error().message());
    }
    reason = static_cast<uint8_t>(stats->reason);
    tps = stats->decode_tokens_per_s;
    if (!payment_cut.empty()) {  // the tokens sent stand (signed, with receipts); no more come
      ++counters_.payment_cutoffs;
      if (options_.log) options_.log(fmt::format("generation for client {}: {}", short_hex(s->client), payment_cut));
      frame.tokens.clear();
      return fail(net::job_error_code::not_awarded, payment_cut);
    }
  }
  // The last frame: what is left, the finish reason and the final receipt.
  frame.done = true;
  frame.finish_reason = reason;
  frame.tokens_per_s = tps;
  stamp();
  ++counters_.answers;
  finish_run(s);
  if (!send_failed) (void)reply(frame);
}

gen_peer in_process_peer(std::shared_ptr<generation_host> host, std::shared_ptr<generation_inbox> inbox, const key32& client,
                         uint64_t conn, std::shared_ptr<std::atomic<bool>> cut) {
  if (!cut) cut = std::make_shared<std::atomic<bool>>(false);
  gen_peer p;
  p.key = host->key();
  key32 provider = host->key();
  std::weak_ptr<generation_inbox> weak_inbox = inbox;
  generation_host::reply_fn reply = [weak_inbox, provider, cut](const net::message& m) {
    if (cut->load()) return false;
    if (auto in = weak_inbox.lock()) (void)in->deliver(provider, m);
    return true;
  };
  std::weak_ptr<generation_host> weak_host = host;
  p.send = [weak_host, client, conn, reply, cut](const net::message& m) {
    auto h = weak_host.lock();
    if (!h || cut->load()) return false;
    (void)h->on_message(client, conn, m, reply);
    return true;
  };
  p.upload = [weak_host, cut](const net::bytes16& session, const ledger::digest32& hash,
                              std::shared_ptr<const std::string> bytes) -> status {
    auto h = weak_host.lock();
    if (!h || cut->load()) return status(error_kind::io, "the provider is gone");
    if (!h->wants_file(session, hash)) return status(error_kind::io, "the provider does not want the file");
    return h->put_file(hash, *bytes);
  };
  return p;
}

}  // namespace gpugrid::grid
