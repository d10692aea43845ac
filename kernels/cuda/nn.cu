// Neural-network ops on the device: convolution (im2col + cuBLAS, direct depthwise),
// pooling, Softmax, LayerNormalization, BatchNormalization, reductions, Clip and the
// parametrised activations, Resize.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/launch.h"

namespace gpugrid::cuda {

namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b > 65535 * 32 ? 65535 * 32 : (b < 1 ? 1 : b));
}

#define GRID_LOOP(i, n)                                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n);       \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ __forceinline__ float act_fn(float x, int kind, float a, float b) {
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

// ---- convolution ----

struct conv_geom {
  int64_t n, c, h, w;         // input
  int64_t m, kh, kw;          // output channels, kernel
  int64_t oh, ow;             // output
  int64_t sh, sw, dh, dw;     // strides, dilations
  int64_t pt, pl;             // pads top/left
  int64_t group;
};

// col [nb][cg*kh*kw][oh*ow] for images n0 .. n0+nb and the group whose channels start at c0.
__global__ void im2col_batched_kernel(float* col, const float* x, conv_geom g, int64_t cg, int64_t c0, int64_t n0, int64_t nb) {
  const int64_t k = cg * g.kh * g.kw, p = g.oh * g.ow;
  int64_t total = nb * k * p;
  GRID_LOOP(i, total) {
    int64_t pi = i % p;
    int64_t row = (i / p) % k;
    int64_t img = i / (p * k);
    int64_t kx = row % g.kw, ky = (row / g.kw) % g.kh, ch = row / (g.kw * g.kh);
    int64_t oy = pi / g.ow, ox = pi % g.ow;
    int64_t iy = oy * g.sh - g.pt + ky * g.dh, ix = ox * g.sw - g.pl + kx * g.dw;
    float v = 0.f;
    if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) v = x[(((n0 + img) * g.c + c0 + ch) * g.h + iy) * g.w + ix];
    col[i] = v;
  }
}

__global__ void depthwise_kernel(float* y, const float* x, const float* w, const float* bias, conv_geom g, int kind, float a, float b) {
  int64_t total = g.n * g.m * g.oh * g.ow;
  int64_t mult = g.m / g.c;
  GRID_LOOP(i, total) {
    int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, oc = (i / (g.ow * g.oh)) % g.m, n = i / (g.ow * g.oh * g.m);
    int64_t ic = oc / mult;
    const float* xp = x + (n * g.c + ic) * g.h * g.w;
    const float* wp = w + oc * g.kh * g.kw;
    float acc = bias ? bias[oc] : 0.f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t ix = ox * g.sw - g.pl + kx * g.dw;
        if (ix < 0 || ix >= g.w) continue;
        acc += xp[iy * g.w + ix] * wp[ky * g.kw + kx];
      }
    }
    y[i] = act_fn(acc, kind, a, b);
  }
}

__global__ void chan_bias_act_kernel(float* y, const float* bias, int64_t total, int64_t hw, int64_t m, int kind, float a, float b) {
  GRID_LOOP(i, total) {
    float v = y[i];
    if (bias) v += bias[(i / hw) % m];
    y[i] = act_fn(v, kind, a, b);
  }
}

class conv_kernel final : public kernel {
 public:
  conv_kernel(const node& n, act_spec act) : n_(n), act_(act) {}

