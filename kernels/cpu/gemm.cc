// MatMul, Gemm, MatMulInteger and the fused com.gpugrid FusedGemm / FusedMatMul.
//
// float goes to the engine's packed sgemm (sgemm.h) where the CPU allows, with a constant B
// packed once (from the first run with more than one row: a matrix-vector product gains
// nothing from it) and the bias and activation applied per block; else to OpenBLAS sgemm.
// double goes to dgemm; integer types use a plain loop. A batched A times a 2-D B is one
// product with M = batch * rows.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/session.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/nn_internal.h"
#include "kernels/cpu/sgemm.h"

namespace gpugrid::cpu {
namespace {

using nn::check_inputs;
using nn::gemm;
using nn::parallel;

// How a (broadcast, batched) matrix product maps onto gemm calls.
struct mm_plan {
  shape_t out;
  int64_t M = 0, N = 0, K = 0;
  int64_t rows = 0;   // M per gemm call (batch * M when merged)
  int64_t calls = 0;  // gemm calls
  // Offsets of call i's A and B matrices (in elements), from the broadcast batch strides.
  shape_t batch;
  std::vector<int64_t> sa, sb;
  void offsets(int64_t i, int64_t* ao, int64_t* bo) const {
    int64_t a = 0, b = 0;
    for (size_t d = batch.size(); d-- > 0;) {
      const int64_t x = i % batch[d];
      i /= batch[d];
      a += x * sa[d];
      b += x * sb[d];
    }
    *ao = a * M * K;
    *bo = b * K * N;
  }
};

status plan_matmul(const kernel_context& ctx, const shape_t& a_in, const shape_t& b_in, mm_plan* p) {
  if (a_in.empty() || b_in.empty())
    return ctx.fail("inputs must have rank >= 1, got shapes {} and {}", shape_str(a_in), shape_str(b_in));
  shape_t a = a_in, b = b_in;
  const bool drop_m = a.size() == 1, drop_n = b.size() == 1;
  if (drop_m) a.insert(a.begin(), 1);
  if (drop_n) b.push_back(1);
  p->M = a[a.size() - 2];
  p->K = a[a.size() - 1];
  p->N = b[b.size() - 1];
  if (b[b.size() - 2] != p->K)
    return ctx.fail("inner dimensions differ: A is {} and B is {}", shape_str(a_in), shape_str(b_in));
  shape_t ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2), batch;
  if (!broadcast_shapes(ab, bb, &batch))
    return ctx.fail("batch dims of {} and {} do not broadcast", shape_str(a_in), shape_str(b_in));
  p->out = batch;
  if (!drop_m) p->out.push_back(p->M);
  if (!drop_n) p->out.push_back(p->N);
  int64_t nb = 0, tmp = 0;
  if (!checked_num_elements(batch, int64_t{1} << 40, &nb) || !checked_num_elements(p->out, int64_t{1} << 40, &tmp))
    return ctx.fail("output shape {} is too large", shape_str(p->out));
  p->rows = p->M;
  p->calls = 0;
  p->batch.clear();
  p->sa.clear();
  p->sb.clear();
  if (nb == 0 || p->M == 0 || p->N == 0) return status::ok();
  if (num_elements(bb) == 1 && num_elements(ab) == nb) {
    // B is one matrix and A's batch is the whole batch: stack A's matrices into one tall A.
    p->rows = nb * p->M;
    p->calls = 1;
    return status::ok();
  }
  p->calls = nb;
  p->batch = batch;
  p->sa = broadcast_strides(ab, batch);
  p->sb = broadcast_strides(bb, batch);
  return status::ok();
}

// Whether OpenBLAS runs a product on more than the calling thread (see quiet_openblas_threads).
bool blas_threaded() { return openblas_get_num_threads() > 1; }

template <typename T>
void run_plan(kernel_context& ctx, const mm_plan& p, const T* A, const T* B, T* Y) {
  const int64_t calls = p.calls;
  const int64_t ystep = p.rows * p.N;
  auto one = [&](int64_t i, int64_t r0, int64_t r1) {
    int64_t ao, bo;
    p.offsets(i, &ao, &bo);
    gemm<T>(false, false, r1 - r0, p.N, p.K, T(1), A + ao + r0 * p.K, p.K, B + bo, p.N, T(0),
            Y + i * ystep + r0 * p.N, p.N);
  };
  constexpr bool blas = std::is_same_v<T, float> || std::is_same_v<T, double>;
  // OpenBLAS runs a product of at most 65536 * GEMM_MULTITHREAD_THRESHOLD (4) multiply-adds
  // on the calling thread and hands bigger ones to its own threads, with a sync per call.
  // Several independent mid-sized products (attention heads) therefore go faster as row
  // blocks under that size spread over our pool, each on its caller's thread.
  const double serial_macs = 65536.0 * 4;
  const double nk = static_cast<double>(p.N) * std::max<int64_t>(p.K, 1);
  const double work = static_cast<double>(p.rows) * nk;
  // (A one-row product is an sgemv, which OpenBLAS threads from 2304 * 4 elements on.) When
  // OpenBLAS has one thread (set_blas_threads), every batch of products goes over our pool.
  const bool serial_ok = p.rows > 1 ? nk * 8 <= serial_macs : nk < 2304.0 * 4;
  if (calls > 1 && (!blas || !blas_threaded() || (work <= 16.0 * 1024 * 1024 && serial_ok))) {
    const int64_t block = blas ? std::max<int64_t>(8, static_cast<int64_t>(serial_macs / nk)) : p.rows;
    const int64_t per = (p.rows + block - 1) / block;
    const int64_t tasks = calls * per;
    const double task_work = static_cast<double>(std::min(block, p.rows)) * nk;
    int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(50000.0 / std::max(task_work, 1.0)));
    parallel(ctx, tasks, grain, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = t / per, r0 = (t % per) * block;
        one(i, r0, std::min(p.rows, r0 + block));
      }
    });
  } else {
    for (int64_t i = 0; i < calls; ++i) one(i, 0, p.rows);
  }
}

