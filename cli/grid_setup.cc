#include "cli/grid_setup.h"

#include <caf/actor_system_config.hpp>

#include "actors/node.h"
#include "base/settings.h"

namespace gpugrid::cli {

expected<std::string> grid_data_dir(const std::string& flag_value) {
  std::string dir = flag_value;
  if (dir.empty()) {
    auto config = load_settings();
    if (!config) return config.error();
    auto resolved = resolve_data_dir("", *config);
    if (!resolved) return resolved.error();
    dir = *resolved;
  }
  GG_RETURN_IF_ERROR(ensure_data_dir(dir));
  return dir;
}

std::unique_ptr<caf::actor_system_config> grid_actor_config() {
  auto cfg = std::make_unique<caf::actor_system_config>();
  grid::configure_actor_system(*cfg);
  return cfg;
}

}  // namespace gpugrid::cli
