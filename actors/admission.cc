#include "actors/admission.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "ledger/receipt.h"

namespace gpugrid::grid {

namespace {

// The rules both moments share: the ledger can record the payment, the client owes little.
std::optional<admission> payment_rules(const admission_facts& f) {
  if (f.ledger_failed)
    return admission::decline(decline_reason::internal,
                              fmt::format("this provider cannot record payments now ({})", f.ledger_error));
  if (f.unpaid_for_client >= f.unpaid_credit)
    return admission::decline(
        decline_reason::internal,
        fmt::format("{} jobs done for this client are unpaid (receipts not countersigned); no more until they are",
                    f.unpaid_for_client));
  return std::nullopt;
}

}  // namespace

admission admit_bid(const admission_facts& f) {
  if (f.draining) return admission::decline(decline_reason::draining, "the provider is shutting down");
  if (auto no = payment_rules(f)) return *no;
  if (f.model_bytes > f.max_model_bytes)
    return admission::decline(decline_reason::too_big, fmt::format("model is {} bytes; this provider takes at most {}",
                                                                   f.model_bytes, f.max_model_bytes));
  if (f.model_bytes > f.memory_budget)
    return admission::decline(decline_reason::too_big, fmt::format("model is {} bytes; this provider keeps at most {} in memory",
                                                                   f.model_bytes, f.memory_budget));
  if (f.bad_model) return admission::decline(decline_reason::unsupported, *f.bad_model);
  // Capacity: the slots running plus as many waiting (more with dynamic batching).
  if (f.busy >= (f.capacity > 0 ? f.capacity : 2 * f.slots)) return admission::decline(decline_reason::busy, fmt::format("{} jobs running or queued", f.busy));
  if (f.max_price >= 0 && f.price > f.max_price)
    return admission::decline(decline_reason::too_cheap,
                              fmt::format("price {:.6g} is above the limit {:.6g}", f.price, f.max_price));
  return admission::accept();
}

admission admit_execute(const admission_facts& f, double offered, double required) {
  if (auto no = payment_rules(f)) return *no;
  // A job must pay what it costs here (a relative slack for rounding in the receipt's micros).
  if (required > 0 && offered + 1e-12 < required * (1 - 1e-6))
    return admission::decline(decline_reason::too_cheap,
                              fmt::format("the job costs {:.6g} credits here; it offers {:.6g}", required, offered));
  // Extension point: a payment check (the voucher that came with the job) goes here, as one
  // more decline with its own reason.
  return admission::accept();
}

award_decision admit_award(const award_facts& f) {
  auto no = [](award_refusal why, std::string detail) { return award_decision{why, std::move(detail)}; };
  if (f.bid_price < 0) return no(award_refusal::not_awarded, "this provider made no bid for the job (or its bid expired)");
  if (f.offered + 1e-12 < f.bid_price * (1 - 1e-9))
    return no(award_refusal::underpaid,
              fmt::format("the job offers {:.6g}, below this provider's bid {:.6g}", f.offered, f.bid_price));
  if (f.draining) return no(award_refusal::draining, "the provider is shutting down");
  if (f.already_running) return no(award_refusal::duplicate, "this job is already running here");
  // Bids are cheap to collect while idle; executions beyond a bounded queue are refused, so a
  // client holding many bids cannot make the provider queue without limit.
  if (f.queued >= f.queue_limit) return no(award_refusal::queue_full, fmt::format("{} jobs are running or queued here", f.queued));
  return {};
}

// ------------------------------------------------------------------ unpaid_book

namespace {

std::string hex16(const job_id& j) { return ledger::to_hex(j.data(), j.size()); }

template <size_t N>
bool from_hex(const std::string& s, std::array<uint8_t, N>& out) {
  if (s.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

}  // namespace

expected<unpaid_book> unpaid_book::open(const std::string& path, const std::function<bool(const job_id&)>& is_recorded) {
  unpaid_book b;
  b.path_ = path;
  if (path.empty()) return b;
  std::ifstream in(path);
  if (in) {
    std::string line;
    while (std::getline(in, line)) {
      // A line is whole only with its newline; a torn last line (a crash mid-write) is skipped.
      if (in.eof()) break;
      ++b.lines_;
      std::istringstream ls(line);
      std::string kind, job_hex, client_hex;
      ls >> kind >> job_hex;
      job_id j{};
      if (!from_hex(job_hex, j)) continue;
      if (kind == "U" && (ls >> client_hex)) {
        key32 c{};
        if (!from_hex(client_hex, c) || b.jobs_.count(j)) continue;
        b.jobs_[j] = c;
        b.order_.push_back(j);
        ++b.by_client_[c];
      } else if (kind == "P") {
        b.forget(j);
      }
    }
  }
  if (is_recorded) {
    std::vector<job_id> done;
    for (const auto& [j, c] : b.jobs_)
      if (is_recorded(j)) done.push_back(j);
    for (const auto& j : done) b.forget(j);
  }
  while (b.jobs_.size() > max_jobs && !b.order_.empty()) {
    b.forget(b.order_.front());
    b.order_.pop_front();
  }
  GG_RETURN_IF_ERROR(b.compact());
  return b;
}

unpaid_book::log_fd::log_fd(log_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
unpaid_book::log_fd& unpaid_book::log_fd::operator=(log_fd&& o) noexcept {
  if (this != &o) {
    if (fd >= 0) ::close(fd);
    fd = std::exchange(o.fd, -1);
  }
  return *this;
}
unpaid_book::log_fd::~log_fd() {
  if (fd >= 0) ::close(fd);
}

void unpaid_book::forget(const job_id& job) {
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return;
  auto c = by_client_.find(it->second);
  if (c != by_client_.end() && --c->second <= 0) by_client_.erase(c);
  jobs_.erase(it);  // its place in order_ is skipped when reached
}

status unpaid_book::append(const std::string& line) {
  if (path_.empty()) {  // in memory: only the order list needs trimming now and then
    if (++lines_ > compact_after_lines && lines_ > 4 * jobs_.size()) return compact();
    return status::ok();
  }
  if (log_.fd < 0) {
    log_.fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_.fd < 0) return status(error_kind::io, fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
  }
  ssize_t n = ::write(log_.fd, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    const int err = errno;
    log_ = log_fd{};  // opened afresh next time
    return status(error_kind::io, fmt::format("cannot write {}: {}", path_, n < 0 ? std::strerror(err) : "short write"));
  }
  ++lines_;
  if (lines_ > compact_after_lines && lines_ > 4 * jobs_.size()) return compact();
  return status::ok();
}

status unpaid_book::compact() {
  // The paid jobs' places in order_ go.
  std::deque<job_id> kept;
  for (const auto& j : order_)
    if (jobs_.count(j)) kept.push_back(j);
  order_.swap(kept);
  lines_ = jobs_.size();
  if (path_.empty()) return status::ok();
  std::string text;
  for (const auto& j : order_) {
    auto it = jobs_.find(j);
    if (it == jobs_.end()) continue;
    text += "U " + hex16(j) + " " + ledger::to_hex(it->second.data(), it->second.size()) + "\n";
  }
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return status(error_kind::io, fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  ssize_t n = ::write(fd, text.data(), text.size());
  bool ok = n == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path_.c_str()) != 0) {
    std::remove(tmp.c_str());
    return status(error_kind::io, fmt::format("cannot rewrite {}", path_));
  }
  log_ = log_fd{};  // the open one is the file just replaced
  return status::ok();
}

status unpaid_book::add(const job_id& job, const key32& client) {
  if (!jobs_.emplace(job, client).second) return status::ok();
  order_.push_back(job);
  ++by_client_[client];
  // Past the bound the oldest are forgotten (their clients get that credit back).
  while (jobs_.size() > max_jobs && !order_.empty()) {
    forget(order_.front());
    order_.pop_front();
  }
  return append("U " + hex16(job) + " " + ledger::to_hex(client.data(), client.size()) + "\n");
}

status unpaid_book::paid(const job_id& job) {
  if (!jobs_.count(job)) return status::ok();
  forget(job);
  return append("P " + hex16(job) + "\n");
}

int unpaid_book::count(const key32& client) const {
  auto it = by_client_.find(client);
  return it == by_client_.end() ? 0 : it->second;
}

}  // namespace gpugrid::grid
