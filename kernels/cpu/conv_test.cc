#include <cmath>
#include <limits>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

struct conv_case {
  shape_t x, w;
  int64_t group = 1;
  std::vector<int64_t> strides, dilations, pads;  // pads explicit (begin..., end...)
  std::string auto_pad;                           // set on the node; pads then are what we expect
  bool bias = false;
};

// Direct N-d convolution by definition (up to 3 spatial dims).
std::vector<float> ref_conv(const tensor& X, const tensor& W, const tensor* B, int64_t group,
                            const std::vector<int64_t>& strides, const std::vector<int64_t>& dil,
                            const std::vector<int64_t>& pads, shape_t* out_shape) {
  const size_t nsp = X.rank() - 2;
  const int64_t N = X.dim(0), C = X.dim(1), M = W.dim(0), Cg = W.dim(1), Mg = M / group;
  int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, out[3] = {1, 1, 1};
  *out_shape = {N, M};
  for (size_t i = 0; i < nsp; ++i) {
    size_t j = 3 - nsp + i;
    in[j] = X.dim(2 + i);
    k[j] = W.dim(2 + i);
    s[j] = strides.empty() ? 1 : strides[i];
    d[j] = dil.empty() ? 1 : dil[i];
    pb[j] = pads.empty() ? 0 : pads[i];
    int64_t pe = pads.empty() ? 0 : pads[nsp + i];
    out[j] = (in[j] + pb[j] + pe - (k[j] - 1) * d[j] - 1) / s[j] + 1;
    out_shape->push_back(out[j]);
  }
  std::vector<float> y(static_cast<size_t>(num_elements(*out_shape)));
  const float* x = X.data<float>();
  const float* w = W.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      int64_t g = m / Mg;
      for (int64_t od = 0; od < out[0]; ++od)
        for (int64_t oh = 0; oh < out[1]; ++oh)
          for (int64_t ow = 0; ow < out[2]; ++ow) {
            double acc = B ? B->data<float>()[m] : 0.0;
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t kd = 0; kd < k[0]; ++kd)
                for (int64_t kh = 0; kh < k[1]; ++kh)
                  for (int64_t kw = 0; kw < k[2]; ++kw) {
                    int64_t id = od * s[0] - pb[0] + kd * d[0], ih = oh * s[1] - pb[1] + kh * d[1],
                            iw = ow * s[2] - pb[2] + kw * d[2];
                    if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 || iw >= in[2]) continue;
                    acc += double(x[(((n * C + g * Cg + c) * in[0] + id) * in[1] + ih) * in[2] + iw]) *
                           w[(((m * Cg + c) * k[0] + kd) * k[1] + kh) * k[2] + kw];
                  }
            y[static_cast<size_t>((((n * M + m) * out[0] + od) * out[1] + oh) * out[2] + ow)] = static_cast<float>(acc);
          }
    }
  return y;
}

// Direct transposed convolution by definition: scatter every input into the output.
std::vector<float> ref_conv_transpose(const tensor& X, const tensor& W, const tensor* B, int64_t group,
                                      const std::vector<int64_t>& s_, const std::vector<int64_t>& d_,
                                      const std::vector<int64_t>& pb_, const shape_t& out_sp) {
  const size_t nsp = X.rank() - 2;
  const int64_t N = X.dim(0), C = X.dim(1), Cg = C / group, Mg = W.dim(1), M = Mg * group;
  int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, out[3] = {1, 1, 1};
  for (size_t i = 0; i < nsp; ++i) {
    size_t j = 3 - nsp + i;
    in[j] = X.dim(2 + i);
    k[j] = W.dim(2 + i);
    s[j] = s_.empty() ? 1 : s_[i];
    d[j] = d_.empty() ? 1 : d_[i];
    pb[j] = pb_[i];
    out[j] = out_sp[i];
  }
  const int64_t S = out[0] * out[1] * out[2];
  std::vector<double> y(static_cast<size_t>(N * M * S), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      int64_t g = c / Cg;
      for (int64_t id = 0; id < in[0]; ++id)
        for (int64_t ih = 0; ih < in[1]; ++ih)
          for (int64_t iw = 0; iw < in[2]; ++iw) {
            double xv = X.data<float>()[(((n * C + c) * in[0] + id) * in[1] + ih) * in[2] + iw];
            for (int64_t m = 0; m < Mg; ++m)
              for (int64_t kd = 0; kd < k[0]; ++kd)
                for (int64_t kh = 0; kh < k[1]; ++kh)
                  for (int64_t kw = 0; kw < k[2]; ++kw) {
                    int64_t od = id * s[0] - pb[0] + kd * d[0], oh = ih * s[1] - pb[1] + kh * d[1],
                            ow = iw * s[2] - pb[2] + kw * d[2];
                    if (od < 0 || od >= out[0] || oh < 0 || oh >= out[1] || ow < 0 || ow >= out[2]) continue;
                    y[static_cast<size_t>(((n * M + g * Mg + m) * out[0] + od) * out[1] * out[2] + oh * out[2] + ow)] +=
                        xv * W.data<float>()[(((c * Mg + m) * k[0] + kd) * k[1] + kh) * k[2] + kw];
                  }
          }
    }
  std::vector<float> r(y.size());
  for (size_t i = 0; i < y.size(); ++i) r[i] = static_cast<float>(y[i] + (B ? B->data<float>()[(i / S) % M] : 0.f));
  return r;
}

}  // namespace

TEST_CASE("Conv hand-checked 3x3 with and without padding", "[nn]") {
  // The ONNX doc example: 5x5 input 0..24, 3x3 ones.
  std::vector<float> xv(25);
  for (int i = 0; i < 25; ++i) xv[i] = static_cast<float>(i);
  tensor X = tensor::from_vector<float>({1, 1, 5, 5}, xv);
  tensor W = tensor::from_vector<float>({1, 1, 3, 3}, std::vector<float>(9, 1.f));
  node n = op("Conv");
  n.attrs["pads"] = ais({1, 1, 1, 1});
  auto r = run(n, {X, W});
  REQUIRE(r);
  check_close((*r)[0], {12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108, 117, 81,
                        93, 144, 153, 162, 111, 72, 111, 117, 123, 84});
  auto r2 = run(op("Conv"), {X, W});
  REQUIRE(r2);
  check_close((*r2)[0], {54, 63, 72, 99, 108, 117, 144, 153, 162});
  // Strides 2 with asymmetric padding (test_conv_with_strides_and_asymmetric_padding).
  std::vector<float> x7(35);
  for (int i = 0; i < 35; ++i) x7[i] = static_cast<float>(i);
  node s = op("Conv");
  s.attrs["pads"] = ais({1, 0, 1, 0});
  s.attrs["strides"] = ais({2, 2});
  auto r3 = run(s, {tensor::from_vector<float>({1, 1, 7, 5}, x7), W});
  REQUIRE(r3);
  CHECK((*r3)[0].shape() == shape_t{1, 1, 4, 2});
  check_close((*r3)[0], {21, 33, 99, 117, 189, 207, 171, 183});
}

