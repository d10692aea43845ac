#include "kernels/cpu/broadcast.h"

#include <algorithm>

namespace gpugrid::cpu {

bool broadcast_shapes(const shape_t& a, const shape_t& b, shape_t* out) {
  size_t rank = std::max(a.size(), b.size());
  shape_t r(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1) r[i] = da;
    else if (da == 1) r[i] = db;
    else return false;
  }
  *out = std::move(r);
  return true;
}

std::vector<int64_t> broadcast_strides(const shape_t& in, const shape_t& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t s = 1;
  size_t lead = out.size() - in.size();
  for (size_t i = in.size(); i-- > 0;) {
    strides[lead + i] = in[i] == 1 ? 0 : s;
    s *= in[i];
  }
  return strides;
}

broadcast_walker::broadcast_walker(const shape_t& out, std::vector<std::vector<int64_t>> strides)
    : out_(out), strides_(std::move(strides)) {}

}  // namespace gpugrid::cpu
