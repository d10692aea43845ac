#include "chain/anchor.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "chain/payment_channel.h"

namespace gpugrid::chain {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string field_text(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return s.empty() ? "-" : s;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) break;
    start = tab + 1;
  }
  return out;
}

std::optional<anchor_record> parse_record(const std::string& line) {
  auto f = split_tabs(line);
  if (f.size() != 7) return std::nullopt;
  anchor_record r;
  char* end = nullptr;
  errno = 0;
  r.time_ms = std::strtoll(f[0].c_str(), &end, 10);
  if (f[0].empty() || *end || errno) return std::nullopt;
  r.state = f[1];
  if (r.state != "sent" && r.state != "mined" && r.state != "failed") return std::nullopt;
  errno = 0;
  unsigned long long seq = std::strtoull(f[2].c_str(), &end, 10);
  if (f[2].empty() || *end || errno || f[2][0] == '-') return std::nullopt;
  r.sequence = seq;
  auto head = hash_from_hex(f[3], "head");
  if (!head) return std::nullopt;
  r.head = *head;
  if (f[4] != "-") {
    auto tx = hash_from_hex(f[4], "tx");
    if (!tx) return std::nullopt;
    r.tx = *tx;
  }
  if (f[5] != "-") {
    auto b = parse_uint(f[5], "block");
    if (!b) return std::nullopt;
    r.block = *b;
  }
  if (f[6] != "-") r.note = f[6];
  if (r.state == "mined" && (!r.tx || !r.block)) return std::nullopt;
  return r;
}

}  // namespace

expected<std::chrono::seconds> parse_duration(const std::string& text, const std::string& what) {
  const std::string bad = what + " '" + text + "' is not a duration (use 90s, 10m, 2h, 1d or whole seconds)";
  if (text.empty() || text.size() > 20) return invalid_input("{}", bad);
  std::string digits = text;
  long long unit = 1;
  switch (digits.back()) {
    case 's': unit = 1; digits.pop_back(); break;
    case 'm': unit = 60; digits.pop_back(); break;
    case 'h': unit = 3600; digits.pop_back(); break;
    case 'd': unit = 86400; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9)
    return invalid_input("{}", bad);
  long long n = std::stoll(digits) * unit;
  if (n <= 0 || n > 366LL * 86400) return invalid_input("{} (it must be above 0 and at most a year)", bad);
  return std::chrono::seconds(n);
}

std::string anchors_path(const std::string& data_dir) { return data_dir + "/anchors.tsv"; }

status append_anchor_record(const std::string& path, const anchor_record& r) {
  std::string line = fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{}\n", r.time_ms, r.state, r.sequence, to_hex(r.head),
                                 r.tx ? to_hex(*r.tx) : "-", r.block ? to_decimal(*r.block) : "-", field_text(r.note));
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot open {}: {}", path, std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } c{fd};
  if (::flock(fd, LOCK_EX) != 0) return io_error("cannot lock {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error("cannot stat {}: {}", path, std::strerror(errno));
  if (st.st_size > 0) {  // a line cut short by a crash: start a fresh one
    char last = '\n';
    if (::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') line.insert(line.begin(), '\n');
  }
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error("cannot write {}: {}", path, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return io_error("cannot sync {}: {}", path, std::strerror(errno));
  return status::ok();
}

expected<std::vector<anchor_record>> read_anchor_records(const std::string& path, size_t* skipped) {
  if (skipped) *skipped = 0;
  std::vector<anchor_record> out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return out;
    return io_error("cannot read {}", path);
  }
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) {  // no newline: cut short by a crash
      if (!line.empty() && skipped) ++*skipped;
      break;
    }
    if (line.empty()) continue;
    auto r = parse_record(line);
    if (r) out.push_back(std::move(*r));
    else if (skipped) ++*skipped;
  }
  if (in.bad()) return io_error("cannot read {}", path);
  return out;
}

uint64_t anchored_count(const std::vector<anchor_record>& records) {
  uint64_t n = 0;
  for (const auto& r : records)
    if (r.state == "mined" && r.sequence + 1 > n) n = r.sequence + 1;
  return n;
}

expected<anchor_record> send_anchor(tx_sender& sender, const address& contract, uint64_t sequence, const hash32& head,
                                    const std::string& record_path, std::FILE* log,
                                    const std::function<void(const hash32&)>& sent) {
  anchor_record rec;
  rec.sequence = sequence;
  rec.head = head;
  status record_error;
  sender.on_sent = [&](const hash32& tx) {
    rec.tx = tx;
    anchor_record s = rec;
    s.time_ms = now_ms();
    s.state = "sent";
    record_error = append_anchor_record(record_path, s);
    if (sent) sent(tx);
  };
  auto r = sender.send(contract, 0, payment_channel::anchor_call(head, u256(sequence)), log);
  sender.on_sent = nullptr;
  rec.time_ms = now_ms();
  if (!r) {
    rec.state = "failed";
    rec.note = r.error().message();
    (void)append_anchor_record(record_path, rec);  // the error returned says more than a record failure would
    return r.error();
  }
  rec.state = "mined";
  rec.tx = r->transaction_hash;
  rec.block = r->block_number;
  GG_RETURN_IF_ERROR(append_anchor_record(record_path, rec));
  if (!record_error.is_ok()) return record_error;
  return rec;
}

