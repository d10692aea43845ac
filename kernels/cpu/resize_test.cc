#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

tensor seq(shape_t s) {
  tensor t = tensor::zeros(dtype::f32, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i + 1);
  return t;
}

tensor fvec(std::vector<float> v) { return tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v); }
tensor ivec(std::vector<int64_t> v) { return tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v); }

node resize(const std::string& mode, const std::string& ctm = "") {
  node n = op("Resize", 1, 19);
  n.attrs["mode"] = as(mode);
  if (!ctm.empty()) n.attrs["coordinate_transformation_mode"] = as(ctm);
  return n;
}

}  // namespace

TEST_CASE("Resize nearest hand-checked ONNX examples", "[nn]") {
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  {
    auto r = run(resize("nearest"), {X, tensor(), fvec({1, 1, 2, 3})});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 1, 4, 6});
    check_close((*r)[0], {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4});
  }
  tensor X8 = tensor::from_vector<float>({1, 1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  {
    auto r = run(resize("nearest"), {X8, tensor(), fvec({1, 1, 0.6f, 0.6f})});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 1, 1, 2});
    check_close((*r)[0], {1, 3});
  }
  {
    auto r = run(resize("nearest"), {X8, tensor(), tensor(), ivec({1, 1, 1, 2})});
    REQUIRE(r);
    check_close((*r)[0], {1, 3});
  }
  {
    // Integer types go through the same gather.
    tensor U = tensor::from_vector<uint8_t>({1, 1, 1, 2}, {7, 9});
    auto r = run(resize("nearest"), {U, tensor(), fvec({1, 1, 1, 2})});
    REQUIRE(r);
    const uint8_t* y = (*r)[0].data<uint8_t>();
    CHECK(y[0] == 7);
    CHECK(y[1] == 7);
    CHECK(y[2] == 9);
    CHECK(y[3] == 9);
  }
  {
    // nearest_mode variants on a 1-D upsample x4 with asymmetric coordinates: x/4.
    tensor V = tensor::from_vector<float>({3}, {10, 20, 30});
    auto run_mode = [&](const char* m) {
      node n = resize("nearest", "asymmetric");
      n.attrs["nearest_mode"] = as(m);
      auto r = run(n, {V, tensor(), fvec({4})});
      REQUIRE(r);
      return values((*r)[0]);
    };
    CHECK(run_mode("floor") == std::vector<float>{10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30});
    CHECK(run_mode("ceil") == std::vector<float>{10, 20, 20, 20, 20, 30, 30, 30, 30, 30, 30, 30});
    CHECK(run_mode("round_prefer_floor") == std::vector<float>{10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30, 30});
    CHECK(run_mode("round_prefer_ceil") == std::vector<float>{10, 10, 20, 20, 20, 20, 30, 30, 30, 30, 30, 30});
  }
}

