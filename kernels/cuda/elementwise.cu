// Elementwise CUDA kernels: activations (also the epilogue of fused GEMMs), binary ops with
// NumPy broadcasting, unary math. Kernel -> launcher taking a stream -> registered op.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/launch.h"
#include "kernels/cpu/broadcast.h"

namespace gpugrid::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxRank = 8;

inline unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b > 65535 * 32 ? 65535 * 32 : (b < 1 ? 1 : b));
}

__device__ __forceinline__ float apply_act(float x, int kind, float a, float b) {
  switch (kind) {
    case 1: return x > 0.f ? x : 0.f;
    case 2: return x >= 0.f ? x : a * x;
    case 3: return 1.f / (1.f + __expf(-x));
    case 4: return tanhf(x);
    case 5: return fminf(fmaxf(x, a), b);
    case 6: return fminf(fmaxf(a * x + b, 0.f), 1.f);
    case 7: return x * fminf(fmaxf(x / 6.f + 0.5f, 0.f), 1.f);
    case 8: return x / (1.f + __expf(-x));
    case 9: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    default: return x;
  }
}

__global__ void bias_act_kernel(float* y, const float* bias, int64_t n, int64_t cols, int kind, float a, float b) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = y[i];
    if (bias) v += bias[i % cols];
    y[i] = apply_act(v, kind, a, b);
  }
}

__global__ void broadcast_scaled_kernel(float* y, const float* c, int64_t rows, int64_t cols, int64_t crows,
                                        int64_t ccols, float beta) {
  int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = i / cols, col = i % cols;
    y[i] = beta * c[(crows == 1 ? 0 : r) * ccols + (ccols == 1 ? 0 : col)];
  }
}

struct bcast_index {
  int rank;
  int64_t out_dims[kMaxRank];
  int64_t a_strides[kMaxRank];
  int64_t b_strides[kMaxRank];
};

enum class binop : int { add, sub, mul, div, pow, max, min };

template <binop op>
__device__ __forceinline__ float bin(float x, float y) {
  if constexpr (op == binop::add) return x + y;
  if constexpr (op == binop::sub) return x - y;
  if constexpr (op == binop::mul) return x * y;
  if constexpr (op == binop::div) return x / y;
  if constexpr (op == binop::pow) return powf(x, y);
  if constexpr (op == binop::max) return fmaxf(x, y);
  return fminf(x, y);
}

template <binop op>
__global__ void binary_same_kernel(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = bin<op>(a[i], b[i]);
}

template <binop op>
__global__ void binary_bcast_kernel(float* y, const float* a, const float* b, int64_t n, bcast_index ix) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = ix.rank - 1; d >= 0; --d) {
      int64_t q = rem % ix.out_dims[d];
      rem /= ix.out_dims[d];
      ao += q * ix.a_strides[d];
      bo += q * ix.b_strides[d];
    }
    y[i] = bin<op>(a[ao], b[bo]);
  }
}

enum class unop : int { relu, sigmoid, tanh, exp, log, sqrt, neg, abs, erf, gelu, silu, reciprocal };

template <unop op>
__device__ __forceinline__ float un(float x) {
  if constexpr (op == unop::relu) return x > 0.f ? x : 0.f;
  if constexpr (op == unop::sigmoid) return 1.f / (1.f + expf(-x));
  if constexpr (op == unop::tanh) return tanhf(x);
  if constexpr (op == unop::exp) return expf(x);
  if constexpr (op == unop::log) return logf(x);
  if constexpr (op == unop::sqrt) return sqrtf(x);
  if constexpr (op == unop::neg) return -x;
  if constexpr (op == unop::abs) return fabsf(x);
  if constexpr (op == unop::erf) return erff(x);
  if constexpr (op == unop::gelu) return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
  if constexpr (op == unop::silu) return x / (1.f + expf(-x));
  return 1.f / x;
}

template <unop op>
__global__ void unary_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = un<op>(x[i]);
}