  status run(kernel_context& ctx) override {
    const tensor* x = ctx.input(0);
    const tensor* w = ctx.input(1);
    const tensor* bias = ctx.input(2);
    if (!x || !w) return ctx.fail("needs X and W");
    // A FusedConv's residual Z (made by the CPU session's passes only) runs on the CPU.
    if (ctx.num_inputs() > 3 && ctx.input(3)) return ctx.unsupported("the CUDA FusedConv takes no residual Z");
    if (x->type() != dtype::f32 || w->type() != dtype::f32 || (bias && bias->type() != dtype::f32))
      return ctx.unsupported("the CUDA Conv takes float32");
    if (x->rank() != 4 && x->rank() != 3) return ctx.unsupported("the CUDA Conv supports 1-D and 2-D convolutions (input rank {})", x->rank());
    if (w->rank() != x->rank()) return ctx.fail("W has rank {} for an input of rank {}", w->rank(), x->rank());
    const bool one_d = x->rank() == 3;
    conv_geom g{};
    g.n = x->dim(0); g.c = x->dim(1); g.h = one_d ? 1 : x->dim(2); g.w = x->dim(x->rank() - 1);
    g.m = w->dim(0); g.kh = one_d ? 1 : w->dim(2); g.kw = w->dim(w->rank() - 1);
    g.group = n_.attr_int("group", 1);
    if (g.group <= 0 || g.c % g.group || g.m % g.group || w->dim(1) * g.group != g.c)
      return ctx.fail("W {} does not match {} input channels in {} groups", shape_str(w->shape()), g.c, g.group);
    if (bias && bias->numel() != g.m) return ctx.fail("B has {} values for {} output channels", bias->numel(), g.m);
    auto strides = n_.attr_ints("strides"), dil = n_.attr_ints("dilations"), pads = n_.attr_ints("pads");
    size_t sd = one_d ? 1 : 2;
    if (strides.empty()) strides.assign(sd, 1);
    if (dil.empty()) dil.assign(sd, 1);
    if (pads.empty()) pads.assign(2 * sd, 0);
    if (strides.size() != sd || dil.size() != sd || pads.size() != 2 * sd) return ctx.fail("strides, dilations or pads have the wrong length");
    g.sh = one_d ? 1 : strides[0]; g.sw = strides[sd - 1];
    g.dh = one_d ? 1 : dil[0]; g.dw = dil[sd - 1];
    int64_t pt = one_d ? 0 : pads[0], pl = pads[sd - 1], pb = one_d ? 0 : pads[sd], pr = pads[2 * sd - 1];
    std::string autopad = n_.attr_string("auto_pad", "NOTSET");
    auto same = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t* lo, int64_t* hi) {
      int64_t out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - in);
      *lo = autopad == "SAME_LOWER" ? (total + 1) / 2 : total / 2;
      *hi = total - *lo;
    };
    if (autopad == "SAME_UPPER" || autopad == "SAME_LOWER") {
      if (!one_d) same(g.h, g.kh, g.sh, g.dh, &pt, &pb);
      same(g.w, g.kw, g.sw, g.dw, &pl, &pr);
    } else if (autopad == "VALID") {
      pt = pl = pb = pr = 0;
    }
    if (g.sh <= 0 || g.sw <= 0 || g.dh <= 0 || g.dw <= 0 || pt < 0 || pl < 0 || pb < 0 || pr < 0) return ctx.fail("bad strides, dilations or pads");
    g.pt = pt; g.pl = pl;
    int64_t eh = g.h + pt + pb - (g.kh - 1) * g.dh - 1, ew = g.w + pl + pr - (g.kw - 1) * g.dw - 1;
    if (eh < 0 || ew < 0) return ctx.fail("the kernel is larger than the padded input");
    g.oh = eh / g.sh + 1;
    g.ow = ew / g.sw + 1;
    shape_t out = one_d ? shape_t{g.n, g.m, g.ow} : shape_t{g.n, g.m, g.oh, g.ow};
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, out));
    if (y->numel() == 0) return status::ok();
    run_state& rs = state(ctx);
    const float* px = x->data<float>();
    const float* pw = w->data<float>();
    const float* pb_ = bias ? bias->data<float>() : nullptr;
    float* py = y->data<float>();
    const int kind = static_cast<int>(act_.kind);
    if (g.group == g.c && w->dim(1) == 1) {
      depthwise_kernel<<<blocks_for(y->numel()), kThreads, 0, rs.stream>>>(py, px, pw, pb_, g, kind, act_.alpha, act_.beta);
      return cuda_status(cudaGetLastError(), "depthwise conv");
    }
    GG_CUBLAS(cublasSetMathMode(rs.blas, rs.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    const int64_t cg = g.c / g.group, mg = g.m / g.group, k = cg * g.kh * g.kw, p = g.oh * g.ow;
    const bool pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0;
    float one = 1.f, zero = 0.f;
    if (pointwise && g.group == 1) {
      // Y[n] (m x p) = W (m x k) * X[n] (k x p): one strided-batched GEMM over the images.
      GG_CUBLAS(cublasSgemmStridedBatched(rs.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(p), static_cast<int>(g.m),
                                          static_cast<int>(k), &one, px, static_cast<int>(p), g.c * g.h * g.w, pw,
                                          static_cast<int>(k), 0, &zero, py, static_cast<int>(p), g.m * p,
                                          static_cast<int>(g.n)));
    } else {
      // im2col for a batch of images at once, then one strided-batched GEMM per group and
      // chunk (the weights are shared: stride 0). Chunks keep the column buffer under 512 MiB.
      const int64_t per_image = k * p;
      const int64_t nb_max = std::max<int64_t>(1, std::min<int64_t>(g.n, (int64_t{512} << 20) / 4 / std::max<int64_t>(per_image, 1)));
      GG_RETURN_IF_ERROR(ensure_workspace(rs, static_cast<size_t>(nb_max * per_image) * sizeof(float)));
      float* col = static_cast<float*>(rs.workspace);
      for (int64_t gi = 0; gi < g.group; ++gi) {
        for (int64_t n0 = 0; n0 < g.n; n0 += nb_max) {
          int64_t nb = std::min(nb_max, g.n - n0);
          im2col_batched_kernel<<<blocks_for(nb * per_image), kThreads, 0, rs.stream>>>(col, px, g, cg, gi * cg, n0, nb);
          GG_CUDA(cudaGetLastError());
          GG_CUBLAS(cublasSgemmStridedBatched(rs.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(p), static_cast<int>(mg),
                                              static_cast<int>(k), &one, col, static_cast<int>(p), per_image,
                                              pw + gi * mg * k, static_cast<int>(k), 0, &zero,
                                              py + (n0 * g.m + gi * mg) * p, static_cast<int>(p), g.m * p,
                                              static_cast<int>(nb)));
        }
      }
    }
    if (pb_ || kind != 0) {
      chan_bias_act_kernel<<<blocks_for(y->numel()), kThreads, 0, rs.stream>>>(py, pb_, y->numel(), p, g.m, kind, act_.alpha, act_.beta);
      GG_CUDA(cudaGetLastError());
    }
    return status::ok();
  }

 private:
  node n_;
  act_spec act_;
};

