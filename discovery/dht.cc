#include "discovery/dht.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gpugrid::discovery {

bool provider_filter::matches(const provider_record& r) const {
  if (!device_class.empty() && r.device_class != device_class) return false;
  if (max_price >= 0 && r.price > max_price) return false;
  return true;
}

dht::dht(const contact& self, dht_config cfg, record_signer signer, uint64_t seed)
    : self_(self), cfg_(cfg), signer_(std::move(signer)), rng_(seed), table_(self.id, cfg.k, cfg.max_failures) {
  if (cfg_.k == 0) cfg_.k = 1;
  if (cfg_.alpha == 0) cfg_.alpha = 1;
}

// ---------------------------------------------------------------- inputs

void dht::heard_from(int64_t now, const contact& c) {
  if (c.address.empty() || c.id == self_.id) return;
  if (auto old = table_.seen(c, now, cfg_.stale_contact_ms)) {
    dht_query q;
    q.kind = query_kind::ping;
    send_query(now, *old, std::move(q), 0);
  }
}

status dht::on_query(int64_t now, const node_id& from, const dht_query& q) {
  ++stats_.queries_in;
  if (status s = validate(q); !s) {
    ++stats_.bad_messages;
    return s;
  }
  if (client_mode()) return invalid_input("a {} query to a node in client mode", to_string(q.kind));
  const contact sender{from, q.sender_address};
  heard_from(now, sender);

  dht_reply r;
  r.request_id = q.request_id;
  auto closest_to = [&](const dht_key& t) {
    std::vector<contact> c = table_.closest(t, cfg_.k + 1);
    c.erase(std::remove_if(c.begin(), c.end(), [&](const contact& x) { return x.id == from; }), c.end());
    if (c.size() > cfg_.k) c.resize(cfg_.k);
    if (c.size() > kMaxNodesPerReply) c.resize(kMaxNodesPerReply);
    return c;
  };
  switch (q.kind) {
    case query_kind::ping:
      break;
    case query_kind::find_node:
      r.nodes = closest_to(q.target);
      break;
    case query_kind::find_providers: {
      provider_filter f{q.device_class, q.max_price};
      const size_t limit = std::min<size_t>(q.limit == 0 ? cfg_.k : q.limit, kMaxRecordsPerMessage);
      r.records = local_records(now, q.target, f, limit);
      r.nodes = closest_to(q.target);
      break;
    }
    case query_kind::add_provider:
      for (const auto& rec : q.records) {
        if (rec.provider != from || rec.key != q.target) {
          ++stats_.records_refused;
          continue;
        }
        if (accept_record(now, rec)) ++r.stored;
      }
      break;
  }
  ++stats_.replies_out;
  outbox_.push_back(outgoing{sender, std::move(r)});
  return status::ok();
}

bool dht::accept_record(int64_t now, const provider_record& rec) {
  if (!validate(rec) || rec.expires_ms <= now || rec.issued_ms > now + kMaxRecordTtlMs ||
      rec.expires_ms > now + kMaxRecordTtlMs) {
    ++stats_.records_refused;
    return false;
  }
  auto it = store_.find(rec.key);
  if (it != store_.end()) {
    for (auto& old : it->second) {
      if (old.provider != rec.provider) continue;
      if (rec.issued_ms <= old.issued_ms) return rec.issued_ms == old.issued_ms && rec.sig == old.sig;
      if (!verify_record(rec)) {
        ++stats_.bad_signatures;
        return false;
      }
      old = rec;
      ++stats_.records_stored;
      return true;
    }
  }
  size_t& per_source = keys_per_source_[rec.provider];
  if (per_source >= cfg_.max_keys_per_source || (it == store_.end() && store_.size() >= cfg_.max_keys)) {
    if (per_source == 0) keys_per_source_.erase(rec.provider);
    ++stats_.records_refused;
    return false;
  }
  std::vector<provider_record>* list = it == store_.end() ? nullptr : &it->second;
  size_t victim = SIZE_MAX;
  if (list && list->size() >= cfg_.max_records_per_key) {
    victim = 0;
    for (size_t i = 1; i < list->size(); ++i)
      if ((*list)[i].expires_ms < (*list)[victim].expires_ms) victim = i;
    if ((*list)[victim].expires_ms >= rec.expires_ms) {
      if (per_source == 0) keys_per_source_.erase(rec.provider);
      ++stats_.records_refused;
      return false;
    }
  }
  if (!verify_record(rec)) {
    if (per_source == 0) keys_per_source_.erase(rec.provider);
    ++stats_.bad_signatures;
    return false;
  }
  if (!list) list = &store_[rec.key];
  if (victim != SIZE_MAX) {
    auto vs = keys_per_source_.find((*list)[victim].provider);
    if (vs != keys_per_source_.end() && --vs->second == 0) keys_per_source_.erase(vs);
    (*list)[victim] = rec;
  } else {
    list->push_back(rec);
  }
  ++keys_per_source_[rec.provider];
  ++stats_.records_stored;
  return true;
}

