// Compute devices beside the CPU, and the registry that finds them.
//
// The CPU backend is always there (kernels/cpu). A device backend (CUDA) lives in a module,
// libgpugrid_cuda.so, that the registry loads with dlopen the first time a device is asked
// for, so the gpugrid binary itself never links CUDA libraries and starts on machines without
// them. When the module or a driver is missing, the registry reports no devices and says why.
// Thread-safety: the registry functions are safe to call from any thread; a device_backend is
// shared by all sessions on that device and is thread-safe; a run_context is one job's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/kernel.h"

namespace gpugrid {

struct device_info {
  std::string name;             // "NVIDIA H100 80GB HBM3"
  std::string id;               // "cuda:0"
  int64_t total_memory = 0;     // bytes
  int64_t free_memory = 0;      // bytes, when read
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  int clock_mhz = 0, memory_clock_mhz = 0;
  double gemm_tflops = -1;      // measured fp32 GEMM rate; < 0 when not measured
};

// Per-run state on a device (a stream, library handles, scratch); kernels get it through
// kernel_context::device_context().
class run_context {
 public:
  virtual ~run_context() = default;
  virtual void* native() = 0;       // what kernel_context::device_context() returns
  virtual status synchronize() = 0;  // waits for everything queued on this run's stream
  // Lets float matrix products and convolutions use TF32 tensor cores (device backends that
  // have them; a no-op elsewhere). Off unless the user asks (--precision tf32).
  virtual void set_allow_tf32(bool on) { (void)on; }

  // Graph capture (CUDA Graphs): launches between begin and end are recorded instead of run;
  // replay() launches the recording. Backends without graphs fail begin_capture().
  virtual status begin_capture() { return status(error_kind::not_built, "graph capture is not supported"); }
  virtual status end_capture() { return status(error_kind::not_built, "graph capture is not supported"); }
  virtual status replay() { return status(error_kind::not_built, "graph capture is not supported"); }
  // Asynchronous copies on this run's stream (host memory is staged, so the host buffer may be
  // reused as soon as upload returns); download waits for the stream.
  virtual status upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual status download(void* host_dst, const void* device_src, size_t bytes) = 0;
};

class device_backend {
 public:
  virtual ~device_backend() = default;
  virtual const device_info& info() const = 0;
  virtual const op_registry& ops() const = 0;
  // Device memory, freed when the last reference goes. Fails with a message saying how much
  // was asked for and how much is free.
  virtual expected<std::shared_ptr<std::byte>> allocate(size_t bytes) = 0;
  // Synchronous copies (used at load time for weights, and by tests).
  virtual status upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual status download(void* host_dst, const void* device_src, size_t bytes) = 0;
  // A context for one run (one per job slot; reused from a pool).
  virtual expected<std::unique_ptr<run_context>> new_run_context() = 0;
};

// What a device module exports (see kernels/cuda/module.cc).
class device_module {
 public:
  virtual ~device_module() = default;
  virtual std::vector<device_info> devices() = 0;  // empty when no driver or no GPU
  virtual std::string note() = 0;                  // why there are no devices, when there are none
  virtual expected<std::shared_ptr<device_backend>> open(int index) = 0;
  virtual const op_registry& ops() = 0;            // the module's kernels (no device needed)
};

// The devices the CUDA module finds (empty list + *note when none).
std::vector<device_info> cuda_devices(std::string* note);
// The backend for "cuda" or "cuda:N"; fails with a clear message when unavailable.
expected<std::shared_ptr<device_backend>> open_device(const std::string& spec);
// The CUDA module's op registry (known even without a GPU); nullptr + *note when the module
// cannot be loaded.
const op_registry* cuda_ops(std::string* note);
// Parses "auto" | "cpu" | "cuda" | "cuda:N": true when valid.
bool valid_device_spec(const std::string& spec);

// For tests: makes `open_device("cuda...")` use this module instead of the dlopen'ed one.
void set_device_module_for_testing(device_module* module);

}  // namespace gpugrid
