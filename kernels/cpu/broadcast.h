// NumPy-style broadcasting helpers shared by the CPU kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace gpugrid::cpu {

// The broadcast of shapes a and b; false when some pair of dims is neither equal nor 1.
bool broadcast_shapes(const shape_t& a, const shape_t& b, shape_t* out);

// Element strides of `in` when read as if it had shape `out` (0 along broadcast dims).
// `in` is right-aligned against `out`; requires in.size() <= out.size().
std::vector<int64_t> broadcast_strides(const shape_t& in, const shape_t& out);

// Walks the output index space of `out` and yields, for each output element in order, the
// offset into each input (given their broadcast strides). Callers use it for the general case;
// fast paths (same shape, scalar operand) should be taken before reaching for this.
class broadcast_walker {
 public:
  broadcast_walker(const shape_t& out, std::vector<std::vector<int64_t>> strides);
  // Calls f(out_index, offsets) for out indices in [begin, end). offsets has one entry per input.
  template <typename F>
  void for_range(int64_t begin, int64_t end, F&& f) const {
    const size_t rank = out_.size();
    const size_t n_in = strides_.size();
    std::vector<int64_t> idx(rank, 0);
    std::vector<int64_t> off(n_in, 0);
    int64_t rem = begin;
    for (size_t d = rank; d-- > 0;) {
      int64_t dim = out_[d] == 0 ? 1 : out_[d];
      idx[d] = rem % dim;
      rem /= dim;
    }
    for (size_t k = 0; k < n_in; ++k)
      for (size_t d = 0; d < rank; ++d) off[k] += idx[d] * strides_[k][d];
    for (int64_t i = begin; i < end; ++i) {
      f(i, off.data());
      for (size_t d = rank; d-- > 0;) {
        ++idx[d];
        for (size_t k = 0; k < n_in; ++k) off[k] += strides_[k][d];
        if (idx[d] < out_[d]) break;
        for (size_t k = 0; k < n_in; ++k) off[k] -= strides_[k][d] * idx[d];
        idx[d] = 0;
      }
    }
  }

 private:
  shape_t out_;
  std::vector<std::vector<int64_t>> strides_;
};

}  // namespace gpugrid::cpu
