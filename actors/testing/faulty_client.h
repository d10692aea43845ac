// A client that misbehaves on purpose, for tests only (never linked into gpugrid itself): the
// gpugrid-faulty test binary (tests/faulty_offer_main.cc) speaks the wire protocol with it the
// way a hostile or careless client would, against a real `gpugrid offer`:
//
//   run_jobs         N jobs of one model (bid request, upload, execute, result), each
//                    optionally: declaring any FLOPs it likes, never countersigning the receipt,
//                    sending the countersigned receipt several times (one job id again and
//                    again), or leaving (closing the connection) some time after its Execute.
//   hold_uploads     N whole uploads of random bytes, never executed, held for a while.
//
// Threads: everything runs on the calling thread (blocking), except the transport's own I/O
// threads. Failure: a connection that cannot be made is reported in the summary, not thrown.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actors/messages.h"
#include "actors/wire_convert.h"
#include "ledger/receipt.h"
#include "net/chunker.h"
#include "net/hash.h"
#include "net/identity.h"
#include "net/inbox.h"
#include "net/transport.h"

namespace gpugrid::grid::testing {

struct client_fault {
  double gflops = 0.01;             // declared in each bid request, whatever the model costs
  bool countersign = true;          // false: take results, never send the receipt back
  int receipt_copies = 1;           // times each countersigned receipt is sent
  int64_t leave_after_ms = -1;      // >= 0: close the connection this long after the first Execute
  std::chrono::milliseconds wait{60000};  // per answer
};

struct client_summary {
  int jobs = 0, served = 0, declined = 0, failed = 0, recorded = 0, acks = 0;
  std::string first_error;          // the first decline or job error, as the provider wrote it
  double first_ms = 0;              // from Execute to the answer of the first job that ran
  double bid_price = -1;            // the last bid's price and ETA
  int64_t bid_eta_ms = -1;
  bool left = false;                // the client went away mid-job (leave_after_ms)
};

inline std::unique_ptr<net::transport> faulty_transport(const net::identity& id, net::transport_handlers h) {
  net::transport_options o;
  o.session_mac = true;
  o.max_per_identity = 1 << 20;
  o.max_connections = 1 << 20;
  auto t = net::transport::create(id, o, std::move(h));
  if (!t) return nullptr;
  return std::move(t).value();
}

// Runs `n` jobs of `model` with `inputs` through the provider at `url` as one client identity.
inline client_summary run_jobs(const std::string& url, const std::string& model, const std::vector<tensor>& inputs,
                               int n, const client_fault& f) {
  client_summary s;
  auto id = net::identity::generate();
  keypair me;
  me.public_key = id.public_key();
  me.secret_key = id.secret_key();
  net::inbox box;
  auto t = faulty_transport(id, box.handlers());
  if (!t) {
    s.first_error = "no transport";
    return s;
  }
  auto c = t->connect_sync(url);
  if (!c) {
    s.first_error = "no connection: " + c.error().message();
    return s;
  }
  net::connection_ptr conn = *c;
  const digest32 hash = net::blake2b_256(model);
  const digest32 inputs_digest = tensors_digest(inputs);
  uint64_t input_bytes = 0;
  for (const auto& x : inputs) input_bytes += static_cast<uint64_t>(x.bytes());
  auto note_error = [&](const std::string& e) {
    if (s.first_error.empty()) s.first_error = e;
  };
  // Waits for a message about `job` (acks of earlier receipts are counted on the way).
  auto wait_for = [&](const job_id& job) -> std::shared_ptr<const net::message> {
    auto deadline = std::chrono::steady_clock::now() + f.wait;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !conn->is_open()) return nullptr;
      auto in = box.next_message(std::min(left, std::chrono::milliseconds(200)));
      if (!in) continue;
      auto m = std::make_shared<const net::message>(in->msg());
      in->release();
      if (auto* a = std::get_if<net::receipt_ack>(m.get())) {
        ++s.acks;
        if (a->status == net::receipt_status::recorded) ++s.recorded;
        if (a->job != job) continue;
        return m;
      }
      if (auto* b = std::get_if<net::bid>(m.get()); b && b->job == job) return m;
      if (auto* d = std::get_if<net::bid_decline>(m.get()); d && d->job == job) return m;
      if (auto* r = std::get_if<net::result>(m.get()); r && r->job == job) return m;
      if (auto* e = std::get_if<net::job_error>(m.get()); e && e->job == job) return m;
      if (auto* need = std::get_if<net::model_need>(m.get()); need && need->job && *need->job == job) return m;
    }
  };
  auto send_model = [&](const job_id& job) {
    auto plan = net::plan_transfer(hash, model.size(), net::choose_chunk_bytes(conn->peer_hello().max_frame_bytes), job);
    (void)conn->send(plan);
    for (uint32_t i = 0; i < net::chunk_count(model.size(), plan.chunk_bytes); ++i) {
      while (conn->send(net::chunk_at(plan, model, i)) == net::send_result::queue_full)
        if (!conn->wait_writable(std::chrono::seconds(5))) break;
    }
  };
  for (int j = 0; j < n; ++j) {
    ++s.jobs;
    net::bid_request br;
    br.job = new_job_id();
    br.model_hash = hash;
    br.model_bytes = model.size();
    br.gflops = f.gflops;
    br.input_bytes = input_bytes;
    br.max_price = -1;
    (void)conn->send(br);
    auto m = wait_for(br.job);
    if (!m) {
      note_error("no answer to the bid request");
      ++s.failed;
      continue;
    }
    if (auto* d = std::get_if<net::bid_decline>(m.get())) {
      ++s.declined;
      note_error("declined: " + d->detail);
      continue;
    }
    const auto* b = std::get_if<net::bid>(m.get());
    if (!b) {
      ++s.failed;
      continue;
    }
    s.bid_price = b->price;
    s.bid_eta_ms = b->eta_ms;
    if (!b->model_cached) send_model(br.job);
    execute_request req;
    req.job = br.job;
    req.client = me.public_key;
    req.model_hash = hash;
    req.inputs = inputs;
    req.input_digest = inputs_digest;
    req.price = b->price;
    req.started_ms = unix_ms();
    auto t0 = std::chrono::steady_clock::now();
    (void)conn->send(to_wire_execute(req));
    if (f.leave_after_ms >= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(f.leave_after_ms));
      s.left = true;
      t->stop();
      return s;
    }
    for (;;) {
      m = wait_for(br.job);
      if (m && std::holds_alternative<net::model_need>(*m)) {
        send_model(br.job);
        continue;
      }
      break;
    }
    if (s.first_ms == 0) s.first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!m) {
      ++s.failed;
      note_error("no answer to the execute");
      continue;
    }
    if (auto* e = std::get_if<net::job_error>(m.get())) {
      ++s.failed;
      note_error(std::string(net::to_string(e->code)) + ": " + e->message);
      continue;
    }
    const auto* r = std::get_if<net::result>(m.get());
    if (!r) {
      ++s.failed;
      continue;
    }
    ++s.served;
    if (!f.countersign || !r->receipt) continue;
    ledger::receipt rc = *r->receipt;
    ledger::sign_as_client(rc, me.secret_key);
    for (int k = 0; k < f.receipt_copies; ++k) (void)conn->send(rc);
  }
  // The answers to the last receipts.
  auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  const int want = f.countersign ? s.served * f.receipt_copies : 0;
  while (s.acks < want && std::chrono::steady_clock::now() < settle && conn->is_open()) {
    auto in = box.next_message(std::chrono::milliseconds(100));
    if (!in) continue;
    if (auto* a = std::get_if<net::receipt_ack>(&in->msg())) {
      ++s.acks;
      if (a->status == net::receipt_status::recorded) ++s.recorded;
    }
  }
  t->stop();
  return s;
}

