// The engine's own single-precision GEMM: C = act(alpha * op(A) op(B) + bias).
//
// Operands are packed per cache block into the layout the micro-kernel reads (GotoBLAS/BLIS
// style: a KC-deep slice of B in NR-wide panels, an MC x KC block of A in MR-high panels), or
// packed once ahead of time when they are constant weights (`packed`), so a model's weights are
// not repacked on every run. The work is split into tiles of C over the engine's own thread
// pool (no second pool of BLAS threads competing for the same cores), and the bias and
// activation are applied to each block of C while it is still in cache.
//
// Two micro-kernels: 8 x 32 floats with AVX-512F, 6 x 16 with AVX2 and FMA, chosen once per
// process from what the CPU has; available() says whether either can run. Callers fall back to
// BLAS where neither can.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/cpu/activation.h"

namespace gpugrid {
class thread_pool;
}

namespace gpugrid::cpu::sgemm {

// True when this CPU can run a micro-kernel (AVX2 and FMA at least), and GPUGRID_SGEMM is not
// "blas". GPUGRID_SGEMM=avx2 keeps to the AVX2 kernel on an AVX-512 CPU.
bool available();
// "avx512 8x32", "avx2 6x16" or "blas".
const char* kernel_name();
// True when the AVX-512 kernel is the one chosen (other kernels use 16-float vectors then too).
bool avx512();

// A matrix in memory: element (i, j) at p[i * rs + j * cs].
struct view {
  const float* p = nullptr;
  int64_t rs = 0, cs = 1;
};

// A constant operand packed once: the left one (M x K, in MR-row panels) or the right one
// (K x N, in NR-column panels), zero-padded to whole panels.
class packed {
 public:
  static std::shared_ptr<const packed> left(view a, int64_t m, int64_t k);
  static std::shared_ptr<const packed> right(view b, int64_t k, int64_t n);

  // The packed panels of kc-block starting at k0 (all blocks before it are KC deep), starting
  // at panel `panel` (MR rows of a left operand, NR columns of a right one).
  const float* block(int64_t k0, int64_t kc, int64_t panel) const;

 private:
  packed() = default;
  static std::shared_ptr<const packed> make(view v, int64_t outer, int64_t k, bool left);
  int64_t padded_ = 0;  // M (left) or N (right) rounded up to whole panels
  int64_t panel_ = 0;   // the micro-kernel's MR (left) or NR (right)
  std::unique_ptr<float[], void (*)(float*)> data_{nullptr, nullptr};
};

// Packs rows [k0, k0 + kc) x columns [j0, j1) of a right operand that is not in memory as a
// matrix (a convolution's implicit im2col) into panels of `nr` columns: column j0 + q * nr + t
// of row k0 + r goes to dst[q * kc * nr + r * nr + t], with zeros past j1 in the last panel.
using pack_fn = std::function<void(int64_t k0, int64_t kc, int64_t j0, int64_t j1, int64_t nr, float* dst)>;

// One operand: a view, a packed constant (then the view is ignored) or, for the right
// operand only, a packing function.
struct operand {
  view v;
  const packed* pk = nullptr;
  pack_fn pack;
};

// C = act(alpha * A B + residual + bias): residual (optional) is laid out as C (row stride
// ldc; for batch > 1 at C's item offsets) and is read as each tile is stored (the residual
// connection of a convolution block, instead of an Add over the output afterwards).
struct epilogue {
  float alpha = 1.f;
  const float* bias = nullptr;  // per column of C, or per row when bias_per_row
  bool bias_per_row = false;
  activation_spec act;
  const float* residual = nullptr;
  bool trivial() const { return alpha == 1.f && !bias && act.is_none() && !residual; }
};

// One or more products of the same shape: C_i[m, n] = epilogue(sum_k A_i[m, k] B_i[k, n]).
// For batch > 1, offsets(i, &a, &b, &c) gives item i's offsets in elements from a.v.p, b.v.p
// and c (a packed operand is shared by every item and its offset is ignored). C is written,
// never read (beta = 0). The pool may be null (runs on the caller).
struct problem {
  int64_t m = 0, n = 0, k = 0;
  operand a, b;
  float* c = nullptr;
  int64_t ldc = 0;
  epilogue ep;
  int64_t batch = 1;
  std::function<void(int64_t, int64_t*, int64_t*, int64_t*)> offsets;
  // Optional: a packed left operand per batch item (a_each[i] for item i), instead of a.
  const packed* const* a_each = nullptr;
};

// False when scratch memory for the packed blocks could not be allocated.
bool run(thread_pool* pool, const problem& p);

}  // namespace gpugrid::cpu::sgemm