status dht::on_reply(int64_t now, const node_id& from, const dht_reply& r) {
  ++stats_.replies_in;
  auto pit = pending_.find(r.request_id);
  if (pit == pending_.end() || pit->second.to != from) {
    ++stats_.bad_messages;
    return invalid_input("a DHT reply to no request of ours (id {})", r.request_id);
  }
  pending p = pit->second;
  pending_.erase(pit);
  if (status s = validate(r); !s) {
    ++stats_.bad_messages;
    table_.failed(from);
    if (p.lookup) {
      auto lit = lookups_.find(p.lookup);
      if (lit != lookups_.end()) {
        for (auto& c : lit->second.shortlist)
          if (c.c.id == from) c.state = cand_state::failed;
        ++lit->second.res.failed;
        step(now, p.lookup);
      }
    }
    return s;
  }
  heard_from(now, contact{from, p.address});
  if (p.kind == query_kind::add_provider) stats_.stores_acked += r.stored;
  if (!p.lookup) return status::ok();
  auto lit = lookups_.find(p.lookup);
  if (lit == lookups_.end()) return status::ok();
  lookup& l = lit->second;
  for (auto& c : l.shortlist)
    if (c.c.id == from) c.state = cand_state::answered;
  merge(l, r.nodes);
  if (l.res.kind == query_kind::find_providers) {
    for (const auto& rec : r.records) {
      if (rec.key != l.res.target || !l.filter.matches(rec) || rec.expires_ms <= now || !validate(rec)) continue;
      auto f = l.found.find(rec.provider);
      if (f != l.found.end() && f->second.issued_ms >= rec.issued_ms) continue;
      if (!verify_record(rec)) {
        ++stats_.bad_signatures;
        continue;
      }
      l.found[rec.provider] = rec;
    }
  }
  step(now, p.lookup);
  return status::ok();
}

void dht::on_unreachable(int64_t now, const node_id& id) {
  std::vector<uint64_t> ids;
  for (const auto& [rid, p] : pending_)
    if (p.to == id) ids.push_back(rid);
  std::sort(ids.begin(), ids.end());
  for (uint64_t rid : ids) fail_request(now, rid);
  if (ids.empty()) table_.failed(id);
}

void dht::fail_request(int64_t now, uint64_t request_id) {
  auto pit = pending_.find(request_id);
  if (pit == pending_.end()) return;
  pending p = pit->second;
  pending_.erase(pit);
  table_.failed(p.to);
  if (!p.lookup) return;
  auto lit = lookups_.find(p.lookup);
  if (lit == lookups_.end()) return;
  for (auto& c : lit->second.shortlist)
    if (c.c.id == p.to && c.state == cand_state::waiting) c.state = cand_state::failed;
  ++lit->second.res.failed;
  step(now, p.lookup);
}

