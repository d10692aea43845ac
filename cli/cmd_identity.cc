// gpugrid identity show|new: this node's Ed25519 identity (net/identity.h).
#include <optional>

#include <fmt/format.h>

#include "base/data_dir.h"
#include "base/json.h"
#include "base/settings.h"
#include "cli/commands.h"
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
  bool created = false;
  std::string old_path;
  auto id = o.action == "new" ? net::rotate_identity(dir, &old_path) : net::load_or_create_identity(dir, &created);
  if (!id) return fail(id.error());
  std::string key_file = net::identity_path(dir);

  if (o.action == "new") {
    if (old_path.empty()) fmt::print(stderr, "gpugrid: created a new identity key in {}\n", key_file);
    else fmt::print(stderr, "gpugrid: made a new identity key in {}; the old key is kept as {}\n", key_file, old_path);
  } else if (created) {
    fmt::print(stderr, "gpugrid: no identity yet; created a new key in {}\n", key_file);
  }

  std::string node_id = id->node_id();
  std::string public_key = net::to_hex(id->public_key());
  if (o.json) {
    json_writer w;
    w.begin_object()
        .key("node_id").value(node_id)
        .key("public_key").value(public_key)
        .key("key_file").value(key_file)
        .key("created").value(created || o.action == "new");
    if (!old_path.empty()) w.key("old_key_file").value(old_path);
    w.end_object();
    fmt::print("{}\n", w.str());
  } else {
    fmt::print("node id     {}\npublic key  {}\nkey file    {}\n", node_id, public_key, key_file);
  }
  return 0;
}

}  // namespace gpugrid::cli
