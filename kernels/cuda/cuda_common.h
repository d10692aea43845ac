// Host-side helpers shared by the CUDA backend's files: error handling at the boundary
// (a CUDA error becomes a status that fails the job, never the process) and the per-run
// context kernels receive through kernel_context::device_context().
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "base/status.h"
#include "engine/kernel.h"

namespace gpugrid::cuda {

// One job's stream, cuBLAS handle and pinned staging buffer. Owned by the run context that
// the session borrows for one run; used by one thread at a time.
struct run_state {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  void* pinned = nullptr;       // host staging for copies (cudaHostAlloc)
  size_t pinned_bytes = 0;
  void* workspace = nullptr;    // device scratch (cuBLAS workspace, im2col)
  size_t workspace_bytes = 0;
  int device = 0;
  bool allow_tf32 = false;
  // Set to non-zero by kernels that find bad data (an index out of range); checked when the
  // run synchronises, so no kernel has to stop the stream to report.
  int* error_flag = nullptr;
};

inline run_state& state(kernel_context& ctx) { return *static_cast<run_state*>(ctx.device_context()); }

status cuda_status(cudaError_t err, const char* what);
status cublas_status(cublasStatus_t err, const char* what);

#define GG_CUDA(expr) GG_RETURN_IF_ERROR(::gpugrid::cuda::cuda_status((expr), #expr))
#define GG_CUBLAS(expr) GG_RETURN_IF_ERROR(::gpugrid::cuda::cublas_status((expr), #expr))

// Grows the run's device workspace to at least `bytes`.
status ensure_workspace(run_state& rs, size_t bytes);
// Grows the run's pinned host buffer to at least `bytes`.
status ensure_pinned(run_state& rs, size_t bytes);

// Op families (one file each); each adds its kernels to the CUDA registry.
void register_memcpy_ops(op_registry& r);
void register_gemm_ops(op_registry& r);
void register_elementwise_ops(op_registry& r);
void register_tensor_ops(op_registry& r);
void register_nn_ops(op_registry& r);

}  // namespace gpugrid::cuda
