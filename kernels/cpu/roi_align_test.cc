// RoiAlign against expectations from onnxruntime 1.23 (the ONNX reference's semantics), plus
// hand-checked bins and the errors.
#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

node roi_align(int opset, const std::string& mode, const std::string& ctm, int64_t sampling_ratio, float scale) {
  node n = op("RoiAlign", 1, opset);
  n.attrs["mode"] = as(mode);
  if (!ctm.empty()) n.attrs["coordinate_transformation_mode"] = as(ctm);
  n.attrs["output_height"] = ai(2);
  n.attrs["output_width"] = ai(3);
  n.attrs["sampling_ratio"] = ai(sampling_ratio);
  n.attrs["spatial_scale"] = af(scale);
  return n;
}

// Batch 0: (0.5 i)^1.3 for i = 0..19 as 4x5; batch 1: minus batch 0 with its rows reversed.
tensor features() {
  tensor t = tensor::zeros(dtype::f32, {2, 1, 4, 5});
  float* p = t.data<float>();
  for (int i = 0; i < 20; ++i) p[i] = std::pow(0.5f * static_cast<float>(i), 1.3f);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 5; ++c) p[20 + r * 5 + c] = -p[(3 - r) * 5 + c];
  return t;
}
// Inside, fractional, larger than the image, and smaller than a pixel.
tensor boxes() { return tensor::from_vector<float>({4, 4}, {0, 0, 4, 3, 1.2f, 0.6f, 3.1f, 2.9f, -1, -1, 8, 6, 2.2f, 1.1f, 2.3f, 1.2f}); }
tensor batch_indices() { return tensor::from_vector<int64_t>({4}, {0, 1, 0, 1}); }

struct roi_case {
  int opset;
  const char* mode;
  const char* ctm;
  int64_t sampling_ratio;
  float scale;
  std::vector<float> want;
};

const std::vector<roi_case> cases = {
    {16, "avg", "half_pixel", 0, 1.f,
     {1.166993f, 1.931459f, 2.934657f, 7.20547f, 8.495257f, 9.926952f, -11.06196f, -11.78353f, -12.51242f, -5.131643f,
      -5.731321f, -6.342626f, 2.242149f, 3.876546f, 1.520013f, 6.266731f, 7.859069f, 2.824236f, -12.15181f, -12.18999f,
      -12.22818f, -11.85948f, -11.89746f, -11.93544f}},
    {16, "avg", "output_half_pixel", 2, 1.f,
     {3.059203f, 4.149587f, 5.344016f, 10.29229f, 11.78985f, 13.33207f, -8.890001f, -9.56954f, -10.26355f, -3.370026f,
      -3.897175f, -4.452817f, 3.60211f, 5.901527f, 0, 7.240422f, 8.938172f, 0, -8.852171f, -9.208921f, -9.567427f,
      -6.235851f, -6.565916f, -6.898045f}},
    {16, "max", "half_pixel", 2, 1.f,
     {2.056847f, 2.654527f, 3.157742f, 7.090372f, 7.488992f, 8.31025f, -0.07292516f, -0.1072986f, -0.0815559f, 0,
      -0.008757119f, -0.0238222f, 2.879586f, 4.63709f, 0, 12.01123f, 12.24926f, 0, -1.488187f, -1.307801f, -1.127415f,
      -1.28292f, -1.127415f, -0.9719093f}},
    {16, "avg", "half_pixel", 1, 0.5f,
     {0, 0.2030631f, 0.5051053f, 2.056847f, 2.408062f, 2.892803f, -13.5424f, -13.91918f, -14.29595f, -10.28901f, -10.64165f,
      -10.99429f, 0, 0.5545946f, 1.520515f, 6.298659f, 7.555188f, 9.130084f, -14.10145f, -14.12133f, -14.14122f, -13.95884f,
      -13.97867f, -13.9985f}},
    // Opset 10 has no coordinate_transformation_mode: it behaves as output_half_pixel.
    {10, "avg", "", 0, 1.f,
     {3.059203f, 4.149587f, 5.344016f, 10.29229f, 11.78985f, 13.33207f, -8.890002f, -9.569412f, -10.26355f, -3.370026f,
      -3.896925f, -4.452817f, 3.928078f, 6.222067f, 0, 7.176691f, 8.817857f, 0, -8.852171f, -9.208921f, -9.566675f,
      -6.235852f, -6.565916f, -6.89716f}},
    {10, "max", "", 0, 1.f,
     {3.649771f, 2.973071f, 5.305008f, 9.330329f, 6.730284f, 10.87415f, -0.8117383f, -0.2936016f, -0.3937215f, -0.007361066f,
      -0.009528892f, -0.008125032f, 7.596827f, 11.76518f, 0, 13.72713f, 18.66554f, 0, -0.7780682f, -0.5351526f,
      -0.08243767f, -0.6268305f, -0.4621777f, -0.06274802f}},
};

}  // namespace

