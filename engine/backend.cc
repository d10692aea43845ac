// The one place that knows how device modules are found and loaded.
#include "engine/backend.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace gpugrid {

namespace {

std::mutex mu;
device_module* test_module = nullptr;
device_module* loaded = nullptr;
bool tried = false;
std::string load_note;

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path().string();
}

// The CUDA runtime finds no device without the NVIDIA driver's libcuda.so.1, and loading the
// module maps and relocates cuBLAS and cuDNN: on a machine without a GPU that took a short
// `gpugrid run` that checks its result locally from 0.03 s to 0.15-0.2 s. Whoever needs a device
// looks for the driver first; listing what the module supports (inspect) loads it regardless.
bool driver_present(std::string* note) {
  static const bool present = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL) != nullptr;
  if (!present && note) *note = "no NVIDIA driver (libcuda.so.1) on this machine";
  return present;
}

device_module* cuda_module(std::string* note, bool need_device) {
  std::lock_guard<std::mutex> lock(mu);
  if (test_module) return test_module;
  if (need_device && !loaded && !driver_present(note)) return nullptr;
  if (!tried) {
    tried = true;
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("GPUGRID_CUDA_MODULE")) candidates.push_back(env);
    std::string dir = exe_dir();
    candidates.push_back(dir + "/libgpugrid_cuda.so");
    candidates.push_back(dir + "/../libgpugrid_cuda.so");  // tests/ beside the build's binary
    candidates.push_back(dir + "/../lib/gpugrid/libgpugrid_cuda.so");
    std::string errors;
    for (const auto& path : candidates) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) continue;
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) { errors = dlerror(); continue; }
      using entry_fn = device_module* (*)();
      auto entry = reinterpret_cast<entry_fn>(dlsym(h, "gpugrid_cuda_module"));
      if (!entry) { errors = "module has no gpugrid_cuda_module entry point"; continue; }
      loaded = entry();  // the module stays loaded for the life of the process
      break;
    }
    if (!loaded)
      load_note = errors.empty() ? "the CUDA backend module (libgpugrid_cuda.so) is not installed"
                                 : "the CUDA backend module could not be loaded: " + errors;
  }
  if (!loaded && note) *note = load_note;
  return loaded;
}

}  // namespace

void set_device_module_for_testing(device_module* module) {
  std::lock_guard<std::mutex> lock(mu);
  test_module = module;
}

std::vector<device_info> cuda_devices(std::string* note) {
  std::string why;
  device_module* m = cuda_module(&why, true);
  if (!m) { if (note) *note = why; return {}; }
  auto list = m->devices();
  if (list.empty() && note) *note = m->note();
  return list;
}

const op_registry* cuda_ops(std::string* note) {
  device_module* m = cuda_module(note, false);
  return m ? &m->ops() : nullptr;
}

bool valid_device_spec(const std::string& spec) {
  if (spec == "auto" || spec == "cpu" || spec == "cuda") return true;
  if (spec.rfind("cuda:", 0) != 0 || spec.size() == 5) return false;
  for (size_t i = 5; i < spec.size(); ++i) if (!std::isdigit(static_cast<unsigned char>(spec[i]))) return false;
  return spec.size() < 9;
}

expected<std::shared_ptr<device_backend>> open_device(const std::string& spec) {
  if (!valid_device_spec(spec) || spec == "cpu" || spec == "auto")
    return invalid_input("'{}' is not a device (use cpu, cuda or cuda:N)", spec);
  int index = spec == "cuda" ? 0 : std::atoi(spec.c_str() + 5);
  std::string note;
  device_module* m = cuda_module(&note, true);
  if (!m) return invalid_input("device {} is not available: {}", spec, note);
  auto list = m->devices();
  if (list.empty()) return invalid_input("device {} is not available: {}", spec, m->note());
  if (index >= static_cast<int>(list.size()))
    return invalid_input("device {} is not available: this machine has {} CUDA device(s)", spec, list.size());
  return m->open(index);
}

}  // namespace gpugrid
