// The node-suite op families added beside the losses (loss.cc, nms.cc, shrink_det.cc,
// signal.cc, optional.cc): hand-checked values and the bad-input errors.
#include "engine/tensor_compare.h"
#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

tensor logp() { return tensor::from_vector<float>({2, 3}, {-1, -2, -3, -4, -5, -6}); }
tensor targets(std::vector<int64_t> t) { return tensor::from_vector<int64_t>({static_cast<int64_t>(t.size())}, t); }

node nll(const std::string& reduction) {
  node n = op("NegativeLogLikelihoodLoss", 1, 13);
  n.attrs["reduction"] = as(reduction);
  return n;
}

}  // namespace

TEST_CASE("NegativeLogLikelihoodLoss: reductions, weights and ignore_index", "[loss]") {
  auto none = run(nll("none"), {logp(), targets({2, 0})});
  REQUIRE(none);
  check_close((*none)[0], {3, 4});
  auto sum = run(nll("sum"), {logp(), targets({2, 0})});
  REQUIRE(sum);
  check_close((*sum)[0], {7});
  // Weighted mean: (0.5 * 3 + 1 * 4) / (0.5 + 1).
  auto weighted = run(nll("mean"), {logp(), targets({2, 0}), tensor::from_vector<float>({3}, {1, 2, 0.5f})});
  REQUIRE(weighted);
  check_close((*weighted)[0], {5.5f / 1.5f});
  node ii = nll("mean");
  ii.attrs["ignore_index"] = ai(0);
  auto ignored = run(ii, {logp(), targets({2, 0})});
  REQUIRE(ignored);
  check_close((*ignored)[0], {3});
}

TEST_CASE("NegativeLogLikelihoodLoss refuses targets outside 0..C-1 and bad shapes", "[loss]") {
  auto r = run(nll("mean"), {logp(), targets({3, 0})});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message(), Catch::Contains("outside [0, 3)"));
  auto shape = run(nll("mean"), {logp(), targets({0, 0, 0})});
  REQUIRE_FALSE(shape);
  CHECK_THAT(shape.error().message(), Catch::Contains("target has shape [3], expected [2]"));
}

TEST_CASE("SoftmaxCrossEntropyLoss of equal scores is ln 2, with log_prob", "[loss]") {
  node n = op("SoftmaxCrossEntropyLoss", 2, 13);
  auto r = run(n, {tensor::zeros(dtype::f32, {1, 2}), targets({1})});
  REQUIRE(r);
  check_close((*r)[0], {0.6931472f});
  check_close((*r)[1], {-0.6931472f, -0.6931472f});
}

TEST_CASE("NonMaxSuppression drops the overlapping box", "[nms]") {
  tensor boxes = tensor::from_vector<float>({1, 3, 4}, {0, 0, 1, 1, 0, 0.1f, 1, 1.1f, 0, 2, 1, 3});
  tensor scores = tensor::from_vector<float>({1, 1, 3}, {0.9f, 0.8f, 0.7f});
  auto r = run(op("NonMaxSuppression", 1, 11), {boxes, scores, tensor::from_vector<int64_t>({1}, {3}),
                                                tensor::from_vector<float>({1}, {0.5f})});
  REQUIRE(r);
  REQUIRE((*r)[0].shape() == shape_t{2, 3});
  const int64_t* p = (*r)[0].data<int64_t>();
  CHECK(std::vector<int64_t>(p, p + 6) == std::vector<int64_t>{0, 0, 0, 0, 0, 2});
}

TEST_CASE("Det and Shrink", "[det]") {
  auto d = run(op("Det", 1, 11), {tensor::from_vector<float>({2, 2, 2}, {1, 2, 3, 4, 2, 0, 0, 3})});
  REQUIRE(d);
  check_close((*d)[0], {-2, 6});
  node s = op("Shrink", 1, 9);
  s.attrs["lambd"] = af(1.f);
  s.attrs["bias"] = af(0.5f);
  auto y = run(s, {tensor::from_vector<float>({4}, {-2, -0.5f, 0.5f, 3})});
  REQUIRE(y);
  check_close((*y)[0], {-1.5f, 0, 0, 2.5f});
}

TEST_CASE("HannWindow and a DFT of a constant", "[signal]") {
  auto w = run(op("HannWindow", 1, 17), {tensor::scalar<int64_t>(4)});
  REQUIRE(w);
  check_close((*w)[0], {0, 0.5f, 1, 0.5f});
  auto f = run(op("DFT", 1, 17), {tensor::from_vector<float>({1, 4, 1}, {1, 1, 1, 1})});
  REQUIRE(f);
  check_close((*f)[0], {4, 0, 0, 0, 0, 0, 0, 0}, 1e-5f);
}

TEST_CASE("Optional ops: an empty optional has no element", "[optional]") {
  auto empty = run(op("Optional", 1, 15), {});
  REQUIRE(empty);
  CHECK((*empty)[0].is_none());
  auto has = run(op("OptionalHasElement", 1, 15), {(*empty)[0]});
  REQUIRE(has);
  CHECK_FALSE((*has)[0].data<bool>()[0]);
  auto get = run(op("OptionalGetElement", 1, 15), {(*empty)[0]});
  REQUIRE_FALSE(get);
  CHECK_THAT(get.error().message(), Catch::Contains("empty"));
}

TEST_CASE("tensors_close compares sequences item by item and empty optionals", "[optional]") {
  tensor a = tensor::sequence(dtype::f32, {tensor::from_vector<float>({2}, {1, 2})});
  tensor b = tensor::sequence(dtype::f32, {tensor::from_vector<float>({2}, {1, 3})});
  std::string why;
  CHECK(tensors_close(a, a, tolerance{}, &why));
  CHECK_FALSE(tensors_close(a, b, tolerance{}, &why));
  CHECK_THAT(why, Catch::Contains("sequence item 0"));
  CHECK(tensors_close(tensor::none(), tensor::none(), tolerance{}, &why));
  CHECK_FALSE(tensors_close(tensor::none(), a, tolerance{}, &why));
}
