// The models `serve` offers: the .onnx files of one folder (a model repository), each named
// by its file name without the extension. The folder is scanned again when refresh() is
// called and the last scan is older than the interval; a file whose size or modification
// time changed is loaded again, a removed file is dropped, a new one is added.
//
// Entries are immutable and shared: a request keeps the entry it started with even if the
// file is reloaded meanwhile. A file that fails to load is listed with its error (metadata
// and infer answer with it) and tried again when it changes.
//
// Thread-safety: every method may be called from any thread (one mutex; loading a model
// happens outside it, so a slow load does not stall requests for other models).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid::serve {

struct model_entry {
  std::string name;
  std::string path;
  int64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t generation = 0;                      // bumps on every (re)load, process-wide
  std::shared_ptr<const std::string> bytes;     // null when the load failed
  std::shared_ptr<graph> model;                 // null when the load failed
  std::string error;                            // why it is not ready
  bool ready() const { return model != nullptr; }
};

class model_repository {
 public:
  // `max_model_bytes`: larger files are listed as not ready.
  model_repository(std::string dir, std::chrono::milliseconds interval, int64_t max_model_bytes);

  // Rescans the folder when the last scan is older than the interval (force: always).
  // Fails (io) only when the folder cannot be read.
  status refresh(bool force = false);
  // The entry of `name`, or null when there is no such model.
  std::shared_ptr<const model_entry> find(const std::string& name) const;
  std::vector<std::shared_ptr<const model_entry>> list() const;
  const std::string& dir() const { return dir_; }
  int64_t reloads() const;

 private:
  std::string dir_;
  std::chrono::milliseconds interval_;
  int64_t max_model_bytes_;
  mutable std::mutex mu_;
  std::mutex scan_mu_;   // one scan at a time
  std::chrono::steady_clock::time_point last_scan_{};
  bool scanned_ = false;
  std::map<std::string, std::shared_ptr<const model_entry>> models_;
  int64_t reloads_ = 0;
};

// The name a model file is served under (file name without ".onnx"); "" when the name has
// characters outside [A-Za-z0-9._-] (it could not be written in a URL path as is).
std::string model_name_for(const std::string& file_name);

}  // namespace gpugrid::serve
