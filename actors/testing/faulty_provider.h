// A provider that misbehaves on purpose, for tests only (never linked into gpugrid itself):
// the unit tests and the gpugrid-faulty test binary (tests/faulty_offer_main.cc) use it to play
// a dishonest or broken peer through the provider's test seams (provider_core::before_run,
// after_run).
//
//   corrupt  every result is wrong (first element of each f32 output changed), signed as usual
//   stall    never answers until the job is cancelled or the provider stops
//   crash    the process dies with SIGKILL when a job arrives
//   slow     each job waits `delay` first (stops early when cancelled or stopping)
#pragma once

#include <chrono>
#include <cmath>
#include <csignal>
#include <string>
#include <thread>

#include "actors/provider.h"
#include "engine/tensor.h"

namespace gpugrid::grid::testing {

enum class fault { none, corrupt, stall, crash, slow };

inline std::optional<fault> parse_fault(const std::string& s) {
  if (s == "corrupt") return fault::corrupt;
  if (s == "stall") return fault::stall;
  if (s == "crash") return fault::crash;
  if (s == "slow") return fault::slow;
  if (s.empty() || s == "none") return fault::none;
  return std::nullopt;
}

class faulty_provider : public provider_core {
 public:
  faulty_provider(keypair identity, std::shared_ptr<model_cache> cache, provider_options options,
                  std::shared_ptr<ledger::ledger_file> ledger, fault f,
                  std::chrono::milliseconds delay = std::chrono::milliseconds(1000))
      : provider_core(identity, std::move(cache), std::move(options), std::move(ledger)), fault_(f), delay_(delay) {}

 protected:
  status before_run(const execute_request& req) override {
    auto cancelled = [&] { return stopping() || (req.cancel && req.cancel->load()); };
    switch (fault_) {
      case fault::stall:
        while (!cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return status(error_kind::io, "the provider is stopping");
      case fault::crash:
        std::raise(SIGKILL);
        return status::ok();
      case fault::slow: {
        auto end = std::chrono::steady_clock::now() + delay_;
        while (std::chrono::steady_clock::now() < end && !cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return status::ok();
      }
      default:
        return status::ok();
    }
  }
  void after_run(std::vector<tensor>& outputs) override {
    if (fault_ != fault::corrupt) return;
    for (auto& t : outputs) {
      t = t.clone();
      if (t.type() == dtype::f32 && t.numel() > 0) t.data<float>()[0] += 1.0f + std::abs(t.data<float>()[0]);
    }
  }

 private:
  fault fault_;
  std::chrono::milliseconds delay_;
};

}  // namespace gpugrid::grid::testing
