// wire_bench: what the wire layer costs and carries.
//
//  - crypto and codec per message on one core: Ed25519 sign/verify, BLAKE2b, session MAC,
//    encode+sign and decode+verify of a 1 KiB message;
//  - loopback throughput through the real transport (a server and a client transport in this
//    process, 127.0.0.1): messages/s for 1 KiB payloads, MB/s for 16 MiB payloads, with
//    Ed25519-signed frames and with session MACs.
//
// Usage: wire_bench [--small N] [--large N] [--large-mib M] [--no-micro] [--modes signed,mac] [--json]
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <sys/resource.h>
#include <time.h>

#include "base/json.h"
#include "net/codec.h"
#include "net/hash.h"
#include "net/identity.h"
#include "net/transport.h"

using namespace gpugrid;
using namespace gpugrid::net;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

// CPU seconds used by this thread / by the whole process. On a shared machine wall-clock rates
// swing with everybody else's load; CPU time says what the work itself costs.
double thread_cpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
double process_cpu() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

struct row {
  std::string name;
  double value = 0;
  std::string unit;
  std::string note;
};

// Runs `fn` repeatedly for about `budget` CPU seconds of this thread; returns calls per
// CPU second (= per core).
template <typename Fn>
double rate(Fn fn, double budget = 0.6) {
  size_t calls = 0;
  double t0 = thread_cpu();
  double elapsed = 0;
  do {
    for (int i = 0; i < 16; ++i) fn();
    calls += 16;
    elapsed = thread_cpu() - t0;
  } while (elapsed < budget);
  return calls / elapsed;
}

model_chunk payload(size_t bytes) {
  model_chunk c;
  c.model_hash = blake2b_256("bench");
  c.data.assign(bytes, '\0');
  for (size_t i = 0; i < bytes; i += 4096) c.data[i] = static_cast<char>(i >> 12);
  return c;
}

struct loop_result {
  double msgs_per_s = 0;
  double mb_per_s = 0;
  double seconds = 0;
  double cpu_seconds = 0;   // the whole process: sender, both I/O threads, receiver
};