// Adds the per-column bias and applies the activation to every row of an [rows, n] matrix.
void bias_act_rows(kernel_context& ctx, const activation_spec& act, float* y, int64_t rows, int64_t n,
                   const float* bias) {
  if (act.is_none() && !bias) return;
  if (n <= 0 || rows <= 0) return;
  int64_t grain = std::max<int64_t>(1, 16384 / n);
  parallel(ctx, rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) apply_activation(act, y + r * n, n, bias);
  });
}

template <typename T>
T act_double(const activation_spec& a, T x) {
  // Double outputs of fused ops: the activation in double precision.
  switch (a.kind) {
    case activation_kind::none: return x;
    case activation_kind::relu: return x < 0 ? T(0) : x;
    case activation_kind::leaky_relu: return x < 0 ? T(a.alpha) * x : x;
    case activation_kind::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case activation_kind::tanh: return std::tanh(x);
    case activation_kind::clip: return std::min(std::max(x, T(a.alpha)), T(a.beta));
    case activation_kind::hard_sigmoid: return std::max(T(0), std::min(T(1), T(a.alpha) * x + T(a.beta)));
    case activation_kind::hard_swish: return x * std::max(T(0), std::min(T(1), x / T(6) + T(0.5)));
    case activation_kind::silu: return x / (T(1) + std::exp(-x));
    case activation_kind::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
  }
  return x;
}

// A constant right operand (a weight matrix), packed for sgemm the first time it pays.
class packed_weight {
 public:
  // Remembers a constant 2-D float B; transposed when the product reads B^T.
  void remember(const tensor* b, bool transposed) {
    if (!b || b->type() != dtype::f32 || b->rank() != 2 || !sgemm::available()) return;
    src_ = b->data<float>();
    k_ = transposed ? b->dim(1) : b->dim(0);
    n_ = transposed ? b->dim(0) : b->dim(1);
    transposed_ = transposed;
  }
  // The packed operand when `b` is the remembered constant, packing it on first use; null
  // when it is not (or packing failed: then the caller packs per run).
  const sgemm::packed* get(const float* b) {
    if (!src_ || b != src_) return nullptr;
    std::call_once(once_, [&] {
      const int64_t ld = transposed_ ? k_ : n_;
      pk_ = sgemm::packed::right(transposed_ ? sgemm::view{src_, 1, ld} : sgemm::view{src_, ld, 1}, k_, n_);
    });
    return pk_.get();
  }

