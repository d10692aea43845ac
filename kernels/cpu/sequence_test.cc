#include <catch2/catch.hpp>

#include "engine/op_runner.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;

namespace {

tensor run1(node n, const std::vector<tensor>& ins) {
  auto r = run_single_op(cpu::registry(), std::move(n), ins);
  INFO((r ? std::string() : r.error().message()));
  REQUIRE(r);
  return (*r)[0];
}

std::string error_of(node n, const std::vector<tensor>& ins) {
  auto r = run_single_op(cpu::registry(), std::move(n), ins);
  return r ? std::string() : r.error().message();
}

}  // namespace

TEST_CASE("sequence ops: split, insert, erase, at, length, concat", "[sequence]") {
  tensor x = tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  node split = make_node("SplitToSequence");
  split.attrs["axis"].i = 1;
  split.attrs["keepdims"].i = 0;
  tensor parts = run1(split, {x});
  REQUIRE(parts.is_sequence());
  REQUIRE(parts.items().size() == 3);
  CHECK(parts.items()[1].shape() == shape_t{2});
  CHECK(parts.items()[1].data<float>()[1] == 4);

  tensor extra = tensor::from_vector<float>({2}, {9, 8});
  tensor front = run1(make_node("SequenceInsert"), {parts, extra, tensor::scalar<int64_t>(0)});
  REQUIRE(front.items().size() == 4);
  CHECK(front.items()[0].data<float>()[0] == 9);
  tensor erased = run1(make_node("SequenceErase"), {front, tensor::scalar<int64_t>(-1)});
  REQUIRE(erased.items().size() == 3);
  tensor last = run1(make_node("SequenceAt"), {erased, tensor::scalar<int64_t>(-1)});
  CHECK(last.data<float>()[0] == 1);
  CHECK(run1(make_node("SequenceLength"), {erased}).data<int64_t>()[0] == 3);

  node stack = make_node("ConcatFromSequence");
  stack.attrs["axis"].i = 1;
  stack.attrs["new_axis"].i = 1;
  tensor s = run1(stack, {erased});
  REQUIRE(s.shape() == shape_t{2, 3});
  CHECK(s.data<float>()[0] == 9);  // [9, 0, 1; 8, 3, 4]
  CHECK(s.data<float>()[1] == 0);
  CHECK(s.data<float>()[5] == 4);
  node cat = make_node("ConcatFromSequence");
  cat.attrs["axis"].i = 0;
  tensor c = run1(cat, {erased});
  REQUIRE(c.shape() == shape_t{6});
  CHECK(c.data<float>()[2] == 0);

  // Bad positions and element types are one-line errors, not crashes.
  CHECK_THAT(error_of(make_node("SequenceAt"), {erased, tensor::scalar<int64_t>(3)}), Catch::Contains("out of range"));
  CHECK_THAT(error_of(make_node("SequenceInsert"), {parts, tensor::scalar<int64_t>(1)}), Catch::Contains("int64"));
  CHECK_THAT(error_of(make_node("SequenceErase"), {run1(make_node("SequenceEmpty"), {})}), Catch::Contains("empty"));
}