void dht::tick(int64_t now) {
  std::vector<uint64_t> expired;
  for (const auto& [rid, p] : pending_)
    if (p.deadline <= now) expired.push_back(rid);
  std::sort(expired.begin(), expired.end());
  for (uint64_t rid : expired) {
    ++stats_.request_timeouts;
    fail_request(now, rid);
  }
  std::vector<uint64_t> late;
  for (const auto& [id, l] : lookups_)
    if (l.deadline <= now) late.push_back(id);
  for (uint64_t id : late) finish(now, id, true);
  std::vector<uint64_t> slow;
  for (const auto& [id, l] : lookups_)
    for (const auto& c : l.shortlist)
      if (c.state == cand_state::waiting && now - c.sent_ms >= cfg_.slow_request_ms && c.sent_ms + cfg_.slow_request_ms > last_tick_) {
        slow.push_back(id);
        break;
      }
  for (uint64_t id : slow) step(now, id);
  last_tick_ = now;

  if (now >= next_expiry_ms_) {
    expire_records(now);
    next_expiry_ms_ = now + 60 * 1000;
  }
  if (!client_mode()) {
    for (auto& p : published_) {
      // Nobody to store at yet: publish once the routing table has someone.
      if (p.next_ms > now || table_.size() == 0) continue;
      std::uniform_int_distribution<int64_t> jitter(-cfg_.republish_ms / 10, cfg_.republish_ms / 10);
      p.next_ms = now + cfg_.republish_ms + jitter(rng_);
      publish(now, p.a);
    }
    if (next_refresh_ms_ == 0) next_refresh_ms_ = now + cfg_.refresh_ms / 2 + static_cast<int64_t>(rng_() % (cfg_.refresh_ms / 2 + 1));
    if (now >= next_refresh_ms_) {
      refresh(now);
      next_refresh_ms_ = now + cfg_.refresh_ms;
    }
    // Lost everyone (all contacts died or failed): start over from the seeds.
    if (table_.size() == 0 && lookups_.empty() && !seeds_.empty()) bootstrap(now);
  }
}

void dht::expire_records(int64_t now) {
  for (auto it = store_.begin(); it != store_.end();) {
    auto& list = it->second;
    for (size_t i = 0; i < list.size();) {
      if (list[i].expires_ms <= now) {
        auto vs = keys_per_source_.find(list[i].provider);
        if (vs != keys_per_source_.end() && --vs->second == 0) keys_per_source_.erase(vs);
        list[i] = std::move(list.back());
        list.pop_back();
      } else {
        ++i;
      }
    }
    it = list.empty() ? store_.erase(it) : std::next(it);
  }
}

void dht::refresh(int64_t now) {
  const int deepest = std::min(table_.deepest_bucket() + 1, 255);
  for (int i = 0; i <= deepest; ++i) {
    if (now - bucket_refreshed_[i] < cfg_.refresh_ms) continue;
    std::array<uint8_t, 32> rnd;
    for (size_t j = 0; j < rnd.size(); j += 8) {
      const uint64_t v = rng_();
      std::memcpy(rnd.data() + j, &v, 8);
    }
    start_lookup(now, query_kind::find_node, lookup_purpose::refresh, table_.random_id_in_bucket(i, rnd), {}, 0);
  }
}

// ---------------------------------------------------------------- operations

void dht::add_seeds(const std::vector<contact>& seeds) {
  for (const auto& s : seeds) {
    if (s.id == self_.id || s.address.empty() || !validate(s)) continue;
    if (std::none_of(seeds_.begin(), seeds_.end(), [&](const contact& x) { return x.id == s.id; }))
      seeds_.push_back(s);
  }
  if (seeds_.size() > 64) seeds_.erase(seeds_.begin(), seeds_.begin() + static_cast<ptrdiff_t>(seeds_.size() - 64));
}

void dht::observe(int64_t now, const contact& c) {
  if (validate(c)) heard_from(now, c);
}

uint64_t dht::bootstrap(int64_t now) {
  return start_lookup(now, query_kind::find_node, lookup_purpose::bootstrap, self_.id, {}, 0);
}

uint64_t dht::find_node(int64_t now, const dht_key& target) {
  return start_lookup(now, query_kind::find_node, lookup_purpose::user, target, {}, 0);
}

uint64_t dht::find_providers(int64_t now, const dht_key& key, const provider_filter& f, size_t want) {
  return start_lookup(now, query_kind::find_providers, lookup_purpose::user, key, f,
                      std::clamp<size_t>(want, 1, kMaxRecordsPerMessage * 4));
}