template <binop op>
status binary(kernel_context& ctx) {
  const tensor* a = ctx.input(0);
  const tensor* b = ctx.input(1);
  if (!a || !b) return ctx.fail("needs two inputs");
  if (a->type() != dtype::f32 || b->type() != dtype::f32)
    return ctx.unsupported("the CUDA kernel takes float32 (got {} and {})", dtype_name(a->type()), dtype_name(b->type()));
  shape_t out;
  if (!cpu::broadcast_shapes(a->shape(), b->shape(), &out))
    return ctx.fail("inputs have shapes {} and {}, which do not broadcast", shape_str(a->shape()), shape_str(b->shape()));
  if (out.size() > kMaxRank) return ctx.unsupported("rank {} is above the CUDA limit of {}", out.size(), kMaxRank);
  size_t reuse = a->shape() == out ? 0 : 1;
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, reuse, dtype::f32, out));
  int64_t n = y->numel();
  if (n == 0) return status::ok();
  cudaStream_t s = state(ctx).stream;
  if (a->shape() == b->shape()) {
    binary_same_kernel<op><<<blocks_for(n), kThreads, 0, s>>>(y->data<float>(), a->data<float>(), b->data<float>(), n);
  } else {
    bcast_index ix{};
    ix.rank = static_cast<int>(out.size());
    auto sa = cpu::broadcast_strides(a->shape(), out), sb = cpu::broadcast_strides(b->shape(), out);
    for (size_t d = 0; d < out.size(); ++d) { ix.out_dims[d] = out[d]; ix.a_strides[d] = sa[d]; ix.b_strides[d] = sb[d]; }
    binary_bcast_kernel<op><<<blocks_for(n), kThreads, 0, s>>>(y->data<float>(), a->data<float>(), b->data<float>(), n, ix);
  }
  return cuda_status(cudaGetLastError(), ctx.op().op_type.c_str());
}

template <unop op>
status unary(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA kernel takes float32 (got {})", dtype_name(x->type()));
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, dtype::f32, x->shape()));
  int64_t n = y->numel();
  if (n == 0) return status::ok();
  unary_kernel<op><<<blocks_for(n), kThreads, 0, state(ctx).stream>>>(y->data<float>(), x->data<float>(), n);
  return cuda_status(cudaGetLastError(), ctx.op().op_type.c_str());
}

// ---- predicates and comparisons (bool outputs) ----

__global__ void isnan_kernel(bool* y, const float* x, int64_t n, int mode) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = x[i];
    y[i] = mode == 0 ? isnan(v) : (mode == 1 ? isinf(v) && v > 0 : (mode == 2 ? isinf(v) && v < 0 : isinf(v)));
  }
}

__global__ void not_kernel(bool* y, const bool* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = !x[i];
}

enum class cmpop : int { eq, lt, gt, le, ge, band, bor };

template <typename T>
__global__ void compare_kernel(bool* y, const T* a, const T* b, int64_t n, bcast_index ix, int op) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = ix.rank - 1; d >= 0; --d) {
      int64_t q = rem % ix.out_dims[d];
      rem /= ix.out_dims[d];
      ao += q * ix.a_strides[d];
      bo += q * ix.b_strides[d];
    }
    T u = a[ao], v = b[bo];
    bool r;
    switch (op) {
      case 0: r = u == v; break;
      case 1: r = u < v; break;
      case 2: r = u > v; break;
      case 3: r = u <= v; break;
      case 4: r = u >= v; break;
      case 5: r = u && v; break;
      default: r = u || v; break;
    }
    y[i] = r;
  }
}

status isnan_like(kernel_context& ctx, int mode) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA kernel takes float32 (got {})", dtype_name(x->type()));
  if (mode != 0) {
    bool pos = ctx.op().attr_int("detect_positive", 1) != 0, neg = ctx.op().attr_int("detect_negative", 1) != 0;
    mode = pos && neg ? 3 : pos ? 1 : neg ? 2 : -1;
    if (mode < 0) return ctx.unsupported("IsInf detecting nothing runs on the CPU");
  }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::boolean, x->shape()));
  if (y->numel() == 0) return status::ok();
  isnan_kernel<<<blocks_for(y->numel()), kThreads, 0, state(ctx).stream>>>(y->data<bool>(), x->data<float>(), y->numel(), mode);
  return cuda_status(cudaGetLastError(), "IsNaN");
}

status not_op(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::boolean) return ctx.unsupported("Not takes bool");
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, dtype::boolean, x->shape()));
  if (y->numel() == 0) return status::ok();
  not_kernel<<<blocks_for(y->numel()), kThreads, 0, state(ctx).stream>>>(y->data<bool>(), x->data<bool>(), y->numel());
  return cuda_status(cudaGetLastError(), "Not");
}