TEST_CASE("RoiAlign opset 10 and 16: avg and max, both coordinate modes, against onnxruntime", "[nn][roialign]") {
  for (const roi_case& c : cases) {
    INFO("opset " << c.opset << " " << c.mode << " " << c.ctm << " sampling_ratio=" << c.sampling_ratio << " scale=" << c.scale);
    auto r = run(roi_align(c.opset, c.mode, c.ctm, c.sampling_ratio, c.scale), {features(), boxes(), batch_indices()});
    if (!r) FAIL(r.error().message());
    CHECK((*r)[0].shape() == shape_t{4, 1, 2, 3});
    check_close((*r)[0], c.want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("RoiAlign hand-checked bins and defaults", "[nn][roialign]") {
  // A 2x2 image and the box (0, 0)-(2, 2) with output_half_pixel: one 1x1 bin sampled 2x2 at
  // (0.5, 0.5), (1.5, 0.5), ... = bilinear means of the pixels, averaged.
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  tensor box = tensor::from_vector<float>({1, 4}, {0, 0, 2, 2});
  tensor b0 = tensor::from_vector<int64_t>({1}, {0});
  node n = op("RoiAlign", 1, 10);  // defaults: avg, 1x1, adaptive sampling, scale 1
  auto r = run(n, {X, box, b0});
  REQUIRE(r);
  CHECK((*r)[0].shape() == shape_t{1, 1, 1, 1});
  // Samples at 0.5 and 1.5 on each axis: (0.5,0.5) -> 2.5, (1.5,*) clamps to the last pixel.
  check_close((*r)[0], {(2.5f + 3.f + 3.5f + 4.f) / 4});
  // Opset 16's default half_pixel shifts the box to (-0.5, -0.5)-(1.5, 1.5): samples at 0 and 1.
  n.opset = 16;
  r = run(n, {X, box, b0});
  REQUIRE(r);
  check_close((*r)[0], {2.5f});
  // More rois than threads, run threaded and not: the same.
  tensor F = rnd({3, 4, 16, 16}, 1);
  tensor many = rnd({37, 4}, 2, 0.f, 15.f);
  for (int64_t i = 0; i < 37; ++i) {
    float* b = many.data<float>() + i * 4;
    if (b[2] < b[0]) std::swap(b[0], b[2]);
    if (b[3] < b[1]) std::swap(b[1], b[3]);
  }
  tensor idx = tensor::zeros(dtype::i64, {37});
  for (int64_t i = 0; i < 37; ++i) idx.data<int64_t>()[i] = i % 3;
  auto a = run(roi_align(16, "avg", "half_pixel", 0, 1.f), {F, many, idx}, false, true);
  auto s = run(roi_align(16, "avg", "half_pixel", 0, 1.f), {F, many, idx}, false, false);
  REQUIRE(a);
  REQUIRE(s);
  check_close((*a)[0], values((*s)[0]), 0, 0);
}

TEST_CASE("RoiAlign bad inputs", "[nn][roialign]") {
  auto err = [](const expected<std::vector<tensor>>& r) { return r ? std::string() : r.error().message(); };
  node n = roi_align(16, "avg", "half_pixel", 0, 1.f);
  CHECK_THAT(err(run(n, {features(), boxes(), tensor::from_vector<int64_t>({4}, {0, 1, 2, 0})})),
             Catch::Contains("batch_indices[2] = 2 is outside [0, 2)"));
  CHECK_THAT(err(run(n, {features(), rnd({4, 5}, 1), batch_indices()})), Catch::Contains("rois must be [num_rois, 4]"));
  CHECK_THAT(err(run(n, {features(), boxes(), tensor::from_vector<int64_t>({3}, {0, 1, 0})})),
             Catch::Contains("batch_indices must be [4]"));
  CHECK_THAT(err(run(n, {rnd({2, 1, 4}, 1), boxes(), batch_indices()})), Catch::Contains("X must be 4-D"));
  CHECK_THAT(err(run(roi_align(16, "min", "", 0, 1.f), {features(), boxes(), batch_indices()})), Catch::Contains("unknown mode 'min'"));
  CHECK_THAT(err(run(roi_align(10, "avg", "half_pixel", 0, 1.f), {features(), boxes(), batch_indices()})),
             Catch::Contains("needs opset 16"));
  CHECK_THAT(err(run(roi_align(16, "avg", "corner", 0, 1.f), {features(), boxes(), batch_indices()})),
             Catch::Contains("unknown coordinate_transformation_mode 'corner'"));
  tensor huge = tensor::from_vector<float>({1, 4}, {0, 0, 1e9f, 1e9f});
  CHECK_THAT(err(run(n, {features(), huge, tensor::from_vector<int64_t>({1}, {0})})), Catch::Contains("too many"));
}