// ---- pooling ----

struct pool_geom {
  int64_t nc, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
  int count_include_pad;
};

__global__ void maxpool_kernel(float* y, const float* x, pool_geom g) {
  GRID_LOOP(i, g.nc * g.oh * g.ow) {
    int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, c = i / (g.ow * g.oh);
    const float* xp = x + c * g.h * g.w;
    float m = -FLT_MAX;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t ix = ox * g.sw - g.pl + kx * g.dw;
        if (ix < 0 || ix >= g.w) continue;
        m = fmaxf(m, xp[iy * g.w + ix]);
      }
    }
    y[i] = m;
  }
}

__global__ void avgpool_kernel(float* y, const float* x, pool_geom g, int64_t pb, int64_t pr) {
  GRID_LOOP(i, g.nc * g.oh * g.ow) {
    int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, c = i / (g.ow * g.oh);
    const float* xp = x + c * g.h * g.w;
    float s = 0.f;
    int64_t cnt = 0;
    int64_t y0 = oy * g.sh - g.pt, x0 = ox * g.sw - g.pl;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t iy = y0 + ky;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t ix = x0 + kx;
        if (ix < 0 || ix >= g.w) continue;
        s += xp[iy * g.w + ix];
        ++cnt;
      }
    }
    if (g.count_include_pad) {
      int64_t ye = min(y0 + g.kh, g.h + pb), xe = min(x0 + g.kw, g.w + pr);
      int64_t ys = y0, xs = x0;
      cnt = (ye - ys) * (xe - xs);
    }
    y[i] = cnt > 0 ? s / static_cast<float>(cnt) : 0.f;
  }
}

status pool(kernel_context& ctx, bool is_max) {
  const node& n = ctx.op();
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32 || x->rank() != 4) return ctx.unsupported("the CUDA pooling takes 4-D float32");
  if (is_max && ctx.output_wanted(1)) return ctx.unsupported("MaxPool indices are not supported on CUDA");
  auto ks = n.attr_ints("kernel_shape"), st = n.attr_ints("strides"), pads = n.attr_ints("pads"), dil = n.attr_ints("dilations");
  if (ks.size() != 2) return ctx.unsupported("the CUDA pooling is 2-D only");
  if (st.empty()) st = {1, 1};
  if (pads.empty()) pads = {0, 0, 0, 0};
  if (dil.empty()) dil = {1, 1};
  if (st.size() != 2 || pads.size() != 4 || dil.size() != 2) return ctx.fail("bad strides, pads or dilations");
  pool_geom g{};
  g.nc = x->dim(0) * x->dim(1); g.h = x->dim(2); g.w = x->dim(3);
  g.kh = ks[0]; g.kw = ks[1]; g.sh = st[0]; g.sw = st[1]; g.dh = dil[0]; g.dw = dil[1];
  int64_t pt = pads[0], pl = pads[1], pb = pads[2], pr = pads[3];
  std::string autopad = n.attr_string("auto_pad", "NOTSET");
  bool ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  if (g.kh <= 0 || g.kw <= 0 || g.sh <= 0 || g.sw <= 0 || g.dh <= 0 || g.dw <= 0) return ctx.fail("bad kernel_shape, strides or dilations");
  if (autopad == "SAME_UPPER" || autopad == "SAME_LOWER") {
    auto same = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t* lo, int64_t* hi) {
      int64_t out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - in);
      *lo = autopad == "SAME_LOWER" ? (total + 1) / 2 : total / 2;
      *hi = total - *lo;
    };
    same(g.h, g.kh, g.sh, g.dh, &pt, &pb);
    same(g.w, g.kw, g.sw, g.dw, &pl, &pr);
  } else if (autopad == "VALID") {
    pt = pl = pb = pr = 0;
  }
  auto out_dim = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t lo, int64_t hi) {
    int64_t span = in + lo + hi - (k - 1) * d - 1;
    if (span < 0) return int64_t{-1};
    int64_t o = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
    if (ceil_mode && (o - 1) * s >= in + lo) --o;
    return o;
  };
  g.oh = out_dim(g.h, g.kh, g.sh, g.dh, pt, pb);
  g.ow = out_dim(g.w, g.kw, g.sw, g.dw, pl, pr);
  if (g.oh < 0 || g.ow < 0) return ctx.fail("the kernel is larger than the padded input");
  g.pt = pt; g.pl = pl;
  g.count_include_pad = static_cast<int>(n.attr_int("count_include_pad", 0));
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, {x->dim(0), x->dim(1), g.oh, g.ow}));
  if (y->numel() == 0) return status::ok();
  cudaStream_t s = state(ctx).stream;
  if (is_max) maxpool_kernel<<<blocks_for(y->numel()), kThreads, 0, s>>>(y->data<float>(), x->data<float>(), g);
  else avgpool_kernel<<<blocks_for(y->numel()), kThreads, 0, s>>>(y->data<float>(), x->data<float>(), g, pb, pr);
  return cuda_status(cudaGetLastError(), "pooling");
}

