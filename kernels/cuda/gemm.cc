// MatMul, Gemm and their fused forms through cuBLAS (row-major via the transpose identity:
// C = A B  <=>  C^T = B^T A^T in column-major). fp32 by default; TF32 only when the run asks.
#include <fmt/format.h>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/launch.h"

namespace gpugrid::cuda {

namespace {

status set_math(run_state& rs) {
  GG_CUBLAS(cublasSetMathMode(rs.blas, rs.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return status::ok();
}

// Row-major C[m,n] = alpha * op(A) op(B) + beta * C, with lda/ldb the row strides.
status sgemm(run_state& rs, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  GG_CUBLAS(cublasSgemm(rs.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                        static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                        static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
  return status::ok();
}

class matmul_kernel final : public kernel {
 public:
  matmul_kernel(bool fused, act_spec act) : fused_(fused), act_(act) {}

  status run(kernel_context& ctx) override {
    const tensor* a = ctx.input(0);
    const tensor* b = ctx.input(1);
    if (!a || !b) return ctx.fail("needs inputs A and B");
    if (a->type() != dtype::f32 || b->type() != dtype::f32)
      return ctx.unsupported("the CUDA MatMul takes float32 (got {} and {})", dtype_name(a->type()), dtype_name(b->type()));
    if (a->rank() == 0 || b->rank() == 0) return ctx.fail("MatMul inputs must have rank >= 1");
    shape_t as = a->shape(), bs = b->shape();
    bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
    if (a_vec) as.insert(as.begin(), 1);
    if (b_vec) bs.push_back(1);
    int64_t m = as[as.size() - 2], k = as.back(), k2 = bs[bs.size() - 2], n = bs.back();
    if (k != k2) return ctx.fail("inner dimensions differ: A is {}, B is {}", shape_str(a->shape()), shape_str(b->shape()));
    shape_t abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
    size_t rank = std::max(abatch.size(), bbatch.size());
    shape_t batch(rank);
    for (size_t i = 0; i < rank; ++i) {
      int64_t da = i < rank - abatch.size() ? 1 : abatch[i - (rank - abatch.size())];
      int64_t db = i < rank - bbatch.size() ? 1 : bbatch[i - (rank - bbatch.size())];
      if (da != db && da != 1 && db != 1) return ctx.fail("batch dimensions {} and {} do not broadcast", shape_str(abatch), shape_str(bbatch));
      batch[i] = std::max(da, db);
    }
    shape_t out_shape = batch;
    if (!a_vec) out_shape.push_back(m);
    if (!b_vec) out_shape.push_back(n);
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, out_shape));
    if (y->numel() == 0) return status::ok();
    run_state& rs = state(ctx);
    GG_RETURN_IF_ERROR(set_math(rs));
    const float* pa = a->data<float>();
    const float* pb = b->data<float>();
    float* py = y->data<float>();
    int64_t nbatch = num_elements(batch);
    int64_t abatch_n = num_elements(abatch), bbatch_n = num_elements(bbatch);
    if (bbatch_n == 1) {
      // B shared by every batch: one GEMM with all of A's rows.
      // (B has no batch dims here, so the batch is A's and A's rows are contiguous.)
      GG_RETURN_IF_ERROR(sgemm(rs, false, false, nbatch * m, n, k, 1.f, pa, k, pb, n, 0.f, py, n));
    } else if (abatch_n == nbatch && bbatch_n == nbatch) {
      float one = 1, zero = 0;
      GG_CUBLAS(cublasSgemmStridedBatched(rs.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                          static_cast<int>(k), &one, pb, static_cast<int>(n), k * n, pa,
                                          static_cast<int>(k), m * k, &zero, py, static_cast<int>(n), m * n,
                                          static_cast<int>(nbatch)));
    } else {
      // General broadcasting: walk the batch index space.
      std::vector<int64_t> idx(rank, 0);
      auto offset = [&](const shape_t& bd) {
        int64_t off = 0, stride = 1;
        for (size_t i = bd.size(); i-- > 0;) {
          int64_t d = idx[i + (rank - bd.size())];
          off += (bd[i] == 1 ? 0 : d) * stride;
          stride *= bd[i];
        }
        return off;
      };
      for (int64_t bi = 0; bi < nbatch; ++bi) {
        GG_RETURN_IF_ERROR(sgemm(rs, false, false, m, n, k, 1.f, pa + offset(abatch) * m * k, k,
                                 pb + offset(bbatch) * k * n, n, 0.f, py + bi * m * n, n));
        for (size_t i = rank; i-- > 0;) { if (++idx[i] < batch[i]) break; idx[i] = 0; }
      }
    }
    if (fused_) {
      const tensor* bias = ctx.input(2);
      if (bias && (bias->type() != dtype::f32 || bias->numel() != n))
        return ctx.fail("bias must be float32 of length {}", n);
      GG_RETURN_IF_ERROR(launch_bias_act(py, bias ? bias->data<float>() : nullptr, y->numel() / n, n, act_, rs.stream));
    }
    return status::ok();
  }

 private:
  bool fused_;
  act_spec act_;
};

class gemm_kernel final : public kernel {
 public:
  gemm_kernel(const node& n, act_spec act)
      : alpha_(n.attr_float("alpha", 1.f)), beta_(n.attr_float("beta", 1.f)),
        ta_(n.attr_int("transA", 0) != 0), tb_(n.attr_int("transB", 0) != 0), act_(act) {}

  status run(kernel_context& ctx) override {
    const tensor* a = ctx.input(0);
    const tensor* b = ctx.input(1);
    const tensor* c = ctx.input(2);
    if (!a || !b) return ctx.fail("needs inputs A and B");
    if (a->type() != dtype::f32 || b->type() != dtype::f32 || (c && c->type() != dtype::f32))
      return ctx.unsupported("the CUDA Gemm takes float32");
    if (a->rank() != 2 || b->rank() != 2) return ctx.fail("A and B must be 2-D");
    int64_t m = ta_ ? a->dim(1) : a->dim(0), k = ta_ ? a->dim(0) : a->dim(1);
    int64_t k2 = tb_ ? b->dim(1) : b->dim(0), n = tb_ ? b->dim(0) : b->dim(1);
    if (k != k2) return ctx.fail("inner dimensions differ ({} vs {})", k, k2);
    GG_ASSIGN_OR_RETURN(tensor* y, ctx.output(0, dtype::f32, {m, n}));
    if (y->numel() == 0) return status::ok();
    run_state& rs = state(ctx);
    GG_RETURN_IF_ERROR(set_math(rs));
    float beta = 0;
    if (c && c->numel() > 0 && beta_ != 0) {
      int64_t cr = 1, cc = 1;
      if (c->rank() == 2) { cr = c->dim(0); cc = c->dim(1); }
      else if (c->rank() == 1) { cc = c->dim(0); }
      else if (c->rank() > 2) return ctx.fail("C must have rank <= 2");
      if ((cr != 1 && cr != m) || (cc != 1 && cc != n)) return ctx.fail("C of shape {} does not broadcast to [{}, {}]", shape_str(c->shape()), m, n);
      GG_RETURN_IF_ERROR(launch_broadcast_scaled(y->data<float>(), c->data<float>(), m, n, cr, cc, beta_, rs.stream));
      beta = 1;
    }
    GG_RETURN_IF_ERROR(sgemm(rs, ta_, tb_, m, n, k, alpha_, a->data<float>(), a->dim(1), b->data<float>(), b->dim(1), beta,
                             y->data<float>(), n));
    if (act_.kind != act_kind::none)
      GG_RETURN_IF_ERROR(launch_bias_act(y->data<float>(), nullptr, m, n, act_, rs.stream));
    return status::ok();
  }

 private:
  float alpha_, beta_;
  bool ta_, tb_;
  act_spec act_;
};

}  // namespace

expected<act_spec> parse_act(const node& n) {
  act_spec a;
  std::string kind = n.attr_string("activation", "");
  a.alpha = n.attr_float("activation_alpha", 0.f);
  a.beta = n.attr_float("activation_beta", 0.f);
  if (kind.empty()) a.kind = act_kind::none;
  else if (kind == "Relu") a.kind = act_kind::relu;
  else if (kind == "LeakyRelu") { a.kind = act_kind::leaky_relu; if (!n.has_attr("activation_alpha")) a.alpha = 0.01f; }
  else if (kind == "Sigmoid") a.kind = act_kind::sigmoid;
  else if (kind == "Tanh") a.kind = act_kind::tanh;
  else if (kind == "Clip") a.kind = act_kind::clip;
  else if (kind == "HardSigmoid") { a.kind = act_kind::hard_sigmoid; if (!n.has_attr("activation_alpha")) a.alpha = 0.2f; if (!n.has_attr("activation_beta")) a.beta = 0.5f; }
  else if (kind == "HardSwish") a.kind = act_kind::hard_swish;
  else if (kind == "Silu") a.kind = act_kind::silu;
  else if (kind == "Gelu") a.kind = act_kind::gelu;
  else return invalid_input("{}: unknown fused activation '{}'", n.describe(), kind);
  return a;
}

void register_gemm_ops(op_registry& r) {
  r.add("MatMul", [](const node&) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<matmul_kernel>(false, act_spec{}));
  });
  r.add("FusedMatMul", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(act_spec act, parse_act(n));
    return std::unique_ptr<kernel>(std::make_unique<matmul_kernel>(true, act));
  }, "com.gpugrid");
  r.add("Gemm", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    return std::unique_ptr<kernel>(std::make_unique<gemm_kernel>(n, act_spec{}));
  });
  r.add("FusedGemm", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    GG_ASSIGN_OR_RETURN(act_spec act, parse_act(n));
    return std::unique_ptr<kernel>(std::make_unique<gemm_kernel>(n, act));
  }, "com.gpugrid");
}

}  // namespace gpugrid::cuda
