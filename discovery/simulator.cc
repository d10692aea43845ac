#include "discovery/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <queue>
#include <unordered_map>

#include <fmt/format.h>
#include <sodium.h>

namespace gpugrid::discovery {
namespace {

struct id_hash {
  size_t operator()(const node_id& id) const {
    size_t h;
    std::memcpy(&h, id.data(), sizeof h);
    return h;
  }
};

const char* const kDeviceClasses[] = {"cuda-sm90-80g", "cuda-sm89-24g", "cuda-sm86-24g", "cuda-sm75-16g", "cpu"};
const double kBasePrice[] = {0.004, 0.002, 0.0015, 0.001, 0.0002};
constexpr size_t kClasses = 5;

struct sim_node {
  std::unique_ptr<dht> d;
  node_id id{};
  std::array<uint8_t, 64> sk{};
  bool alive = false;
  bool client = false;
  int64_t access_ms = 0;
  int64_t tick_at = INT64_MAX;   // the tick event in the queue, if any
  size_t device_class = 0;
  double price = 0;
  std::vector<size_t> models;
  int64_t lookup_started = 0;    // client nodes: the lookup they run
  uint64_t lookup_id = 0;
};

enum class ev_kind : uint8_t { deliver, tick, join, announce, churn, lookup, sample };

struct event {
  int64_t at;
  uint64_t seq;
  ev_kind kind;
  uint32_t node;        // receiver / subject (slot index)
  uint32_t payload;     // deliver: index into the payload slab
  bool operator>(const event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

struct payload {
  node_id from{};
  node_id to{};
  std::variant<dht_query, dht_reply> msg;
};

struct lookup_meta {
  uint32_t node;
  int kind;             // 0 model, 1 device+price, 2 general
  size_t model = 0, device_class = 0;
  double max_price = -1;
  bool cold = false;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

class simulation {
 public:
  simulation(const sim_config& cfg, const std::function<void(const std::string&)>& progress)
      : cfg_(cfg), progress_(progress), rng_(cfg.seed) {
    // Zipf-like popularity over models (s = 1).
    double sum = 0;
    for (size_t i = 0; i < cfg_.models; ++i) sum += 1.0 / static_cast<double>(i + 1);
    double acc = 0;
    for (size_t i = 0; i < cfg_.models; ++i) {
      acc += 1.0 / static_cast<double>(i + 1) / sum;
      model_cdf_.push_back(acc);
    }
    for (size_t m = 0; m < cfg_.models; ++m) {
      std::array<uint8_t, 32> h{};
      const uint64_t v = m * 0x9e3779b97f4a7c15ull + 17;
      std::memcpy(h.data(), &v, 8);
      model_keys_.push_back(model_key(h));
    }
    for (size_t c = 0; c < kClasses; ++c) class_keys_.push_back(device_key(kDeviceClasses[c]));
  }

  sim_report run() {
    const auto wall0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < cfg_.nodes; ++i)
      push(static_cast<int64_t>(cfg_.join_window_ms * static_cast<double>(i) / static_cast<double>(cfg_.nodes)),
           ev_kind::join, 0, 0);
    measure_from_ = cfg_.join_window_ms + cfg_.warmup_ms;
    end_ = measure_from_ + cfg_.measure_ms;
    if (cfg_.churn_per_min > 0) push(cfg_.join_window_ms, ev_kind::churn, 0, 0);
    if (cfg_.lookups_per_sec > 0) push(cfg_.join_window_ms + cfg_.warmup_ms / 2, ev_kind::lookup, 0, 0);
    for (int64_t t = measure_from_; t <= end_; t += 60 * 1000) push(t, ev_kind::sample, 0, 0);
    int64_t next_report = 60 * 1000;
    while (!queue_.empty()) {
      event e = queue_.top();
      queue_.pop();
      if (e.at > end_) break;
      now_ = e.at;
      if (progress_ && now_ >= next_report) {
        progress_(fmt::format("t={} min live={} events={} lookups={}", now_ / 60000, live_servers_, events_,
                              lookup_ms_.size()));
        next_report += 60 * 1000;
      }
      ++events_;
      handle(e);
    }
    sim_report r;
    r.nodes = cfg_.nodes;
    r.measured_min = static_cast<double>(cfg_.measure_ms) / 60000.0;
    r.lookups = lookup_ms_.size();
    r.lookups_cold = cold_ms_.size();
    r.lookups_timed_out = timed_out_;
    r.lookup_ms_p50 = percentile(lookup_ms_, 0.5);
    r.lookup_ms_p90 = percentile(lookup_ms_, 0.9);
    r.lookup_ms_p99 = percentile(lookup_ms_, 0.99);
    r.cold_ms_p50 = percentile(cold_ms_, 0.5);
    r.warm_ms_p50 = percentile(warm_ms_, 0.5);
    r.queried_mean = lookup_ms_.empty() ? 0 : queried_sum_ / static_cast<double>(lookup_ms_.size());
    r.findable = lookup_ms_.empty() ? 0 : findable_sum_ / static_cast<double>(lookup_ms_.size());
    r.full_answers = lookup_ms_.empty() ? 0 : static_cast<double>(full_) / static_cast<double>(lookup_ms_.size());
    r.stale_share = returned_ == 0 ? 0 : static_cast<double>(stale_) / static_cast<double>(returned_);
    const double node_min = static_cast<double>(cfg_.nodes) * r.measured_min;
    r.msgs_per_node_min = static_cast<double>(msgs_) / node_min;
    r.bytes_per_node_min = static_cast<double>(bytes_) / node_min;
    r.stored_records_mean = samples_ ? stored_sum_ / samples_ : 0;
    r.table_size_mean = samples_ ? table_sum_ / samples_ : 0;
    r.churned = churned_;
    r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return r;
  }

 private:
  void push(int64_t at, ev_kind k, uint32_t node, uint32_t pl) { queue_.push(event{at, seq_++, k, node, pl}); }

  uint64_t rnd() { return rng_(); }
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }

  size_t draw_model() {
    const double u = uniform();
    return static_cast<size_t>(std::lower_bound(model_cdf_.begin(), model_cdf_.end(), u) - model_cdf_.begin()) %
           cfg_.models;
  }

  std::string address_of(uint32_t slot) const { return "sim:" + std::to_string(slot); }

  std::vector<contact> random_seeds(size_t n, uint32_t except) {
    std::vector<contact> out;
    if (live_list_.empty()) return out;
    for (size_t tries = 0; out.size() < n && tries < n * 8; ++tries) {
      const uint32_t s = live_list_[rnd() % live_list_.size()];
      if (s == except) continue;
      if (std::any_of(out.begin(), out.end(), [&](const contact& c) { return c.id == nodes_[s].id; })) continue;
      out.push_back(contact{nodes_[s].id, address_of(s)});
    }
    return out;
  }

  uint32_t new_slot(bool client) {
    uint32_t slot;
    if (client && !free_clients_.empty()) {
      slot = free_clients_.back();
      free_clients_.pop_back();
    } else {
      slot = static_cast<uint32_t>(nodes_.size());
      nodes_.emplace_back();
    }
    sim_node& n = nodes_[slot];
    std::array<uint8_t, 32> seed;
    for (size_t j = 0; j < seed.size(); j += 8) {
      const uint64_t v = rnd();
      std::memcpy(seed.data() + j, &v, 8);
    }
    crypto_sign_seed_keypair(n.id.data(), n.sk.data(), seed.data());
    n.alive = true;
    n.client = client;
    n.tick_at = INT64_MAX;
    n.access_ms = cfg_.min_access_ms + static_cast<int64_t>(rnd() % static_cast<uint64_t>(
                                                                  std::max<int64_t>(1, cfg_.max_access_ms - cfg_.min_access_ms + 1)));
    const std::array<uint8_t, 64> sk = n.sk;
    n.d = std::make_unique<dht>(contact{n.id, client ? std::string() : address_of(slot)}, cfg_.dht,
                                [sk](provider_record& r) { sign_record(r, sk); }, rnd());
    by_id_[n.id] = slot;
    return slot;
  }

  void join(uint32_t /*unused*/) {
    const uint32_t slot = new_slot(false);
    sim_node& n = nodes_[slot];
    n.device_class = rnd() % kClasses;
    n.price = kBasePrice[n.device_class] * (0.5 + uniform());
    n.models.clear();
    const size_t m = 1 + rnd() % 3;
    while (n.models.size() < m) {
      const size_t x = draw_model();
      if (std::find(n.models.begin(), n.models.end(), x) == n.models.end()) n.models.push_back(x);
    }
    n.d->add_seeds(random_seeds(3, slot));
    live_list_.push_back(slot);
    live_pos_[slot] = live_list_.size() - 1;
    ++live_servers_;
    n.d->bootstrap(now_);
    flush(slot);
    push(now_ + 5000, ev_kind::announce, slot, 0);
  }

  void announce(uint32_t slot) {
    sim_node& n = nodes_[slot];
    if (!n.alive) return;
    std::vector<announcement> a;
    const std::vector<std::string> addr{address_of(slot)};
    a.push_back(announcement{providers_key(), addr, kDeviceClasses[n.device_class], n.price});
    a.push_back(announcement{class_keys_[n.device_class], addr, kDeviceClasses[n.device_class], n.price});
    for (size_t m : n.models) a.push_back(announcement{model_keys_[m], addr, kDeviceClasses[n.device_class], n.price});
    (void)n.d->set_announcements(now_, a);
    n.d->tick(now_);
    flush(slot);
  }

  void kill(uint32_t slot) {
    sim_node& n = nodes_[slot];
    n.alive = false;
    by_id_.erase(n.id);
    if (!n.client) {
      const size_t pos = live_pos_[slot];
      live_list_[pos] = live_list_.back();
      live_pos_[live_list_[pos]] = pos;
      live_list_.pop_back();
      live_pos_.erase(slot);
      --live_servers_;
    }
    n.d.reset();
    n.tick_at = INT64_MAX;
    if (n.client) free_clients_.push_back(slot);
  }

  void churn() {
    // Poisson arrivals of replacements, checked every second.
    const double per_sec = cfg_.churn_per_min * static_cast<double>(cfg_.nodes) / 60.0;
    std::poisson_distribution<int> pd(per_sec);
    const int n = pd(rng_);
    for (int i = 0; i < n && live_list_.size() > 4; ++i) {
      kill(live_list_[rnd() % live_list_.size()]);
      ++churned_;
      join(0);
    }
    push(now_ + 1000, ev_kind::churn, 0, 0);
  }

  void start_lookup() {
    push(now_ + static_cast<int64_t>(std::exponential_distribution<double>(cfg_.lookups_per_sec)(rng_) * 1000.0),
         ev_kind::lookup, 0, 0);
    if (live_list_.size() < 4) return;
    lookup_meta meta;
    meta.cold = rnd() % 2 == 0;
    if (meta.cold) {
      meta.node = new_slot(true);
      nodes_[meta.node].d->add_seeds(random_seeds(3, UINT32_MAX));
    } else {
      meta.node = live_list_[rnd() % live_list_.size()];
    }
    const uint32_t r = static_cast<uint32_t>(rnd() % 10);
    dht_key key;
    provider_filter f;
    if (r < 6) {
      meta.kind = 0;
      meta.model = draw_model();
      key = model_keys_[meta.model];
    } else if (r < 9) {
      meta.kind = 1;
      meta.device_class = rnd() % kClasses;
      meta.max_price = kBasePrice[meta.device_class] * (0.8 + 0.6 * uniform());
      key = class_keys_[meta.device_class];
      f.device_class = kDeviceClasses[meta.device_class];
      f.max_price = meta.max_price;
    } else {
      meta.kind = 2;
      key = providers_key();
    }
    const uint64_t id = nodes_[meta.node].d->find_providers(now_, key, f, cfg_.want);
    if (id == 0) {
      if (meta.cold) kill(meta.node);
      return;
    }
    metas_[{meta.node, id}] = meta;
    flush(meta.node);
  }

  // Live providers matching a lookup, by id.
  size_t live_matching(const lookup_meta& m) const {
    size_t n = 0;
    for (uint32_t s : live_list_) {
      const sim_node& x = nodes_[s];
      if (m.kind == 0 && std::find(x.models.begin(), x.models.end(), m.model) == x.models.end()) continue;
      if (m.kind == 1 && (x.device_class != m.device_class || x.price > m.max_price)) continue;
      ++n;
    }
    return n;
  }

  void on_result(uint32_t slot, const lookup_result& res) {
    auto it = metas_.find({slot, res.id});
    if (it == metas_.end()) return;
    const lookup_meta m = it->second;
    metas_.erase(it);
    if (res.started_ms >= measure_from_) {
      const double ms = static_cast<double>(res.finished_ms - res.started_ms);
      lookup_ms_.push_back(ms);
      (m.cold ? cold_ms_ : warm_ms_).push_back(ms);
      queried_sum_ += static_cast<double>(res.queried);
      timed_out_ += res.timed_out;
      // Providers that joined seconds ago may not be findable yet; they count anyway (strict).
      const size_t live = live_matching(m);
      size_t found_live = 0;
      for (const auto& rec : res.records) {
        ++returned_;
        auto f = by_id_.find(rec.provider);
        if (f != by_id_.end() && nodes_[f->second].alive && !nodes_[f->second].client) ++found_live;
        else ++stale_;
      }
      const size_t target = std::min(cfg_.want, live);
      const double share = target == 0 ? 1.0 : std::min(1.0, static_cast<double>(found_live) / static_cast<double>(target));
      findable_sum_ += share;
      full_ += found_live >= target;
    }
    if (m.cold) kill(slot);
  }

  void flush(uint32_t slot) {
    sim_node& n = nodes_[slot];
    if (!n.alive) return;
    for (auto& o : n.d->take_outbox()) {
      const size_t bytes = std::visit([](const auto& x) { return estimate_wire_bytes(x); }, o.msg);
      if (now_ >= measure_from_) {
        ++msgs_;
        bytes_ += bytes;
      }
      if (uniform() < cfg_.loss) continue;
      uint32_t to_slot = UINT32_MAX;
      if (o.to.address.rfind("sim:", 0) == 0) to_slot = static_cast<uint32_t>(std::stoul(o.to.address.substr(4)));
      else {
        auto f = by_id_.find(o.to.id);  // replies to client-mode nodes go back on their connection
        if (f != by_id_.end()) to_slot = f->second;
      }
      if (to_slot >= nodes_.size()) continue;
      const int64_t delay = n.access_ms + nodes_[to_slot].access_ms + static_cast<int64_t>(rnd() % 5) +
                            static_cast<int64_t>(bytes / 1000);  // ~1 MB/s per link for size
      uint32_t pl;
      if (!free_payloads_.empty()) {
        pl = free_payloads_.back();
        free_payloads_.pop_back();
      } else {
        pl = static_cast<uint32_t>(payloads_.size());
        payloads_.emplace_back();
      }
      payloads_[pl] = payload{n.id, o.to.id, std::move(o.msg)};
      push(now_ + delay, ev_kind::deliver, to_slot, pl);
    }
    for (auto& res : n.d->take_results()) {
      on_result(slot, res);
      if (!nodes_[slot].alive) return;
    }
    schedule_tick(slot);
  }

  void schedule_tick(uint32_t slot) {
    sim_node& n = nodes_[slot];
    if (!n.alive) return;
    int64_t d = n.d->next_deadline();
    if (d == INT64_MAX) return;
    d = std::max(d, now_ + 1);
    if (d < n.tick_at) {
      n.tick_at = d;
      push(d, ev_kind::tick, slot, 0);
    }
  }

  void handle(const event& e) {
    switch (e.kind) {
      case ev_kind::join: join(0); break;
      case ev_kind::announce: announce(e.node); break;
      case ev_kind::churn: churn(); break;
      case ev_kind::lookup: start_lookup(); break;
      case ev_kind::sample: {
        double stored = 0, table = 0;
        for (uint32_t s : live_list_) {
          stored += static_cast<double>(nodes_[s].d->stored_records());
          table += static_cast<double>(nodes_[s].d->table().size());
        }
        if (!live_list_.empty()) {
          stored_sum_ += stored / static_cast<double>(live_list_.size());
          table_sum_ += table / static_cast<double>(live_list_.size());
          ++samples_;
        }
        break;
      }
      case ev_kind::tick: {
        sim_node& n = nodes_[e.node];
        if (!n.alive || n.tick_at != e.at) return;
        n.tick_at = INT64_MAX;
        n.d->tick(now_);
        flush(e.node);
        break;
      }
      case ev_kind::deliver: {
        payload p = std::move(payloads_[e.payload]);
        free_payloads_.push_back(e.payload);
        sim_node& n = nodes_[e.node];
        if (!n.alive || n.id != p.to) return;  // gone: never answered
        if (auto* q = std::get_if<dht_query>(&p.msg)) (void)n.d->on_query(now_, p.from, *q);
        else (void)n.d->on_reply(now_, p.from, std::get<dht_reply>(p.msg));
        flush(e.node);
        break;
      }
    }
  }

  sim_config cfg_;
  std::function<void(const std::string&)> progress_;
  std::mt19937_64 rng_;
  std::vector<double> model_cdf_;
  std::vector<dht_key> model_keys_, class_keys_;
  std::vector<sim_node> nodes_;
  std::unordered_map<node_id, uint32_t, id_hash> by_id_;
  std::vector<uint32_t> live_list_, free_clients_;
  std::unordered_map<uint32_t, size_t> live_pos_;
  size_t live_servers_ = 0;
  std::priority_queue<event, std::vector<event>, std::greater<event>> queue_;
  std::vector<payload> payloads_;
  std::vector<uint32_t> free_payloads_;
  std::map<std::pair<uint32_t, uint64_t>, lookup_meta> metas_;
  uint64_t seq_ = 0, events_ = 0;
  int64_t now_ = 0, measure_from_ = 0, end_ = 0;
  std::vector<double> lookup_ms_, cold_ms_, warm_ms_;
  double queried_sum_ = 0, findable_sum_ = 0, stored_sum_ = 0, table_sum_ = 0;
  uint64_t full_ = 0, returned_ = 0, stale_ = 0, timed_out_ = 0, msgs_ = 0, bytes_ = 0, churned_ = 0;
  int samples_ = 0;
};

size_t record_bytes(const provider_record& r) {
  size_t n = 32 + 32 + 64 + 8 * 3 + 4 + r.device_class.size() + 8 + 24;  // fields, vtable, offsets
  for (const auto& a : r.addresses) n += 8 + a.size() + 4;
  return n;
}

}  // namespace

// Envelope (sender key, MAC, body vector) and Body (version, sequence, timestamp, channel, union)
// come to about 150 bytes; tables add a vtable and offsets.
constexpr size_t kEnvelopeBytes = 150;

size_t estimate_wire_bytes(const dht_query& q) {
  size_t n = kEnvelopeBytes + 8 + 1 + 32 + 8 + 4 + 20 + q.sender_address.size() + 8 + q.device_class.size() + 8;
  for (const auto& r : q.records) n += record_bytes(r) + 4;
  return n;
}

size_t estimate_wire_bytes(const dht_reply& r) {
  size_t n = kEnvelopeBytes + 8 + 4 + 16 + 12;
  for (const auto& c : r.nodes) n += 32 + 8 + c.address.size() + 4 + 12;
  for (const auto& x : r.records) n += record_bytes(x) + 4;
  return n;
}

sim_report run_simulation(const sim_config& cfg, const std::function<void(const std::string&)>& progress) {
  if (sodium_init() < 0) return {};
  simulation s(cfg, progress);
  return s.run();
}

std::string sim_report::to_text() const {
  return fmt::format(
      "nodes {} | measured {:.1f} min | lookups {} ({} cold, {} timed out)\n"
      "time to find providers: p50 {:.0f} ms, p90 {:.0f} ms, p99 {:.0f} ms (cold p50 {:.0f} ms, warm p50 {:.0f} ms); "
      "{:.1f} queries per lookup\n"
      "findable: {:.1f}% of live matching providers (up to want); full answers {:.1f}%; stale records returned {:.1f}%\n"
      "traffic: {:.1f} messages and {:.0f} bytes per node per minute\n"
      "per node: {:.0f} records stored, {:.0f} routing-table contacts; churned {} nodes; wall {:.1f} s",
      nodes, measured_min, lookups, lookups_cold, lookups_timed_out, lookup_ms_p50, lookup_ms_p90, lookup_ms_p99,
      cold_ms_p50, warm_ms_p50, queried_mean, findable * 100, full_answers * 100, stale_share * 100,
      msgs_per_node_min, bytes_per_node_min, stored_records_mean, table_size_mean, churned, wall_s);
}

}  // namespace gpugrid::discovery