 private:
  const float* src_ = nullptr;
  int64_t k_ = 0, n_ = 0;
  bool transposed_ = false;
  std::once_flag once_;
  std::shared_ptr<const sgemm::packed> pk_;
};

// ---------------------------------------------------------------------------------------
// MatMul / FusedMatMul

class matmul_kernel final : public kernel {
 public:
  matmul_kernel(bool fused, activation_spec act) : fused_(fused), act_(act) {}

  status prepare(const std::vector<const tensor*>& constants) override {
    if (constants.size() > 1) weight_.remember(constants[1], false);
    return status::ok();
  }

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, fused_ ? 3 : 2, 2));
    const tensor& A = *ctx.input(0);
    const tensor& B = *ctx.input(1);
    if (A.type() != B.type())
      return ctx.fail("A is {} but B is {}", dtype_name(A.type()), dtype_name(B.type()));
    mm_plan p;
    GG_RETURN_IF_ERROR(plan_matmul(ctx, A.shape(), B.shape(), &p));
    const tensor* bias = fused_ ? nn::optional_input(ctx, 2) : nullptr;
    if (bias) {
      if (bias->type() != A.type()) return ctx.fail("bias is {} but A is {}", dtype_name(bias->type()), dtype_name(A.type()));
      if (bias->numel() != p.N) return ctx.fail("bias has {} values for {} output columns", bias->numel(), p.N);
    }
    const dtype t = A.type();
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, t, p.out));
    if (t == dtype::f32 && sgemm::available() && p.calls > 0 && (p.rows > 1 || p.calls > 1)) {
      sgemm::problem q;
      q.m = p.rows;
      q.n = p.N;
      q.k = p.K;
      q.a.v = {A.data<float>(), p.K, 1};
      q.b.v = {B.data<float>(), p.N, 1};
      if (p.calls == 1) q.b.pk = weight_.get(B.data<float>());
      q.c = y->data<float>();
      q.ldc = p.N;
      q.ep.bias = bias ? bias->data<float>() : nullptr;
      q.ep.act = act_;
      q.batch = p.calls;
      const int64_t ystep = p.rows * p.N;
      q.offsets = [&p, ystep](int64_t i, int64_t* ao, int64_t* bo, int64_t* co) {
        p.offsets(i, ao, bo);
        *co = i * ystep;
      };
      if (!sgemm::run(&ctx.pool(), q)) return ctx.fail("out of memory for the packed blocks");
      return status::ok();
    }
    if (t == dtype::f16) return run_f16(ctx, A, B, p, bias, y);
    if (t == dtype::f32 && p.calls == 1 && p.rows <= 2) {
      // One or two rows (a decode step): a matrix-vector product on the engine's own threads.
      // OpenBLAS's sgemv would wake its threads next to the engine's (twice the threads of
      // the cores asked for) for every product.
      const float* bi = bias ? bias->data<float>() : nullptr;
      if (!dense::matmul(&ctx.pool(), p.rows, p.N, p.K, A.data<float>(), p.K, B.data<float>(), p.N, false,
                         y->data<float>(), p.N, 1.f, bi))
        return ctx.fail("out of memory for the product");
      bias_act_rows(ctx, act_, y->data<float>(), p.rows, p.N, nullptr);
      return status::ok();
    }
    status st = status::ok();
    bool ok = false;
    auto go = [&](auto tag) {
      using T = decltype(tag);
      ok = true;
      run_plan<T>(ctx, p, A.data<T>(), B.data<T>(), y->data<T>());
      const int64_t total_rows = p.N > 0 ? y->numel() / p.N : 0;
      if constexpr (std::is_same_v<T, float>) {
        bias_act_rows(ctx, act_, y->data<float>(), total_rows, p.N, bias ? bias->data<float>() : nullptr);
      } else if constexpr (std::is_same_v<T, double>) {
        if (bias || !act_.is_none()) {
          double* d = y->data<double>();
          for (int64_t r = 0; r < total_rows; ++r)
            for (int64_t j = 0; j < p.N; ++j)
              d[r * p.N + j] = act_double(act_, d[r * p.N + j] + (bias ? bias->data<double>()[j] : 0.0));
        }
      } else {
        if (!act_.is_none()) st = ctx.fail("fused activation needs float input, got {}", dtype_name(t));
        else if (bias) {
          T* d = y->data<T>();
          const T* bv = bias->data<T>();
          for (int64_t r = 0; r < total_rows; ++r)
            for (int64_t j = 0; j < p.N; ++j) d[r * p.N + j] = static_cast<T>(d[r * p.N + j] + bv[j]);
        }
      }
    };
    switch (t) {
      case dtype::f32: go(float{}); break;
      case dtype::f64: go(double{}); break;
      case dtype::i32: go(int32_t{}); break;
      case dtype::i64: go(int64_t{}); break;
      case dtype::u32: go(uint32_t{}); break;
      case dtype::u64: go(uint64_t{}); break;
      default: break;
    }
    if (!ok) return ctx.fail("unsupported input type {}", dtype_name(t));
    return st;
  }

 private:
  // float16: float accumulation. A 2-D B (the weights) is read as stored, float16, with no
  // float copy of it; batched products of two activations convert both.
  status run_f16(kernel_context& ctx, const tensor& A, const tensor& B, const mm_plan& p, const tensor* bias, tensor* y) {
    if (y->numel() == 0) return status::ok();
    std::vector<float> abuf, bbuf, biasbuf, ybuf(static_cast<size_t>(y->numel()));
    const float* a = dense::as_float(A, &abuf);
    if (p.calls == 1) {
      if (!dense::matmul_f16b(&ctx.pool(), p.rows, p.N, p.K, a, p.K, B.data<half>(), p.N, ybuf.data(), p.N))
        return ctx.fail("out of memory for the product");
    } else {
      run_plan<float>(ctx, p, a, dense::as_float(B, &bbuf), ybuf.data());
    }
    const float* bi = bias ? dense::as_float(*bias, &biasbuf) : nullptr;
    bias_act_rows(ctx, act_, ybuf.data(), y->numel() / p.N, p.N, bi);
    dense::store_float(*y, 0, ybuf.data(), y->numel());
    return status::ok();
  }

  bool fused_;
  activation_spec act_;
  packed_weight weight_;
};

