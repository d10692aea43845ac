#include "actors/embedded.h"

#include <caf/all.hpp>

#include "actors/node.h"
#include "actors/provider.h"

namespace gpugrid::grid {

double rough_gflops(const graph& g) {
  double params = 0;
  for (const auto& [id, t] : g.initializers) params += static_cast<double>(t.numel());
  return 2.0 * params / 1e9;
}

expected<job_outcome> run_embedded(std::shared_ptr<const std::string> model_bytes, std::vector<tensor> inputs,
                                   double gflops, const embedded_options& options,
                                   const std::function<void(const std::string&)>& note) {
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  provider_options po;
  po.device = options.device;
  po.threads = options.threads;
  po.slots = 1;
  po.price.price_per_gflop = 0;   // this machine's own time is free
  po.price.minimum = 0;
  auto core = std::make_shared<provider_core>(keypair::generate(), nullptr, po, nullptr);
  provider_actor provider = spawn_provider(sys, core);
  job_spec job;
  job.model_bytes = model_bytes;
  job.model_hash = ledger::blake2b_256(*model_bytes);
  job.gflops = gflops;
  job.inputs = std::move(inputs);
  keypair client = keypair::generate();
  auto result = run_job(sys, {provider_handle{provider, core->key(), ""}}, job, options.client, client, nullptr, nullptr,
                        nullptr, note);
  caf::anon_send_exit(provider, caf::exit_reason::user_shutdown);
  return result;
}

}  // namespace gpugrid::grid