// ---- row reductions: one block per row ----

__device__ __forceinline__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[wid] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = threadIdx.x < nw ? shared[threadIdx.x] : 0.f;
  if (wid == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  return shared[0];
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[wid] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = threadIdx.x < nw ? shared[threadIdx.x] : -FLT_MAX;
  if (wid == 0)
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  return shared[0];
}

// Rows are (outer, inner) pairs over a reduced axis of length len with stride `inner`.
__global__ void softmax_kernel(float* y, const float* x, int64_t len, int64_t inner, int log_mode) {
  __shared__ float sh[32];
  int64_t row = blockIdx.x;
  int64_t o = row / inner, in = row % inner;
  const float* xp = x + o * len * inner + in;
  float* yp = y + o * len * inner + in;
  float m = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, xp[j * inner]);
  m = block_max(m, sh);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) s += __expf(xp[j * inner] - m);
  s = block_sum(s, sh);
  if (log_mode) {
    float ls = logf(s);
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) yp[j * inner] = xp[j * inner] - m - ls;
  } else {
    float inv = 1.f / s;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) yp[j * inner] = __expf(xp[j * inner] - m) * inv;
  }
}

status softmax(kernel_context& ctx, bool log_mode) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA Softmax takes float32");
  int64_t r = static_cast<int64_t>(x->rank());
  const node& n = ctx.op();
  int64_t axis = n.attr_int("axis", n.opset < 13 ? 1 : -1);
  if (axis < 0) axis += r;
  if (r == 0 || axis < 0 || axis >= r) return ctx.fail("axis {} is out of range for rank {}", n.attr_int("axis", -1), r);
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, dtype::f32, x->shape()));
  if (y->numel() == 0) return status::ok();
  int64_t outer = 1, len = 1, inner = 1;
  if (n.opset < 13) {
    for (int64_t d = 0; d < axis; ++d) outer *= x->dim(d);
    for (int64_t d = axis; d < r; ++d) len *= x->dim(d);
  } else {
    for (int64_t d = 0; d < axis; ++d) outer *= x->dim(d);
    len = x->dim(axis);
    for (int64_t d = axis + 1; d < r; ++d) inner *= x->dim(d);
  }
  int threads = len >= 1024 ? 512 : len >= 256 ? 256 : 128;
  int64_t rows = outer * inner;
  if (rows > 2147483647) return ctx.unsupported("too many rows for the CUDA kernel");
  softmax_kernel<<<static_cast<unsigned>(rows), threads, 0, state(ctx).stream>>>(y->data<float>(), x->data<float>(), len, inner, log_mode ? 1 : 0);
  return cuda_status(cudaGetLastError(), "softmax");
}

__global__ void layernorm_kernel(float* y, float* mean_out, float* inv_out, const float* x, const float* scale,
                                 const float* bias, int64_t cols, float eps) {
  __shared__ float sh[32];
  int64_t row = blockIdx.x;
  const float* xp = x + row * cols;
  float* yp = y + row * cols;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += xp[j];
  float mean = block_sum(s, sh) / static_cast<float>(cols);
  float v = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) { float d = xp[j] - mean; v += d * d; }
  float var = block_sum(v, sh) / static_cast<float>(cols);
  float inv = rsqrtf(var + eps);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float t = (xp[j] - mean) * inv * scale[j];
    yp[j] = bias ? t + bias[j] : t;
  }
  if (threadIdx.x == 0) {
    if (mean_out) mean_out[row] = mean;
    if (inv_out) inv_out[row] = inv;
  }
}

