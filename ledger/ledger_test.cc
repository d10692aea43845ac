#include <catch2/catch.hpp>

#include <cstring>

#include <sodium.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <fstream>
#include <sstream>

#include "ledger/ledger.h"

using namespace gpugrid;
using namespace gpugrid::ledger;

namespace {

struct keypair {
  key32 pk{};
  std::array<uint8_t, 64> sk{};
  keypair() { REQUIRE(sodium_init() >= 0); crypto_sign_keypair(pk.data(), sk.data()); }
};

receipt make_receipt(const keypair& client, const keypair& provider, int64_t price, uint8_t job) {
  receipt r;
  r.job_id[0] = job;
  r.client_key = client.pk;
  r.provider_key = provider.pk;
  r.model_hash = blake2b_256("model");
  r.input_digest = blake2b_256("input" + std::to_string(job));
  r.output_digest = blake2b_256("output" + std::to_string(job));
  r.price_micros = price;
  r.started_ms = 1000 + job;
  r.finished_ms = 2000 + job;
  sign_as_provider(r, provider.sk);
  sign_as_client(r, client.sk);
  return r;
}

std::string temp_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-ledger-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

constexpr size_t record = 4 + 8 + 8 + 32 + receipt_size + 32;

// One record as the file format defines it, built by hand: what a program that edits the file
// directly would write.
std::string hand_record(uint64_t index, const digest32& prev, const receipt& r, digest32* hash) {
  std::string e("GGLEDG1", 8);
  for (int i = 0; i < 8; ++i) e.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  e.append(reinterpret_cast<const char*>(prev.data()), 32);
  e += r.canonical_bytes();
  *hash = blake2b_256(e);
  std::string out;
  uint32_t len = static_cast<uint32_t>(e.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + e + std::string(reinterpret_cast<const char*>(hash->data()), 32);
}

}  // namespace

TEST_CASE("receipts round-trip and their signatures bind every field", "[ledger]") {
  keypair client, provider;
  receipt r = make_receipt(client, provider, 1500, 1);
  REQUIRE(verify_receipt(r).is_ok());
  auto back = receipt::parse(r.canonical_bytes(), "test");
  REQUIRE(back.has_value());
  CHECK(back->canonical_bytes() == r.canonical_bytes());
  receipt tampered = r;
  tampered.price_micros += 1;
  CHECK_FALSE(verify_receipt(tampered).is_ok());
  CHECK_FALSE(receipt::parse(r.canonical_bytes().substr(1), "test").has_value());
  // Readers that look receipts up in place find the job id and the provider where they are.
  const std::string bytes = r.canonical_bytes();
  CHECK(is_receipt_bytes(bytes.data()));
  CHECK(std::memcmp(bytes.data() + receipt_job_id_at, r.job_id.data(), 16) == 0);
  CHECK(std::memcmp(bytes.data() + receipt_provider_at, r.provider_key.data(), 32) == 0);
  std::string bad_kind = bytes;
  bad_kind[8] = 9;
  CHECK_FALSE(is_receipt_bytes(bad_kind.data()));
  CHECK_FALSE(receipt::parse(bad_kind, "test").has_value());
  CHECK_FALSE(is_receipt_bytes(std::string(receipt_size, '\0').data()));
  // A provider knows its own signature by making it again.
  CHECK(provider_signature_is(r, provider.sk));
  CHECK_FALSE(provider_signature_is(tampered, provider.sk));
  CHECK_FALSE(provider_signature_is(r, client.sk));
  for (uint8_t job = 2; job < 40; ++job) {  // signatures over other fields never match
    receipt other = make_receipt(client, provider, 1500, job);
    other.provider_sig = r.provider_sig;
    CHECK_FALSE(provider_signature_is(other, provider.sk));
  }
}

TEST_CASE("the ledger appends, verifies and balances", "[ledger]") {
  keypair client, p1, p2;
  std::string dir = temp_dir("append");
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  REQUIRE((*l)->append(make_receipt(client, p1, 100, 1)).has_value());
  REQUIRE((*l)->append(make_receipt(client, p2, 250, 2)).has_value());
  auto h = (*l)->append(make_receipt(client, p1, 50, 3));
  REQUIRE(h.has_value());
  CHECK(h->count == 3);
  receipt bad = make_receipt(client, p1, 10, 4);
  bad.client_sig[0] ^= 1;
  CHECK_FALSE((*l)->append(bad).has_value());  // unsigned receipts are refused

  bool torn = false;
  auto entries = read_entries((*l)->path(), &torn);
  REQUIRE(entries.has_value());
  CHECK_FALSE(torn);
  REQUIRE(entries->size() == 3);
  CHECK(verify_entries(*entries).is_ok());
  int64_t earned = 0, paid = 0;
  for (const auto& row : balances(*entries)) {
    earned += row.earned_micros;
    paid += row.paid_micros;
    if (row.node == p1.pk) CHECK(row.earned_micros == 150);
    if (row.node == p2.pk) CHECK(row.earned_micros == 250);
    if (row.node == client.pk) CHECK(row.paid_micros == 400);
  }
  CHECK(earned == paid);

  // Reopening sees the same chain head.
  auto again = ledger_file::open(dir);
  REQUIRE(again.has_value());
  CHECK((*again)->current_head().hash == h->hash);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tampering is caught and the first bad entry named", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("tamper");
  {
    auto l = ledger_file::open(dir);
    REQUIRE(l.has_value());
    for (uint8_t j = 0; j < 4; ++j) REQUIRE((*l)->append(make_receipt(client, provider, 10 + j, j)).has_value());
  }
  std::string path = dir + "/ledger.log";
  const std::string good = slurp(path);
  REQUIRE(good.size() == 4 * record);

  SECTION("a flipped byte") {
    std::string bad = good;
    bad[2 * record + 100] ^= 0x20;
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 2:", 0) == 0);
  }
  SECTION("a deleted entry") {
    std::string bad = good.substr(0, record) + good.substr(2 * record);
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 1:", 0) == 0);
  }
  SECTION("two entries swapped") {
    std::string bad = good.substr(0, record) + good.substr(2 * record, record) + good.substr(record, record) + good.substr(3 * record);
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 1:", 0) == 0);
  }
  SECTION("a torn last write is cut off on open, nothing earlier lost") {
    spit(path, good.substr(0, 3 * record + record / 2));
    std::string note;
    auto l = ledger_file::open(dir, &note);
    REQUIRE(l.has_value());
    CHECK_FALSE(note.empty());
    CHECK((*l)->current_head().count == 3);
    CHECK(verify_entries(*read_entries(path, nullptr)).is_ok());
    CHECK(slurp(path).size() == 3 * record);
    REQUIRE((*l)->append(make_receipt(client, provider, 99, 9)).has_value());
    CHECK(verify_entries(*read_entries(path, nullptr)).is_ok());
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("a (job, provider) pair is recorded once: appends refuse it and verify rejects it", "[ledger]") {
  keypair client, p1, p2;
  std::string dir = temp_dir("dup");
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  receipt r = make_receipt(client, p1, 100, 7);
  REQUIRE((*l)->append(r).has_value());
  CHECK((*l)->contains(r.job_id, p1.pk));
  auto again = (*l)->append(r);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().kind() == error_kind::invalid_input);
  CHECK(again.error().message().find("already") != std::string::npos);
  // The same job on another provider (a redundant run) is a separate receipt.
  CHECK((*l)->append(make_receipt(client, p2, 100, 7)).has_value());
  CHECK((*l)->current_head().count == 2);
  // Reopened, the index is rebuilt from the file.
  l->reset();
  auto reopened = ledger_file::open(dir);
  REQUIRE(reopened.has_value());
  CHECK_FALSE((*reopened)->append(r).has_value());

  // A file with a duplicate written around the ledger (a well-formed chain) fails verify.
  std::string path = dir + "/dup.log";
  digest32 h0{}, h1{}, h2{};
  std::string bytes = hand_record(0, digest32{}, r, &h0);
  bytes += hand_record(1, h0, make_receipt(client, p1, 5, 8), &h1);
  bytes += hand_record(2, h1, r, &h2);
  spit(path, bytes);
  auto e = read_entries(path, nullptr);
  REQUIRE(e.has_value());
  REQUIRE(e->size() == 3);
  status st = verify_entries(*e);
  REQUIRE_FALSE(st.is_ok());
  INFO(st.message());
  CHECK(st.message().rfind("entry 2:", 0) == 0);
  CHECK(st.message().find("twice") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("processes appending to one ledger at once keep one clean chain", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("procs");
  { REQUIRE(ledger_file::open(dir).has_value()); }
  constexpr int kProcs = 4, kEach = 20;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int bad = 0;
      auto l = ledger_file::open(dir);
      if (!l) ::_exit(3);
      for (int j = 0; j < kEach; ++j)
        if (!(*l)->append(make_receipt(client, provider, 1, static_cast<uint8_t>(p * kEach + j))).has_value()) ++bad;
      ::_exit(bad == 0 ? 0 : 4);
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int wst = 0;
    REQUIRE(::waitpid(k, &wst, 0) == k);
    CHECK(WIFEXITED(wst));
    CHECK(WEXITSTATUS(wst) == 0);
  }
  bool torn = true;
  auto e = read_entries(dir + "/ledger.log", &torn);
  REQUIRE(e.has_value());
  CHECK_FALSE(torn);
  CHECK(e->size() == kProcs * kEach);
  CHECK(verify_entries(*e).is_ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("a write that fails (file-size limit) leaves the ledger at its last whole entry", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("fsize");
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  REQUIRE((*l)->append(make_receipt(client, provider, 1, 1)).has_value());
  REQUIRE((*l)->append(make_receipt(client, provider, 1, 2)).has_value());
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit small = old;
  small.rlim_cur = 2 * record + 100;  // the third record fits only in part
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  auto failed = (*l)->append(make_receipt(client, provider, 1, 3));
  auto failed_again = (*l)->append(make_receipt(client, provider, 1, 4));
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
  ::signal(SIGXFSZ, old_handler);
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.error().kind() == error_kind::io);
  CHECK_FALSE(failed_again.has_value());
  std::string path = dir + "/ledger.log";
  CHECK(slurp(path).size() == 2 * record);  // no fragment left behind
  CHECK((*l)->current_head().count == 2);
  // Once there is room again, appends continue the chain.
  REQUIRE((*l)->append(make_receipt(client, provider, 1, 3)).has_value());
  auto e = read_entries(path, nullptr);
  REQUIRE(e.has_value());
  CHECK(e->size() == 3);
  CHECK(verify_entries(*e).is_ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("torn tails are cut, on open and before an append, with the bytes kept", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("torn");
  std::string path = dir + "/ledger.log";
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  REQUIRE((*l)->append(make_receipt(client, provider, 1, 1)).has_value());
  // Another process died inside its write: half a record follows.
  std::string good = slurp(path);
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << good.substr(0, record / 2);
  }
  REQUIRE((*l)->append(make_receipt(client, provider, 1, 2)).has_value());
  CHECK(slurp(path).size() == 2 * record);
  CHECK(verify_entries(*read_entries(path, nullptr)).is_ok());
  CHECK(slurp(path + ".cut").size() == record / 2);
  l->reset();
  // A whole-sized last record of zeros (a crash that extended the file but wrote nothing).
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << std::string(record, '\0');
  }
  bool torn = false;
  REQUIRE(read_entries(path, &torn).has_value());
  CHECK(torn);
  std::string note;
  auto reopened = ledger_file::open(dir, &note);
  REQUIRE(reopened.has_value());
  CHECK(note.find("torn") != std::string::npos);
  CHECK((*reopened)->current_head().count == 2);
  CHECK(slurp(path).size() == 2 * record);
  std::filesystem::remove_all(dir);
}

TEST_CASE("appends from many threads commit in groups and keep one clean chain", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("threads");
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  constexpr int kThreads = 8, kEach = 40;
  std::vector<receipt> rs;
  for (int i = 0; i < kThreads * kEach; ++i) {
    receipt r = make_receipt(client, provider, 1 + i, static_cast<uint8_t>(i));
    r.job_id[1] = static_cast<uint8_t>(i >> 8);  // 320 distinct jobs
    sign_as_provider(r, provider.sk);
    sign_as_client(r, client.sk);
    rs.push_back(r);
  }
  std::atomic<int> ok{0}, dup{0}, other{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int j = 0; j < kEach; ++j) {
        // Every receipt twice, from two threads: exactly one of the two is recorded.
        for (int k : {t * kEach + j, ((t + 1) % kThreads) * kEach + j}) {
          auto h = (*l)->append_verified(rs[k]);
          if (h) ++ok;
          else if (h.error().kind() == error_kind::invalid_input) ++dup;
          else ++other;
        }
      }
    });
  for (auto& t : ts) t.join();
  CHECK(ok == kThreads * kEach);
  CHECK(dup == kThreads * kEach);
  CHECK(other == 0);
  CHECK((*l)->current_head().count == kThreads * kEach);
  bool torn = true;
  auto e = read_entries(dir + "/ledger.log", &torn);
  REQUIRE(e.has_value());
  CHECK_FALSE(torn);
  CHECK(e->size() == kThreads * kEach);
  CHECK(verify_entries(*e).is_ok());
  CHECK(e->back().hash == (*l)->current_head().hash);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a crash inside the last group's write is cut from its first damaged record", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("group-crash");
  std::string path = dir + "/ledger.log";
  constexpr int kRecords = 200;
  {
    auto l = ledger_file::open(dir);
    REQUIRE(l.has_value());
    for (int j = 0; j < kRecords; ++j) REQUIRE((*l)->append(make_receipt(client, provider, 1, static_cast<uint8_t>(j))).has_value());
  }
  const std::string good = slurp(path);
  REQUIRE(good.size() == kRecords * record);
  SECTION("a lost page in the middle of the last group: cut from there, bytes kept") {
    std::string bad = good;
    // Records 195 and 196 lose their bytes (zeros, as an unwritten page reads); 197-199 survived.
    std::fill(bad.begin() + 195 * record + 10, bad.begin() + 197 * record - 10, '\0');
    spit(path, bad);
    bool torn = false;
    auto read = read_entries(path, &torn);  // a reader stops there and cuts nothing
    REQUIRE(read.has_value());
    CHECK(torn);
    CHECK(read->size() == 195);
    CHECK(slurp(path).size() == 200 * record);
    std::string note;
    auto l = ledger_file::open(dir, &note);
    REQUIRE(l.has_value());
    CHECK(note.find("torn") != std::string::npos);
    CHECK((*l)->current_head().count == 195);
    CHECK(slurp(path).size() == 195 * record);
    CHECK(slurp(path + ".cut").size() == 5 * record);
    REQUIRE((*l)->append(make_receipt(client, provider, 1, 200)).has_value());
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    CHECK(e->size() == 196);
    CHECK(verify_entries(*e).is_ok());
  }
  SECTION("a changed byte in the last group: cut on open, named by a reader") {
    std::string bad = good;
    bad[198 * record + 100] ^= 0x20;
    spit(path, bad);
    auto read = read_entries(path, nullptr);
    REQUIRE(read.has_value());
    status st = verify_entries(*read);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 198:", 0) == 0);
    std::string note;
    auto l = ledger_file::open(dir, &note);
    REQUIRE(l.has_value());
    CHECK((*l)->current_head().count == 198);
    CHECK(slurp(path + ".cut").size() == 2 * record);
  }
  SECTION("damage before the last group's bytes is never cut") {
    std::string bad = good;
    std::fill(bad.begin() + 5 * record, bad.begin() + 6 * record, '\0');
    spit(path, bad);
    auto l = ledger_file::open(dir);
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().message().find("damaged") != std::string::npos);
    CHECK(slurp(path).size() == kRecords * record);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("the job index holds many keys in a sorted array", "[ledger]") {
  key_index ix;
  for (uint64_t k = 0; k < 10000; ++k) ix.insert(k * 7919 + 3);
  CHECK(ix.size() == 10000);
  for (uint64_t k = 0; k < 10000; k += 97) CHECK(ix.contains(k * 7919 + 3));
  CHECK_FALSE(ix.contains(5));
}
