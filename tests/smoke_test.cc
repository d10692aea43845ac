#include <catch2/catch.hpp>

#include "engine/op_runner.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;

TEST_CASE("tensor basics", "[tensor]") {
  tensor t = tensor::from_vector<float>({2, 2}, {1, 2, 3, 4});
  CHECK(t.numel() == 4);
  CHECK(t.bytes() == 16);
  CHECK(t.as_double(3) == 4.0);
  CHECK(shape_str(t.shape()) == "[2, 2]");
  half h(1.5f);
  CHECK(static_cast<float>(h) == 1.5f);
}

#include "kernels/cpu/broadcast.h"

TEST_CASE("broadcast walker visits numpy offsets", "[broadcast]") {
  shape_t out;
  REQUIRE(cpu::broadcast_shapes({2, 1, 3}, {4, 1}, &out));
  CHECK(out == shape_t{2, 4, 3});
  auto sa = cpu::broadcast_strides({2, 1, 3}, out);
  auto sb = cpu::broadcast_strides({4, 1}, out);
  cpu::broadcast_walker w(out, {sa, sb});
  std::vector<int64_t> oa, ob;
  w.for_range(5, 24, [&](int64_t, const int64_t* off) { oa.push_back(off[0]); ob.push_back(off[1]); });
  // index 5 = (0,1,2): a offset 2, b offset 1
  CHECK(oa[0] == 2);
  CHECK(ob[0] == 1);
  // index 12 = (1,0,0): a offset 3, b offset 0
  CHECK(oa[7] == 3);
  CHECK(ob[7] == 0);
  shape_t bad;
  CHECK_FALSE(cpu::broadcast_shapes({2, 3}, {4, 3}, &bad));
}
