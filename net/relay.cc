#include "net/relay.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace gpugrid::net {

namespace {

constexpr const char* kRelayPrefix = "/relay/";
constexpr const char* kAcceptPrefix = "/relay/accept/";
constexpr size_t kWindowBytes = size_t{8} << 20;  // per circuit and direction, on their way out

bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

bool valid_node_id(const std::string& id) {
  if (id.size() != 34 || id.compare(0, 2, "gg") != 0) return false;
  return std::all_of(id.begin() + 2, id.end(), [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '2' && ch <= '7'); });
}

}  // namespace

std::string relayed_node_id(const std::string& path) {
  if (path.rfind(kRelayPrefix, 0) != 0 || path.rfind(kAcceptPrefix, 0) == 0) return "";
  std::string id = path.substr(std::char_traits<char>::length(kRelayPrefix));
  return valid_node_id(id) ? id : "";
}

std::string relayed_url(const std::string& relay_url, const std::string& node_id) {
  std::string base = relay_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + kRelayPrefix + node_id;
}

std::string accept_path(const bytes16& token) {
  std::string hex(32, '0');
  sodium_bin2hex(hex.data(), hex.size() + 1, token.data(), token.size());
  return kAcceptPrefix + hex;
}

std::optional<bytes16> parse_accept_path(const std::string& path) {
  if (path.rfind(kAcceptPrefix, 0) != 0) return std::nullopt;
  std::string hex = path.substr(std::char_traits<char>::length(kAcceptPrefix));
  if (hex.size() != 32) return std::nullopt;
  bytes16 token{};
  size_t n = 0;
  if (sodium_hex2bin(token.data(), token.size(), hex.c_str(), hex.size(), nullptr, &n, nullptr) != 0 || n != 16)
    return std::nullopt;
  return token;
}

// ------------------------------------------------------------------ relay_core

relay_core::relay_core(relay_options o) : opt_(std::move(o)) {}

void relay_core::note(int64_t& counter, const std::string& line) {
  ++counter;
  if (opt_.log && power_of_two(counter)) opt_.log(fmt::format("relay: {} ({} so far)", line, counter));
}

status relay_core::attach(const std::string& node_id, uint64_t conn) {
  auto it = attached_.find(node_id);
  if (it == attached_.end() && attached_.size() >= opt_.max_attached) {
    note(c_.refused_attach, fmt::format("refused to attach {}: {} providers are attached (limit {})", node_id,
                                        attached_.size(), opt_.max_attached));
    return status(error_kind::io, fmt::format("{} providers are attached here (limit {})", attached_.size(), opt_.max_attached));
  }
  attached_[node_id] = conn;  // a newer attach connection of the same node replaces the old one
  return status::ok();
}

void relay_core::detach(uint64_t conn) {
  for (auto it = attached_.begin(); it != attached_.end();) {
    if (it->second == conn) it = attached_.erase(it);
    else ++it;
  }
}

std::optional<uint64_t> relay_core::attached_conn(const std::string& node_id) const {
  auto it = attached_.find(node_id);
  if (it == attached_.end()) return std::nullopt;
  return it->second;
}

status relay_core::check(const std::string& node_id, const std::string& source_ip) {
  if (!attached_.count(node_id)) {
    note(c_.refused_unattached, fmt::format("refused a circuit from {} to {}: not attached here", source_ip, node_id));
    return invalid_input("node {} is not attached to this relay", node_id);
  }
  auto src = per_source_.find(source_ip);
  size_t mine = src == per_source_.end() ? 0 : src->second;
  if (mine >= opt_.max_circuits_per_source) {
    note(c_.refused_source, fmt::format("refused a circuit from {}: it holds {} (limit per address {})", source_ip, mine,
                                        opt_.max_circuits_per_source));
    return status(error_kind::io, fmt::format("{} circuits from your address are open here (limit {})", mine,
                                              opt_.max_circuits_per_source));
  }
  if (circuits_.size() >= opt_.max_circuits) {
    note(c_.refused_total, fmt::format("refused a circuit from {}: {} circuits open (limit {})", source_ip,
                                       circuits_.size(), opt_.max_circuits));
    return status(error_kind::io, fmt::format("this relay carries {} circuits (limit {})", circuits_.size(), opt_.max_circuits));
  }
  return status::ok();
}