expected<std::vector<onchain_anchor>> anchors_of(rpc_client& rpc, const address& contract, const address& who,
                                                 const u256& from_block, const u256& window) {
  hash32 who_topic{};
  std::copy(who.b.begin(), who.b.end(), who_topic.begin() + 12);
  const hash32 topic = payment_channel::anchored_topic();
  GG_ASSIGN_OR_RETURN(u256 latest, rpc.block_number());
  std::vector<onchain_anchor> out;
  const u256 step = window == 0 ? u256(1) : window;
  for (u256 start = from_block; start <= latest; start += step) {
    u256 end = start + step - 1 < latest ? start + step - 1 : latest;
    log_filter f;
    f.from_block = start;
    f.to_block = end;
    f.emitter = contract;
    f.topics = {{topic}, {who_topic}};
    GG_ASSIGN_OR_RETURN(std::vector<log_entry> logs, rpc.get_logs(f));
    for (const auto& l : logs) {
      if (l.emitter != contract || l.topics.empty() || l.topics[0] != topic) continue;  // a lax endpoint's extra logs
      if (l.topics.size() != 2 || l.topics[1] != who_topic || l.data.size() != 64)
        return invalid_input("chain RPC {}: the Anchored log of transaction {} has the wrong shape ({} topics, {} data "
                             "bytes)", rpc.url(), to_hex(l.transaction_hash), l.topics.size(), l.data.size());
      onchain_anchor a;
      a.block = l.block_number;
      a.tx = l.transaction_hash;
      std::copy(l.data.begin(), l.data.begin() + 32, a.head.begin());
      a.sequence = from_be(l.data.data() + 32, 32);
      out.push_back(a);
    }
  }
  return out;
}

// ---- anchor_policy ----

anchor_policy::anchor_policy(anchor_schedule s, uint64_t anchored, clock::time_point now)
    : s_(s), anchored_(anchored), last_(now), retry_at_(now) {}

bool anchor_policy::due(uint64_t count, clock::time_point now) const {
  if (!s_.enabled() || count <= anchored_ || now < retry_at_) return false;
  if (s_.every > 0 && count - anchored_ >= s_.every) return true;
  if (s_.interval.count() > 0 && now - last_ >= s_.interval) return true;
  return false;
}

void anchor_policy::anchored(uint64_t count, clock::time_point now) {
  if (count > anchored_) anchored_ = count;
  last_ = now;
  retry_at_ = now;
  pause_ = first_retry;
}

void anchor_policy::failed(clock::time_point now) {
  retry_at_ = now + pause_;
  pause_ = std::min<std::chrono::seconds>(pause_ * 2, max_retry);
}

// ---- anchorer ----

constexpr std::chrono::milliseconds kFinalConfirmWait{30000};

anchorer::anchorer(anchorer_options o, const secret_key& key, uint64_t anchored)
    : o_(std::move(o)), key_(key), policy_(o_.schedule, anchored, anchor_policy::clock::now()) {}

expected<std::unique_ptr<anchorer>> anchorer::start(anchorer_options o, const secret_key& key) {
  if (!o.head) return invalid_input("anchorer: no ledger head to anchor");
  GG_ASSIGN_OR_RETURN(auto records, read_anchor_records(o.record_path));
  if (auto url = parse_http_url(o.target.rpc); !url) return url.error();
  std::unique_ptr<anchorer> a(new anchorer(std::move(o), key, anchored_count(records)));
  a->thread_ = std::thread([p = a.get()] { p->run(); });
  return a;
}

void anchorer::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    cv_.wait_for(lk, o_.poll, [this] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    anchor_head h = o_.head();
    if (policy_.due(h.count, anchor_policy::clock::now())) attempt(h);
    lk.lock();
  }
  lk.unlock();
  anchor_head h = o_.head();
  if (h.count > policy_.anchored_count()) {  // the last entries, once, on the way out
    // Waiting long for the receipt would hold up the exit; the hash is recorded as soon as sent.
    if (o_.target.confirm.timeout > kFinalConfirmWait) {
      o_.target.confirm.timeout = kFinalConfirmWait;
      sender_.reset();
    }
    attempt(h);
  }
}

void anchorer::attempt(const anchor_head& h) {
  const uint64_t sequence = h.count - 1;
  auto report_failure = [&](const status& st, bool record) {
    policy_.failed(anchor_policy::clock::now());
    if (record) {
      anchor_record rec;
      rec.time_ms = now_ms();
      rec.state = "failed";
      rec.sequence = sequence;
      rec.head = h.hash;
      rec.note = st.message();
      (void)append_anchor_record(o_.record_path, rec);
    }
    if (o_.on_event) o_.on_event(anchor_event{"anchor_failed", sequence, h.hash, std::nullopt, std::nullopt, st.message()});
  };
  if (!rpc_) {
    auto t = o_.target.transport ? o_.target.transport(o_.target.rpc) : make_beast_transport(o_.target.rpc);
    if (!t) return report_failure(t.error(), true);
    rpc_ = std::make_unique<rpc_client>(std::move(*t), o_.target.rpc_opts);
  }
  if (!sender_) {
    u256 id;
    if (o_.target.chain_id) {
      id = *o_.target.chain_id;
    } else {
      auto served = rpc_->chain_id();
      if (!served) return report_failure(served.error(), true);
      id = *served;
      o_.target.chain_id = id;  // tx_sender checks it again before each first send
    }
    sender_ = std::make_unique<tx_sender>(*rpc_, key_, id, o_.target.gas, o_.target.confirm);
  }
  auto sent = [&](const hash32& tx) {
    if (o_.on_event) o_.on_event(anchor_event{"anchor_sent", sequence, h.hash, tx, std::nullopt, {}});
  };
  auto r = send_anchor(*sender_, o_.target.contract, sequence, h.hash, o_.record_path, nullptr, sent);
  if (!r) return report_failure(r.error(), false);  // send_anchor recorded it
  policy_.anchored(h.count, anchor_policy::clock::now());
  if (o_.on_event) o_.on_event(anchor_event{"anchored", sequence, h.hash, r->tx, r->block, {}});
}

void anchorer::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

anchorer::~anchorer() { stop(); }

}  // namespace gpugrid::chain
