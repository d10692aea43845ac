// The completion back end that runs in this process: a generator (llm/generator.h) on this
// machine's engine. The sink is called on the caller's thread, between engine steps; the cancel
// check is asked before each step and stops a long prefill between nodes.
//
// Thread-safety: complete() may be called from several threads at once (each call decodes its
// own sequence). Failures: those of generator::start (invalid_input, exit 2) and of an engine
// run (io).
#pragma once

#include <memory>

#include "llm/generation.h"
#include "llm/generator.h"

namespace gpugrid::llm {

class local_backend : public completion_backend {
 public:
  explicit local_backend(std::shared_ptr<generator> gen) : gen_(std::move(gen)) {}
  expected<completion_stats> complete(const completion_request& request, const token_sink& sink,
                                      const cancel_check& cancelled) override;
  const std::shared_ptr<generator>& model() const { return gen_; }

 private:
  std::shared_ptr<generator> gen_;
};

}  // namespace gpugrid::llm