status relay_core::admit(const std::string& node_id, const std::string& source_ip, int64_t now_ms) {
  (void)expire(now_ms);
  return check(node_id, source_ip);
}

expected<relay_core::request_result> relay_core::request(const std::string& node_id, const std::string& source_ip,
                                                         int64_t now_ms) {
  GG_RETURN_IF_ERROR(check(node_id, source_ip));
  request_result r;
  r.circuit = next_circuit_++;
  randombytes_buf(r.token.data(), r.token.size());
  r.provider_conn = attached_.at(node_id);
  circuit c;
  c.node_id = node_id;
  c.source_ip = source_ip;
  c.token = r.token;
  c.created_ms = now_ms;
  circuits_[r.circuit] = c;
  by_token_[r.token] = r.circuit;
  ++per_source_[source_ip];
  return r;
}

bool relay_core::pending_token(const bytes16& token, int64_t now_ms) const {
  auto t = by_token_.find(token);
  if (t == by_token_.end()) return false;
  const circuit& c = circuits_.at(t->second);
  return !c.open && now_ms - c.created_ms <= opt_.accept_timeout_ms;
}

expected<uint64_t> relay_core::accept(const bytes16& token, int64_t now_ms) {
  if (!pending_token(token, now_ms)) {
    note(c_.bad_accept, "refused a provider's accept: unknown or expired circuit token");
    return invalid_input("no circuit waits for this token");
  }
  uint64_t id = by_token_.at(token);
  by_token_.erase(token);  // a token is good once: a replayed accept finds nothing
  circuits_.at(id).open = true;
  ++c_.opened;
  return id;
}

void relay_core::close(uint64_t circuit_id) {
  auto it = circuits_.find(circuit_id);
  if (it == circuits_.end()) return;
  by_token_.erase(it->second.token);
  auto src = per_source_.find(it->second.source_ip);
  if (src != per_source_.end() && --src->second == 0) per_source_.erase(src);
  circuits_.erase(it);
}

std::vector<uint64_t> relay_core::expire(int64_t now_ms) {
  std::vector<uint64_t> gone;
  for (const auto& [id, c] : circuits_)
    if (!c.open && now_ms - c.created_ms > opt_.accept_timeout_ms) gone.push_back(id);
  for (uint64_t id : gone) {
    close(id);
    ++c_.expired;
  }
  return gone;
}

int64_t relay_core::pace(size_t bytes, int64_t now_ms) {
  c_.bytes += static_cast<int64_t>(bytes);
  double rate = opt_.max_bytes_per_second;
  if (rate <= 0) return 0;
  double burst = std::max(rate / 4, 64.0 * 1024);  // a quarter second's worth may pass at once
  if (bucket_ms_ < 0) {
    bucket_ms_ = now_ms;
    bucket_bytes_ = burst;
  }
  bucket_bytes_ = std::min(burst, bucket_bytes_ + rate * static_cast<double>(now_ms - bucket_ms_) / 1000.0);
  bucket_ms_ = now_ms;
  bucket_bytes_ -= static_cast<double>(bytes);
  if (bucket_bytes_ >= 0) return 0;
  return static_cast<int64_t>(std::ceil(-bucket_bytes_ * 1000.0 / rate));
}

relay_counters relay_core::counters() const {
  relay_counters c = c_;
  c.attached = attached_.size();
  c.pending = 0;
  c.open = 0;
  for (const auto& [id, cc] : circuits_) (cc.open ? c.open : c.pending)++;
  return c;
}

// ------------------------------------------------------------------ relay_service