template <cmpop op>
status compare(kernel_context& ctx) {
  const tensor* a = ctx.input(0);
  const tensor* b = ctx.input(1);
  if (!a || !b) return ctx.fail("needs two inputs");
  if (a->type() != b->type()) return ctx.unsupported("inputs differ in type");
  bool logic = op == cmpop::band || op == cmpop::bor;
  if (logic ? a->type() != dtype::boolean
            : (a->type() != dtype::f32 && a->type() != dtype::i64 && a->type() != dtype::i32 && a->type() != dtype::boolean))
    return ctx.unsupported("the CUDA comparison does not take {}", dtype_name(a->type()));
  shape_t out;
  if (!cpu::broadcast_shapes(a->shape(), b->shape(), &out))
    return ctx.fail("inputs have shapes {} and {}, which do not broadcast", shape_str(a->shape()), shape_str(b->shape()));
  if (out.size() > kMaxRank) return ctx.unsupported("rank {} is above the CUDA limit", out.size());
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::boolean, out));
  int64_t n = y->numel();
  if (n == 0) return status::ok();
  bcast_index ix{};
  ix.rank = static_cast<int>(std::max<size_t>(out.size(), 1));
  if (out.empty()) { ix.out_dims[0] = 1; ix.a_strides[0] = 0; ix.b_strides[0] = 0; }
  auto sa = cpu::broadcast_strides(a->shape(), out), sb = cpu::broadcast_strides(b->shape(), out);
  for (size_t d = 0; d < out.size(); ++d) { ix.out_dims[d] = out[d]; ix.a_strides[d] = sa[d]; ix.b_strides[d] = sb[d]; }
  cudaStream_t s = state(ctx).stream;
  int code = static_cast<int>(op);
  switch (a->type()) {
    case dtype::f32: compare_kernel<float><<<blocks_for(n), kThreads, 0, s>>>(y->data<bool>(), a->data<float>(), b->data<float>(), n, ix, code); break;
    case dtype::i64: compare_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<bool>(), a->data<int64_t>(), b->data<int64_t>(), n, ix, code); break;
    case dtype::i32: compare_kernel<int32_t><<<blocks_for(n), kThreads, 0, s>>>(y->data<bool>(), a->data<int32_t>(), b->data<int32_t>(), n, ix, code); break;
    default: compare_kernel<bool><<<blocks_for(n), kThreads, 0, s>>>(y->data<bool>(), a->data<bool>(), b->data<bool>(), n, ix, code); break;
  }
  return cuda_status(cudaGetLastError(), ctx.op().op_type.c_str());
}

}  // namespace

status launch_bias_act(float* y, const float* bias, int64_t rows, int64_t cols, act_spec act, cudaStream_t s) {
  int64_t n = rows * cols;
  if (n == 0 || (!bias && act.kind == act_kind::none)) return status::ok();
  bias_act_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, bias, n, cols, static_cast<int>(act.kind), act.alpha, act.beta);
  return cuda_status(cudaGetLastError(), "bias/activation kernel");
}

status launch_broadcast_scaled(float* y, const float* c, int64_t rows, int64_t cols, int64_t crows, int64_t ccols,
                               float beta, cudaStream_t s) {
  int64_t n = rows * cols;
  if (n == 0) return status::ok();
  broadcast_scaled_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, c, rows, cols, crows, ccols, beta);
  return cuda_status(cudaGetLastError(), "broadcast kernel");
}

void register_elementwise_ops(op_registry& r) {
  r.add("Add", simple_kernel(binary<binop::add>));
  r.add("Sub", simple_kernel(binary<binop::sub>));
  r.add("Mul", simple_kernel(binary<binop::mul>));
  r.add("Div", simple_kernel(binary<binop::div>));
  r.add("Pow", simple_kernel(binary<binop::pow>));
  r.add("Relu", simple_kernel(unary<unop::relu>));
  r.add("Sigmoid", simple_kernel(unary<unop::sigmoid>));
  r.add("Tanh", simple_kernel(unary<unop::tanh>));
  r.add("Exp", simple_kernel(unary<unop::exp>));
  r.add("Log", simple_kernel(unary<unop::log>));
  r.add("Sqrt", simple_kernel(unary<unop::sqrt>));
  r.add("Neg", simple_kernel(unary<unop::neg>));
  r.add("Abs", simple_kernel(unary<unop::abs>));
  r.add("Erf", simple_kernel(unary<unop::erf>));
  r.add("Reciprocal", simple_kernel(unary<unop::reciprocal>));
  r.add("Gelu", simple_kernel([](kernel_context& ctx) -> status {
    // The kernel computes the exact (erf) form; the tanh approximation runs on the CPU.
    const std::string a = ctx.op().attr_string("approximate", "none");
    if (a != "none") return ctx.unsupported("Gelu approximate=\"{}\" runs on the CPU", a);
    return unary<unop::gelu>(ctx);
  }));
  r.add("Silu", simple_kernel(unary<unop::silu>), "com.gpugrid");
  r.add("IsNaN", simple_kernel([](kernel_context& c) { return isnan_like(c, 0); }));
  r.add("IsInf", simple_kernel([](kernel_context& c) { return isnan_like(c, 1); }));
  r.add("Not", simple_kernel(not_op));
  r.add("Equal", simple_kernel(compare<cmpop::eq>));
  r.add("Less", simple_kernel(compare<cmpop::lt>));
  r.add("Greater", simple_kernel(compare<cmpop::gt>));
  r.add("LessOrEqual", simple_kernel(compare<cmpop::le>));
  r.add("GreaterOrEqual", simple_kernel(compare<cmpop::ge>));
  r.add("And", simple_kernel(compare<cmpop::band>));
  r.add("Or", simple_kernel(compare<cmpop::bor>));
}

}  // namespace gpugrid::cuda