// ---------------------------------------------------------------------------------------
// Gemm / FusedGemm

class gemm_kernel final : public kernel {
 public:
  gemm_kernel(const node& n, activation_spec act)
      : alpha_(n.attr_float("alpha", 1.f)), beta_(n.attr_float("beta", 1.f)),
        ta_(n.attr_int("transA", 0) != 0), tb_(n.attr_int("transB", 0) != 0), act_(act) {}

  status prepare(const std::vector<const tensor*>& constants) override {
    if (constants.size() > 1) weight_.remember(constants[1], tb_);
    return status::ok();
  }

  status run(kernel_context& ctx) override {
    GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 3, 2));
    const tensor& A = *ctx.input(0);
    const tensor& B = *ctx.input(1);
    const tensor* C = nn::optional_input(ctx, 2);
    if (A.type() != B.type() || (C && C->type() != A.type()))
      return ctx.fail("inputs must share one type, got {}, {}{}", dtype_name(A.type()), dtype_name(B.type()),
                      C ? std::string(", ") + std::string(dtype_name(C->type())) : std::string());
    if (A.rank() != 2 || B.rank() != 2)
      return ctx.fail("A and B must be 2-D, got {} and {}", shape_str(A.shape()), shape_str(B.shape()));
    const int64_t M = ta_ ? A.dim(1) : A.dim(0), K = ta_ ? A.dim(0) : A.dim(1);
    const int64_t Kb = tb_ ? B.dim(1) : B.dim(0), N = tb_ ? B.dim(0) : B.dim(1);
    if (K != Kb)
      return ctx.fail("inner dimensions differ: op(A) is [{}, {}] and op(B) is [{}, {}]", M, K, Kb, N);
    // C must broadcast one way to [M, N].
    int64_t cr = 1, cc = 1;  // C's rows/cols after right-alignment
    if (C) {
      if (C->rank() > 2) return ctx.fail("C must have rank <= 2, got {}", shape_str(C->shape()));
      if (C->rank() == 2) { cr = C->dim(0); cc = C->dim(1); }
      if (C->rank() == 1) cc = C->dim(0);
      if ((cr != 1 && cr != M) || (cc != 1 && cc != N))
        return ctx.fail("C of shape {} does not broadcast to [{}, {}]", shape_str(C->shape()), M, N);
    }
    const dtype t = A.type();
    GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, t, {M, N}));
    if (M == 0 || N == 0) return status::ok();
    bool ok = false;
    status st = status::ok();
    auto go = [&](auto tag) {
      using T = decltype(tag);
      ok = true;
      T* Y = y->data<T>();
      const T* a = A.data<T>();
      const T* b = B.data<T>();
      const int64_t lda = A.dim(1), ldb = B.dim(1);
      const bool use_c = C && beta_ != 0.f;
      const T beta = static_cast<T>(beta_);
      if constexpr (std::is_same_v<T, float>) {
        // A row-vector C (or scalar) becomes the per-column bias of the epilogue pass.
        if (use_c && cr == 1) {
          float* bias = nn::scratch<float>(1, static_cast<size_t>(N));
          if (!bias) { st = ctx.fail("out of memory"); return; }
          const float* c = C->data<float>();
          for (int64_t j = 0; j < N; ++j) bias[j] = beta_ * c[cc == 1 ? 0 : j];
          if (M > 1 && sgemm::available()) {
            if (!product(ctx, M, N, K, a, lda, b, ldb, Y, bias)) st = ctx.fail("out of memory for the packed blocks");
            return;
          }
          if (M == 1) {
            // One row (a classifier at batch 1): a matrix-vector product on the engine's threads
            // (OpenBLAS's sgemv would wake its own threads, which then spin against ours).
            (void)dense::matmul(&ctx.pool(), 1, N, K, a, 1, b, ldb, tb_, Y, N, alpha_, bias);
            bias_act_rows(ctx, act_, Y, M, N, nullptr);
            return;
          }
          gemm<float>(ta_, tb_, M, N, K, alpha_, a, lda, b, ldb, 0.f, Y, N);
          bias_act_rows(ctx, act_, Y, M, N, bias);
          return;
        }
      }
      if constexpr (std::is_same_v<T, float>) {
        if (!use_c && M > 1 && sgemm::available()) {
          if (!product(ctx, M, N, K, a, lda, b, ldb, Y, nullptr)) st = ctx.fail("out of memory for the packed blocks");
          return;
        }
        if (!use_c && M == 1) {
          (void)dense::matmul(&ctx.pool(), 1, N, K, a, 1, b, ldb, tb_, Y, N, alpha_, nullptr);
          bias_act_rows(ctx, act_, Y, M, N, nullptr);
          return;
        }
      }
      if (use_c) {
        const T* c = C->data<T>();
        for (int64_t i = 0; i < M; ++i) {
          const T* crow = c + (cr == 1 ? 0 : i * cc);
          T* yrow = Y + i * N;
          if (cc == 1) std::fill(yrow, yrow + N, static_cast<T>(beta * crow[0]));
          else for (int64_t j = 0; j < N; ++j) yrow[j] = static_cast<T>(beta * crow[j]);
        }
      }
      gemm<T>(ta_, tb_, M, N, K, static_cast<T>(alpha_), a, lda, b, ldb, use_c ? T(1) : T(0), Y, N);
      if constexpr (std::is_same_v<T, float>) {
        bias_act_rows(ctx, act_, Y, M, N, nullptr);
      } else if constexpr (std::is_same_v<T, double>) {
        if (!act_.is_none())
          for (int64_t i = 0; i < M * N; ++i) Y[i] = act_double(act_, Y[i]);
      } else {
        if (!act_.is_none()) st = ctx.fail("fused activation needs float input, got {}", dtype_name(t));
      }
    };
    switch (t) {
      case dtype::f32: go(float{}); break;
      case dtype::f64: go(double{}); break;
      case dtype::i32: go(int32_t{}); break;
      case dtype::i64: go(int64_t{}); break;
      case dtype::u32: go(uint32_t{}); break;
      case dtype::u64: go(uint64_t{}); break;
      default: break;
    }
    if (!ok) return ctx.fail("unsupported input type {}", dtype_name(t));
    return st;
  }

 private:
  // Y = act(alpha * op(A) op(B) + bias) through sgemm.
  bool product(kernel_context& ctx, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* Y, const float* bias) {
    sgemm::problem q;
    q.m = M;
    q.n = N;
    q.k = K;
    q.a.v = ta_ ? sgemm::view{a, 1, lda} : sgemm::view{a, lda, 1};
    q.b.v = tb_ ? sgemm::view{b, 1, ldb} : sgemm::view{b, ldb, 1};
    q.b.pk = weight_.get(b);
    q.c = Y;
    q.ldc = N;
    q.ep.alpha = alpha_;
    q.ep.bias = bias;
    q.ep.act = act_;
    return sgemm::run(&ctx.pool(), q);
  }

  float alpha_, beta_;
  bool ta_, tb_;
  activation_spec act_;
  packed_weight weight_;
};