status dht::set_announcements(int64_t now, const std::vector<announcement>& a) {
  if (client_mode()) return invalid_input("a node without an address cannot announce");
  if (a.size() > cfg_.max_announcements)
    return invalid_input("{} announcements (at most {})", a.size(), cfg_.max_announcements);
  for (const auto& x : a) {
    provider_record probe;
    probe.key = x.key;
    probe.addresses = x.addresses;
    probe.device_class = x.device_class;
    probe.price = x.price;
    probe.issued_ms = 1;
    probe.expires_ms = 1 + cfg_.record_ttl_ms;
    GG_RETURN_IF_ERROR(validate(probe).with_context("announcement"));
  }
  std::vector<published> next;
  for (const auto& x : a) {
    auto old = std::find_if(published_.begin(), published_.end(), [&](const published& p) {
      return p.a.key == x.key && p.a.addresses == x.addresses && p.a.device_class == x.device_class &&
             p.a.price == x.price;
    });
    // Unchanged announcements keep their schedule; new or changed ones go out now.
    next.push_back(old != published_.end() ? *old : published{x, now});
  }
  published_ = std::move(next);
  return status::ok();
}

void dht::publish(int64_t now, const announcement& a) {
  provider_record r;
  r.key = a.key;
  r.provider = self_.id;
  r.addresses = a.addresses;
  r.device_class = a.device_class;
  r.price = a.price;
  r.issued_ms = now;
  r.expires_ms = now + std::min(cfg_.record_ttl_ms, kMaxRecordTtlMs);
  if (signer_) signer_(r);
  const uint64_t id = start_lookup(now, query_kind::find_node, lookup_purpose::announce, a.key, {}, 0);
  auto it = lookups_.find(id);
  if (it != lookups_.end()) {
    it->second.to_store.push_back(std::move(r));
  } else if (id == 0) {
    accept_record(now, r);  // nobody to ask: keep it here at least
  }
}

uint64_t dht::start_lookup(int64_t now, query_kind kind, lookup_purpose purpose, const dht_key& target,
                           const provider_filter& f, size_t want) {
  if (lookups_.size() >= cfg_.max_lookups) {
    ++stats_.lookups_dropped;
    return 0;
  }
  const uint64_t id = next_lookup_++;
  lookup& l = lookups_[id];
  l.res.id = id;
  l.res.kind = kind;
  l.res.purpose = purpose;
  l.res.target = target;
  l.res.started_ms = now;
  l.filter = f;
  l.want = want;
  l.deadline = now + cfg_.lookup_timeout_ms;
  ++stats_.lookups_started;
  if (target.size() && !client_mode()) {
    const int b = table_.bucket_index(target);
    if (b >= 0) bucket_refreshed_[b] = now;
  }
  std::vector<contact> start = table_.closest(target, cfg_.k);
  if (start.size() < cfg_.k) {
    for (const auto& s : seeds_)
      if (std::none_of(start.begin(), start.end(), [&](const contact& x) { return x.id == s.id; })) start.push_back(s);
  }
  merge(l, start);
  if (kind == query_kind::find_providers && !client_mode()) {
    for (auto& r : local_records(now, target, f, want)) l.found[r.provider] = std::move(r);
  }
  step(now, id);
  return id;
}

void dht::merge(lookup& l, const std::vector<contact>& nodes) {
  const dht_key& t = l.res.target;
  for (const auto& c : nodes) {
    if (c.id == self_.id || c.address.empty() || !validate(c)) continue;
    if (std::any_of(l.shortlist.begin(), l.shortlist.end(), [&](const candidate& x) { return x.c.id == c.id; }))
      continue;
    auto pos = std::lower_bound(l.shortlist.begin(), l.shortlist.end(), c.id,
                                [&](const candidate& x, const node_id& id) { return closer(t, x.c.id, id); });
    l.shortlist.insert(pos, candidate{c, cand_state::fresh});
  }
  // Far candidates nobody is waiting on are dropped beyond a few times k.
  const size_t cap = cfg_.k * 4;
  while (l.shortlist.size() > cap) {
    auto it = std::find_if(l.shortlist.rbegin(), l.shortlist.rend(),
                           [](const candidate& x) { return x.state != cand_state::waiting; });
    if (it == l.shortlist.rend()) break;
    l.shortlist.erase(std::next(it).base());
  }
}