TEST_CASE("Resize linear and cubic hand-checked ONNX examples", "[nn]") {
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  {
    auto r = run(resize("linear"), {X, tensor(), fvec({1, 1, 2, 2})});
    REQUIRE(r);
    check_close((*r)[0], {1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4});
  }
  {
    auto r = run(resize("linear", "align_corners"), {X, tensor(), fvec({1, 1, 2, 2})});
    REQUIRE(r);
    check_close((*r)[0], {1, 1.333333f, 1.666667f, 2, 1.666667f, 2, 2.333333f, 2.666667f, 2.333333f, 2.666667f, 3,
                          3.333333f, 3, 3.333333f, 3.666667f, 4});
  }
  tensor X8 = tensor::from_vector<float>({1, 1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  {
    auto r = run(resize("linear"), {X8, tensor(), fvec({1, 1, 0.6f, 0.6f})});
    REQUIRE(r);
    check_close((*r)[0], {2.6666665f, 4.3333331f});
  }
  {
    auto r = run(resize("linear", "align_corners"), {X8, tensor(), fvec({1, 1, 0.6f, 0.6f})});
    REQUIRE(r);
    check_close((*r)[0], {1, 3.142857f});
  }
  tensor X16 = seq({1, 1, 4, 4});
  {
    auto r = run(resize("cubic"), {X16, tensor(), fvec({1, 1, 2, 2})});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 1, 8, 8});
    std::vector<float> all = values((*r)[0]);
    std::vector<float> row0(all.begin(), all.begin() + 8);
    tensor t = tensor::from_vector<float>({8}, row0);
    check_close(t, {0.47265625f, 0.76953125f, 1.24609375f, 1.875f, 2.28125f, 2.91015625f, 3.38671875f, 3.68359375f});
  }
  {
    // tf_crop_and_resize with extrapolation outside the roi.
    node n = resize("linear", "tf_crop_and_resize");
    auto r = run(n, {X16, fvec({0, 0, 0.4f, 0.6f, 1, 1, 0.6f, 0.8f}), tensor(), ivec({1, 1, 3, 3})});
    REQUIRE(r);
    check_close((*r)[0], {7.6000004f, 7.9f, 8.2f, 8.8f, 9.1f, 9.400001f, 10, 10.3f, 10.6f});
    n.attrs["extrapolation_value"] = af(10.f);
    auto r2 = run(n, {X16, fvec({0, 0, 0.4f, 0.6f, 1, 1, 1.2f, 1.7f}), tensor(), ivec({1, 1, 3, 3})});
    REQUIRE(r2);
    check_close((*r2)[0], {7.6000004f, 10, 10, 12.400001f, 10, 10, 10, 10, 10});
  }
  {
    // antialias (opset 18): test_resize_downsample_scales_linear_antialias.
    node n = resize("linear");
    n.attrs["antialias"] = ai(1);
    auto r = run(n, {X16, tensor(), fvec({1, 1, 0.6f, 0.6f})});
    REQUIRE(r);
    check_close((*r)[0], {2.875f, 4.5f, 9.375f, 11.0f});
  }
  {
    // Upsampling a linear ramp with align_corners reproduces the ramp exactly.
    tensor R = tensor::from_vector<float>({1, 3}, {0, 1, 2});
    auto r = run(resize("linear", "align_corners"), {R, tensor(), tensor(), ivec({2, 5})});
    REQUIRE(r);
    check_close((*r)[0], {0, 0.5f, 1, 1.5f, 2, 0, 0.5f, 1, 1.5f, 2});
  }
}

TEST_CASE("Resize axes and keep_aspect_ratio_policy", "[nn]") {
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  {
    node n = resize("nearest");
    n.attrs["axes"] = ais({2, 3});
    n.attrs["keep_aspect_ratio_policy"] = as("not_larger");
    auto r = run(n, {X, tensor(), tensor(), ivec({7, 8})});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 1, 7, 7});
    n.attrs["keep_aspect_ratio_policy"] = as("not_smaller");
    auto r2 = run(n, {X, tensor(), tensor(), ivec({7, 8})});
    REQUIRE(r2);
    CHECK((*r2)[0].shape() == shape_t{1, 1, 8, 8});
  }
  {
    node n = resize("linear");
    n.attrs["axes"] = ais({-1});
    auto r = run(n, {X, tensor(), fvec({2})});
    REQUIRE(r);
    check_close((*r)[0], {1, 1.25f, 1.75f, 2, 3, 3.25f, 3.75f, 4});
  }
  {
    // Trilinear on a 3-D volume: a linear function is preserved by align_corners.
    tensor V = tensor::zeros(dtype::f32, {1, 1, 2, 3, 4});
    for (int d = 0; d < 2; ++d)
      for (int h = 0; h < 3; ++h)
        for (int w = 0; w < 4; ++w) V.data<float>()[(d * 3 + h) * 4 + w] = 100.f * d + 10.f * h + w;
    auto r = run(resize("linear", "align_corners"), {V, tensor(), tensor(), ivec({1, 1, 3, 5, 7})});
    REQUIRE(r);
    std::vector<float> want;
    for (int d = 0; d < 3; ++d)
      for (int h = 0; h < 5; ++h)
        for (int w = 0; w < 7; ++w) want.push_back(100.f * d / 2 + 10.f * h / 2 + 3.f * w / 6);
    check_close((*r)[0], want, 1e-4f);
  }
}