relay_service::relay_service(relay_options o) : core_(std::move(o)) {}

relay_service::~relay_service() { stop(); }

int64_t relay_service::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void relay_service::set_public_url(const std::string& url) {
  std::lock_guard<std::mutex> lk(mu_);
  public_url_ = url;
}

pipe_hooks relay_service::hooks() {
  std::weak_ptr<relay_service> weak = shared_from_this();
  pipe_hooks h;
  h.admit = [weak](const std::string& path, const std::string& ip) -> status {
    auto self = weak.lock();
    if (!self) return invalid_input("this node is no relay");
    std::lock_guard<std::mutex> lk(self->mu_);
    if (self->stopped_) return status(error_kind::io, "the relay is shutting down");
    if (auto token = parse_accept_path(path)) {
      if (self->core_.pending_token(*token, now_ms())) return status::ok();
      return invalid_input("no circuit waits for this token");
    }
    std::string id = relayed_node_id(path);
    if (id.empty()) return invalid_input("'{}' is no relayed address (/relay/<node id>)", path.substr(0, 80));
    return self->core_.admit(id, ip, now_ms());
  };
  h.opened = [weak](const std::string& path, const std::string& ip, pipe_ptr p) {
    auto self = weak.lock();
    if (!self) return p->close();
    if (auto token = parse_accept_path(path)) return self->on_provider(*token, std::move(p));
    self->on_client(relayed_node_id(path), ip, std::move(p));
  };
  return h;
}

void relay_service::on_client(const std::string& node_id, const std::string& ip, pipe_ptr p) {
  connection_ptr provider;
  bytes16 token{};
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto r = stopped_ ? expected<relay_core::request_result>(status(error_kind::io, "stopping"))
                      : core_.request(node_id, ip, now_ms());
    if (!r) {
      p->close();
      return;
    }
    auto c = attach_conns_.find(r->provider_conn);
    if (c == attach_conns_.end()) {
      core_.close(r->circuit);
      p->close();
      return;
    }
    provider = c->second;
    token = r->token;
    live_[r->circuit].client = p;
  }
  // The client's Hello waits in its socket until the provider joins (the pipe is not read yet).
  if (provider->send(relay_incoming{token}) != send_result::queued) {
    std::lock_guard<std::mutex> lk(mu_);
    // Left pending: tick() expires it and closes the client's pipe.
  }
}

void relay_service::on_provider(const bytes16& token, pipe_ptr p) {
  pipe_ptr client;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto accepted = stopped_ ? expected<uint64_t>(status(error_kind::io, "stopping")) : core_.accept(token, now_ms());
    if (!accepted) {
      p->close();
      return;
    }
    id = *accepted;
    auto it = live_.find(id);
    if (it == live_.end() || !it->second.client) {
      core_.close(id);
      p->close();
      return;
    }
    it->second.provider = p;
    client = it->second.client;
  }
  splice(id, client, p);
}