TEST_CASE("Conv matches the direct definition across paths", "[nn]") {
  std::vector<conv_case> cases = {
      {{2, 3, 9, 9}, {4, 3, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      {{2, 8, 5, 5}, {6, 8, 1, 1}, 1, {}, {}, {}, "", false},             // pointwise GEMM
      {{1, 8, 6, 5}, {6, 4, 1, 1}, 2, {}, {}, {}, "", true},              // grouped pointwise
      {{1, 4, 8, 8}, {6, 2, 3, 3}, 2, {}, {2, 2}, {2, 2, 2, 2}, "", false},
      {{2, 5, 7, 7}, {5, 1, 3, 3}, 5, {}, {}, {1, 1, 1, 1}, "", true},    // depthwise s1
      {{1, 6, 12, 11}, {6, 1, 3, 3}, 6, {2, 2}, {}, {1, 1, 1, 1}, "", true},  // depthwise s2
      {{1, 3, 9, 10}, {6, 1, 5, 3}, 3, {1, 3}, {2, 1}, {2, 0, 1, 3}, "", true},  // depthwise multiplier
      {{1, 4, 10, 10}, {4, 1, 3, 3}, 4, {3, 3}, {2, 2}, {0, 1, 2, 0}, "", false},
      {{1, 2, 40, 40}, {2, 1, 7, 7}, 2, {}, {}, {3, 3, 3, 3}, "", true},
      {{2, 3, 11}, {4, 3, 3}, 1, {2}, {}, {1, 2}, "", true},              // 1-D
      {{1, 4, 13}, {4, 1, 5}, 4, {}, {2}, {4, 4}, "", true},              // 1-D depthwise
      {{1, 2, 5, 6, 7}, {3, 2, 3, 2, 3}, 1, {1, 2, 1}, {1, 1, 2}, {1, 0, 1, 1, 1, 0}, "", true},  // 3-D
      {{1, 4, 5, 5, 5}, {4, 1, 3, 3, 3}, 4, {}, {}, {1, 1, 1, 1, 1, 1}, "", false},               // 3-D depthwise
      {{1, 3, 20, 20}, {5, 3, 4, 4}, 1, {3, 2}, {}, {0, 0, 0, 0}, "", true},
      // Tiny output maps (up to 16 positions; constant weights: C^T = im2col^T x W^T): 3x3 over
      // 4x4 and 2x2, stride 2, 3-D, dilated; and 1x1 ones over tiny maps (the pointwise path).
      {{2, 16, 4, 4}, {24, 16, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},
      {{2, 64, 2, 2}, {32, 64, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},
      {{1, 8, 5, 5}, {16, 8, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", false},
      {{3, 8, 3, 3}, {10, 8, 1, 1}, 1, {}, {}, {}, "", true},
      {{2, 6, 1, 1}, {5, 6, 1, 1}, 1, {}, {}, {}, "", true},
      {{1, 2, 3, 3, 3}, {4, 2, 2, 2, 2}, 1, {}, {}, {}, "", true},
      {{1, 3, 6, 6}, {7, 3, 3, 3}, 1, {}, {2, 2}, {1, 1, 1, 1}, "", true},
      // Up to 64 positions with at most 32 output channels take the same path: 8x8 from a
      // stride-2 16x16, 7x7 with 32 channels, 5x9 with uneven pads.
      {{2, 8, 16, 16}, {16, 8, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      {{1, 20, 7, 7}, {32, 20, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},
      {{2, 5, 6, 9}, {11, 5, 3, 3}, 1, {}, {}, {0, 1, 2, 0}, "", true},
      // Direct convolution (at most 8 output channels, few taps): stride 1 and 2, 8 channels
      // exactly, rows of 8 and more, odd pads.
      {{2, 8, 16, 16}, {8, 8, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},
      {{1, 3, 33, 30}, {8, 3, 7, 7}, 1, {2, 2}, {}, {3, 3, 2, 2}, "", true},
      {{1, 4, 12, 19}, {3, 4, 3, 5}, 1, {1, 2}, {}, {0, 2, 1, 1}, "", false},
      {{1, 2, 9, 8}, {7, 2, 3, 3}, 1, {2, 1}, {}, {1, 1, 1, 1}, "", true},
      {{1, 3, 2, 2}, {2, 3, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},   // kernel covers padding
      {{1, 1, 1, 1}, {1, 1, 1, 1}, 1, {}, {}, {}, "", true},
      {{1, 3, 7, 8}, {4, 3, 1, 1}, 1, {2, 3}, {}, {}, "", true},         // strided 1x1
      {{1, 2, 6, 6}, {4, 2, 1, 1}, 1, {}, {}, {1, 1, 1, 1}, "", true},   // padded 1x1
      {{1, 3, 45, 47}, {10, 3, 7, 7}, 1, {2, 2}, {}, {3, 3, 3, 3}, "", true},  // stem: 7x7 s2, wide rows
      // Products split in two column tiles over 196 positions: with AVX-512 the second starts
      // at half a panel (112 + 84), packed by the pointwise and the im2col packers.
      {{1, 576, 14, 14}, {96, 576, 1, 1}, 1, {}, {}, {}, "", true},
      {{1, 128, 28, 28}, {64, 128, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      // Direct (up to 8 channels, 16 with AVX-512): stride 1 rows of a 32-column tile and a
      // masked 16-column one (AVX-512), stride 2 rows of 35 columns, 7 and 13 channels.
      {{2, 3, 20, 40}, {5, 3, 5, 5}, 1, {}, {}, {2, 2, 2, 2}, "", true},
      {{1, 3, 33, 41}, {13, 3, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      {{1, 2, 30, 70}, {7, 2, 7, 7}, 1, {2, 2}, {}, {3, 3, 3, 3}, "", false},
      {{2, 5, 33, 38}, {9, 5, 3, 3}, 1, {2, 2}, {}, {1, 0, 1, 2}, "", true},   // 3x3 s2, odd pads
      {{1, 40, 14, 14}, {70, 40, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},    // K > 256: several k-blocks
      // 3x3 s2 packed from split planes: a 7x7 map whose rows cross a panel's edge, over two
      // k-blocks; rows of 33 outputs, longer than a panel, over two images.
      {{1, 40, 14, 14}, {48, 40, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      {{2, 12, 70, 66}, {24, 12, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", false},
      {{1, 4, 20, 37}, {4, 1, 3, 3}, 4, {}, {}, {1, 1, 1, 1}, "", true},       // depthwise s1, wide rows
      {{2, 3, 23, 41}, {3, 1, 3, 3}, 3, {2, 2}, {}, {1, 1, 1, 1}, "", true},   // depthwise s2, wide rows
      {{1, 3, 24, 40}, {3, 1, 3, 3}, 3, {2, 2}, {}, {0, 1, 1, 0}, "", false},  // depthwise s2, uneven pads
      {{1, 2, 19, 35}, {2, 1, 3, 3}, 2, {}, {2, 2}, {2, 2, 2, 2}, "", true},   // depthwise dilated (scalar)
      // Planes narrower than a vector: blocks spill into the next row (and the padded copy's
      // rows into the next), only the plane's last block is stored masked.
      {{1, 24, 7, 7}, {24, 1, 3, 3}, 24, {}, {}, {1, 1, 1, 1}, "", true},
      {{2, 9, 4, 3}, {9, 1, 3, 3}, 9, {}, {}, {1, 1, 1, 1}, "", true},
      {{1, 16, 14, 13}, {16, 1, 3, 3}, 16, {2, 2}, {}, {1, 1, 1, 1}, "", true},
      {{1, 5, 1, 1}, {5, 1, 3, 3}, 5, {}, {}, {1, 1, 1, 1}, "", false},
      {{1, 7, 2, 9}, {7, 1, 3, 3}, 7, {2, 1}, {}, {0, 1, 2, 1}, "", true},
      // Depthwise kernels other than 3x3 on the padded plane: 5x5 and 7x7, 5x1, 1x7, 5x3,
      // strides 1 and 2 (the split plane), dilation along columns, 1-D, small planes.
      {{1, 8, 14, 14}, {8, 1, 5, 5}, 8, {}, {}, {2, 2, 2, 2}, "", true},
      {{2, 6, 15, 13}, {6, 1, 5, 5}, 6, {2, 2}, {}, {2, 2, 2, 2}, "", true},
      {{1, 4, 7, 7}, {4, 1, 5, 5}, 4, {2, 2}, {}, {1, 2, 2, 1}, "", false},
      {{1, 3, 20, 23}, {3, 1, 7, 7}, 3, {}, {}, {3, 3, 3, 3}, "", true},
      {{1, 3, 20, 23}, {3, 1, 7, 7}, 3, {2, 2}, {}, {3, 3, 3, 3}, "", true},
      {{1, 4, 30, 9}, {4, 1, 5, 1}, 4, {}, {}, {2, 0, 2, 0}, "", true},
      {{1, 4, 9, 30}, {4, 1, 1, 7}, 4, {1, 2}, {}, {0, 3, 0, 3}, "", true},
      {{1, 5, 11, 12}, {5, 1, 5, 3}, 5, {}, {2, 1}, {4, 1, 4, 1}, "", true},
      {{1, 4, 10, 12}, {4, 1, 5, 5}, 4, {}, {1, 2}, {2, 4, 2, 4}, "", true},
      {{1, 6, 37}, {6, 1, 5}, 6, {2}, {}, {2, 2}, "", true},
      {{1, 6, 3, 2}, {6, 1, 5, 5}, 6, {}, {}, {2, 2, 2, 2}, "", true},
      // Depthwise 3x3 and 5x5 whose output rows share input rows (made once per row): strides
      // 1 and 2 down and along, mixed; pads none, uneven or wider than the kernel's half;
      // dilation along rows; a single output row; rows longer than two vectors.
      {{1, 3, 30, 41}, {3, 1, 5, 5}, 3, {2, 2}, {}, {2, 2, 2, 2}, "", true},
      {{2, 2, 21, 37}, {2, 1, 5, 5}, 2, {}, {}, {2, 2, 2, 2}, "", true},
      {{1, 3, 26, 40}, {3, 1, 5, 5}, 3, {2, 2}, {}, {1, 2, 3, 1}, "", false},
      {{1, 2, 19, 35}, {2, 1, 5, 5}, 2, {1, 2}, {1, 2}, {0, 4, 1, 3}, "", true},
      {{1, 3, 25, 38}, {3, 1, 3, 3}, 3, {2, 1}, {}, {0, 0, 0, 0}, "", true},
      {{1, 3, 18, 50}, {3, 1, 3, 3}, 3, {1, 2}, {1, 2}, {2, 1, 0, 2}, "", false},
      {{2, 2, 3, 40}, {2, 1, 3, 3}, 2, {2, 2}, {}, {0, 1, 0, 1}, "", true},
      {{1, 2, 5, 33}, {2, 1, 5, 5}, 2, {}, {}, {0, 2, 0, 2}, "", true},
      // Depthwise over planes of up to 64 outputs in rows shorter than a vector (channels
      // across the vector): 7x7, stride 2 from 14x14 with 5x5, 5x9 with dilation.
      {{1, 20, 7, 7}, {20, 1, 3, 3}, 20, {}, {}, {1, 1, 1, 1}, "", true},
      {{2, 9, 14, 13}, {9, 1, 5, 5}, 9, {2, 2}, {}, {2, 2, 2, 2}, "", true},
      {{1, 8, 9, 7}, {8, 1, 3, 3}, 8, {}, {2, 1}, {0, 1, 2, 1}, "", true},
      {{2, 70, 14, 14}, {70, 1, 3, 3}, 70, {2, 2}, {}, {1, 1, 1, 1}, "", true},  // blocks of channels in parallel
      // Stride 1 computed on wide rows from padded planes: 1x7, 7x1 (no extra columns), dilated,
      // grouped, 1-D, and rows in several products (a wide row buffer of over 1M floats).
      {{1, 6, 9, 120}, {12, 6, 1, 7}, 1, {}, {}, {0, 3, 0, 3}, "", true},
      {{2, 5, 30, 11}, {12, 5, 7, 1}, 1, {}, {}, {3, 0, 3, 0}, "", true},
      {{1, 4, 20, 80}, {6, 4, 3, 3}, 1, {}, {2, 2}, {2, 2, 2, 2}, "", false},
      {{1, 8, 12, 40}, {8, 2, 3, 3}, 4, {}, {}, {1, 1, 1, 1}, "", true},
      {{2, 3, 70}, {4, 3, 5}, 1, {}, {}, {2, 1}, "", true},
      {{1, 2, 40, 500}, {64, 2, 1, 3}, 1, {}, {}, {0, 1, 0, 1}, "", true},
      // Stride 2 along rows packed from planes split into even and odd columns: a 1x1
      // shortcut, a 2x2 with uneven pads, strides (1, 2) and (3, 2), rows dilated.
      {{1, 6, 14, 15}, {12, 6, 1, 1}, 1, {2, 2}, {}, {}, "", true},
      {{2, 5, 17, 23}, {12, 5, 2, 2}, 1, {2, 2}, {}, {0, 1, 1, 0}, "", false},
      {{1, 4, 13, 30}, {12, 4, 3, 3}, 1, {1, 2}, {}, {1, 1, 1, 1}, "", true},
      {{1, 4, 20, 31}, {12, 4, 3, 5}, 1, {3, 2}, {2, 1}, {2, 2, 2, 2}, "", true},
      // 1x1 over 1x1 maps (squeeze-excite): matrix-vector products, split over threads when big.
      {{2, 40, 1, 1}, {24, 40, 1, 1}, 1, {}, {}, {}, "", true},
      {{1, 300, 1, 1}, {203, 300, 1, 1}, 1, {}, {}, {}, "", true},
      {{3, 30, 1, 1}, {21, 30, 1, 1}, 1, {}, {}, {}, "", false},
      // 3x3 stride 1 with 16+ channels: Winograd F(2x2, 3x3) when the weights are constant.
      {{2, 16, 9, 11}, {20, 16, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},
      {{1, 32, 14, 14}, {16, 32, 3, 3}, 1, {}, {}, {0, 0, 0, 0}, "", false},
      {{1, 17, 7, 8}, {19, 17, 3, 3}, 1, {}, {}, {0, 2, 1, 0}, "", true},      // odd output, uneven pads
      {{1, 24, 30, 45}, {33, 24, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},    // several 8-tile blocks per row
      {{1, 300, 6, 6}, {18, 300, 3, 3}, 1, {}, {}, {1, 1, 1, 1}, "", true},    // C > 256: several k-blocks
  };
  uint32_t seed = 100;
  for (auto& c : cases) {
    tensor X = rnd(c.x, seed++), W = rnd(c.w, seed++), B = rnd({c.w[0]}, seed++);
    node n = op("Conv");
    if (c.group != 1) n.attrs["group"] = ai(c.group);
    if (!c.strides.empty()) n.attrs["strides"] = ais(c.strides);
    if (!c.dilations.empty()) n.attrs["dilations"] = ais(c.dilations);
    if (!c.pads.empty()) n.attrs["pads"] = ais(c.pads);
    std::vector<tensor> in = {X, W};
    if (c.bias) in.push_back(B);
    // Constant weights take the prepacked (and Winograd) paths.
    for (int mode = 0; mode < 4; ++mode) {
      const bool constant = mode >= 2, parallel = mode % 2 == 1;
      auto r = run(n, in, constant, parallel);
      REQUIRE(r);
      shape_t s;
      auto want = ref_conv(X, W, c.bias ? &B : nullptr, c.group, c.strides, c.dilations, c.pads, &s);
      INFO("X " << shape_str(c.x) << " W " << shape_str(c.w) << " group " << c.group << " constant " << constant);
      CHECK((*r)[0].shape() == s);
      check_close((*r)[0], want, 1e-4f, 1e-4f);
    }
  }
}

TEST_CASE("Conv matches the direct definition on random shapes on every path", "[nn]") {
  // Random groups (dense, grouped, depthwise, depthwise with a multiplier), 1-D and 2-D, kernel
  // sizes 1 to 7, strides, dilations, pads, maps from 1x1 up, with and without bias and with
  // constant (prepacked, Winograd, tiny-map) or per-run weights: whichever path each case
  // takes must give the definition's result.
  dice next(2024);
  int ran = 0;
  for (int it = 0; it < 1000; ++it) {
    const int64_t nsp = next(1, 4) == 1 ? 1 : 2;
    const int64_t kind = next(0, 3);  // 0 dense, 1 grouped, 2 depthwise, 3 depthwise x2
    const int64_t group = kind == 0 ? 1 : kind == 1 ? next(2, 3) : next(1, 24);
    const int64_t cg = kind >= 2 ? 1 : next(1, kind == 0 ? 24 : 6);
    const int64_t mg = kind == 2 ? 1 : kind == 3 ? 2 : next(1, kind == 0 ? 20 : 6);
    shape_t x = {next(1, 3), cg * group}, w = {mg * group, cg};
    std::vector<int64_t> strides, dil, pads(2 * static_cast<size_t>(nsp));
    bool fits = true;
    for (int64_t i = 0; i < nsp; ++i) {
      const int64_t k = next(1, 7), d = next(1, 5) == 1 ? 2 : 1;
      x.push_back(next(1, 20));
      w.push_back(k);
      strides.push_back(next(1, 3) == 1 ? 2 : 1);
      dil.push_back(d);
      pads[static_cast<size_t>(i)] = next(0, k / 2 + 1);
      pads[static_cast<size_t>(i + nsp)] = next(0, k / 2 + 1);
      const int64_t span = x.back() + pads[static_cast<size_t>(i)] + pads[static_cast<size_t>(i + nsp)];
      if (span < (k - 1) * d + 1) fits = false;
    }
    if (!fits) continue;
    ++ran;
    tensor X = rnd(x, 9000 + it), W = rnd(w, 19000 + it), B = rnd({w[0]}, 29000 + it);
    const bool bias = next(0, 1) == 1;
    node n = op("Conv");
    n.attrs["group"] = ai(group);
    n.attrs["strides"] = ais(strides);
    n.attrs["dilations"] = ais(dil);
    n.attrs["pads"] = ais(pads);
    std::vector<tensor> in = {X, W};
    if (bias) in.push_back(B);
    shape_t sh;
    auto want = ref_conv(X, W, bias ? &B : nullptr, group, strides, dil, pads, &sh);
    for (bool constant : {false, true}) {
      auto r = run(n, in, constant, true);
      REQUIRE(r);
      INFO("case " << it << " X " << shape_str(x) << " W " << shape_str(w) << " group " << group << " constant "
                   << constant);
      CHECK((*r)[0].shape() == sh);
      check_close((*r)[0], want, 1e-4f, 1e-4f);
    }
  }
  CHECK(ran > 600);
}

TEST_CASE("Conv auto_pad SAME_UPPER / SAME_LOWER / VALID", "[nn]") {
  tensor X = rnd({1, 2, 7, 6}, 7), W = rnd({3, 2, 4, 3}, 8);
  struct c { std::string pad; std::vector<int64_t> strides, pads; };
  // in 7x6, k 4x3, s 2: out 4x3; total pads (4-1)*2+4-7 = 3 and (3-1)*2+3-6 = 1.
  std::vector<c> cases = {
      {"SAME_UPPER", {2, 2}, {1, 0, 2, 1}},
      {"SAME_LOWER", {2, 2}, {2, 1, 1, 0}},
      {"VALID", {2, 2}, {0, 0, 0, 0}},
      {"SAME_UPPER", {1, 1}, {1, 1, 2, 1}},
  };
  for (auto& cs : cases) {
    node n = op("Conv");
    n.attrs["auto_pad"] = as(cs.pad);
    n.attrs["strides"] = ais(cs.strides);
    n.attrs["pads"] = ais({9, 9, 9, 9});  // ignored with auto_pad
    auto r = run(n, {X, W});
    REQUIRE(r);
    shape_t s;
    auto want = ref_conv(X, W, nullptr, 1, cs.strides, {}, cs.pads, &s);
    INFO(cs.pad);
    CHECK((*r)[0].shape() == s);
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("Conv tiles a large im2col buffer", "[nn]") {
  // K = 16*9 = 144 rows x 200*200 columns is over the tile bound.
  tensor X = rnd({1, 16, 200, 200}, 1), W = rnd({4, 16, 3, 3}, 2), B = rnd({4}, 3);
  node n = op("Conv");
  n.attrs["pads"] = ais({1, 1, 1, 1});
  auto r = run(n, {X, W, B});
  REQUIRE(r);
  shape_t s;
  auto want = ref_conv(X, W, &B, 1, {}, {}, {1, 1, 1, 1}, &s);
  check_close((*r)[0], want, 1e-4f, 1e-4f);
}

TEST_CASE("FusedConv applies bias and activation", "[nn]") {
  struct c { shape_t x, w; int64_t group; const char* act; float a, b; };
  std::vector<c> cases = {
      {{2, 5, 7, 7}, {5, 1, 3, 3}, 5, "Clip", 0.f, 6.f},
      {{1, 3, 8, 8}, {4, 3, 3, 3}, 1, "Relu", 0, 0},
      {{1, 8, 6, 6}, {4, 8, 1, 1}, 1, "Sigmoid", 0, 0},
      {{1, 4, 6, 6}, {4, 2, 3, 3}, 2, "LeakyRelu", 0.2f, 0},
      {{1, 3, 9, 9}, {4, 3, 3, 3}, 1, "HardSigmoid", 0.3f, 0.4f},
      {{1, 3, 9, 9}, {4, 3, 3, 3}, 1, "HardSwish", 0, 0},
      {{1, 3, 9, 9}, {4, 3, 3, 3}, 1, "Silu", 0, 0},
      {{1, 3, 9, 9}, {4, 3, 3, 3}, 1, "Gelu", 0, 0},
      {{1, 3, 9, 9}, {4, 3, 3, 3}, 1, "Tanh", 0, 0},
      // Depthwise 3x3 with the activation fused into the kernel (Relu, Clip) or after it.
      {{1, 6, 19, 21}, {6, 1, 3, 3}, 6, "Relu", 0, 0},
      {{2, 4, 23, 30}, {4, 1, 3, 3}, 4, "Clip", -0.5f, 1.5f},
      {{1, 4, 17, 18}, {4, 1, 3, 3}, 4, "Sigmoid", 0, 0},
      {{1, 16, 12, 13}, {24, 16, 3, 3}, 1, "Clip", 0.f, 6.f},  // Winograd with a fused Clip
      {{1, 16, 12, 13}, {24, 16, 3, 3}, 1, "Silu", 0, 0},
      {{2, 17, 9, 11}, {33, 17, 3, 3}, 1, "Relu", 0, 0},  // Winograd, odd map: clamp in the output transform
      {{1, 24, 7, 9}, {40, 24, 3, 3}, 1, "HardSwish", 0, 0},  // Winograd, activation after the transform
      // Depthwise over tiny planes (channels across the vector), the activation after it; a
      // tiny map through the im2col^T x W^T path; a direct kernel with an activation after it.
      {{2, 11, 2, 2}, {11, 1, 3, 3}, 11, "HardSwish", 0, 0},
      {{1, 20, 7, 7}, {20, 1, 3, 3}, 20, "Silu", 0, 0},
      {{1, 16, 3, 4}, {16, 1, 3, 3}, 16, "Relu", 0, 0},
      {{2, 8, 4, 4}, {12, 8, 3, 3}, 1, "Silu", 0, 0},
      {{1, 3, 10, 12}, {5, 3, 3, 3}, 1, "HardSwish", 0, 0},
  };
  uint32_t seed = 500;
  for (auto& cs : cases) {
    tensor X = rnd(cs.x, seed++, -3, 3), W = rnd(cs.w, seed++), B = rnd({cs.w[0]}, seed++);
    node n = op("FusedConv", 1, 1, "com.gpugrid");
    n.attrs["group"] = ai(cs.group);
    n.attrs["pads"] = ais({1, 1, 1, 1});
    n.attrs["activation"] = as(cs.act);
    if (std::string(cs.act) == "Clip" || std::string(cs.act) == "LeakyRelu" || std::string(cs.act) == "HardSigmoid")
      n.attrs["activation_alpha"] = af(cs.a);
    if (std::string(cs.act) == "Clip" || std::string(cs.act) == "HardSigmoid") n.attrs["activation_beta"] = af(cs.b);
    auto spec = cpu::parse_activation(n);
    REQUIRE(spec);
    auto r = run(n, {X, W, B}, true);
    REQUIRE(r);
    shape_t s;
    auto want = ref_conv(X, W, &B, cs.group, {}, {}, {1, 1, 1, 1}, &s);
    for (auto& v : want) v = cpu::activation_reference(*spec, v);
    INFO(cs.act);
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("FusedConv adds its residual Z before the activation on every path", "[nn]") {
  // Z of the output's shape: added in the product's store on the GEMM paths (1x1, im2col at
  // stride 2, a 1x1 over 7x7 through several k blocks), in a pass after the others (Winograd,
  // depthwise, tiny planes, a 1x1 map, the direct kernel).
  struct c { shape_t x, w; int64_t group, stride, pad; const char* act; };
  std::vector<c> cases = {
      {{1, 24, 14, 14}, {40, 24, 1, 1}, 1, 1, 0, "Relu"},
      {{2, 16, 9, 9}, {24, 16, 1, 1}, 1, 1, 0, ""},
      {{1, 300, 7, 7}, {48, 300, 1, 1}, 1, 1, 0, "Clip"},
      {{1, 8, 15, 15}, {16, 8, 3, 3}, 1, 2, 1, "Relu"},
      {{1, 16, 12, 13}, {24, 16, 3, 3}, 1, 1, 1, "Relu"},
      {{1, 6, 19, 21}, {6, 1, 3, 3}, 6, 1, 1, "Clip"},
      {{2, 11, 2, 2}, {11, 1, 3, 3}, 11, 1, 1, "HardSwish"},
      {{2, 96, 1, 1}, {24, 96, 1, 1}, 1, 1, 0, "Sigmoid"},
      {{1, 3, 10, 12}, {5, 3, 3, 3}, 1, 1, 1, ""},
  };
  uint32_t seed = 700;
  for (auto& cs : cases) {
    INFO(shape_str(cs.x) << " " << shape_str(cs.w) << " " << cs.act);
    tensor X = rnd(cs.x, seed++, -3, 3), W = rnd(cs.w, seed++), B = rnd({cs.w[0]}, seed++);
    const std::vector<int64_t> st = {cs.stride, cs.stride}, pads = {cs.pad, cs.pad, cs.pad, cs.pad};
    shape_t s;
    auto want = ref_conv(X, W, &B, cs.group, st, {}, pads, &s);
    tensor Z = rnd(s, seed++, -2, 2);
    node n = op("FusedConv", 1, 1, "com.gpugrid");
    n.attrs["group"] = ai(cs.group);
    n.attrs["strides"] = ais(st);
    n.attrs["pads"] = ais(pads);
    if (*cs.act) n.attrs["activation"] = as(cs.act);
    if (std::string(cs.act) == "Clip") {
      n.attrs["activation_alpha"] = af(-1.f);
      n.attrs["activation_beta"] = af(2.f);
    }
    auto spec = cpu::parse_activation(n);
    REQUIRE(spec);
    auto r = run(n, {X, W, B, Z}, true);
    REQUIRE(r);
    for (size_t i = 0; i < want.size(); ++i) want[i] = cpu::activation_reference(*spec, want[i] + Z.data<float>()[i]);
    CHECK((*r)[0].shape() == s);
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("FusedConv broadcasts a residual of another shape as Add would", "[nn]") {
  tensor X = rnd({1, 8, 6, 6}, 801, -3, 3), W = rnd({16, 8, 1, 1}, 802), B = rnd({16}, 803);
  shape_t s;
  const auto conv = ref_conv(X, W, &B, 1, {}, {}, {}, &s);  // [1, 16, 6, 6]
  node n = op("FusedConv", 1, 1, "com.gpugrid");
  n.attrs["activation"] = as("Relu");
  // Per channel ([16, 1, 1]), and one that makes the output larger ([2, 16, 6, 6]).
  for (shape_t zs : {shape_t{16, 1, 1}, shape_t{2, 16, 6, 6}}) {
    INFO(shape_str(zs));
    tensor Z = rnd(zs, 804, -2, 2);
    auto r = run(n, {X, W, B, Z}, true);
    REQUIRE(r);
    const int64_t reps = zs.size() == 4 ? 2 : 1;
    REQUIRE((*r)[0].shape() == shape_t{reps, 16, 6, 6});
    std::vector<float> want;
    for (int64_t b = 0; b < reps; ++b)
      for (int64_t i = 0; i < 16 * 36; ++i)
        want.push_back(std::max(0.f, conv[i] + Z.data<float>()[zs.size() == 4 ? b * 576 + i : i / 36]));
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
  // Shapes that do not broadcast, and a Z of another type: one-line errors.
  auto bad = run(n, {X, W, B, rnd({3, 6, 6}, 805)}, true);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("does not broadcast") != std::string::npos);
  auto badt = run(n, {X, W, B, tensor::zeros(dtype::f64, {1, 16, 6, 6})}, true);
  REQUIRE_FALSE(badt);
  CHECK(badt.error().message().find("residual Z is float64") != std::string::npos);
  // A plain Conv takes no fourth input.
  CHECK_FALSE(run(op("Conv"), {X, W, B, rnd({1, 16, 6, 6}, 806)}, true));
}

TEST_CASE("FusedConv in double precision adds its residual", "[nn]") {
  tensor X = tensor::from_vector<double>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  tensor W = tensor::from_vector<double>({1, 1, 2, 2}, {1, 0, 0, 1});
  tensor Z = tensor::from_vector<double>({1, 1, 2, 2}, {-10, 0.5, -20, 1});
  node n = op("FusedConv", 1, 1, "com.gpugrid");
  n.attrs["activation"] = as("Relu");
  auto r = run(n, {X, W, tensor::zeros(dtype::f64, {1}), Z}, true);
  REQUIRE(r);
  const double* y = (*r)[0].data<double>();
  // conv: 1+5, 2+6, 4+8, 5+9 = 6, 8, 12, 14; plus Z, then ReLU.
  CHECK(y[0] == 0.0);
  CHECK(y[1] == 8.5);
  CHECK(y[2] == 0.0);
  CHECK(y[3] == 15.0);
}

TEST_CASE("FusedConv over a 1x1 map applies bias and activation", "[nn]") {
  for (const char* act : {"Relu", "HardSigmoid", "Sigmoid"}) {
    tensor X = rnd({2, 96, 1, 1}, 601, -3, 3), W = rnd({24, 96, 1, 1}, 602), B = rnd({24}, 603);
    node n = op("FusedConv", 1, 1, "com.gpugrid");
    n.attrs["activation"] = as(act);
    auto spec = cpu::parse_activation(n);
    REQUIRE(spec);
    auto r = run(n, {X, W, B}, true);
    REQUIRE(r);
    shape_t s;
    auto want = ref_conv(X, W, &B, 1, {}, {}, {}, &s);
    for (auto& v : want) v = cpu::activation_reference(*spec, v);
    INFO(act);
    CHECK((*r)[0].shape() == s);
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("FusedConv over tiny maps keeps NaN and infinities as the definition does", "[nn]") {
  // Output maps of up to 16 positions, 1x1 kernels among them (squeeze-and-excite over 1x1
  // maps, 2x2 and 3x3 maps through the im2col^T x W^T path, a map of 8 positions on the
  // pointwise one), with a NaN and an infinity planted in the input.
  struct c { shape_t x, w; int64_t stride, pad; const char* act; };
  std::vector<c> cases = {
      {{2, 24, 1, 1}, {40, 24, 1, 1}, 1, 0, "Sigmoid"},
      {{2, 12, 2, 2}, {20, 12, 1, 1}, 1, 0, "Silu"},
      {{2, 9, 3, 3}, {17, 9, 1, 1}, 1, 0, "HardSwish"},
      {{1, 16, 2, 4}, {8, 16, 1, 1}, 1, 0, "Relu"},
      {{2, 10, 4, 4}, {12, 10, 3, 3}, 1, 1, "Silu"},
      {{2, 7, 3, 3}, {5, 7, 3, 3}, 2, 1, "Tanh"},
  };
  uint32_t seed = 800;
  for (auto& cs : cases) {
    tensor X = rnd(cs.x, seed++, -3, 3), W = rnd(cs.w, seed++), B = rnd({cs.w[0]}, seed++);
    const int64_t plane = cs.x[2] * cs.x[3];
    float* x = X.data<float>();
    x[1 * plane] = std::numeric_limits<float>::quiet_NaN();  // image 0, channel 1, position 0
    x[X.numel() - plane * (cs.x[1] - 2) - 1] = std::numeric_limits<float>::infinity();  // last image, channel 1, last position
    node n = op("FusedConv", 1, 1, "com.gpugrid");
    n.attrs["strides"] = ais({cs.stride, cs.stride});
    n.attrs["pads"] = ais({cs.pad, cs.pad, cs.pad, cs.pad});
    n.attrs["activation"] = as(cs.act);
    auto spec = cpu::parse_activation(n);
    REQUIRE(spec);
    auto r = run(n, {X, W, B}, true);
    REQUIRE(r);
    shape_t s;
    auto want = ref_conv(X, W, &B, 1, {cs.stride, cs.stride}, {}, {cs.pad, cs.pad, cs.pad, cs.pad}, &s);
    for (auto& v : want) v = cpu::activation_reference(*spec, v);
    REQUIRE((*r)[0].shape() == s);
    const float* got = (*r)[0].data<float>();
    int specials = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      INFO(cs.act << " element " << i << ": got " << got[i] << ", want " << want[i]);
      if (std::isnan(want[i])) {
        CHECK(std::isnan(got[i]));
        ++specials;
      } else if (std::isinf(want[i])) {
        CHECK(got[i] == want[i]);
        ++specials;
      } else {
        CHECK(std::abs(got[i] - want[i]) <= 1e-4f + 1e-4f * std::abs(want[i]));
      }
    }
    CHECK(specials > 0);
  }
}

TEST_CASE("Conv rejects bad inputs and attributes cleanly", "[nn]") {
  tensor X = rnd({1, 4, 5, 5}, 1), W = rnd({2, 4, 3, 3}, 2);
  CHECK(run(op("Conv"), {X, W}));
  CHECK_FALSE(run(op("Conv"), {X}));                                  // missing W
  CHECK_FALSE(run(op("Conv"), {X, rnd({2, 3, 3, 3}, 3)}));            // channel mismatch
  CHECK_FALSE(run(op("Conv"), {X, rnd({2, 4, 6, 6}, 3)}));            // kernel bigger than input
  CHECK_FALSE(run(op("Conv"), {X, W, rnd({3}, 3)}));                  // bias size
  CHECK_FALSE(run(op("Conv"), {X, rnd({2, 4, 3}, 3)}));               // rank mismatch
  CHECK_FALSE(run(op("Conv"), {X, tensor::zeros(dtype::f64, {2, 4, 3, 3})}));
  CHECK_FALSE(run(op("Conv"), {rnd({4, 5}, 1), rnd({2, 4}, 1)}));
  auto with = [&](const std::string& k, attribute a) {
    node n = op("Conv");
    n.attrs[k] = a;
    return run(n, {X, W});
  };
  CHECK_FALSE(with("group", ai(3)));
  CHECK_FALSE(with("group", ai(0)));
  CHECK_FALSE(with("group", ai(-2)));
  CHECK_FALSE(with("strides", ais({0, 1})));
  CHECK_FALSE(with("strides", ais({1, 1, 1})));
  CHECK_FALSE(with("dilations", ais({-1, 1})));
  CHECK_FALSE(with("pads", ais({1, 1})));
  CHECK_FALSE(with("pads", ais({-1, 0, 0, 0})));
  CHECK_FALSE(with("auto_pad", as("SAME_MIDDLE")));
  CHECK_FALSE(with("kernel_shape", ais({2, 2})));
  CHECK_FALSE(with("dilations", ais({3, 3})));  // effective kernel 7 > 5
  auto r = run(op("Conv"), {X, rnd({2, 3, 3, 3}, 3)});
  CHECK(r.error().message().find("channel") != std::string::npos);
  // Group count that does not divide the output channels.
  node g = op("Conv");
  g.attrs["group"] = ai(2);
  CHECK_FALSE(run(g, {X, rnd({3, 2, 3, 3}, 4)}));
  // A huge pad is fine as long as shapes work out.
  node p = op("Conv");
  p.attrs["pads"] = ais({100, 0, 0, 100});
  auto rp = run(p, {X, W});
  REQUIRE(rp);
  CHECK((*rp)[0].shape() == shape_t{1, 2, 103, 103});
}

TEST_CASE("Conv double", "[nn]") {
  tensor X = tensor::from_vector<double>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  tensor W = tensor::from_vector<double>({1, 1, 2, 2}, {1, 0, 0, 1});
  auto r = run(op("Conv"), {X, W});
  REQUIRE(r);
  const double* y = (*r)[0].data<double>();
  CHECK(y[0] == 6.0);
  CHECK(y[1] == 8.0);
  CHECK(y[2] == 12.0);
  CHECK(y[3] == 14.0);
}

TEST_CASE("ConvTranspose matches the direct definition", "[nn]") {
  {
    // ONNX doc example (test_convtranspose): 3x3 input 0..8, two 3x3 ones filters.
    std::vector<float> xv = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    tensor X = tensor::from_vector<float>({1, 1, 3, 3}, xv);
    tensor W = tensor::from_vector<float>({1, 2, 3, 3}, std::vector<float>(18, 1.f));
    auto r = run(op("ConvTranspose"), {X, W});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 2, 5, 5});
    std::vector<float> plane = {0, 1, 3, 3, 2, 3, 8, 15, 12, 7, 9, 21, 36, 27, 15, 9, 20, 33, 24, 13, 6, 13, 21, 15, 8};
    std::vector<float> want = plane;
    want.insert(want.end(), plane.begin(), plane.end());
    check_close((*r)[0], want);
  }
  struct c {
    shape_t x, w;
    int64_t group;
    std::vector<int64_t> strides, dilations, pads, output_padding, output_shape;
    std::string auto_pad;
    std::vector<int64_t> want_pb;  // expected begin pads
    shape_t want_out;              // expected output spatial shape
  };
  std::vector<c> cases = {
      {{1, 2, 3, 3}, {2, 3, 3, 3}, 1, {3, 2}, {}, {}, {1, 1}, {}, "", {0, 0}, {10, 8}},
      {{2, 4, 4, 5}, {4, 2, 3, 2}, 2, {2, 2}, {1, 2}, {1, 0, 1, 1}, {}, {}, "", {1, 0}, {7, 10}},
      {{1, 1, 3, 3}, {1, 2, 3, 3}, 1, {3, 2}, {}, {}, {}, {10, 8}, "", {0, 0}, {10, 8}},
      {{1, 1, 3, 3}, {1, 2, 3, 3}, 1, {2, 2}, {}, {}, {}, {}, "SAME_UPPER", {0, 0}, {6, 6}},
      {{1, 1, 3, 3}, {1, 2, 3, 3}, 1, {2, 2}, {}, {}, {}, {}, "SAME_LOWER", {1, 1}, {6, 6}},
      {{1, 3, 5}, {3, 2, 3}, 1, {2}, {}, {1, 1}, {}, {}, "", {1}, {9}},  // 1-D
      {{1, 2, 2, 3, 2}, {2, 2, 2, 2, 3}, 1, {2, 1, 2}, {1, 2, 1}, {}, {}, {}, "", {0, 0, 0}, {4, 5, 5}},  // 3-D
      {{1, 6, 4, 4}, {6, 1, 3, 3}, 6, {2, 2}, {}, {1, 1, 1, 1}, {1, 1}, {}, "", {1, 1}, {8, 8}},  // depthwise-style
  };
  uint32_t seed = 900;
  for (auto& cs : cases) {
    tensor X = rnd(cs.x, seed++), W = rnd(cs.w, seed++);
    int64_t M = cs.w[1] * cs.group;
    tensor B = rnd({M}, seed++);
    node n = op("ConvTranspose");
    n.attrs["group"] = ai(cs.group);
    if (!cs.strides.empty()) n.attrs["strides"] = ais(cs.strides);
    if (!cs.dilations.empty()) n.attrs["dilations"] = ais(cs.dilations);
    if (!cs.pads.empty()) n.attrs["pads"] = ais(cs.pads);
    if (!cs.output_padding.empty()) n.attrs["output_padding"] = ais(cs.output_padding);
    if (!cs.output_shape.empty()) n.attrs["output_shape"] = ais(cs.output_shape);
    if (!cs.auto_pad.empty()) n.attrs["auto_pad"] = as(cs.auto_pad);
    auto r = run(n, {X, W, B});
    REQUIRE(r);
    shape_t ws = {cs.x[0], M};
    ws.insert(ws.end(), cs.want_out.begin(), cs.want_out.end());
    INFO("X " << shape_str(cs.x) << " W " << shape_str(cs.w));
    CHECK((*r)[0].shape() == ws);
    auto want = ref_conv_transpose(X, W, &B, cs.group, cs.strides, cs.dilations, cs.want_pb, cs.want_out);
    check_close((*r)[0], want, 1e-4f, 1e-4f);
  }
  // Errors.
  CHECK_FALSE(run(op("ConvTranspose"), {rnd({1, 2, 3, 3}, 1), rnd({3, 2, 3, 3}, 2)}));
  node big = op("ConvTranspose");
  big.attrs["pads"] = ais({5, 5, 5, 5});
  CHECK_FALSE(run(big, {rnd({1, 1, 2, 2}, 1), rnd({1, 1, 3, 3}, 2)}));
  node neg = op("ConvTranspose");
  neg.attrs["output_padding"] = ais({-1, 0});
  CHECK_FALSE(run(neg, {rnd({1, 1, 2, 2}, 1), rnd({1, 1, 3, 3}, 2)}));
}

TEST_CASE("ConvInteger and QLinearConv", "[nn]") {
  {
    // test_convinteger_without_padding.
    tensor x = tensor::from_vector<uint8_t>({1, 1, 3, 3}, {2, 3, 4, 5, 6, 7, 8, 9, 10});
    tensor w = tensor::from_vector<uint8_t>({1, 1, 2, 2}, {1, 1, 1, 1});
    auto r = run(op("ConvInteger", 1, 10), {x, w, tensor::scalar<uint8_t>(1)});
    REQUIRE(r);
    REQUIRE((*r)[0].type() == dtype::i32);
    const int32_t* y = (*r)[0].data<int32_t>();
    CHECK(y[0] == 12);
    CHECK(y[1] == 16);
    CHECK(y[2] == 24);
    CHECK(y[3] == 28);
    CHECK_FALSE(run(op("ConvInteger", 1, 10), {rnd({1, 1, 3, 3}, 1), w}));
  }
  // QLinearConv against dequantize -> direct conv -> quantize, per-channel weights.
  std::mt19937 gen(7);
  const int64_t C = 4, M = 3, group = 1;
  tensor xq = tensor::zeros(dtype::u8, {1, C, 6, 5}), wq = tensor::zeros(dtype::i8, {M, C, 3, 3});
  for (int64_t i = 0; i < xq.numel(); ++i) xq.data<uint8_t>()[i] = static_cast<uint8_t>(gen() % 256);
  for (int64_t i = 0; i < wq.numel(); ++i) wq.data<int8_t>()[i] = static_cast<int8_t>(static_cast<int>(gen() % 256) - 128);
  const uint8_t xzp = 120;
  const std::vector<int8_t> wzp = {0, 3, -2};
  const float xs = 0.02f, ys = 0.9f;
  const std::vector<float> ws = {0.01f, 0.02f, 0.015f};
  tensor B = tensor::from_vector<int32_t>({M}, {100, -2000, 35});
  tensor xf = tensor::zeros(dtype::f32, xq.shape()), wf = tensor::zeros(dtype::f32, wq.shape());
  for (int64_t i = 0; i < xq.numel(); ++i) xf.data<float>()[i] = float(xq.data<uint8_t>()[i]) - xzp;
  for (int64_t i = 0; i < wq.numel(); ++i) wf.data<float>()[i] = float(wq.data<int8_t>()[i]) - wzp[i / (C * 9)];
  node n = op("QLinearConv", 1, 10);
  n.attrs["pads"] = ais({1, 1, 1, 1});
  auto r = run(n, {xq, tensor::scalar<float>(xs), tensor::scalar<uint8_t>(xzp), wq,
                   tensor::from_vector<float>({M}, ws), tensor::from_vector<int8_t>({M}, wzp),
                   tensor::scalar<float>(ys), tensor::scalar<uint8_t>(128), B});
  REQUIRE(r);
  shape_t s;
  auto acc = ref_conv(xf, wf, nullptr, group, {}, {}, {1, 1, 1, 1}, &s);
  REQUIRE((*r)[0].shape() == s);
  REQUIRE((*r)[0].type() == dtype::u8);
  const int64_t S = 30;
  int bad = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    int64_t m = static_cast<int64_t>(i) / S;
    double v = std::nearbyint((acc[i] + B.data<int32_t>()[m]) * (double(xs) * ws[m] / ys)) + 128;
    int want = static_cast<int>(std::min(255.0, std::max(0.0, v)));
    if ((*r)[0].data<uint8_t>()[i] != want) ++bad;
  }
  CHECK(bad == 0);
  // Wrong parameter shapes fail cleanly.
  CHECK_FALSE(run(n, {xq, tensor::scalar<float>(xs), tensor::scalar<uint8_t>(xzp), wq,
                      tensor::from_vector<float>({2}, {1, 1}), tensor::from_vector<int8_t>({M}, wzp),
                      tensor::scalar<float>(ys), tensor::scalar<uint8_t>(128)}));
  CHECK_FALSE(run(n, {xq, tensor::scalar<float>(xs)}));
}
