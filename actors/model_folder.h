// Model folders on the grid: a generation model is a folder (model.onnx, its weights file,
// config.json or genai_config.json, tokenizer files), named by a manifest hash over its files.
//
// Client side: read_folder_manifest() lists and hashes the folder's files. Provider side:
// folder_store keeps each file content-addressed (BLAKE2b-256, the same way single models are
// cached, bounded, least recently used first) and assembles a folder for a manifest out of
// them (hard links, copies where links fail) when every file is there.
// Thread-safety: folder_store locks internally; the free functions are pure.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/model_cache.h"
#include "base/status.h"
#include "net/messages.h"

namespace gpugrid::grid {

struct folder_manifest {
  std::string dir;                    // where it was read ("" on a provider)
  std::vector<net::gen_file> files;   // sorted by name
  ledger::digest32 hash{};
  int64_t total_bytes = 0;
};

// BLAKE2b-256 of "GGMANI1\0" || for each file sorted by name: name, NUL, hash, size (LE u64).
ledger::digest32 manifest_hash(std::vector<net::gen_file> files);

// Lists the regular files directly in `dir` (dot files skipped; sub-folders are not part of a
// model). Fails (invalid_input, naming the file) on a name the wire cannot carry, a file over
// max_file_bytes, more than 256 files, or an empty folder.
expected<folder_manifest> read_folder_manifest(const std::string& dir, int64_t max_file_bytes);

class folder_store {
 public:
  // Files under <dir>/files (at most max_bytes), assembled folders under <dir>/folders.
  static expected<std::unique_ptr<folder_store>> open(const std::string& dir, int64_t max_bytes);
  // An empty store that serves only folders registered with add_local (the embedded grid).
  static std::unique_ptr<folder_store> local_only();

  // Serve `path` (already on this machine) for `manifest` without copying it.
  void add_local(const ledger::digest32& manifest, const std::string& path);
  bool has_file(const ledger::digest32& hash);
  // True when the manifest's folder can be assembled now.
  bool has_all(const ledger::digest32& manifest, const std::vector<net::gen_file>& files);
  // Stores one file; fails when the bytes do not hash to `hash`.
  status put_file(const ledger::digest32& hash, const std::string& bytes);
  // The folder for a manifest (assembling it from stored files); no_provider when a file is
  // missing, invalid_input when `files` do not hash to `manifest`.
  expected<std::string> folder(const ledger::digest32& manifest, const std::vector<net::gen_file>& files);

 private:
  folder_store() = default;
  std::mutex mu_;
  std::string dir_;
  std::unique_ptr<model_cache> files_;
  std::map<ledger::digest32, std::string> local_;
};

}  // namespace gpugrid::grid