status layernorm(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  const tensor* scale = ctx.input(1);
  const tensor* bias = ctx.input(2);
  if (!x || !scale) return ctx.fail("needs X and Scale");
  if (x->type() != dtype::f32 || scale->type() != dtype::f32 || (bias && bias->type() != dtype::f32))
    return ctx.unsupported("the CUDA LayerNormalization takes float32");
  int64_t r = static_cast<int64_t>(x->rank());
  int64_t axis = ctx.op().attr_int("axis", -1);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return ctx.fail("axis is out of range");
  int64_t rows = 1, cols = 1;
  for (int64_t d = 0; d < axis; ++d) rows *= x->dim(d);
  for (int64_t d = axis; d < r; ++d) cols *= x->dim(d);
  if (scale->numel() != cols || (bias && bias->numel() != cols))
    return ctx.fail("Scale/B must have {} elements (the normalised dims), got {}", cols, scale->numel());
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, x->shape()));
  shape_t stat_shape = x->shape();
  for (int64_t d = axis; d < r; ++d) stat_shape[d] = 1;
  float* mean_p = nullptr;
  float* inv_p = nullptr;
  if (ctx.output_wanted(1)) { GG_ASSIGN_OR_RETURN(tensor* m, ctx.output(1, dtype::f32, stat_shape)); mean_p = m->data<float>(); }
  if (ctx.output_wanted(2)) { GG_ASSIGN_OR_RETURN(tensor* v, ctx.output(2, dtype::f32, stat_shape)); inv_p = v->data<float>(); }
  if (rows == 0 || cols == 0) return status::ok();
  int threads = cols >= 1024 ? 512 : cols >= 256 ? 256 : 128;
  layernorm_kernel<<<static_cast<unsigned>(rows), threads, 0, state(ctx).stream>>>(
      y->data<float>(), mean_p, inv_p, x->data<float>(), scale->data<float>(), bias ? bias->data<float>() : nullptr, cols,
      ctx.op().attr_float("epsilon", 1e-5f));
  return cuda_status(cudaGetLastError(), "layernorm");
}

__global__ void reduce_kernel(float* y, const float* x, int64_t len, int64_t inner, int mode) {
  __shared__ float sh[32];
  int64_t row = blockIdx.x;
  int64_t o = row / inner, in = row % inner;
  const float* xp = x + o * len * inner + in;
  if (mode == 2) {
    float m = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, xp[j * inner]);
    m = block_max(m, sh);
    if (threadIdx.x == 0) y[row] = m;
    return;
  }
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) s += xp[j * inner];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) y[row] = mode == 1 ? s / static_cast<float>(len) : s;
}

__global__ void scale_kernel(float* y, int64_t n, float s) {
  GRID_LOOP(i, n) y[i] *= s;
}

// Stage one of a long reduction: block (row, chunk) reduces one chunk of one row (inner == 1).
__global__ void reduce_partial_kernel(float* partial, const float* x, int64_t len, int64_t chunk, int mode) {
  __shared__ float sh[32];
  int64_t row = blockIdx.y, c = blockIdx.x;
  const float* xp = x + row * len;
  int64_t b = c * chunk, e = min(len, b + chunk);
  float v = mode == 2 ? -FLT_MAX : 0.f;
  for (int64_t j = b + threadIdx.x; j < e; j += blockDim.x) v = mode == 2 ? fmaxf(v, xp[j]) : v + xp[j];
  v = mode == 2 ? block_max(v, sh) : block_sum(v, sh);
  if (threadIdx.x == 0) partial[row * gridDim.x + c] = v;
}

