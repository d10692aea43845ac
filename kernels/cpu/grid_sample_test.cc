// GridSample against expectations from onnxruntime 1.23 (each 2-D case also checked against
// torch.nn.functional.grid_sample when generated), plus hand-checked points.
#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

node grid_sample(const std::string& mode, const std::string& padding, int64_t align_corners, int opset = 16) {
  node n = op("GridSample", 1, opset);
  n.attrs["mode"] = as(mode);
  n.attrs["padding_mode"] = as(padding);
  n.attrs["align_corners"] = ai(align_corners);
  return n;
}

// X = arange(12)^1.5 as [1, 1, 3, 4], and a grid with points inside, on and beyond the edges.
tensor image() {
  tensor t = tensor::zeros(dtype::f32, {1, 1, 3, 4});
  for (int64_t i = 0; i < 12; ++i) t.data<float>()[i] = std::pow(static_cast<float>(i), 1.5f);
  return t;
}
tensor grid() {
  return tensor::from_vector<float>({1, 2, 3, 2}, {-1, -1, 0.1f, 0.2f, 1.3f, -0.7f, -1.6f, 0.9f, 0.55f, 1.25f, 2.9f, -3.1f});
}

struct gs_case {
  const char* mode;
  const char* padding;
  int align_corners;
  std::vector<float> want;
};

const std::vector<gs_case> cases = {
    {"bilinear", "zeros", 0, {0, 18.62016f, 0, 0, 4.317354f, 0}},
    {"bilinear", "zeros", 1, {0, 16.77386f, 5.056363f, 2.116467f, 24.90173f, 0}},
    {"bilinear", "border", 0, {0, 18.62016f, 5.196153f, 22.62742f, 34.53883f, 5.196153f}},
    {"bilinear", "border", 1, {0, 16.77386f, 9.193384f, 21.16467f, 33.20231f, 5.196153f}},
    {"bilinear", "reflection", 0, {0, 18.62016f, 4.959381f, 25.68822f, 34.53883f, 22.62742f}},
    {"bilinear", "reflection", 1, {0, 16.77386f, 7.931403f, 24.9927f, 28.88661f, 21.80268f}},
    {"nearest", "zeros", 0, {0, 14.69694f, 0, 0, 0, 0}},
    {"nearest", "zeros", 1, {0, 14.69694f, 5.196153f, 0, 31.62278f, 0}},
    {"nearest", "border", 0, {0, 14.69694f, 5.196153f, 22.62742f, 36.48287f, 5.196153f}},
    {"nearest", "border", 1, {0, 14.69694f, 5.196153f, 22.62742f, 31.62278f, 5.196153f}},
    {"nearest", "reflection", 0, {0, 14.69694f, 5.196153f, 27, 36.48287f, 22.62742f}},
    {"nearest", "reflection", 1, {0, 14.69694f, 5.196153f, 27, 31.62278f, 22.62742f}},
    {"bicubic", "zeros", 0, {-0.4027119f, 20.73251f, -0.2758614f, -0.78984f, 4.262398f, 0}},
    {"bicubic", "zeros", 1, {0, 17.99622f, 5.109034f, 1.843487f, 29.44653f, 0}},
    {"bicubic", "border", 0, {-0.8245869f, 19.31481f, 4.745215f, 24.24969f, 35.11087f, 5.196154f}},
    {"bicubic", "border", 1, {0, 17.28089f, 8.343034f, 21.45301f, 35.45396f, 5.196154f}},
    {"bicubic", "reflection", 0, {-1.610847f, 19.31481f, 4.543508f, 27.89206f, 36.37702f, 24.40251f}},
    {"bicubic", "reflection", 1, {0, 17.67722f, 5.891733f, 26.06533f, 32.21493f, 22.50688f}},
};

std::string opset20_name(const std::string& mode) {
  if (mode == "bilinear") return "linear";
  if (mode == "bicubic") return "cubic";
  return mode;
}

}  // namespace

