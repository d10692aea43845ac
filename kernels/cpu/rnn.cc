// LSTM, GRU and RNN (ONNX opsets 7 to 22): every direction, layout 0 and 1, sequence_lens,
// initial states, LSTM peepholes and input_forget, GRU linear_before_reset, clip and every
// activation the spec lists (with activation_alpha / activation_beta consumed in order by the
// activations that take them, as onnxruntime does).
//
// Per direction: one product for the input projections of the whole sequence (X W^T plus the
// biases that do not depend on the state), then per time step one product of the batch's
// hidden states with R^T (R packed once per run) and one fused pass over the gates.
// Sequences shorter than seq_length stop early: their Y rows stay zero and Y_h / Y_c hold the
// state after their last step (for the reverse direction, the state after time 0).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/contrib_ops.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

enum class cell { rnn, gru, lstm };

enum class fn { relu, tanh, sigmoid, affine, leaky_relu, thresholded_relu, scaled_tanh, hard_sigmoid, elu, softsign, softplus };

struct rnn_act {
  fn f = fn::tanh;
  float alpha = 0.f, beta = 0.f;
};

// The spec's activation names (compared without case, as onnxruntime does), whether each takes
// alpha / beta, and their defaults when the lists run out.
struct act_info {
  const char* name;
  fn f;
  bool uses_alpha, uses_beta;
  float alpha, beta;
};
constexpr act_info k_acts[] = {
    {"relu", fn::relu, false, false, 0.f, 0.f},
    {"tanh", fn::tanh, false, false, 0.f, 0.f},
    {"sigmoid", fn::sigmoid, false, false, 0.f, 0.f},
    {"affine", fn::affine, true, true, 1.f, 0.f},
    {"leakyrelu", fn::leaky_relu, true, false, 0.01f, 0.f},
    {"thresholdedrelu", fn::thresholded_relu, true, false, 1.f, 0.f},
    {"scaledtanh", fn::scaled_tanh, true, true, 1.f, 1.f},
    {"hardsigmoid", fn::hard_sigmoid, true, true, 0.2f, 0.5f},
    {"elu", fn::elu, true, false, 1.f, 0.f},
    {"softsign", fn::softsign, false, false, 0.f, 0.f},
    {"softplus", fn::softplus, false, false, 0.f, 0.f},
};

// x[i] = act(x[i]); sigmoid, tanh, relu, leaky relu and hard sigmoid take the vector paths.
void apply(const rnn_act& a, float* x, int64_t n) {
  activation_spec s;
  switch (a.f) {
    case fn::relu: s.kind = activation_kind::relu; break;
    case fn::tanh: s.kind = activation_kind::tanh; break;
    case fn::sigmoid: s.kind = activation_kind::sigmoid; break;
    case fn::leaky_relu: s = {activation_kind::leaky_relu, a.alpha, 0.f}; break;
    case fn::hard_sigmoid: s = {activation_kind::hard_sigmoid, a.alpha, a.beta}; break;
    case fn::affine:
      for (int64_t i = 0; i < n; ++i) x[i] = a.alpha * x[i] + a.beta;
      return;
    case fn::thresholded_relu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > a.alpha ? x[i] : 0.f;
      return;
    case fn::scaled_tanh:
      for (int64_t i = 0; i < n; ++i) x[i] = a.alpha * std::tanh(a.beta * x[i]);
      return;
    case fn::elu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0.f ? x[i] : a.alpha * std::expm1(x[i]);
      return;
    case fn::softsign:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::fabs(x[i]));
      return;
    case fn::softplus:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] + std::log1p(std::exp(-x[i])) : std::log1p(std::exp(x[i]));
      return;
  }
  apply_activation(s, x, n);
}

inline void clip_to(float* x, int64_t n, float c) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::min(c, std::max(-c, x[i]));
}

