// The CUDA device module: device discovery, memory, run contexts and the op registry.
#include <cstring>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "engine/backend.h"
#include "kernels/cuda/cuda_common.h"

namespace gpugrid::cuda {

status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return status::ok();
  cudaGetLastError();  // clear a sticky non-fatal error so the next job starts clean
  return internal_error("CUDA error in {}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

status cublas_status(cublasStatus_t err, const char* what) {
  if (err == CUBLAS_STATUS_SUCCESS) return status::ok();
  return internal_error("cuBLAS error in {}: {}", what, cublasGetStatusString(err));
}

status ensure_workspace(run_state& rs, size_t bytes) {
  if (rs.workspace_bytes >= bytes) return status::ok();
  if (rs.workspace) {
    GG_CUDA(cudaStreamSynchronize(rs.stream));
    cudaFree(rs.workspace);
    rs.workspace = nullptr;
    rs.workspace_bytes = 0;
  }
  size_t want = std::max(bytes, size_t{1} << 22);
  cudaError_t err = cudaMalloc(&rs.workspace, want);
  if (err != cudaSuccess) {
    size_t free_b = 0, total = 0;
    cudaMemGetInfo(&free_b, &total);
    cudaGetLastError();
    return internal_error("out of device memory: asked for {} bytes of workspace, {} free", want, free_b);
  }
  rs.workspace_bytes = want;
  return status::ok();
}

status ensure_pinned(run_state& rs, size_t bytes) {
  if (rs.pinned_bytes >= bytes) return status::ok();
  if (rs.pinned) {
    GG_CUDA(cudaStreamSynchronize(rs.stream));
    cudaFreeHost(rs.pinned);
    rs.pinned = nullptr;
    rs.pinned_bytes = 0;
  }
  size_t want = std::max(bytes, size_t{1} << 20);
  GG_CUDA(cudaHostAlloc(&rs.pinned, want, cudaHostAllocDefault));
  rs.pinned_bytes = want;
  return status::ok();
}

namespace {

class cuda_run_context final : public run_context {
 public:
  ~cuda_run_context() override {
    cudaSetDevice(rs_.device);
    if (rs_.stream) cudaStreamSynchronize(rs_.stream);
    if (rs_.blas) cublasDestroy(rs_.blas);
    if (rs_.stream) cudaStreamDestroy(rs_.stream);
    if (rs_.workspace) cudaFree(rs_.workspace);
    if (rs_.pinned) cudaFreeHost(rs_.pinned);
    if (rs_.error_flag) cudaFree(rs_.error_flag);
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  status init(int device) {
    rs_.device = device;
    GG_CUDA(cudaSetDevice(device));
    GG_CUDA(cudaStreamCreateWithFlags(&rs_.stream, cudaStreamNonBlocking));
    GG_CUBLAS(cublasCreate(&rs_.blas));
    GG_CUBLAS(cublasSetStream(rs_.blas, rs_.stream));
    GG_CUDA(cudaMalloc(&rs_.error_flag, sizeof(int)));
    GG_CUDA(cudaMemset(rs_.error_flag, 0, sizeof(int)));
    return status::ok();
  }
  void* native() override { cudaSetDevice(rs_.device); return &rs_; }
  void set_allow_tf32(bool on) override { rs_.allow_tf32 = on; }

  status begin_capture() override {
    if (exec_) { cudaGraphExecDestroy(exec_); exec_ = nullptr; }
    GG_CUDA(cudaStreamBeginCapture(rs_.stream, cudaStreamCaptureModeThreadLocal));
    return status::ok();
  }
  status end_capture() override {
    cudaGraph_t graph = nullptr;
    cudaError_t err = cudaStreamEndCapture(rs_.stream, &graph);
    if (err != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      return cuda_status(err, "cudaStreamEndCapture");
    }
    err = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    return cuda_status(err, "cudaGraphInstantiate");
  }
  status replay() override {
    if (!exec_) return internal_error("no captured graph to replay");
    return cuda_status(cudaGraphLaunch(exec_, rs_.stream), "cudaGraphLaunch");
  }
  status upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return status::ok();
    GG_CUDA(cudaStreamSynchronize(rs_.stream));  // the staging buffer may still be in use
    GG_RETURN_IF_ERROR(ensure_pinned(rs_, bytes));
    std::memcpy(rs_.pinned, src, bytes);
    return cuda_status(cudaMemcpyAsync(dst, rs_.pinned, bytes, cudaMemcpyHostToDevice, rs_.stream), "upload");
  }
  status download(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return status::ok();
    GG_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, rs_.stream));
    return cuda_status(cudaStreamSynchronize(rs_.stream), "download");
  }
  status synchronize() override {
    GG_CUDA(cudaStreamSynchronize(rs_.stream));
    GG_RETURN_IF_ERROR(cuda_status(cudaGetLastError(), "a kernel of this run"));
    int flag = 0;
    GG_CUDA(cudaMemcpy(&flag, rs_.error_flag, sizeof(int), cudaMemcpyDeviceToHost));
    if (flag) {
      GG_CUDA(cudaMemset(rs_.error_flag, 0, sizeof(int)));
      return invalid_input("an index was out of range in a Gather on the device");
    }
    return status::ok();
  }

 private:
  run_state rs_;
  cudaGraphExec_t exec_ = nullptr;
};

class cuda_backend final : public device_backend {
 public:
  cuda_backend(int index, device_info info, const op_registry* ops) : index_(index), info_(std::move(info)), ops_(ops) {}
  const device_info& info() const override { return info_; }
  const op_registry& ops() const override { return *ops_; }