TEST_CASE("GridSample 2-D: every mode, padding_mode and align_corners against onnxruntime", "[nn][gridsample]") {
  for (const gs_case& c : cases) {
    INFO(c.mode << " " << c.padding << " align_corners=" << c.align_corners);
    auto r = run(grid_sample(c.mode, c.padding, c.align_corners), {image(), grid()});
    if (!r) FAIL(r.error().message());
    CHECK((*r)[0].shape() == shape_t{1, 1, 2, 3});
    check_close((*r)[0], c.want, 1e-4f, 1e-4f);
    // Opset 20 spells the modes linear/cubic and means the same.
    auto r20 = run(grid_sample(opset20_name(c.mode), c.padding, c.align_corners, 20), {image(), grid()});
    if (!r20) FAIL(r20.error().message());
    check_close((*r20)[0], c.want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("GridSample hand-checked points and defaults", "[nn][gridsample]") {
  tensor X = tensor::from_vector<float>({1, 1, 2, 2}, {0, 1, 2, 3});
  // The centre of a 2x2 image is the mean of its pixels; the corners are the pixels.
  tensor G = tensor::from_vector<float>({1, 1, 3, 2}, {0, 0, -1, -1, 1, 1});
  node n = op("GridSample", 1, 16);  // defaults: bilinear, zeros, align_corners=0
  auto r = run(n, {X, G});
  REQUIRE(r);
  check_close((*r)[0], {1.5f, 0, 0.75f});  // corners of the pixel grid are half outside
  n.attrs["align_corners"] = ai(1);
  r = run(n, {X, G});
  REQUIRE(r);
  check_close((*r)[0], {1.5f, 0, 3});
  // Nearest at a point exactly half-way rounds to even in 2-D (0.5 -> 0) ...
  r = run(grid_sample("nearest", "zeros", 0), {X, tensor::from_vector<float>({1, 1, 1, 2}, {0, 0})});
  REQUIRE(r);
  check_close((*r)[0], {0});
  // ... and away from zero in 3-D (0.5 -> 1 on every axis), as torch's grid_sample does.
  tensor X3 = tensor::zeros(dtype::f32, {1, 1, 2, 2, 2});
  for (int i = 0; i < 8; ++i) X3.data<float>()[i] = static_cast<float>(i);
  r = run(grid_sample("nearest", "zeros", 0, 20), {X3, tensor::from_vector<float>({1, 1, 1, 1, 3}, {0, 0, 0})});
  REQUIRE(r);
  check_close((*r)[0], {7});
}

TEST_CASE("GridSample 3-D (opset 20) against onnxruntime", "[nn][gridsample]") {
  tensor X = tensor::from_vector<float>(
      {1, 2, 2, 3, 4},
      {-0.8019314f, -1.324359f, -0.2483616f, 0.4204452f, 1.136047f, 0.1097064f, -0.5526473f, -0.7847804f, 0.7487458f,
       1.634783f, 0.2727688f, -1.233329f, -0.9582652f, 1.600019f, 0.2028824f, -1.732135f, -0.08369619f, -1.163226f,
       -0.6292881f, -0.4880058f, -0.7133134f, 0.5533785f, -0.06308597f, -0.5894313f, 0.4096378f, 0.8298553f,
       -1.643023f, -0.2567301f, -0.9807473f, -0.1731552f, -1.289419f, 0.02069039f, -0.03788574f, -0.3043377f,
       -1.047927f, -0.3961903f, -1.091329f, -1.355209f, 0.2247857f, -1.10935f, 1.170296f, 0.7165877f, -1.997817f,
       0.2721289f, -1.101717f, 0.03305722f, 0.04363199f, -1.98843f});
  tensor G = tensor::from_vector<float>({1, 1, 2, 2, 3}, {-1.456391f, 1.299672f, -1.242523f, 1.03478f, -0.3963578f, 1.353069f,
                                                          -0.3017242f, 1.309326f, 0.1684793f, -0.779594f, 0.724265f, 0.5231692f});
  auto r = run(grid_sample("linear", "border", 1, 20), {X, G});
  if (!r) FAIL(r.error().message());
  CHECK((*r)[0].shape() == shape_t{1, 2, 1, 2, 2});
  check_close((*r)[0], {0.7487458f, -0.981126f, 0.9590579f, -0.02273603f, -0.03788574f, -0.275431f, -0.1215835f, -0.2551745f},
              1e-5f, 1e-4f);
  r = run(grid_sample("linear", "reflection", 0, 20), {X, G});
  REQUIRE(r);
  check_close((*r)[0], {1.114486f, -1.227686f, 0.7939038f, -0.7133134f, -0.1478724f, -0.549211f, -0.1481313f, -1.101717f},
              1e-5f, 1e-4f);
}

TEST_CASE("GridSample threaded, double and bad inputs", "[nn][gridsample]") {
  // Threaded and single-threaded runs agree; double X gives the float results.
  tensor X = rnd({2, 3, 9, 11}, 1);
  tensor G = rnd({2, 17, 13, 2}, 2, -1.3f, 1.3f);
  for (const char* mode : {"bilinear", "nearest", "bicubic"}) {
    auto a = run(grid_sample(mode, "reflection", 0), {X, G}, false, true);
    auto b = run(grid_sample(mode, "reflection", 0), {X, G}, false, false);
    REQUIRE(a);
    REQUIRE(b);
    check_close((*a)[0], values((*b)[0]), 0, 0);
  }
  tensor Xd = tensor::zeros(dtype::f64, {2, 3, 9, 11});
  for (int64_t i = 0; i < X.numel(); ++i) Xd.data<double>()[i] = X.data<float>()[i];
  auto f = run(grid_sample("bicubic", "border", 1), {X, G});
  auto d = run(grid_sample("bicubic", "border", 1), {Xd, G});
  REQUIRE(f);
  REQUIRE(d);
  REQUIRE((*d)[0].type() == dtype::f64);
  for (int64_t i = 0; i < (*f)[0].numel(); ++i) CHECK((*d)[0].data<double>()[i] == Approx((*f)[0].data<float>()[i]).margin(1e-5));

  auto err = [](const expected<std::vector<tensor>>& r) { return r ? std::string() : r.error().message(); };
  CHECK_THAT(err(run(grid_sample("bilinear", "zeros", 0), {X, rnd({2, 4, 4, 3}, 3)})), Catch::Contains("grid must be [N, out..., 2]"));
  CHECK_THAT(err(run(grid_sample("bilinear", "zeros", 0), {X, rnd({1, 4, 4, 2}, 3)})), Catch::Contains("grid must be"));
  CHECK_THAT(err(run(grid_sample("area", "zeros", 0), {X, G})), Catch::Contains("unknown mode 'area'"));
  CHECK_THAT(err(run(grid_sample("linear", "wrap", 0), {X, G})), Catch::Contains("unknown padding_mode 'wrap'"));
  CHECK_THAT(err(run(grid_sample("linear", "zeros", 0), {tensor::zeros(dtype::i32, {1, 1, 2, 2}), rnd({1, 1, 1, 2}, 4)})),
             Catch::Contains("X must be float or double"));
  CHECK_THAT(err(run(grid_sample("linear", "zeros", 0), {rnd({1, 1, 2, 2, 2, 2}, 4), rnd({1, 1, 1, 1, 1, 4}, 4)})),
             Catch::Contains("X must have 1 to 3 spatial dims"));
}