// ---------------------------------------------------------------------------------------
// MatMulInteger: (A - a_zero_point) x (B - b_zero_point) in int32 (wrapping like int32 math).
// QLinearMatMul: the same product requantized: round(acc * a_scale * b_scale / y_scale) + y_zp.
// a's parameters are per tensor or per row (M values), b's per tensor or per column (N).

status int_matmul(kernel_context& ctx, bool qlinear) {
  GG_RETURN_IF_ERROR(qlinear ? check_inputs(ctx, 8, 8, 8) : check_inputs(ctx, 2, 4, 2));
  const tensor& A = *ctx.input(0);
  const tensor& B = *ctx.input(qlinear ? 3 : 1);
  if (!nn::is_q8(A.type()) || !nn::is_q8(B.type()))
    return ctx.fail("A and B must be int8 or uint8, got {} and {}", dtype_name(A.type()), dtype_name(B.type()));
  const tensor* az = nn::optional_input(ctx, 2);
  const tensor* bz = nn::optional_input(ctx, qlinear ? 5 : 3);
  mm_plan p;
  GG_RETURN_IF_ERROR(plan_matmul(ctx, A.shape(), B.shape(), &p));
  GG_RETURN_IF_ERROR(nn::check_qparam(ctx, az, "a_zero_point", p.M, false, A.type()));
  GG_RETURN_IF_ERROR(nn::check_qparam(ctx, bz, "b_zero_point", p.N, false, B.type()));
  const tensor *as = nullptr, *bs = nullptr, *ys = nullptr, *yz = nullptr;
  if (qlinear) {
    as = ctx.input(1);
    bs = ctx.input(4);
    ys = ctx.input(6);
    yz = ctx.input(7);
    GG_RETURN_IF_ERROR(nn::check_qparam(ctx, as, "a_scale", p.M, true, A.type()));
    GG_RETURN_IF_ERROR(nn::check_qparam(ctx, bs, "b_scale", p.N, true, B.type()));
    GG_RETURN_IF_ERROR(nn::check_qparam(ctx, ys, "y_scale", 1, true, A.type()));
    if (!nn::is_q8(yz->type()) || yz->numel() != 1) return ctx.fail("y_zero_point must be one int8 or uint8 value");
  }
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, qlinear ? yz->type() : dtype::i32, p.out));
  const int64_t M = p.M, N = p.N, K = p.K;
  std::vector<int32_t> bq(static_cast<size_t>(K * N));
  std::vector<int32_t> acc(static_cast<size_t>(N));
  for (int64_t call = 0; call < p.calls; ++call) {
    int64_t aoff, boff;
    p.offsets(call, &aoff, &boff);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) bq[k * N + j] = nn::q8(B, boff + k * N + j) - nn::qzero(bz, j);
    for (int64_t r = 0; r < p.rows; ++r) {
      const int32_t za = nn::qzero(az, r % M);
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t k = 0; k < K; ++k) {
        const int32_t av = nn::q8(A, aoff + r * K + k) - za;
        if (av == 0) continue;
        const int32_t* brow = bq.data() + k * N;
        for (int64_t j = 0; j < N; ++j)
          acc[j] = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) + static_cast<uint32_t>(av * brow[j]));
      }
      const int64_t ybase = (call * p.rows + r) * N;
      if (!qlinear) {
        std::copy(acc.begin(), acc.end(), y->data<int32_t>() + ybase);
      } else {
        const double sa = nn::qscale(*as, r % M), sy = nn::qscale(*ys, 0);
        const int32_t zy = nn::q8(*yz, 0);
        for (int64_t j = 0; j < N; ++j) nn::store_q8(*y, ybase + j, acc[j] * (sa * nn::qscale(*bs, j) / sy), zy);
      }
    }
  }
  return status::ok();
}

