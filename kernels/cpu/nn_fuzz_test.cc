// Random attributes and shapes thrown at the nn ops: each run must either succeed with an
// output of the shape it claims or fail with a status; never crash or read out of bounds
// (run this under -fsanitize=address,undefined to check the latter).
#include <cstdlib>

#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

struct fuzzer {
  std::mt19937 g;
  explicit fuzzer(uint32_t seed) : g(seed) {}
  int64_t in(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g); }
  bool coin(double p = 0.5) { return std::uniform_real_distribution<double>(0, 1)(g) < p; }
  // Mostly sensible values with some nonsense.
  int64_t val(int64_t lo, int64_t hi) {
    if (coin(0.05)) return in(-3, 0);
    if (coin(0.02)) return in(50, 100000);
    return in(lo, hi);
  }
  std::vector<int64_t> vals(size_t n, int64_t lo, int64_t hi) {
    if (coin(0.05)) n += in(1, 2);
    std::vector<int64_t> v;
    for (size_t i = 0; i < n; ++i) v.push_back(val(lo, hi));
    return v;
  }
  shape_t shape(size_t rank, int64_t hi) {
    shape_t s;
    for (size_t i = 0; i < rank; ++i) s.push_back(coin(0.03) ? 0 : in(1, hi));
    return s;
  }
};

void check_result(const expected<std::vector<tensor>>& r) {
  if (!r) {
    CHECK_FALSE(r.error().message().empty());
    return;
  }
  for (const tensor& t : *r) {
    if (!t.defined()) continue;
    int64_t n = 0;
    CHECK(checked_num_elements(t.shape(), int64_t{1} << 34, &n));
  }
}

}  // namespace