  expected<std::shared_ptr<std::byte>> allocate(size_t bytes) override {
    cudaSetDevice(index_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total = 0;
      cudaMemGetInfo(&free_b, &total);
      return internal_error("out of device memory on {}: asked for {} bytes, {} free of {}", info_.id, bytes, free_b, total);
    }
    int dev = index_;
    return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [dev](std::byte* q) {
      cudaSetDevice(dev);
      cudaFree(q);
    });
  }
  status upload(void* dst, const void* src, size_t bytes) override {
    cudaSetDevice(index_);
    return cuda_status(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload");
  }
  status download(void* dst, const void* src, size_t bytes) override {
    cudaSetDevice(index_);
    return cuda_status(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download");
  }
  expected<std::unique_ptr<run_context>> new_run_context() override {
    auto rc = std::make_unique<cuda_run_context>();
    GG_RETURN_IF_ERROR(rc->init(index_));
    return std::unique_ptr<run_context>(std::move(rc));
  }

 private:
  int index_;
  device_info info_;
  const op_registry* ops_;
};

double measure_gemm_tflops(int device);

class cuda_module final : public device_module {
 public:
  std::vector<device_info> devices() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (scanned_) return devices_;
    scanned_ = true;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      note_ = fmt::format("no CUDA devices: {} ({})", cudaGetErrorString(err), cudaGetErrorName(err));
      cudaGetLastError();
      return devices_;
    }
    if (count == 0) { note_ = "no CUDA devices found"; return devices_; }
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) { cudaGetLastError(); continue; }
      device_info d;
      d.name = p.name;
      d.id = fmt::format("cuda:{}", i);
      d.total_memory = static_cast<int64_t>(p.totalGlobalMem);
      d.sm_count = p.multiProcessorCount;
      d.cc_major = p.major;
      d.cc_minor = p.minor;
      int clock = 0, mem_clock = 0;
      cudaDeviceGetAttribute(&clock, cudaDevAttrClockRate, i);
      cudaDeviceGetAttribute(&mem_clock, cudaDevAttrMemoryClockRate, i);
      d.clock_mhz = clock / 1000;
      d.memory_clock_mhz = mem_clock / 1000;
      size_t free_b = 0, total = 0;
      if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total) == cudaSuccess)
        d.free_memory = static_cast<int64_t>(free_b);
      cudaGetLastError();
      devices_.push_back(d);
    }
    if (devices_.empty()) note_ = "CUDA devices present but none could be queried";
    return devices_;
  }
  std::string note() override { devices(); return note_; }
  expected<std::shared_ptr<device_backend>> open(int index) override {
    auto list = devices();
    if (index < 0 || index >= static_cast<int>(list.size()))
      return invalid_input("cuda:{} does not exist ({} device(s))", index, list.size());
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.size() < list.size()) backends_.resize(list.size());
    if (!backends_[index]) {
      device_info info = list[index];
      if (info.gemm_tflops < 0) info.gemm_tflops = measure_gemm_tflops(index);
      backends_[index] = std::make_shared<cuda_backend>(index, info, &registry());
    }
    return backends_[index];
  }

  const op_registry& ops() override { return registry(); }

  const op_registry& registry() {
    static const op_registry r = [] {
      op_registry reg;
      register_memcpy_ops(reg);
      register_gemm_ops(reg);
      register_elementwise_ops(reg);
      register_tensor_ops(reg);
      register_nn_ops(reg);
      return reg;
    }();
    return r;
  }

 private:
  std::mutex mu_;
  bool scanned_ = false;
  std::vector<device_info> devices_;
  std::vector<std::shared_ptr<device_backend>> backends_;
  std::string note_;
};

// A short fp32 GEMM (2048^3) timed with events: the device's measured throughput.
double measure_gemm_tflops(int device) {
  const int n = 2048;
  cudaSetDevice(device);
  float *a = nullptr, *b = nullptr, *c = nullptr;
  size_t bytes = sizeof(float) * n * n;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess || cudaMalloc(&c, bytes) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(a); cudaFree(b); cudaFree(c);
    return -1;
  }
  cudaMemset(a, 0, bytes);
  cudaMemset(b, 0, bytes);
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) { cudaFree(a); cudaFree(b); cudaFree(c); return -1; }
  float one = 1, zero = 0;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n);
  cudaEventRecord(e0);
  const int reps = 5;
  for (int i = 0; i < reps; ++i) cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cublasDestroy(h);
  cudaFree(a); cudaFree(b); cudaFree(c);
  cudaGetLastError();
  if (ms <= 0) return -1;
  return 2.0 * n * n * n * reps / (ms * 1e-3) / 1e12;
}

}  // namespace

}  // namespace gpugrid::cuda

extern "C" __attribute__((visibility("default"))) gpugrid::device_module* gpugrid_cuda_module() {
  static gpugrid::cuda::cuda_module module;
  return &module;
}