// `n` connections (one identity each) each upload a whole `bytes`-byte file of random bytes,
// never executed, and hold the connections for `hold`. Returns the uploads sent.
inline int hold_uploads(const std::string& url, int n, uint64_t bytes, std::chrono::seconds hold) {
  std::vector<std::unique_ptr<net::transport>> ts;
  std::mt19937_64 rng(std::random_device{}());
  int sent = 0;
  for (int i = 0; i < n; ++i) {
    auto id = net::identity::generate();
    net::transport_handlers h;
    h.on_message = [](net::inbound_ptr in) { in->release(); };
    ts.push_back(faulty_transport(id, h));
    if (!ts.back()) continue;
    auto c = ts.back()->connect_sync(url);
    if (!c) continue;
    std::string payload(bytes, '\0');
    for (size_t k = 0; k + 8 <= payload.size(); k += 8) {
      uint64_t v = rng();
      std::memcpy(&payload[k], &v, 8);
    }
    auto plan = net::plan_transfer(net::blake2b_256(payload), payload.size(),
                                   net::choose_chunk_bytes((*c)->peer_hello().max_frame_bytes), net::job_id{});
    (void)(*c)->send(plan);
    for (uint32_t k = 0; k < net::chunk_count(payload.size(), plan.chunk_bytes); ++k)
      while ((*c)->send(net::chunk_at(plan, payload, k)) == net::send_result::queue_full)
        if (!(*c)->wait_writable(std::chrono::seconds(5))) break;
    ++sent;
  }
  std::printf("uploaded %d files of %llu bytes, never executed\n", sent, static_cast<unsigned long long>(bytes));
  std::fflush(stdout);
  std::this_thread::sleep_for(hold);
  for (auto& t : ts)
    if (t) t->stop();
  return sent;
}

}  // namespace gpugrid::grid::testing