TEST_CASE("nn ops survive random attributes and shapes", "[nn]") {
  // GG_NN_FUZZ_ITERS / GG_NN_FUZZ_SEED run a longer or different campaign.
  const char* iters_env = std::getenv("GG_NN_FUZZ_ITERS");
  const char* seed_env = std::getenv("GG_NN_FUZZ_SEED");
  const int iters = iters_env ? std::atoi(iters_env) : 1500;
  fuzzer f(seed_env ? static_cast<uint32_t>(std::atoi(seed_env)) : 12345u);
  const std::vector<std::string> pads = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "bogus"};
  for (int it = 0; it < iters; ++it) {
    const int kind = static_cast<int>(f.in(0, 6));
    const size_t nsp = static_cast<size_t>(f.in(1, 3));
    if (kind <= 2) {  // Conv / FusedConv / ConvTranspose
      const int64_t group = f.coin(0.3) ? f.val(1, 4) : 1;
      const int64_t cg = f.in(1, 3), mg = f.in(1, 3);
      shape_t x = {f.in(1, 2), cg * std::max<int64_t>(group, 1)};
      shape_t xs = f.shape(nsp, 7);
      x.insert(x.end(), xs.begin(), xs.end());
      shape_t w = kind == 2 ? shape_t{x[1], mg} : shape_t{mg * std::max<int64_t>(group, 1), cg};
      shape_t ks = f.shape(nsp, 4);
      w.insert(w.end(), ks.begin(), ks.end());
      if (f.coin(0.05)) w[1] += 1;
      node n = kind == 1 ? op("FusedConv", 1, 1, "com.gpugrid") : op(kind == 2 ? "ConvTranspose" : "Conv");
      n.attrs["group"] = ai(group);
      if (f.coin()) n.attrs["strides"] = ais(f.vals(nsp, 1, 3));
      if (f.coin()) n.attrs["dilations"] = ais(f.vals(nsp, 1, 3));
      if (f.coin()) n.attrs["pads"] = ais(f.vals(2 * nsp, 0, 3));
      if (f.coin(0.3)) n.attrs["auto_pad"] = as(pads[f.in(0, 4)]);
      if (kind == 1) n.attrs["activation"] = as(f.coin() ? "Relu" : "Gelu");
      if (kind == 2 && f.coin(0.3)) n.attrs["output_padding"] = ais(f.vals(nsp, 0, 2));
      if (kind == 2 && f.coin(0.2)) n.attrs["output_shape"] = ais(f.vals(nsp, 1, 20));
      std::vector<tensor> in = {rnd(x, it), rnd(w, it + 1)};
      if (f.coin()) in.push_back(rnd({kind == 2 ? mg * std::max<int64_t>(group, 1) : w[0]}, it + 2));
      check_result(run(n, in));
    } else if (kind <= 4) {  // pools
      const char* type = kind == 3 ? (f.coin() ? "MaxPool" : "LpPool") : "AveragePool";
      shape_t x = {f.in(1, 2), f.in(1, 3)};
      shape_t xs = f.shape(nsp, 8);
      x.insert(x.end(), xs.begin(), xs.end());
      node n = op(type, f.coin(0.3) && kind == 3 ? 2 : 1);
      if (f.coin(0.97)) n.attrs["kernel_shape"] = ais(f.vals(nsp, 1, 4));
      if (f.coin()) n.attrs["strides"] = ais(f.vals(nsp, 1, 3));
      if (f.coin()) n.attrs["dilations"] = ais(f.vals(nsp, 1, 2));
      if (f.coin()) n.attrs["pads"] = ais(f.vals(2 * nsp, 0, 3));
      if (f.coin(0.3)) n.attrs["auto_pad"] = as(pads[f.in(0, 4)]);
      if (f.coin(0.3)) n.attrs["ceil_mode"] = ai(1);
      if (f.coin(0.3)) n.attrs["count_include_pad"] = ai(1);
      if (f.coin(0.2)) n.attrs["storage_order"] = ai(f.in(0, 2));
      check_result(run(n, {rnd(x, it)}));
    } else if (kind == 5) {  // Resize
      const size_t r = static_cast<size_t>(f.in(1, 4));
      shape_t x = f.shape(r, 5);
      static const char* modes[] = {"nearest", "linear", "cubic"};
      static const char* ctms[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                   "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
      static const char* nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
      node n = op("Resize", 1, 19);
      n.attrs["mode"] = as(modes[f.in(0, 2)]);
      n.attrs["coordinate_transformation_mode"] = as(ctms[f.in(0, 6)]);
      n.attrs["nearest_mode"] = as(nms[f.in(0, 3)]);
      if (f.coin(0.3)) n.attrs["exclude_outside"] = ai(1);
      if (f.coin(0.2)) n.attrs["antialias"] = ai(1);
      std::vector<int64_t> axes;
      if (f.coin(0.3)) {
        for (size_t d = 0; d < r; ++d)
          if (f.coin()) axes.push_back(static_cast<int64_t>(d) - (f.coin() ? static_cast<int64_t>(r) : 0));
        n.attrs["axes"] = ais(axes);
      }
      const size_t na = axes.empty() ? r : axes.size();
      tensor roi = tensor::zeros(dtype::f32, {static_cast<int64_t>(2 * na)});
      for (size_t i = 0; i < na; ++i) {
        roi.data<float>()[i] = static_cast<float>(f.in(-5, 5)) / 10.f;
        roi.data<float>()[na + i] = static_cast<float>(f.in(5, 15)) / 10.f;
      }
      std::vector<tensor> in = {rnd(x, it), roi};
      if (f.coin()) {
        tensor sc = tensor::zeros(dtype::f32, {static_cast<int64_t>(na)});
        for (size_t i = 0; i < na; ++i) sc.data<float>()[i] = static_cast<float>(f.in(1, 40)) / 10.f;
        if (f.coin(0.05)) sc.data<float>()[0] = 0.f;
        in.push_back(sc);
      } else {
        tensor sz = tensor::zeros(dtype::i64, {static_cast<int64_t>(na)});
        for (size_t i = 0; i < na; ++i) sz.data<int64_t>()[i] = f.val(1, 9);
        in.push_back(tensor());
        in.push_back(sz);
        if (f.coin(0.3)) n.attrs["keep_aspect_ratio_policy"] = as(f.coin() ? "not_larger" : "not_smaller");
      }
      check_result(run(n, in));
    } else {  // MatMul / Gemm
      if (f.coin()) {
        shape_t a = f.shape(static_cast<size_t>(f.in(1, 4)), 4), b = f.shape(static_cast<size_t>(f.in(1, 4)), 4);
        if (f.coin(0.7) && a.size() >= 1 && b.size() >= 2) b[b.size() - 2] = a.back();
        check_result(run(op("MatMul"), {rnd(a, it), rnd(b, it + 1)}));
      } else {
        node n = op("Gemm");
        n.attrs["transA"] = ai(f.in(0, 1));
        n.attrs["transB"] = ai(f.in(0, 1));
        std::vector<tensor> in = {rnd(f.shape(2, 5), it), rnd(f.shape(2, 5), it + 1)};
        if (f.coin()) in.push_back(rnd(f.shape(static_cast<size_t>(f.in(0, 2)), 5), it + 2));
        check_result(run(n, in));
      }
    }
  }
}
