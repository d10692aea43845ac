// What the networked commands (offer, run --peer, peers) share: the data dir and the actor
// system's configuration.
#pragma once

#include <memory>
#include <string>

#include "actors/messages.h"
#include "base/status.h"
#include "net/identity.h"

namespace caf {
class actor_system_config;
}

namespace gpugrid::cli {

// The share of jobs that run, run --batch and serve check on this machine's engine at least:
// the floor of the adaptive spot-check rate of a single provider's result (K = 1) and of the
// check of an agreeing redundant set of providers never verified before (K > 1).
constexpr double kSpotCheckFloor = 0.05;

// The data dir (creating it), or the error naming why there is none.
expected<std::string> grid_data_dir(const std::string& flag_value);
// A small scheduler: the heavy work runs on detached workers and I/O threads.
std::unique_ptr<caf::actor_system_config> grid_actor_config();

}  // namespace gpugrid::cli