class rnn_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n, cell kind) {
    auto k = std::make_unique<rnn_kernel>();
    k->kind_ = kind;
    k->gates_ = kind == cell::lstm ? 4 : kind == cell::gru ? 3 : 1;
    const int per_dir = kind == cell::lstm ? 3 : kind == cell::gru ? 2 : 1;
    const std::string dir = n.attr_string("direction", "forward");
    if (dir == "forward") k->dirs_ = 1;
    else if (dir == "reverse") k->dirs_ = 1, k->reverse_ = true;
    else if (dir == "bidirectional") k->dirs_ = 2;
    else return invalid_input("{}: direction must be forward, reverse or bidirectional, not \"{}\"", n.describe(), dir);
    k->hidden_ = n.attr_int("hidden_size", 0);
    if (n.has_attr("hidden_size") && k->hidden_ <= 0)
      return invalid_input("{}: hidden_size must be positive, got {}", n.describe(), k->hidden_);
    k->layout_ = static_cast<int>(n.attr_int("layout", 0));
    if (k->layout_ != 0 && k->layout_ != 1)
      return invalid_input("{}: layout must be 0 or 1, got {}", n.describe(), k->layout_);
    if (n.has_attr("clip")) {
      k->clip_ = n.attr_float("clip", 0.f);
      if (!(k->clip_ > 0.f)) return invalid_input("{}: clip must be positive, got {}", n.describe(), k->clip_);
    }
    k->lbr_ = n.attr_int("linear_before_reset", 0) != 0;
    k->input_forget_ = n.attr_int("input_forget", 0) != 0;

