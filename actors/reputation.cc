#include "actors/reputation.h"

#include "actors/messages.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace gpugrid::grid {

expected<reputation_book> reputation_book::load(const std::string& dir) {
  reputation_book b;
  b.path_ = (std::filesystem::path(dir) / "reputation.tsv").string();
  std::ifstream in(b.path_);
  if (!in) return b;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string id;
    reputation_entry e;
    if (!(ss >> id >> e.score >> e.agreed >> e.disagreed >> e.timed_out >> e.failed) || e.score < 0 || e.score > 1)
      return invalid_input("{}:{}: not a reputation record", b.path_, n);
    if (!(ss >> e.last_timeout_ms)) e.last_timeout_ms = 0;  // files written before timeouts were dated
    b.entries_[id] = e;
  }
  return b;
}

double reputation_book::score(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? initial : it->second.score;
}

reputation_entry reputation_book::entry(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? reputation_entry{} : it->second;
}

void reputation_book::record(const std::string& id, outcome o, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  reputation_entry& e = entries_[id];
  switch (o) {
    case outcome::agreed: e.score += 0.02 * (1 - e.score); ++e.agreed; break;
    case outcome::disagreed: e.score *= 0.1; ++e.disagreed; break;  // below threshold from any score
    case outcome::timed_out:
      e.score *= 0.5;
      ++e.timed_out;
      e.last_timeout_ms = now_ms > 0 ? now_ms : unix_ms();
      break;
    case outcome::failed: e.score *= 0.85; ++e.failed; break;
  }
}

bool reputation_book::cooling(const std::string& id, int64_t now_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.last_timeout_ms > 0 && now_ms - it->second.last_timeout_ms < cooldown_ms;
}

bool reputation_book::is_new(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it == entries_.end() || it->second.agreed < established_after;
}

double reputation_book::spot_check_rate(const std::string& id, double floor) const {
  if (floor <= 0) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  double n = it == entries_.end() ? 0.0 : static_cast<double>(it->second.agreed);
  return std::clamp(1.0 / std::sqrt(1.0 + n), floor, 1.0);
}

status reputation_book::save() const {
  if (path_.empty()) return status::ok();
  std::lock_guard<std::mutex> saving(save_mu_);
  std::string tmp = path_ + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "# node_id score agreed disagreed timed_out failed last_timeout_ms\n";
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : entries_)
      out << id << ' ' << e.score << ' ' << e.agreed << ' ' << e.disagreed << ' ' << e.timed_out << ' ' << e.failed << ' '
          << e.last_timeout_ms << '\n';
    out.flush();
    if (!out) return io_error("cannot write '{}'", tmp);
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) return io_error("cannot replace '{}'", path_);
  return status::ok();
}

}  // namespace gpugrid::grid