void relay_service::splice(uint64_t circuit, pipe_ptr client, pipe_ptr provider) {
  std::weak_ptr<relay_service> weak = shared_from_this();
  // One direction: a message read from `from` is written to `to`. Up to kWindowBytes may be on
  // their way out at once (so reading the next message overlaps writing the last); past that,
  // `from` is read again only when writes complete. The budget's wait applies either way.
  struct flow {
    std::mutex mu;
    size_t in_flight = 0;   // bytes handed to `to` and not yet written
    bool paused = false;    // `from` waits for writes to complete
    int64_t wait_ms = 0;    // the budget's wait for the resume
  };
  auto forward = [weak](pipe_ptr from, pipe_ptr to, bool upstream) {
    std::weak_ptr<relay_pipe> weak_from = from;
    auto fl = std::make_shared<flow>();
    return [weak, weak_from, to, upstream, fl](std::string data) {
      auto self = weak.lock();
      auto src = weak_from.lock();
      if (!self || !src) return;
      int64_t wait = 0;
      std::vector<std::string> out;
      size_t bytes = 0;
      {
        std::lock_guard<std::mutex> lk(self->mu_);
        if (self->core_.options().tamper) out = self->core_.options().tamper(std::move(data), upstream);
        else out.push_back(std::move(data));
        for (const auto& d : out) bytes += d.size();
        wait = self->core_.pace(bytes, now_ms());
      }
      if (out.empty()) return src->resume(std::chrono::milliseconds(wait));
      {
        std::lock_guard<std::mutex> lk(fl->mu);
        fl->in_flight += bytes;
      }
      std::weak_ptr<relay_pipe> again = src;
      for (size_t i = 0; i < out.size(); ++i) {
        size_t n = out[i].size();
        auto written = [again, fl, n] {
          int64_t resume_after = -1;
          {
            std::lock_guard<std::mutex> lk(fl->mu);
            fl->in_flight -= std::min(fl->in_flight, n);
            if (fl->paused && fl->in_flight < kWindowBytes) {
              fl->paused = false;
              resume_after = fl->wait_ms;
            }
          }
          if (resume_after >= 0)
            if (auto s = again.lock()) s->resume(std::chrono::milliseconds(resume_after));
        };
        if (!to->write(std::move(out[i]), std::move(written))) return src->close();
      }
      bool now = false;
      {
        std::lock_guard<std::mutex> lk(fl->mu);
        if (fl->in_flight < kWindowBytes) now = true;
        else {
          fl->paused = true;
          fl->wait_ms = wait;
        }
      }
      if (now) src->resume(std::chrono::milliseconds(wait));
    };
  };
  auto closed = [weak, circuit](const status&) {
    if (auto self = weak.lock()) self->end(circuit);
  };
  client->start(forward(client, provider, true), closed);
  provider->start(forward(provider, client, false), closed);
}

void relay_service::end(uint64_t circuit) {
  live l;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(circuit);
    if (it == live_.end()) return;
    l = std::move(it->second);
    live_.erase(it);
    core_.close(circuit);
  }
  if (l.client) l.client->close();
  if (l.provider) l.provider->close();
}

relay_attach_ack relay_service::on_attach(const connection_ptr& c, const relay_attach& a) {
  relay_attach_ack ack;
  std::lock_guard<std::mutex> lk(mu_);
  std::string id = c->peer_id();
  if (!a.attach) {
    core_.detach(c->id());
    attach_conns_.erase(c->id());
    ack.detail = "detached";
    return ack;
  }
  if (stopped_ || public_url_.empty()) {
    ack.detail = "this relay is not listening";
    return ack;
  }
  status s = core_.attach(id, c->id());
  if (!s.is_ok()) {
    ack.detail = s.message();
    return ack;
  }
  attach_conns_[c->id()] = c;
  ack.accepted = true;
  ack.relayed_url = relayed_url(public_url_, id);
  return ack;
}

void relay_service::on_closed(const connection_ptr& c) {
  std::lock_guard<std::mutex> lk(mu_);
  core_.detach(c->id());
  attach_conns_.erase(c->id());
}

void relay_service::tick() {
  std::vector<pipe_ptr> to_close;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (uint64_t id : core_.expire(now_ms())) {
      auto it = live_.find(id);
      if (it == live_.end()) continue;
      if (it->second.client) to_close.push_back(it->second.client);
      live_.erase(it);
    }
  }
  for (auto& p : to_close) p->close();
}

void relay_service::stop() {
  std::map<uint64_t, live> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopped_ = true;
    all.swap(live_);
    for (const auto& [id, l] : all) core_.close(id);
    attach_conns_.clear();
  }
  for (auto& [id, l] : all) {
    if (l.client) l.client->close();
    if (l.provider) l.provider->close();
  }
}

relay_counters relay_service::counters() const {
  std::lock_guard<std::mutex> lk(mu_);
  return core_.counters();
}

}  // namespace gpugrid::net