    std::vector<std::string> names;
    if (auto it = n.attrs.find("activations"); it != n.attrs.end()) names = it->second.strings;
    if (names.empty()) {
      static const char* defaults[3][3] = {{"tanh"}, {"sigmoid", "tanh"}, {"sigmoid", "tanh", "tanh"}};
      const int row = kind == cell::rnn ? 0 : kind == cell::gru ? 1 : 2;
      for (int d = 0; d < k->dirs_; ++d)
        for (int j = 0; j < per_dir; ++j) names.push_back(defaults[row][j]);
    } else if (static_cast<int>(names.size()) == per_dir && k->dirs_ == 2) {
      names.insert(names.end(), names.begin(), names.end());
    } else if (static_cast<int>(names.size()) != per_dir * k->dirs_) {
      return invalid_input("{}: activations lists {} functions, expected {}", n.describe(), names.size(),
                           per_dir * k->dirs_);
    }
    const std::vector<float> alphas = n.attr_floats("activation_alpha");
    const std::vector<float> betas = n.attr_floats("activation_beta");
    size_t ai = 0, bi = 0;
    for (const std::string& raw : names) {
      std::string lower;
      for (char c : raw) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const act_info* info = nullptr;
      for (const act_info& a : k_acts)
        if (lower == a.name) info = &a;
      if (!info) return invalid_input("{}: unknown activation \"{}\"", n.describe(), raw);
      rnn_act a{info->f, info->alpha, info->beta};
      if (info->uses_alpha && ai < alphas.size()) a.alpha = alphas[ai++];
      if (info->uses_beta && bi < betas.size()) a.beta = betas[bi++];
      k->acts_.push_back(a);
    }
    k->per_dir_ = per_dir;
    return std::unique_ptr<kernel>(std::move(k));
  }

  status run(kernel_context& ctx) override {
    const size_t max_in = kind_ == cell::lstm ? 8 : 6;
    GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 3, max_in, 3));
    const tensor& X = *ctx.input(0);
    const tensor& W = *ctx.input(1);
    const tensor& R = *ctx.input(2);
    const tensor* Bt = helpers::optional_input(ctx, 3);
    const tensor* lens_t = helpers::optional_input(ctx, 4);
    const tensor* h0_t = helpers::optional_input(ctx, 5);
    const tensor* c0_t = kind_ == cell::lstm ? helpers::optional_input(ctx, 6) : nullptr;
    const tensor* P_t = kind_ == cell::lstm ? helpers::optional_input(ctx, 7) : nullptr;
    for (const tensor* t : {&X, &W, &R, Bt, h0_t, c0_t, P_t})
      if (t && !dense::is_float_like(t->type()))
        return ctx.fail("X, W, R, B, initial_h, initial_c and P must be float, float16 or bfloat16, got {}",
                        dtype_name(t->type()));
    if (X.rank() != 3) return ctx.fail("X must be 3-D, got {}", shape_str(X.shape()));
    const int64_t S = layout_ ? X.dim(1) : X.dim(0), Bn = layout_ ? X.dim(0) : X.dim(1), I = X.dim(2);
    const int64_t D = dirs_, G = gates_;
    if (R.rank() != 3) return ctx.fail("R must be 3-D, got {}", shape_str(R.shape()));
    const int64_t H = hidden_ > 0 ? hidden_ : R.dim(2);
    if (H <= 0) return ctx.fail("hidden size is 0");
    if (W.shape() != shape_t{D, G * H, I})
      return ctx.fail("W must be [{}, {}, {}], got {}", D, G * H, I, shape_str(W.shape()));
    if (R.shape() != shape_t{D, G * H, H})
      return ctx.fail("R must be [{}, {}, {}], got {}", D, G * H, H, shape_str(R.shape()));
    if (Bt && Bt->shape() != shape_t{D, 2 * G * H})
      return ctx.fail("B must be [{}, {}], got {}", D, 2 * G * H, shape_str(Bt->shape()));
    const shape_t state_shape = layout_ ? shape_t{Bn, D, H} : shape_t{D, Bn, H};
    if (h0_t && h0_t->shape() != state_shape)
      return ctx.fail("initial_h must be {}, got {}", shape_str(state_shape), shape_str(h0_t->shape()));
    if (c0_t && c0_t->shape() != state_shape)
      return ctx.fail("initial_c must be {}, got {}", shape_str(state_shape), shape_str(c0_t->shape()));
    if (P_t && P_t->shape() != shape_t{D, 3 * H})
      return ctx.fail("P must be [{}, {}], got {}", D, 3 * H, shape_str(P_t->shape()));
    std::vector<int64_t> lens(static_cast<size_t>(Bn), S);
    if (lens_t) {
      if (lens_t->type() != dtype::i32 && lens_t->type() != dtype::i64)
        return ctx.fail("sequence_lens must be int32, got {}", dtype_name(lens_t->type()));
      if (lens_t->numel() != Bn) return ctx.fail("sequence_lens has {} values for a batch of {}", lens_t->numel(), Bn);
      for (int64_t b = 0; b < Bn; ++b) {
        lens[b] = lens_t->as_int64(b);
        if (lens[b] < 0 || lens[b] > S)
          return ctx.fail("sequence_lens[{}] = {} is outside [0, {}]", b, lens[b], S);
      }
    }
    const dtype out_type = X.type();
    tensor scratch_y, scratch_h, scratch_c;
    tensor* Y = nullptr;
    if (ctx.output_wanted(0)) {
      GG_ASSIGN_OR_RETURN(Y, ctx.output(0, out_type, layout_ ? shape_t{Bn, S, D, H} : shape_t{S, D, Bn, H}));
    }
    tensor* Yh = nullptr;
    tensor* Yc = nullptr;
    if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
      GG_ASSIGN_OR_RETURN(Yh, ctx.output_for_overwrite(1, out_type, state_shape));
    }
    if (kind_ == cell::lstm && ctx.num_outputs() > 2 && ctx.output_wanted(2)) {
      GG_ASSIGN_OR_RETURN(Yc, ctx.output_for_overwrite(2, out_type, state_shape));
    }

    std::vector<float> xb, wb, rb, bb, hb, cb, pb;
    const float* x = dense::as_float(X, &xb);
    const float* w = dense::as_float(W, &wb);
    const float* r = dense::as_float(R, &rb);
    const float* bias = Bt ? dense::as_float(*Bt, &bb) : nullptr;
    const float* h0 = h0_t ? dense::as_float(*h0_t, &hb) : nullptr;
    const float* c0 = c0_t ? dense::as_float(*c0_t, &cb) : nullptr;
    const float* peep = P_t ? dense::as_float(*P_t, &pb) : nullptr;

    const int64_t GH = G * H;
    int64_t max_len = 0;
    for (int64_t l : lens) max_len = std::max(max_len, l);
    std::vector<float> xw(static_cast<size_t>(S * Bn * GH)), proj_bias(GH), rbh(H);
    std::vector<float> h(static_cast<size_t>(Bn * H)), c(static_cast<size_t>(Bn * H));
    std::vector<float> rec(static_cast<size_t>(Bn * GH)), tmp(static_cast<size_t>(Bn * 4 * H));
    std::vector<float> yrow(H);
    auto x_row = [&](int64_t t, int64_t b) { return layout_ ? b * S + t : t * Bn + b; };
    auto state_off = [&](int64_t d, int64_t b) { return (layout_ ? b * D + d : d * Bn + b) * H; };
    auto y_off = [&](int64_t t, int64_t d, int64_t b) {
      return layout_ ? ((b * S + t) * D + d) * H : ((t * D + d) * Bn + b) * H;
    };

    for (int64_t d = 0; d < D; ++d) {
      const bool rev = D == 2 ? d == 1 : reverse_;
      const rnn_act* act = acts_.data() + d * per_dir_;
      const float* wd = w + d * GH * I;
      const float* rd = r + d * GH * H;
      const float* wbias = bias ? bias + d * 2 * GH : nullptr;
      const float* rbias = bias ? wbias + GH : nullptr;
      const float* pd = peep ? peep + d * 3 * H : nullptr;
      // Biases folded into the input projection: all of them, except GRU's Rbh with
      // linear_before_reset (it is added inside r * (H Rh^T + Rbh)).
      std::fill(proj_bias.begin(), proj_bias.end(), 0.f);
      std::fill(rbh.begin(), rbh.end(), 0.f);
      if (bias) {
        for (int64_t j = 0; j < GH; ++j) proj_bias[j] = wbias[j] + rbias[j];
        if (kind_ == cell::gru && lbr_)
          for (int64_t j = 0; j < H; ++j) proj_bias[2 * H + j] = wbias[2 * H + j], rbh[j] = rbias[2 * H + j];
      }
      if (S * Bn > 0 && !dense::matmul(&ctx.pool(), S * Bn, GH, I, x, I, wd, I, true, xw.data(), GH, 1.f, proj_bias.data()))
        return ctx.fail("out of memory for the input projection");
      // Recurrent weights: all gates, or for GRU without linear_before_reset z and r in one
      // product and h in a second one (its input is r * H).
      const bool split = kind_ == cell::gru && !lbr_;
      dense::right_matrix r_main(rd, H, true, H, split ? 2 * H : GH, Bn > 2);
      dense::right_matrix r_h(rd + 2 * H * H, H, true, H, H, split && Bn > 2);
      for (int64_t b = 0; b < Bn; ++b) {
        const int64_t so = state_off(d, b);
        for (int64_t j = 0; j < H; ++j) {
          h[b * H + j] = h0 ? h0[so + j] : 0.f;
          c[b * H + j] = c0 ? c0[so + j] : 0.f;
        }
      }
      const int64_t rec_ld = split ? 2 * H : GH;
      for (int64_t s = 0; s < max_len; ++s) {
        if (!dense::matmul(&ctx.pool(), Bn, h.data(), H, r_main, rec.data(), rec_ld))
          return ctx.fail("out of memory for the recurrent product");
        if (kind_ == cell::gru && split) {
          // z and r, then r * H_{t-1} into tmp for the h gate's product.
          for (int64_t b = 0; b < Bn; ++b) {
            float* zr = tmp.data() + b * 4 * H;  // [z | r | r*h]
            if (s >= lens[b]) continue;
            const int64_t t = rev ? lens[b] - 1 - s : s;
            const float* xr = xw.data() + x_row(t, b) * GH;
            const float* g = rec.data() + b * rec_ld;
            for (int64_t j = 0; j < 2 * H; ++j) zr[j] = xr[j] + g[j];
            if (clip_ > 0.f) clip_to(zr, 2 * H, clip_);
            apply(act[0], zr, 2 * H);
            for (int64_t j = 0; j < H; ++j) zr[2 * H + j] = zr[H + j] * h[b * H + j];
          }
          std::vector<float>& rh_out = c;  // GRU has no cell state: reuse its buffer
          if (!dense::matmul(&ctx.pool(), Bn, tmp.data() + 2 * H, 4 * H, r_h, rh_out.data(), H))
            return ctx.fail("out of memory for the recurrent product");
        }
        for (int64_t b = 0; b < Bn; ++b) {
          if (s >= lens[b]) continue;
          const int64_t t = rev ? lens[b] - 1 - s : s;
          const float* xr = xw.data() + x_row(t, b) * GH;
          const float* g = rec.data() + b * rec_ld;
          float* hb_ = h.data() + b * H;
          float* gt = tmp.data() + b * 4 * H;
          if (kind_ == cell::rnn) {
            for (int64_t j = 0; j < H; ++j) gt[j] = xr[j] + g[j];
            if (clip_ > 0.f) clip_to(gt, H, clip_);
            apply(act[0], gt, H);
            std::copy(gt, gt + H, hb_);
          } else if (kind_ == cell::gru) {
            float* hh = gt + 3 * H;
            if (split) {
              const float* rhr = c.data() + b * H;
              for (int64_t j = 0; j < H; ++j) hh[j] = xr[2 * H + j] + rhr[j];
            } else {
              for (int64_t j = 0; j < 2 * H; ++j) gt[j] = xr[j] + g[j];
              if (clip_ > 0.f) clip_to(gt, 2 * H, clip_);
              apply(act[0], gt, 2 * H);
              for (int64_t j = 0; j < H; ++j) hh[j] = xr[2 * H + j] + gt[H + j] * (g[2 * H + j] + rbh[j]);
            }
            if (clip_ > 0.f) clip_to(hh, H, clip_);
            apply(act[1], hh, H);
            const float* z = gt;
            for (int64_t j = 0; j < H; ++j) hb_[j] = (1.f - z[j]) * hh[j] + z[j] * hb_[j];
          } else {
            // Gate order in W, R, B: i, o, f, c. gt holds [i | o | f | c~].
            float* cb_ = c.data() + b * H;
            for (int64_t j = 0; j < GH; ++j) gt[j] = xr[j] + g[j];
            float *gi = gt, *go = gt + H, *gf = gt + 2 * H, *gc = gt + 3 * H;
            if (pd)
              for (int64_t j = 0; j < H; ++j) gi[j] += pd[j] * cb_[j], gf[j] += pd[2 * H + j] * cb_[j];
            if (clip_ > 0.f) {
              clip_to(gi, H, clip_);
              clip_to(gf, H, clip_);
              clip_to(gc, H, clip_);
            }
            apply(act[0], gi, H);
            if (input_forget_) {
              for (int64_t j = 0; j < H; ++j) gf[j] = 1.f - gi[j];
            } else {
              apply(act[0], gf, H);
            }
            apply(act[1], gc, H);
            for (int64_t j = 0; j < H; ++j) cb_[j] = gf[j] * cb_[j] + gi[j] * gc[j];
            if (pd)
              for (int64_t j = 0; j < H; ++j) go[j] += pd[H + j] * cb_[j];
            if (clip_ > 0.f) clip_to(go, H, clip_);
            apply(act[0], go, H);
            std::copy(cb_, cb_ + H, yrow.data());
            apply(act[2], yrow.data(), H);
            for (int64_t j = 0; j < H; ++j) hb_[j] = go[j] * yrow[j];
          }
          if (Y) dense::store_float(*Y, y_off(t, d, b), hb_, H);
        }
      }
      for (int64_t b = 0; b < Bn; ++b) {
        if (Yh) dense::store_float(*Yh, state_off(d, b), h.data() + b * H, H);
        if (Yc) dense::store_float(*Yc, state_off(d, b), c.data() + b * H, H);
      }
    }
    return status::ok();
  }

 private:
  cell kind_ = cell::rnn;
  int64_t gates_ = 1, hidden_ = 0;
  int dirs_ = 1, per_dir_ = 1, layout_ = 0;
  bool reverse_ = false, lbr_ = false, input_forget_ = false;
  float clip_ = 0.f;
  std::vector<rnn_act> acts_;
};

}  // namespace

void register_rnn_ops(op_registry& r) {
  r.add("RNN", [](const node& n) { return rnn_kernel::make(n, cell::rnn); });
  r.add("GRU", [](const node& n) { return rnn_kernel::make(n, cell::gru); });
  r.add("LSTM", [](const node& n) { return rnn_kernel::make(n, cell::lstm); });
}

}  // namespace gpugrid::cpu