// ReduceSum (0), ReduceMean (1), ReduceMax (2) over one contiguous run of axes.
status reduce(kernel_context& ctx, int mode) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA reductions take float32");
  int64_t r = static_cast<int64_t>(x->rank());
  std::vector<int64_t> axes;
  if (ctx.input(1)) axes = ctx.input(1)->to_int64_vector();
  bool keep = ctx.op().attr_int("keepdims", 1) != 0;
  if (axes.empty()) {
    if (ctx.op().attr_int("noop_with_empty_axes", 0)) {
      GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, x->shape()));
      if (x->bytes()) GG_CUDA(cudaMemcpyAsync(y->raw(), x->raw(), x->bytes(), cudaMemcpyDeviceToDevice, state(ctx).stream));
      return status::ok();
    }
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  std::vector<bool> red(r, false);
  for (int64_t a : axes) {
    int64_t ax = a < 0 ? a + r : a;
    if (ax < 0 || ax >= r) return ctx.fail("axis {} is out of range", a);
    red[ax] = true;
  }
  int64_t first = -1, last = -1;
  for (int64_t i = 0; i < r; ++i) if (red[i]) { if (first < 0) first = i; last = i; }
  for (int64_t i = first; i <= last; ++i) if (!red[i]) return ctx.unsupported("non-adjacent reduction axes are not supported on CUDA");
  int64_t outer = 1, len = 1, inner = 1;
  for (int64_t i = 0; i < r; ++i) {
    if (i < first) outer *= x->dim(i);
    else if (i <= last) len *= x->dim(i);
    else inner *= x->dim(i);
  }
  shape_t out;
  for (int64_t i = 0; i < r; ++i) {
    if (!red[i]) out.push_back(x->dim(i));
    else if (keep) out.push_back(1);
  }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, out));
  if (y->numel() == 0) return status::ok();
  if (len == 0) return ctx.unsupported("reducing an empty axis is not supported on CUDA");
  int threads = len >= 1024 ? 512 : 128;
  run_state& rs = state(ctx);
  int64_t rows = outer * inner;
  if (inner == 1 && rows < 1024 && len >= (int64_t{1} << 16)) {
    // Few long rows: spread each row over many blocks, then reduce the partial results.
    int64_t chunks = std::min<int64_t>(1024, (len + 65535) / 65536 * 8);
    int64_t chunk = (len + chunks - 1) / chunks;
    GG_RETURN_IF_ERROR(ensure_workspace(rs, static_cast<size_t>(rows * chunks) * sizeof(float)));
    float* partial = static_cast<float*>(rs.workspace);
    reduce_partial_kernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows)), 256, 0, rs.stream>>>(
        partial, x->data<float>(), len, chunk, mode);
    GG_CUDA(cudaGetLastError());
    reduce_kernel<<<static_cast<unsigned>(rows), 256, 0, rs.stream>>>(y->data<float>(), partial, chunks, 1, mode == 1 ? 0 : mode);
    GG_CUDA(cudaGetLastError());
    if (mode == 1) {
      scale_kernel<<<blocks_for(rows), kThreads, 0, rs.stream>>>(y->data<float>(), rows, 1.f / static_cast<float>(len));
    }
    return cuda_status(cudaGetLastError(), "reduce");
  }
  reduce_kernel<<<static_cast<unsigned>(rows), threads, 0, rs.stream>>>(y->data<float>(), x->data<float>(), len, inner, mode);
  return cuda_status(cudaGetLastError(), "reduce");
}

__global__ void global_pool_kernel(float* y, const float* x, int64_t hw, int is_max) {
  __shared__ float sh[32];
  const float* xp = x + blockIdx.x * hw;
  if (is_max) {
    float m = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) m = fmaxf(m, xp[j]);
    m = block_max(m, sh);
    if (threadIdx.x == 0) y[blockIdx.x] = m;
  } else {
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < hw; j += blockDim.x) s += xp[j];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) y[blockIdx.x] = s / static_cast<float>(hw);
  }
}

status global_pool(kernel_context& ctx, bool is_max) {
  const tensor* x = ctx.input(0);
  if (!x || x->rank() < 3) return ctx.fail("needs an input of rank >= 3");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA global pooling takes float32");
  shape_t out = {x->dim(0), x->dim(1)};
  int64_t hw = 1;
  for (size_t d = 2; d < x->rank(); ++d) { out.push_back(1); hw *= x->dim(d); }
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, out));
  if (y->numel() == 0 || hw == 0) return status::ok();
  global_pool_kernel<<<static_cast<unsigned>(y->numel()), hw >= 1024 ? 256 : 128, 0, state(ctx).stream>>>(
      y->data<float>(), x->data<float>(), hw, is_max ? 1 : 0);
  return cuda_status(cudaGetLastError(), "global pooling");
}

__global__ void batchnorm_kernel(float* y, const float* x, const float* sc, const float* b, const float* mean,
                                 const float* var, int64_t total, int64_t hw, int64_t c, float eps) {
  GRID_LOOP(i, total) {
    int64_t ch = (i / hw) % c;
    y[i] = (x[i] - mean[ch]) * rsqrtf(var[ch] + eps) * sc[ch] + b[ch];
  }
}

status batchnorm(kernel_context& ctx) {
  const tensor* x = ctx.input(0);
  for (int i = 0; i < 5; ++i) if (!ctx.input(i) || ctx.input(i)->type() != dtype::f32) return ctx.unsupported("the CUDA BatchNormalization takes five float32 inputs");
  if (ctx.op().attr_int("training_mode", 0)) return ctx.unsupported("training mode is not supported");
  if (x->rank() < 2) return ctx.fail("X must have rank >= 2");
  int64_t c = x->dim(1);
  for (int i = 1; i < 5; ++i) if (ctx.input(i)->numel() != c) return ctx.fail("input {} must have {} values", i, c);
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, dtype::f32, x->shape()));
  int64_t hw = 1;
  for (size_t d = 2; d < x->rank(); ++d) hw *= x->dim(d);
  if (y->numel() == 0) return status::ok();
  batchnorm_kernel<<<blocks_for(y->numel()), kThreads, 0, state(ctx).stream>>>(
      y->data<float>(), x->data<float>(), ctx.input(1)->data<float>(), ctx.input(2)->data<float>(),
      ctx.input(3)->data<float>(), ctx.input(4)->data<float>(), y->numel(), hw, c, ctx.op().attr_float("epsilon", 1e-5f));
  return cuda_status(cudaGetLastError(), "batchnorm");
}

