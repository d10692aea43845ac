// The embedded local grid: a provider actor inside this process, reached through the same
// bid, execute and verify path as remote providers. `gpugrid run` uses it when no peers are
// configured, so the quick start exercises the real grid code.
#pragma once

#include <string>
#include <vector>

#include "actors/client.h"
#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid::grid {

struct embedded_options {
  std::string device = "auto";
  int threads = 0;
  client_options client;
};

// Runs `inputs` on the model whose serialized bytes are `model_bytes`.
expected<job_outcome> run_embedded(std::shared_ptr<const std::string> model_bytes, std::vector<tensor> inputs,
                                   double gflops, const embedded_options& options,
                                   const std::function<void(const std::string&)>& note);

// A cheap work estimate for bidding: 2 FLOPs per weight per run (exact for dense layers at
// batch 1; convolutions are counted more precisely by `gpugrid inspect`).
double rough_gflops(const graph& g);

}  // namespace gpugrid::grid
