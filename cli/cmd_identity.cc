// gpugrid identity show|new: this node's Ed25519 identity (net/identity.h). `show` only reads:
// with no key yet it says how to make one and creates nothing.
#include <unistd.h>

#include <optional>

#include <fmt/format.h>

#include "base/data_dir.h"
#include "base/json.h"
#include "base/settings.h"
#include "cli/commands.h"
#include "cli/log.h"
#include "net/hash.h"
#include "net/identity.h"

namespace gpugrid::cli {

int identity_command(const identity_options& o) {
  auto fail = [](const status& st) {
    fmt::print(stderr, "gpugrid: identity: {}\n", st.message());
    return exit_code_for(st.kind());
  };
  if (o.action != "show" && o.action != "new")
    return fail(status(error_kind::usage, fmt::format("unknown action '{}' (expected show or new)", o.action)));

  std::string dir = o.data_dir;
  if (dir.empty()) {  // the command table normally resolves it; this covers direct calls
    auto config = load_settings();
    if (!config) return fail(config.error());
    auto resolved = resolve_data_dir("", *config);
    if (!resolved) return fail(resolved.error());
    dir = *resolved;
  }

  // A new key must not change under a running node: `new` needs the data dir to itself.
  std::optional<data_dir_lock> dir_lock;
  if (o.action == "new") {
    auto l = data_dir_lock::acquire(dir, "gpugrid identity new");
    if (!l) return fail(l.error());
    dir_lock.emplace(std::move(l).value());
  }
  std::string key_file = net::identity_path(dir);

  std::string old_path;
  expected<net::identity> id = status(error_kind::internal, "no identity");
  if (o.action == "new") {
    id = net::rotate_identity(dir, &old_path);
  } else {
    if (::access(key_file.c_str(), F_OK) != 0)
      return fail(status(error_kind::usage,
                         fmt::format("no identity in {} yet: 'gpugrid identity new' makes one (offer and run make "
                                     "one on first use)",
                                     dir)));
    id = net::identity::load(key_file);
  }
  if (!id) return fail(id.error());

  if (o.action == "new") {
    if (old_path.empty()) log::note("created a new identity key in {}", key_file);
    else log::note("made a new identity key in {}; the old key is kept as {}", key_file, old_path);
  }

  std::string node_id = id->node_id();
  std::string public_key = net::to_hex(id->public_key());
  if (o.json) {
    json j{{"node_id", node_id}, {"public_key", public_key}, {"key_file", key_file}, {"created", o.action == "new"}};
    if (!old_path.empty()) j["old_key_file"] = old_path;
    fmt::print("{}\n", dump_json(j));
  } else {
    fmt::print("node id     {}\npublic key  {}\nkey file    {}\n", node_id, public_key, key_file);
  }
  return 0;
}

}  // namespace gpugrid::cli