__global__ void act_kernel(float* y, const float* x, int64_t n, int kind, float a, float b) {
  GRID_LOOP(i, n) y[i] = act_fn(x[i], kind, a, b);
}

status activation(kernel_context& ctx, act_kind kind, float a, float b) {
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32) return ctx.unsupported("the CUDA kernel takes float32 (got {})", dtype_name(x->type()));
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output_reusing(0, 0, dtype::f32, x->shape()));
  if (y->numel() == 0) return status::ok();
  act_kernel<<<blocks_for(y->numel()), kThreads, 0, state(ctx).stream>>>(y->data<float>(), x->data<float>(), y->numel(),
                                                                          static_cast<int>(kind), a, b);
  return cuda_status(cudaGetLastError(), ctx.op().op_type.c_str());
}

status clip(kernel_context& ctx) {
  float lo = -FLT_MAX, hi = FLT_MAX;
  if (ctx.input(1)) { if (ctx.input(1)->numel() != 1) return ctx.fail("min must be a scalar"); lo = static_cast<float>(ctx.input(1)->as_double(0)); }
  if (ctx.input(2)) { if (ctx.input(2)->numel() != 1) return ctx.fail("max must be a scalar"); hi = static_cast<float>(ctx.input(2)->as_double(0)); }
  return activation(ctx, act_kind::clip, lo, hi);
}

// ---- Resize (nearest and linear over the last two dims) ----

__device__ __forceinline__ float src_coord(float dst, float scale, int64_t in_len, int64_t out_len, int mode) {
  switch (mode) {
    case 0: return (dst + 0.5f) / scale - 0.5f;                                      // half_pixel
    case 1: return out_len > 1 ? (dst + 0.5f) / scale - 0.5f : 0.f;                 // pytorch_half_pixel
    case 2: return out_len > 1 ? dst * (in_len - 1) / static_cast<float>(out_len - 1) : 0.f;  // align_corners
    default: return dst / scale;                                                     // asymmetric
  }
}

__global__ void resize_kernel(float* y, const float* x, int64_t nc, int64_t ih, int64_t iw, int64_t oh, int64_t ow,
                              float sh, float sw, int coord_mode, int linear, int nearest_mode) {
  GRID_LOOP(i, nc * oh * ow) {
    int64_t ox = i % ow, oy = (i / ow) % oh, c = i / (ow * oh);
    const float* xp = x + c * ih * iw;
    float fy = src_coord(static_cast<float>(oy), sh, ih, oh, coord_mode);
    float fx = src_coord(static_cast<float>(ox), sw, iw, ow, coord_mode);
    if (!linear) {
      auto pick = [&](float f) -> float {
        switch (nearest_mode) {
          case 1: return floorf(f);                       // floor
          case 2: return ceilf(f);                        // ceil
          case 3: return ceilf(f - 0.5f);                 // round_prefer_floor
          default: return floorf(f + 0.5f);               // round_prefer_ceil
        }
      };
      int64_t yy = min(max(static_cast<int64_t>(pick(fy)), int64_t{0}), ih - 1);
      int64_t xx = min(max(static_cast<int64_t>(pick(fx)), int64_t{0}), iw - 1);
      y[i] = xp[yy * iw + xx];
    } else {
      fy = fminf(fmaxf(fy, 0.f), static_cast<float>(ih - 1));
      fx = fminf(fmaxf(fx, 0.f), static_cast<float>(iw - 1));
      int64_t y0 = static_cast<int64_t>(floorf(fy)), x0 = static_cast<int64_t>(floorf(fx));
      int64_t y1 = min(y0 + 1, ih - 1), x1 = min(x0 + 1, iw - 1);
      float wy = fy - y0, wx = fx - x0;
      y[i] = (1 - wy) * ((1 - wx) * xp[y0 * iw + x0] + wx * xp[y0 * iw + x1]) +
             wy * ((1 - wx) * xp[y1 * iw + x0] + wx * xp[y1 * iw + x1]);
    }
  }
}

