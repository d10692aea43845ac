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

// The data dir (creating it), or the error naming why there is none.
expected<std::string> grid_data_dir(const std::string& flag_value);
// A small scheduler: the heavy work runs on detached workers and I/O threads.
std::unique_ptr<caf::actor_system_config> grid_actor_config();

}  // namespace gpugrid::cli
