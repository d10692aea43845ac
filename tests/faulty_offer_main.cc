// gpugrid-faulty: test tool for the reliability tests (built with the tests, never installed).
//
//   gpugrid-faulty FAULT offer [FLAGS...]   `gpugrid offer` with a misbehaving provider, FAULT
//                                           one of corrupt, stall, crash, slow
//                                           (actors/testing/faulty_provider.h); or, for
//                                           generation, gen-truncate (answers from the last 2
//                                           prompt tokens: a cut context) or gen-slow (40 ms a
//                                           token) (actors/testing/faulty_gen_engine.h)
//   gpugrid-faulty gen-unpaid generate [FLAGS...]
//                                           `gpugrid generate` as a client that stops paying
//                                           after the prompt (its GenPay vouchers are dropped)
//   gpugrid-faulty tamper-relay offer --relay [FLAGS...]
//                                           a relay that alters the frames it carries
//   gpugrid-faulty attack flood-peers URL N [SILENT]
//                                           one PeerExchange of N fake peers (at SILENT: PORT on
//                                           127.0.0.1 or HOST:PORT; default port 9: nobody
//                                           answers)
//   gpugrid-faulty attack hold-slots URL N SECONDS [--many-ids]
//                                           one identity (or, with --many-ids, a new one per
//                                           connection: one address) opens N connections and
//                                           holds them
//   gpugrid-faulty attack announce URL N MB SECONDS
//                                           N connections each announce an MB upload, send one
//                                           chunk and hold
//   gpugrid-faulty attack client URL MODEL INPUT.npy N [--gflops G] [--no-receipt]
//                  [--receipt-copies K] [--leave-after-ms MS]
//                                           one client identity runs N jobs over the wire,
//                                           declaring G GFLOP (default 0.01), never
//                                           countersigning, sending each receipt K times, or
//                                           leaving MS after its first Execute
//                                           (actors/testing/faulty_client.h); prints
//                                           "served S of N ..." and the first error
//   gpugrid-faulty attack hold-uploads URL N MB SECONDS
//                                           N connections each upload a whole MB file that is
//                                           never executed, and hold
// An attack prints what it achieved as one line ("opened 4 of 50") and exits 0.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "actors/testing/faulty_client.h"
#include "actors/testing/faulty_gen_engine.h"
#include "actors/testing/faulty_provider.h"
#include "cli/generate_grid.h"
#include "cli/command_table.h"
#include "cli/commands.h"
#include "engine/tensor_io.h"
#include "net/chunker.h"
#include "net/hash.h"
#include "net/identity.h"
#include "net/transport.h"

namespace {

using namespace gpugrid;

net::transport_handlers discard() {
  net::transport_handlers h;
  h.on_message = [](net::inbound_ptr in) { in->release(); };
  return h;
}

std::unique_ptr<net::transport> make_transport(const net::identity& id) {
  net::transport_options o;
  o.session_mac = true;
  o.max_per_identity = 1 << 20;  // the attacker's own side sets no limit
  o.max_connections = 1 << 20;
  auto t = net::transport::create(id, o, discard());
  if (!t) {
    std::fprintf(stderr, "gpugrid-faulty: %s\n", t.error().message().c_str());
    std::exit(1);
  }
  return std::move(t).value();
}

// attack client URL MODEL INPUT N [options]
int attack_client(int argc, char** argv) {
  if (argc < 7) return 2;
  std::string url = argv[3];
  std::string model;
  {
    std::FILE* fp = std::fopen(argv[4], "rb");
    if (!fp) {
      std::fprintf(stderr, "gpugrid-faulty: cannot read %s\n", argv[4]);
      return 1;
    }
    char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, fp)) > 0) model.append(buf, got);
    std::fclose(fp);
  }
  auto input = read_tensor_file(argv[5], dtype::undefined, nullptr, nullptr);
  if (!input) {
    std::fprintf(stderr, "gpugrid-faulty: %s\n", input.error().message().c_str());
    return 1;
  }
  int n = std::atoi(argv[6]);
  grid::testing::client_fault f;
  for (int i = 7; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--no-receipt") f.countersign = false;
    else if (a == "--gflops" && has_value) f.gflops = std::atof(argv[++i]);
    else if (a == "--receipt-copies" && has_value) f.receipt_copies = std::atoi(argv[++i]);
    else if (a == "--leave-after-ms" && has_value) f.leave_after_ms = std::atol(argv[++i]);
    else return 2;
  }
  auto s = grid::testing::run_jobs(url, model, {*input}, n, f);
  std::printf("served %d of %d; declined %d; failed %d; receipts recorded %d (acks %d); first job %.0f ms%s\n", s.served,
              s.jobs, s.declined, s.failed, s.recorded, s.acks, s.first_ms, s.left ? "; left mid-job" : "");
  if (s.bid_price >= 0) std::printf("last bid: price %.9g, eta %lld ms\n", s.bid_price, static_cast<long long>(s.bid_eta_ms));
  if (!s.first_error.empty()) std::printf("first error: %s\n", s.first_error.c_str());
  return 0;
}