void dht::step(int64_t now, uint64_t id) {
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return;
  lookup& l = it->second;
  if (l.res.kind == query_kind::find_providers && l.found.size() >= l.want) return finish(now, id, false);
  // Done when the k closest candidates still standing have all answered.
  size_t considered = 0;
  bool all_answered = true;
  std::vector<candidate*> next;
  for (auto& c : l.shortlist) {
    // Slow requests count as failed here (their answers are still taken when they come).
    if (c.state == cand_state::failed) continue;
    if (c.state == cand_state::waiting && now - c.sent_ms >= cfg_.slow_request_ms) continue;
    if (considered++ >= cfg_.k) break;
    if (c.state != cand_state::answered) all_answered = false;
    if (c.state == cand_state::fresh) next.push_back(&c);
  }
  size_t in_flight = 0, waiting = 0;
  for (const auto& c : l.shortlist) {
    if (c.state != cand_state::waiting) continue;
    ++waiting;
    in_flight += now - c.sent_ms < cfg_.slow_request_ms;
  }
  if (all_answered || (next.empty() && waiting == 0)) return finish(now, id, false);
  for (candidate* c : next) {
    if (in_flight >= cfg_.alpha || pending_.size() >= cfg_.max_pending) break;
    dht_query q;
    q.kind = l.res.kind;
    q.target = l.res.target;
    if (q.kind == query_kind::find_providers) {
      q.device_class = l.filter.device_class;
      q.max_price = l.filter.max_price;
      q.limit = static_cast<uint32_t>(std::min<size_t>(l.want, kMaxRecordsPerMessage));
    }
    c->state = cand_state::waiting;
    c->sent_ms = now;
    ++l.res.queried;
    ++in_flight;
    send_query(now, c->c, std::move(q), id);
  }
  if (waiting == 0 && in_flight == 0) finish(now, id, false);
}

void dht::finish(int64_t now, uint64_t id, bool timed_out) {
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return;
  lookup l = std::move(it->second);
  lookups_.erase(it);
  // Requests still out for this lookup are answered into nothing.
  for (auto& [rid, p] : pending_)
    if (p.lookup == id) p.lookup = 0;
  l.res.finished_ms = now;
  l.res.timed_out = timed_out;
  for (const auto& c : l.shortlist) {
    if (c.state != cand_state::answered) continue;
    l.res.closest.push_back(c.c);
    if (l.res.closest.size() >= cfg_.k) break;
  }
  for (auto& [_, r] : l.found) l.res.records.push_back(std::move(r));
  std::sort(l.res.records.begin(), l.res.records.end(),
            [](const provider_record& a, const provider_record& b) { return a.price < b.price; });
  if (l.want && l.res.records.size() > l.want) l.res.records.resize(l.want);
  if (!l.to_store.empty()) {
    // Store at the k closest that answered; here too when we are among them.
    const dht_key& t = l.res.target;
    size_t closer_than_self = 0;
    for (const auto& c : l.res.closest) closer_than_self += closer(t, c.id, self_.id);
    if (closer_than_self < cfg_.k)
      for (const auto& r : l.to_store) accept_record(now, r);
    for (const auto& c : l.res.closest) {
      dht_query q;
      q.kind = query_kind::add_provider;
      q.target = t;
      q.records = l.to_store;
      send_query(now, c, std::move(q), 0);
    }
  }
  if (l.res.purpose == lookup_purpose::user) results_.push_back(std::move(l.res));
}

void dht::send_query(int64_t now, const contact& to, dht_query q, uint64_t lookup) {
  if (pending_.size() >= cfg_.max_pending) return;
  q.request_id = next_request_++;
  q.sender_address = self_.address;
  pending p;
  p.to = to.id;
  p.address = to.address;
  p.lookup = lookup;
  p.kind = q.kind;
  p.deadline = now + cfg_.request_timeout_ms;
  pending_[q.request_id] = p;
  ++stats_.queries_out;
  outbox_.push_back(outgoing{to, std::move(q)});
}