status resize(kernel_context& ctx) {
  const node& n = ctx.op();
  const tensor* x = ctx.input(0);
  if (!x) return ctx.fail("needs an input");
  if (x->type() != dtype::f32 || x->rank() != 4) return ctx.unsupported("the CUDA Resize takes 4-D float32");
  std::string mode = n.attr_string("mode", "nearest");
  std::string ctm = n.attr_string("coordinate_transformation_mode", "half_pixel");
  std::string nm = n.attr_string("nearest_mode", "round_prefer_floor");
  if (mode != "nearest" && mode != "linear") return ctx.unsupported("mode '{}' is not supported on CUDA", mode);
  if (n.attr_int("antialias", 0) || n.has_attr("axes") || n.attr_string("keep_aspect_ratio_policy", "stretch") != "stretch")
    return ctx.unsupported("antialias, axes and keep_aspect_ratio_policy are not supported on CUDA");
  int coord = ctm == "half_pixel" ? 0 : ctm == "pytorch_half_pixel" ? 1 : ctm == "align_corners" ? 2 : ctm == "asymmetric" ? 3 : -1;
  if (coord < 0) return ctx.unsupported("coordinate_transformation_mode '{}' is not supported on CUDA", ctm);
  int nearest = nm == "round_prefer_ceil" ? 0 : nm == "floor" ? 1 : nm == "ceil" ? 2 : 3;
  float sh = 1, sw = 1;
  int64_t oh, ow;
  const tensor* scales = ctx.input(2);
  const tensor* sizes = ctx.input(3);
  if (sizes && sizes->numel() > 0) {
    auto s = sizes->to_int64_vector();
    if (s.size() != 4 || s[0] != x->dim(0) || s[1] != x->dim(1)) return ctx.unsupported("CUDA Resize only resizes the last two dims");
    oh = s[2]; ow = s[3];
    sh = static_cast<float>(oh) / static_cast<float>(x->dim(2));
    sw = static_cast<float>(ow) / static_cast<float>(x->dim(3));
  } else if (scales && scales->numel() == 4) {
    if (scales->as_double(0) != 1 || scales->as_double(1) != 1) return ctx.unsupported("CUDA Resize only resizes the last two dims");
    sh = static_cast<float>(scales->as_double(2));
    sw = static_cast<float>(scales->as_double(3));
    oh = static_cast<int64_t>(std::floor(x->dim(2) * static_cast<double>(sh)));
    ow = static_cast<int64_t>(std::floor(x->dim(3) * static_cast<double>(sw)));
  } else {
    return ctx.fail("needs scales or sizes");
  }
  if (oh < 0 || ow < 0 || sh <= 0 || sw <= 0) return ctx.fail("bad output size");
  if (coord == 2 && (oh == 1 || ow == 1)) return ctx.unsupported("align_corners to a length of 1 runs on the CPU");
  GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, {x->dim(0), x->dim(1), oh, ow}));
  if (y->numel() == 0) return status::ok();
  resize_kernel<<<blocks_for(y->numel()), kThreads, 0, state(ctx).stream>>>(
      y->data<float>(), x->data<float>(), x->dim(0) * x->dim(1), x->dim(2), x->dim(3), oh, ow, sh, sw, coord,
      mode == "linear" ? 1 : 0, nearest);
  return cuda_status(cudaGetLastError(), "resize");
}

template <typename F>
kernel_factory fn(F f) { return simple_kernel(f); }

}  // namespace

void register_nn_ops(op_registry& r) {
  r.add("Conv", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<conv_kernel>(n, act_spec{}));
  });
  r.add("FusedConv", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(act_spec act, parse_act(n));
    return std::unique_ptr<kernel>(std::make_unique<conv_kernel>(n, act));
  }, "com.gpugrid");
  r.add("MaxPool", fn([](kernel_context& c) { return pool(c, true); }));
  r.add("AveragePool", fn([](kernel_context& c) { return pool(c, false); }));
  r.add("GlobalAveragePool", fn([](kernel_context& c) { return global_pool(c, false); }));
  r.add("GlobalMaxPool", fn([](kernel_context& c) { return global_pool(c, true); }));
  r.add("Softmax", fn([](kernel_context& c) { return softmax(c, false); }));
  r.add("LogSoftmax", fn([](kernel_context& c) { return softmax(c, true); }));
  r.add("LayerNormalization", fn(layernorm));
  r.add("BatchNormalization", fn(batchnorm));
  r.add("ReduceSum", fn([](kernel_context& c) { return reduce(c, 0); }), "", {1});
  r.add("ReduceMean", fn([](kernel_context& c) { return reduce(c, 1); }), "", {1});
  r.add("ReduceMax", fn([](kernel_context& c) { return reduce(c, 2); }), "", {1});
  r.add("Clip", fn(clip), "", {1, 2});
  r.add("LeakyRelu", fn([](kernel_context& c) { return activation(c, act_kind::leaky_relu, c.op().attr_float("alpha", 0.01f), 0); }));
  r.add("HardSigmoid", fn([](kernel_context& c) {
    return activation(c, act_kind::hard_sigmoid, c.op().attr_float("alpha", 0.2f), c.op().attr_float("beta", 0.5f));
  }));
  r.add("HardSwish", fn([](kernel_context& c) { return activation(c, act_kind::hard_swish, 0, 0); }));
  r.add("Resize", fn(resize), "", {1, 2, 3});
}

}  // namespace gpugrid::cuda