int attack(int argc, char** argv) {
  if (argc < 5) return 2;
  std::string kind = argv[2], url = argv[3];
  if (kind == "client") return attack_client(argc, argv);
  if (kind == "hold-uploads" && argc >= 7) {
    grid::testing::hold_uploads(url, std::atoi(argv[4]), static_cast<uint64_t>(std::atol(argv[5])) << 20,
                                std::chrono::seconds(std::atoi(argv[6])));
    return 0;
  }
  long n = std::atol(argv[4]);
  auto id = net::identity::generate();
  auto t = make_transport(id);
  if (kind == "flood-peers") {
    // SILENT: PORT (on 127.0.0.1) or HOST:PORT
    std::string silent = argc > 5 ? argv[5] : "9";
    if (silent.find(':') == std::string::npos) silent = "127.0.0.1:" + silent;
    auto c = t->connect_sync(url);
    if (!c) {
      std::printf("no connection: %s\n", c.error().message().c_str());
      return 0;
    }
    net::peer_exchange px;
    for (long i = 0; i < n; ++i) {
      net::peer_info p;
      auto fake = net::identity::generate();
      p.node_key = fake.public_key();
      p.url = "ws://" + silent + "/" + std::to_string(i);
      p.last_seen_ms = 0;
      p.role = net::node_role::provider;
      px.peers.push_back(std::move(p));
    }
    auto r = (*c)->send(px);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::printf("sent %ld fake peers: %s\n", n, net::to_string(r));
    t->stop();
    return 0;
  }
  if (kind == "hold-slots" && argc >= 6) {
    int seconds = std::atoi(argv[5]);
    bool many_ids = argc > 6 && std::string(argv[6]) == "--many-ids";
    std::vector<std::unique_ptr<net::transport>> others;  // --many-ids: one identity per connection
    std::vector<net::connection_ptr> held;
    for (long i = 0; i < n; ++i) {
      net::transport* via = t.get();
      if (many_ids) {
        others.push_back(make_transport(net::identity::generate()));
        via = others.back().get();
      }
      auto c = via->connect_sync(url);
      if (c) held.push_back(*c);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    size_t open = 0;
    for (auto& c : held) open += c->is_open() ? 1 : 0;
    std::printf("opened %zu of %ld\n", open, n);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    for (auto& o : others) o->stop();
    t->stop();
    return 0;
  }
  if (kind == "announce" && argc >= 7) {
    uint64_t bytes = static_cast<uint64_t>(std::atol(argv[5])) << 20;
    int seconds = std::atoi(argv[6]);
    std::vector<std::unique_ptr<net::transport>> ts;
    std::vector<net::connection_ptr> held;
    for (long i = 0; i < n; ++i) {
      ts.push_back(make_transport(net::identity::generate()));
      auto c = ts.back()->connect_sync(url);
      if (!c) continue;
      std::string one(64 << 10, static_cast<char>(i));
      net::model_put plan = net::plan_transfer(net::blake2b_256(one), bytes, 64 << 10, net::job_id{});
      (void)(*c)->send(plan);
      (void)(*c)->send(net::chunk_at(plan, one, 0));
      held.push_back(*c);
    }
    std::printf("announced %zu uploads of %ld MiB, 64 KiB sent each\n", held.size(), std::atol(argv[5]));
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    for (auto& tr : ts) tr->stop();
    return 0;
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "attack") {
    int code = attack(argc, argv);
    if (code == 2) std::fprintf(stderr, "gpugrid-faulty: bad attack arguments (see tests/faulty_offer_main.cc)\n");
    return code;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: gpugrid-faulty corrupt|stall|crash|slow offer [FLAGS...] | attack KIND URL ...\n");
    return 2;
  }
  if (std::string(argv[1]) == "gen-truncate" || std::string(argv[1]) == "gen-slow") {
    if (std::string(argv[1]) == "gen-truncate")
      cli::offer_generation_wrapper() = [](grid::gen_engine_loader real) { return grid::testing::truncating_loader(real, 2); };
    else
      cli::offer_generation_wrapper() = [](grid::gen_engine_loader real) {
        return grid::testing::slow_loader(real, std::chrono::milliseconds(40));
      };
    std::vector<char*> args{argv[0]};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    return cli::dispatch(static_cast<int>(args.size()), args.data());
  }
  if (std::string(argv[1]) == "gen-unpaid") {
    // `generate` as a client that stops paying: every GenPay frame (a voucher for tokens
    // received) is dropped while the client believes it sent it; the prompt is still paid.
    cli::client_generation_peer_wrapper() = [](grid::gen_peer p) {
      auto real = p.send;
      p.send = [real](const net::message& m) { return std::holds_alternative<net::gen_pay>(m) ? true : real(m); };
      return p;
    };
    std::vector<char*> args{argv[0]};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    return cli::dispatch(static_cast<int>(args.size()), args.data());
  }
  if (std::string(argv[1]) == "tamper-relay") {
    // `offer --relay` whose circuits flip one byte of every client frame after the first two
    // (the Hello and HelloAck pass, so the end-to-end session MAC is what catches it).
    auto seen = std::make_shared<std::atomic<long>>(0);
    cli::offer_relay_tamper() = [seen](std::string data, bool upstream) {
      if (upstream && ++*seen > 2 && !data.empty()) data[data.size() / 2] ^= 0x20;
      return std::vector<std::string>{std::move(data)};
    };
    std::vector<char*> args{argv[0]};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    return cli::dispatch(static_cast<int>(args.size()), args.data());
  }
  auto f = grid::testing::parse_fault(argv[1]);
  if (!f) {
    std::fprintf(stderr, "gpugrid-faulty: '%s' is not a fault (corrupt, stall, crash, slow)\n", argv[1]);
    return 2;
  }
  cli::offer_provider_factory() = [f = *f](grid::keypair k, std::shared_ptr<grid::model_cache> c,
                                           grid::provider_options p, std::shared_ptr<ledger::ledger_file> l) {
    const char* ms = std::getenv("GPUGRID_FAULTY_DELAY_MS");  // slow: the wait per job (default 1000)
    auto delay = std::chrono::milliseconds(ms ? std::atol(ms) : 1000);
    return std::make_shared<grid::testing::faulty_provider>(k, std::move(c), std::move(p), std::move(l), f, delay);
  };
  std::vector<char*> args{argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  return cli::dispatch(static_cast<int>(args.size()), args.data());
}
