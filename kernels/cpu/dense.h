// Dense float helpers shared by the recurrent (rnn.cc) and com.microsoft (contrib_*.cc)
// kernels: a row-major product that picks the engine's sgemm, a matrix-vector product or
// OpenBLAS by shape, and reading float-like inputs (f32, f16, bf16) as float.
//
// Thread safety: the functions are reentrant; `pool` may be null (runs on the caller).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/tensor.h"
#include "kernels/cpu/sgemm.h"

namespace gpugrid::cpu::dense {

// C[m, n] = alpha * A[m, k] * op(B) (+ bias[n] per column when bias is not null), C written,
// never read. op(B) is B[k, n] (row stride ldb) or, when b_trans, the transpose of B[n, k].
// Returns false when scratch memory could not be allocated.
bool matmul(thread_pool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, bool b_trans, float* c, int64_t ldc, float alpha = 1.f, const float* bias = nullptr);

// A right operand used for many products (a recurrent weight, one product per time step):
// packed once for sgemm when that can run, else read in place.
struct right_matrix {
  const float* b = nullptr;
  int64_t ldb = 0;
  bool trans = false;  // op(B) is the transpose of B[n, k]
  int64_t k = 0, n = 0;
  std::shared_ptr<const sgemm::packed> pk;
  right_matrix(const float* b_, int64_t ldb_, bool trans_, int64_t k_, int64_t n_, bool pack);
};
// C[m, n] = A[m, k] * op(B) (+ bias), as matmul().
bool matmul(thread_pool* pool, int64_t m, const float* a, int64_t lda, const right_matrix& b, float* c,
            int64_t ldc, const float* bias = nullptr);

// C[m, n] = A[m, k] * B[k, n] with B float16 (row stride ldb), float accumulation: a float16
// weight matrix used as it is stored, without a float copy of it. Few rows read B once per row,
// converting 8 values at a time; more rows convert strips of 128 columns and run them through
// sgemm (A packed once). Returns false when scratch memory could not be allocated.
bool matmul_f16b(thread_pool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const half* b,
                 int64_t ldb, float* c, int64_t ldc);

// n halves to floats and back (F16C where the CPU has it).
void f16_to_f32(const half* s, float* d, int64_t n);
void f32_to_f16(const float* s, half* d, int64_t n);

// True for the float types these kernels accept (f32, f16, bf16).
bool is_float_like(dtype t);

// The elements of t as float (a copy for f16/bf16, a pointer into t for f32). `buf` holds the
// copy; the pointer is valid while t and buf live.
const float* as_float(const tensor& t, std::vector<float>* buf);

// Writes n floats into t (f32, f16 or bf16) starting at element offset.
void store_float(tensor& t, int64_t offset, const float* src, int64_t n);
// Reads n elements of t (f32, f16 or bf16) from element offset as floats into dst.
void load_float(const tensor& t, int64_t offset, float* dst, int64_t n);

}  // namespace gpugrid::cpu::dense