// ---------------------------------------------------------------- outputs

std::vector<outgoing> dht::take_outbox() {
  std::vector<outgoing> out;
  out.swap(outbox_);
  return out;
}

std::vector<lookup_result> dht::take_results() {
  std::vector<lookup_result> out;
  out.swap(results_);
  return out;
}

int64_t dht::next_deadline() const {
  int64_t d = INT64_MAX;
  for (const auto& [_, p] : pending_) d = std::min(d, p.deadline);
  for (const auto& [_, l] : lookups_) {
    d = std::min(d, l.deadline);
    for (const auto& c : l.shortlist)
      if (c.state == cand_state::waiting && c.sent_ms + cfg_.slow_request_ms > last_tick_)
        d = std::min(d, c.sent_ms + cfg_.slow_request_ms);
  }
  if (!store_.empty()) d = std::min(d, next_expiry_ms_);
  if (!client_mode()) {
    if (table_.size() > 0)
      for (const auto& p : published_) d = std::min(d, p.next_ms);
    d = std::min(d, next_refresh_ms_);
    if (table_.size() == 0 && !seeds_.empty() && lookups_.empty()) d = std::min<int64_t>(d, 0);
  }
  return d;
}

size_t dht::stored_records() const {
  size_t n = 0;
  for (const auto& [_, v] : store_) n += v.size();
  return n;
}

std::vector<provider_record> dht::local_records(int64_t now, const dht_key& key, const provider_filter& f,
                                                size_t limit) const {
  std::vector<provider_record> out;
  auto it = store_.find(key);
  if (it == store_.end()) return out;
  for (const auto& r : it->second) {
    if (r.expires_ms <= now || !f.matches(r)) continue;
    out.push_back(r);
  }
  // The freshest first: a provider that stopped republishing is the likeliest to be gone (the
  // client orders what it gets by price itself).
  std::sort(out.begin(), out.end(), [](const provider_record& a, const provider_record& b) {
    return a.issued_ms != b.issued_ms ? a.issued_ms > b.issued_ms : a.provider < b.provider;
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

// ---------------------------------------------------------------- messages

const char* to_string(query_kind k) {
  switch (k) {
    case query_kind::ping: return "ping";
    case query_kind::find_node: return "find_node";
    case query_kind::find_providers: return "find_providers";
    case query_kind::add_provider: return "add_provider";
  }
  return "unknown";
}

status validate(const dht_query& q) {
  if (static_cast<uint8_t>(q.kind) > 3) return invalid_input("DHT query of unknown kind {}", static_cast<int>(q.kind));
  if (q.sender_address.size() > kMaxAddressBytes)
    return invalid_input("DHT query sender address of {} bytes", q.sender_address.size());
  if (q.device_class.size() > kMaxDeviceClassBytes)
    return invalid_input("DHT query device class of {} bytes", q.device_class.size());
  if (!std::isfinite(q.max_price)) return invalid_input("DHT query price cap is not finite");
  if (q.records.size() > kMaxRecordsPerMessage)
    return invalid_input("DHT query with {} records (at most {})", q.records.size(), kMaxRecordsPerMessage);
  if (q.kind != query_kind::add_provider && !q.records.empty())
    return invalid_input("DHT {} query carrying records", to_string(q.kind));
  for (const auto& r : q.records) GG_RETURN_IF_ERROR(validate(r));
  return status::ok();
}

status validate(const dht_reply& r) {
  if (r.nodes.size() > kMaxNodesPerReply)
    return invalid_input("DHT reply with {} nodes (at most {})", r.nodes.size(), kMaxNodesPerReply);
  if (r.records.size() > kMaxRecordsPerMessage)
    return invalid_input("DHT reply with {} records (at most {})", r.records.size(), kMaxRecordsPerMessage);
  for (const auto& c : r.nodes) GG_RETURN_IF_ERROR(validate(c));
  for (const auto& x : r.records) GG_RETURN_IF_ERROR(validate(x));
  return status::ok();
}

}  // namespace gpugrid::discovery
