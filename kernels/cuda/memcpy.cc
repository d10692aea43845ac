// Copies between host and device that the session inserts where a value crosses over.
// Host -> device goes through the run's pinned buffer so the copy is truly asynchronous;
// device -> host waits for the stream (the host reader needs the bytes now).
#include <cstring>

#include "kernels/cuda/cuda_common.h"

namespace gpugrid::cuda {

namespace {

status from_host(kernel_context& ctx) {
  const tensor* in = ctx.input(0);
  if (!in) return ctx.fail("missing input");
  run_state& rs = state(ctx);
  GG_ASSIGN_OR_RETURN(tensor* out, ctx.output(0, in->type(), in->shape()));
  size_t bytes = in->bytes();
  if (bytes == 0) return status::ok();
  if (in->device() != device_kind::cpu) {
    GG_CUDA(cudaMemcpyAsync(out->raw(), in->raw(), bytes, cudaMemcpyDeviceToDevice, rs.stream));
    return status::ok();
  }
  if (bytes <= (size_t{64} << 20)) {
    // Staging: wait for the previous use of the pinned buffer, then copy through it.
    GG_CUDA(cudaStreamSynchronize(rs.stream));
    GG_RETURN_IF_ERROR(ensure_pinned(rs, bytes));
    std::memcpy(rs.pinned, in->raw(), bytes);
    GG_CUDA(cudaMemcpyAsync(out->raw(), rs.pinned, bytes, cudaMemcpyHostToDevice, rs.stream));
  } else {
    GG_CUDA(cudaMemcpyAsync(out->raw(), in->raw(), bytes, cudaMemcpyHostToDevice, rs.stream));
  }
  return status::ok();
}

status to_host(kernel_context& ctx) {
  const tensor* in = ctx.input(0);
  if (!in) return ctx.fail("missing input");
  run_state& rs = state(ctx);
  GG_ASSIGN_OR_RETURN(tensor* out, ctx.output(0, in->type(), in->shape()));
  size_t bytes = in->bytes();
  if (bytes == 0) return status::ok();
  GG_CUDA(cudaMemcpyAsync(out->raw(), in->raw(), bytes, cudaMemcpyDeviceToHost, rs.stream));
  GG_CUDA(cudaStreamSynchronize(rs.stream));
  return status::ok();
}

}  // namespace

void register_memcpy_ops(op_registry& r) {
  r.add("MemcpyFromHost", simple_kernel(from_host), "com.gpugrid", {0}, {});
  r.add("MemcpyToHost", simple_kernel(to_host), "com.gpugrid", {}, {0});
}

}  // namespace gpugrid::cuda
