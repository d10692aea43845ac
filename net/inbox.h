// A blocking queue of received messages and connection events, for code that is not an actor:
// commands that ask a few peers something (`gpugrid peers`), tests, benchmarks.
//
// handlers() returns transport handlers that feed this inbox. A queued message is not yet
// released, so each connection has at most read_window messages in here and reads no further
// until they are taken: the inbox stays bounded and drops nothing. Thread-safe; the inbox must
// outlive the transport that feeds it (or the transport must be stopped first).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "net/transport.h"

namespace gpugrid::net {

class inbox {
 public:
  struct event {
    enum class kind { message, opened, closed } what = kind::message;
    inbound_ptr in;            // kind::message
    connection_ptr conn;       // every kind
    status why;                // kind::closed
  };

  transport_handlers handlers() {
    transport_handlers h;
    h.on_message = [this](inbound_ptr in) {
      connection_ptr c = in->from();
      push({event::kind::message, std::move(in), std::move(c), status::ok()});
    };
    h.on_open = [this](const connection_ptr& c) { push({event::kind::opened, nullptr, c, status::ok()}); };
    h.on_close = [this](const connection_ptr& c, const status& why) { push({event::kind::closed, nullptr, c, why}); };
    return h;
  }

  // The next event, or nullopt after `timeout`.
  std::optional<event> next(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !q_.empty(); })) return std::nullopt;
    event e = std::move(q_.front());
    q_.pop_front();
    return e;
  }
  // The next received message (connection events before it are discarded), or nullptr.
  inbound_ptr next_message(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) return nullptr;
      auto e = next(left);
      if (!e) return nullptr;
      if (e->what == event::kind::message) return std::move(e->in);
    }
  }
  size_t size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return q_.size();
  }

 private:
  void push(event e) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<event> q_;
};

}  // namespace gpugrid::net