TEST_CASE("Resize rejects bad inputs cleanly", "[nn]") {
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  CHECK_FALSE(run(resize("nearest"), {X}));
  CHECK_FALSE(run(resize("nearest"), {X, tensor(), fvec({1, 1, 2})}));
  CHECK_FALSE(run(resize("nearest"), {X, tensor(), fvec({1, 1, -2, 2})}));
  CHECK_FALSE(run(resize("nearest"), {X, tensor(), fvec({1, 1, 2, 2}), ivec({1, 1, 4, 4})}));
  CHECK_FALSE(run(resize("nearest"), {X, tensor(), tensor(), ivec({1, 1, -4, 4})}));
  CHECK_FALSE(run(resize("bogus"), {X, tensor(), fvec({1, 1, 2, 2})}));
  CHECK_FALSE(run(resize("linear", "tf_crop_and_resize"), {X, tensor(), fvec({1, 1, 2, 2})}));
  node ax = resize("nearest");
  ax.attrs["axes"] = ais({2, 2});
  CHECK_FALSE(run(ax, {X, tensor(), fvec({2, 2})}));
  ax.attrs["axes"] = ais({4});
  CHECK_FALSE(run(ax, {X, tensor(), fvec({2})}));
  node aa = resize("nearest");
  aa.attrs["antialias"] = ai(1);
  CHECK_FALSE(run(aa, {X, tensor(), fvec({1, 1, 2, 2})}));
  CHECK_FALSE(run(resize("linear"), {tensor::from_vector<int32_t>({2}, {1, 2}), tensor(), fvec({2})}));
}

TEST_CASE("DepthToSpace and SpaceToDepth", "[nn]") {
  tensor X = tensor::zeros(dtype::f32, {1, 8, 2, 3});
  for (int c = 0; c < 8; ++c)
    for (int k = 0; k < 6; ++k) X.data<float>()[c * 6 + k] = static_cast<float>(9 * c + k);
  node d = op("DepthToSpace");
  d.attrs["blocksize"] = ai(2);
  auto r = run(d, {X});
  REQUIRE(r);
  CHECK((*r)[0].shape() == shape_t{1, 2, 4, 6});
  std::vector<float> dcr0 = {0, 18, 1, 19, 2, 20, 36, 54, 37, 55, 38, 56, 3, 21, 4, 22, 5, 23, 39, 57, 40, 58, 41, 59};
  std::vector<float> got = values((*r)[0]);
  CHECK(std::vector<float>(got.begin(), got.begin() + 24) == dcr0);
  CHECK(got[24] == 9);   // channel 1 of the output starts from input channel 1
  CHECK(got[25] == 27);
  d.attrs["mode"] = as("CRD");
  auto rc = run(d, {X});
  REQUIRE(rc);
  got = values((*rc)[0]);
  std::vector<float> crd0 = {0, 9, 1, 10, 2, 11, 18, 27, 19, 28, 20, 29, 3, 12, 4, 13, 5, 14, 21, 30, 22, 31, 23, 32};
  CHECK(std::vector<float>(got.begin(), got.begin() + 24) == crd0);
  // SpaceToDepth inverts DCR DepthToSpace.
  node s = op("SpaceToDepth");
  s.attrs["blocksize"] = ai(2);
  auto back = run(s, {(*r)[0]});
  REQUIRE(back);
  CHECK((*back)[0].shape() == X.shape());
  CHECK(values((*back)[0]) == values(X));
  // Errors.
  node bad = op("DepthToSpace");
  bad.attrs["blocksize"] = ai(3);
  CHECK_FALSE(run(bad, {X}));
  CHECK_FALSE(run(op("DepthToSpace"), {X}));
  node s3 = op("SpaceToDepth");
  s3.attrs["blocksize"] = ai(4);
  CHECK_FALSE(run(s3, {X}));
  CHECK_FALSE(run(s, {rnd({2, 4, 4}, 1)}));
}