// OpenBLAS built with DYNAMIC_ARCH picks its kernels by CPU model at load time and falls back
// to the SSE3 'Prescott' kernels on CPUs it does not know (common under hypervisors that
// report a generic "Intel Xeon Processor"): sgemm then runs 4-6x slower than it could. When
// that happened and the user did not choose a core (OPENBLAS_CORETYPE), pick the kernels the
// CPU's features allow and re-run OpenBLAS's selection. Weak symbols: a build against an
// OpenBLAS without DYNAMIC_ARCH simply skips this.
extern "C" {
char* openblas_get_corename(void) __attribute__((weak));
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

// OpenBLAS starts its worker threads as the library loads, and each spins for about 100 ms
// (and again after every product it serves) before it sleeps, on the cores the engine's own
// threads want: a command's first tenth of a second ran at one core's speed. Where the
// engine's own products run (AVX2 + FMA) and the user chose no count, those threads are
// stopped here and OpenBLAS keeps one (set_blas_threads then gives it no more; on a CPU
// without AVX2 OpenBLAS does the engine's products and gets the engine's thread count).
extern "C" int blas_thread_shutdown_(void) __attribute__((weak));

void quiet_openblas_threads() {
  if (!sgemm::available()) return;
  if (std::getenv("OPENBLAS_NUM_THREADS") || std::getenv("GOTO_NUM_THREADS") || std::getenv("OMP_NUM_THREADS")) return;
  limit_blas_threads(1);
  if (blas_thread_shutdown_) blas_thread_shutdown_();
}

void fix_openblas_core() {
  if (!openblas_get_corename || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("GPUGRID_KEEP_BLAS_CORE")) return;
  const char* name = openblas_get_corename();
  if (!name) return;
  const bool generic = std::strcmp(name, "Prescott") == 0 || std::strcmp(name, "Core2") == 0 ||
                       std::strcmp(name, "Nehalem") == 0 || std::strcmp(name, "Sandybridge") == 0 ||
                       std::strcmp(name, "Barcelona") == 0 || std::strcmp(name, "Unknown") == 0;
  if (!generic) return;
  __builtin_cpu_init();
  // Haswell (AVX2/FMA) kernels only: OpenBLAS 0.3.21's AVX-512 paths are known to misbehave
  // on some newer CPUs it does not recognise, and the AVX2 kernels already give most of the gain.
  const char* want = nullptr;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) want = "Haswell";
  if (!want) return;
  setenv("OPENBLAS_CORETYPE", want, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
}

}  // namespace

void register_gemm_ops(op_registry& r) {
  // The registry is built once, before any kernel runs: the one safe moment to switch.
  fix_openblas_core();
  quiet_openblas_threads();
  r.add("MatMul", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<matmul_kernel>(false, activation_spec{}));
  });
  r.add("FusedMatMul", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(activation_spec act, parse_activation(n));
    return std::unique_ptr<kernel>(std::make_unique<matmul_kernel>(true, act));
  }, "com.gpugrid");
  r.add("Gemm", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<gemm_kernel>(n, activation_spec{}));
  });
  r.add("FusedGemm", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(activation_spec act, parse_activation(n));
    return std::unique_ptr<kernel>(std::make_unique<gemm_kernel>(n, act));
  }, "com.gpugrid");
  r.add("MatMulInteger", simple_kernel([](kernel_context& ctx) { return int_matmul(ctx, false); }));
  r.add("QLinearMatMul", simple_kernel([](kernel_context& ctx) { return int_matmul(ctx, true); }));
}

}  // namespace gpugrid::cpu