// Sends `count` messages of `bytes` from a client transport to a server transport.
expected<loop_result> loopback(size_t bytes, size_t count, bool mac) {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<size_t> got{0};
  std::atomic<size_t> got_bytes{0};
  transport_options o;
  o.session_mac = mac;
  o.max_frame_bytes = std::max<size_t>(kDefaultMaxFrameBytes, bytes + (1 << 20));
  o.send_queue_frames = 1024;
  o.send_queue_bytes = std::max<size_t>(size_t{64} << 20, 3 * bytes);
  o.read_window = 1;
  transport_handlers h;
  h.on_message = [&](inbound_ptr in) {
    got_bytes += std::get<model_chunk>(in->msg()).data.size();
    in->release();
    if (++got == count) {
      std::lock_guard<std::mutex> lk(mu);
      cv.notify_all();
    }
  };
  auto server = transport::create(identity::generate(), o, h);
  if (!server) return server.error();
  auto port = (*server)->listen("127.0.0.1", 0);
  if (!port) return port.error();
  auto client = transport::create(identity::generate(), o, {});
  if (!client) return client.error();
  auto c = (*client)->connect_sync((*server)->url());
  if (!c) return c.error();

  model_chunk m = payload(bytes);
  auto t0 = clk::now();
  double cpu0 = process_cpu();
  for (size_t i = 0; i < count; ++i) {
    m.index = static_cast<uint32_t>(i);
    for (;;) {
      send_result r = (*c)->send(m);
      if (r == send_result::queued) break;
      if (r != send_result::queue_full) return status(error_kind::internal, fmt::format("send: {}", to_string(r)));
      (*c)->wait_writable(std::chrono::milliseconds(100));
    }
  }
  {
    std::unique_lock<std::mutex> lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(120), [&] { return got.load() == count; }))
      return status(error_kind::internal, fmt::format("only {} of {} messages arrived", got.load(), count));
  }
  loop_result r;
  r.seconds = seconds_since(t0);
  r.cpu_seconds = process_cpu() - cpu0;
  r.msgs_per_s = count / r.seconds;
  r.mb_per_s = static_cast<double>(got_bytes.load()) / r.seconds / 1e6;
  (*client)->stop();
  (*server)->stop();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  size_t small_count = 200000, large_count = 24, large_mib = 16;
  bool json = false, micro = true;
  std::string modes = "signed,mac";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ull; };
    if (a == "--small") small_count = next();
    else if (a == "--large") large_count = next();
    else if (a == "--large-mib") large_mib = next();
    else if (a == "--json") json = true;
    else if (a == "--no-micro") micro = false;
    else if (a == "--modes" && i + 1 < argc) modes = argv[++i];
    else {
      std::fprintf(stderr, "usage: wire_bench [--small N] [--large N] [--large-mib M] [--no-micro] [--modes signed,mac] [--json]\n");
      return 2;
    }
  }
  std::vector<row> rows;
  identity id = identity::generate();
  session_key key;
  key.bytes = blake2b_256("key");

  // ---- crypto, one core
  if (micro) {
  std::string kib(1024, 'k');
  sig64 sig = id.sign(kib);
  double sign_rate = rate([&] { sig = id.sign(kib); });
  double verify_rate = rate([&] { (void)verify_signature(id.public_key(), kib, sig); });
  rows.push_back({"ed25519 sign (1 KiB)", 1e6 / sign_rate, "us", fmt::format("{:.0f}/s per core", sign_rate)});
  rows.push_back({"ed25519 verify (1 KiB)", 1e6 / verify_rate, "us", fmt::format("{:.0f}/s per core", verify_rate)});
  std::string big(size_t{16} << 20, 'b');
  double blake = rate([&] { (void)blake2b_256(big); }, 1.0) * big.size() / 1e6;
  rows.push_back({"BLAKE2b-256 (16 MiB)", blake, "MB/s", "one core"});
  double mac_rate = rate([&] { (void)session_mac(key, 1, reinterpret_cast<const uint8_t*>(big.data()), big.size()); }, 1.0);
  rows.push_back({"session MAC, Poly1305 (16 MiB)", mac_rate * big.size() / 1e6, "MB/s", "one core"});

  // ---- codec, one core
  model_chunk small = payload(1024);
  for (bool mac : {false, true}) {
    frame f;
    frame_header h;
    h.sequence = 5;
    h.channel = bytes16{};
    auto enc = [&] { f = mac ? *encode_mac(small, id.public_key(), key, h) : *encode(small, id, h); };
    enc();
    decode_options o;
    o.session = &key;
    double e = rate(enc);
    double d = rate([&] { (void)decode(f.data(), f.size(), o); });
    std::string mode = mac ? "MAC" : "signed";
    rows.push_back({fmt::format("encode 1 KiB, {}", mode), e, "msg/s", fmt::format("{:.1f} us; frame {} B", 1e6 / e, f.size())});
    rows.push_back({fmt::format("decode 1 KiB, {}", mode), d, "msg/s", fmt::format("{:.1f} us", 1e6 / d)});
  }

  }

  // ---- loopback through the transport
  for (bool mac : {false, true}) {
    if (modes.find(mac ? "mac" : "signed") == std::string::npos) continue;
    std::string mode = mac ? "MAC" : "signed";
    size_t small_n = mac ? small_count : small_count / 4;
    auto s = loopback(1024, small_n, mac);
    if (!s) {
      std::fprintf(stderr, "wire_bench: %s\n", s.error().message().c_str());
      return 1;
    }
    rows.push_back({fmt::format("loopback 1 KiB, {}", mode), s->msgs_per_s, "msg/s",
                    fmt::format("{:.1f} MB/s; {:.1f} us CPU/msg (both ends); {:.0f} msg per CPU-second",
                                s->mb_per_s, s->cpu_seconds / small_n * 1e6, small_n / s->cpu_seconds)});
    auto l = loopback(large_mib << 20, large_count, mac);
    if (!l) {
      std::fprintf(stderr, "wire_bench: %s\n", l.error().message().c_str());
      return 1;
    }
    double total_mb = static_cast<double>(large_count * (large_mib << 20)) / 1e6;
    rows.push_back({fmt::format("loopback {} MiB, {}", large_mib, mode), l->mb_per_s, "MB/s",
                    fmt::format("{:.1f} msg/s; {:.2f} CPU-s per GB (both ends); {:.0f} MB per CPU-second",
                                l->msgs_per_s, l->cpu_seconds / total_mb * 1e3, total_mb / l->cpu_seconds)});
  }

  if (json) {
    json_writer w;
    w.begin_array();
    for (const row& r : rows)
      w.begin_object().key("name").value(r.name).key("value").value(r.value).key("unit").value(r.unit).key("note").value(r.note).end_object();
    w.end_array();
    std::printf("%s\n", w.str().c_str());
  } else {
    for (const row& r : rows) std::printf("%-34s %12.1f %-6s %s\n", r.name.c_str(), r.value, r.unit.c_str(), r.note.c_str());
  }
  return 0;
}
