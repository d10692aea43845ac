// onnxruntime's attention operators (domain com.microsoft), as transformer exporters and
// onnxruntime-genai's model builder write them:
//   RotaryEmbedding: input [B, S, N*H] or [B, N, S, H]; position_ids [B, S] (or one start
//     position); cos/sin caches [max_position, rotary_dim / 2]; interleaved or half-split pairs;
//     dimensions past rotary_embedding_dim are copied.
//   GroupQueryAttention: query [B, S, N*H] (or packed Q|K|V when key is omitted), key/value
//     [B, S, Nkv*H], a KV cache past_key/past_value [B, Nkv, P, H] -> present [B, Nkv,
//     max(P, total), H], seqlens_k [B] (total length - 1 per sequence), total_sequence_length,
//     optional rotary embeddings from cos/sin caches (do_rotary, position_ids), attention_bias
//     [B|1, N|1, S, total], local_window_size, softcap, smooth_softmax, head_sink. Each query attends causally to the keys of its own sequence.
//   MultiHeadAttention: query [B, S, D], key/value [B, L, D] / [B, L, Dv] (or [B, N, L, H]
//     heads, without bias or past; or packed: query [B, S, N, 3, H], key [B, L, N, 2, H]),
//     optional bias,
//     key_padding_mask ([B] lengths or [B, T] 0/1), attention_bias [B|1, N|1, S, T], past_key /
//     past_value [B, N, P, H] -> present, unidirectional.
//   Attention: input [B, S, Din] x weights [Din, Dq+Dk+Dv] (+ bias), then as
//     MultiHeadAttention with mask_index ([B] lengths, [B, T] or [B, S, T] 0/1), past [2, B, N,
//     P, H] -> present, unidirectional, qkv_hidden_sizes.
// Masked positions get mask_filter_value (default -10000) added, as onnxruntime does; causal
// and window limits exclude keys outright. Inputs may be float, float16 or bfloat16 (math in
// float); per (batch, head) the scores and the weighted sum are two float products.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/cpu/contrib_ops.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

status check_float(kernel_context& ctx, const tensor* t, const char* what) {
  if (t && !dense::is_float_like(t->type()))
    return ctx.fail("{} must be float, float16 or bfloat16, got {}", what, dtype_name(t->type()));
  return status::ok();
}

// Strided views of Q (rows = query positions), K and V (rows = key positions) and the output,
// per (batch, head).
struct strided {
  const float* p = nullptr;
  int64_t b = 0, h = 0, row = 0;  // strides in elements
};

struct attention_problem {
  int64_t B = 0, N = 0, Nkv = 0, S = 0, T = 0, H = 0, Hv = 0;
  strided q, k, v;
  float* out = nullptr;
  int64_t out_b = 0, out_h = 0, out_row = 0;
  float scale = 1.f, softcap = 0.f;
  bool smooth = false;           // an extra logit of 0 in every softmax
  const float* sink = nullptr;   // or one extra logit per head (head_sink)
  // Keys [lo, hi) that query row s of (b, n) may see at all.
  std::function<void(int64_t b, int64_t s, int64_t* lo, int64_t* hi)> range;
  // Adds masks and biases to the row of scores (T values) of (b, n, s); may be empty.
  std::function<void(int64_t b, int64_t n, int64_t s, float* row)> add;
};

void attend(kernel_context& ctx, const attention_problem& p) {
  const int64_t group = p.N / p.Nkv;
  // Query rows in chunks: a chunk needs only the keys up to its last row's limit (half the
  // work of a causal prompt).
  constexpr int64_t chunk = 32;
  helpers::parallel(ctx, p.B * p.N, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(std::min(chunk, p.S) * p.T));
    std::vector<int64_t> lo(chunk), hi(chunk);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / p.N, n = i % p.N, kvh = n / group;
      const float* q = p.q.p + b * p.q.b + n * p.q.h;
      const float* k = p.k.p + b * p.k.b + kvh * p.k.h;
      const float* v = p.v.p + b * p.v.b + kvh * p.v.h;
      float* o = p.out + b * p.out_b + n * p.out_h;
      for (int64_t s0 = 0; s0 < p.S; s0 += chunk) {
        const int64_t rows = std::min(chunk, p.S - s0);
        int64_t tn = 0;
        for (int64_t r = 0; r < rows; ++r) {
          lo[r] = 0, hi[r] = p.T;
          if (p.range) p.range(b, s0 + r, &lo[r], &hi[r]);
          lo[r] = std::max<int64_t>(0, lo[r]);
          hi[r] = std::min(hi[r], p.T);
          tn = std::max(tn, hi[r]);
        }
        if (tn == 0) {
          for (int64_t r = 0; r < rows; ++r) std::fill(o + (s0 + r) * p.out_row, o + (s0 + r) * p.out_row + p.Hv, 0.f);
          continue;
        }
        dense::matmul(nullptr, rows, tn, p.H, q + s0 * p.q.row, p.q.row, k, p.k.row, true, scores.data(), p.T, p.scale);
        for (int64_t r = 0; r < rows; ++r) {
          float* row = scores.data() + r * p.T;
          const int64_t l = lo[r], h = hi[r];
          if (p.softcap > 0.f)
            for (int64_t t = l; t < h; ++t) row[t] = p.softcap * std::tanh(row[t] / p.softcap);
          if (p.add) p.add(b, n, s0 + r, row);
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t t = l; t < h; ++t) mx = std::max(mx, row[t]);
          const bool extra = p.smooth || p.sink;
          const float extra_logit = p.sink ? p.sink[n] : 0.f;
          if (extra) mx = std::max(mx, extra_logit);
          float sum = extra ? std::exp(extra_logit - mx) : 0.f;
          for (int64_t t = l; t < h; ++t) {
            row[t] = std::exp(row[t] - mx);
            sum += row[t];
          }
          const float inv = sum > 0.f ? 1.f / sum : 0.f;
          for (int64_t t = 0; t < l; ++t) row[t] = 0.f;
          // Weights under the smallest normal float become zero: as subnormals they would make
          // every multiply-add of the product with V that reads them take a microcode assist.
          for (int64_t t = l; t < h; ++t) {
            const float w = row[t] * inv;
            row[t] = w >= std::numeric_limits<float>::min() ? w : 0.f;
          }
          for (int64_t t = h; t < tn; ++t) row[t] = 0.f;
        }
        dense::matmul(nullptr, rows, p.Hv, tn, scores.data(), p.T, v, p.v.row, false, o + s0 * p.out_row, p.out_row);
      }
    }
  });
}

// Rotates the first `rot` dims of a head vector x at position pos (cos/sin rows of rot/2).
inline void rotate(float* x, int64_t rot, const float* cos_row, const float* sin_row, bool interleaved) {
  const int64_t half_rot = rot / 2;
  for (int64_t i = 0; i < half_rot; ++i) {
    const int64_t i1 = interleaved ? 2 * i : i, i2 = interleaved ? 2 * i + 1 : i + half_rot;
    const float a = x[i1], b = x[i2], c = cos_row[i], s = sin_row[i];
    x[i1] = a * c - b * s;
    x[i2] = b * c + a * s;
  }
}

// The first `rows` rows of a cos/sin cache as float: a float16 cache is converted only as far
// as the positions in use (a decode step reads one row of thousands).
const float* cache_rows(const tensor& t, int64_t rows, std::vector<float>* buf) {
  if (t.type() == dtype::f32) return t.data<float>();
  const int64_t n = std::min(t.numel(), rows * t.dim(1));
  buf->resize(static_cast<size_t>(n));
  if (t.type() == dtype::f16) {
    dense::f16_to_f32(t.data<half>(), buf->data(), n);
  } else {
    for (int64_t i = 0; i < n; ++i) (*buf)[i] = static_cast<float>(t.data<bfloat16>()[i]);
  }
  return buf->data();
}

status check_caches(kernel_context& ctx, const tensor* cos_t, const tensor* sin_t, int64_t H, int64_t* rot) {
  if (!cos_t || !sin_t) return ctx.fail("cos_cache and sin_cache are required for rotary embeddings");
  GG_RETURN_IF_ERROR(check_float(ctx, cos_t, "cos_cache"));
  GG_RETURN_IF_ERROR(check_float(ctx, sin_t, "sin_cache"));
  if (cos_t->rank() != 2 || cos_t->shape() != sin_t->shape())
    return ctx.fail("cos_cache {} and sin_cache {} must be the same 2-D shape", shape_str(cos_t->shape()),
                    shape_str(sin_t->shape()));
  *rot = cos_t->dim(1) * 2;
  if (*rot > H || *rot == 0) return ctx.fail("rotary dimension {} does not fit head size {}", *rot, H);
  return status::ok();
}

status rotary_embedding(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 4, 4, 4));
  const tensor& X = *ctx.input(0);
  const tensor& pos = *ctx.input(1);
  GG_RETURN_IF_ERROR(check_float(ctx, &X, "input"));
  if (pos.type() != dtype::i64 && pos.type() != dtype::i32)
    return ctx.fail("position_ids must be int64, got {}", dtype_name(pos.type()));
  const node& n = ctx.op();
  const bool interleaved = n.attr_int("interleaved", 0) != 0;
  const int64_t heads_attr = n.attr_int("num_heads", 0), rot_attr = n.attr_int("rotary_embedding_dim", 0);
  if (n.attr_int("is_packed_batching", 0)) return ctx.fail("is_packed_batching is not supported");
  const float scale = n.attr_float("scale", 1.f);
  (void)scale;  // onnxruntime's CPU kernel does not apply it either
  int64_t B, S, N, H;
  const bool bnsh = X.rank() == 4;
  if (bnsh) {
    B = X.dim(0), N = X.dim(1), S = X.dim(2), H = X.dim(3);
  } else if (X.rank() == 3) {
    B = X.dim(0), S = X.dim(1);
    const tensor* c = ctx.input(2);
    if (heads_attr > 0) H = X.dim(2) / heads_attr;
    else H = c->rank() == 2 ? c->dim(1) * 2 : 0;
    if (H <= 0 || X.dim(2) % H != 0) return ctx.fail("cannot split hidden size {} into heads", X.dim(2));
    N = X.dim(2) / H;
  } else {
    return ctx.fail("input must be 3-D or 4-D, got {}", shape_str(X.shape()));
  }
  int64_t rot = 0;
  GG_RETURN_IF_ERROR(check_caches(ctx, ctx.input(2), ctx.input(3), H, &rot));
  if (rot_attr > 0 && rot_attr != rot)
    return ctx.fail("rotary_embedding_dim {} does not match the caches' {}", rot_attr, rot);
  const int64_t max_pos = ctx.input(2)->dim(0);
  const bool start_only = pos.numel() == 1;
  if (!start_only && pos.numel() != B * S)
    return ctx.fail("position_ids has {} values, expected 1 or {}", pos.numel(), B * S);
  GG_ASSIGN_OR_RETURN(tensor * Y, ctx.output_for_overwrite(0, X.type(), X.shape()));
  std::vector<float> xb, cb, sb;
  const float* x = dense::as_float(X, &xb);
  int64_t rows = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t p = start_only ? pos.as_int64(0) + s : pos.as_int64(b * S + s);
      if (p < 0 || p >= max_pos) return ctx.fail("position {} is outside the caches' {} positions", p, max_pos);
      rows = std::max(rows, p + 1);
    }
  const float* cs = cache_rows(*ctx.input(2), rows, &cb);
  const float* sn = cache_rows(*ctx.input(3), rows, &sb);
  std::vector<float> y(x, x + X.numel());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t p = start_only ? pos.as_int64(0) + s : pos.as_int64(b * S + s);
      if (p < 0 || p >= max_pos) return ctx.fail("position {} is outside the caches' {} positions", p, max_pos);
      for (int64_t h = 0; h < N; ++h) {
        const int64_t off = bnsh ? ((b * N + h) * S + s) * H : ((b * S + s) * N + h) * H;
        rotate(y.data() + off, rot, cs + p * (rot / 2), sn + p * (rot / 2), interleaved);
      }
    }
  dense::store_float(*Y, 0, y.data(), X.numel());
  return status::ok();
}

status group_query_attention(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 7, 12, 1));
  const node& nd = ctx.op();
  const tensor& Q = *ctx.input(0);
  const tensor* Kt = helpers::optional_input(ctx, 1);
  const tensor* Vt = helpers::optional_input(ctx, 2);
  const tensor* pk = ctx.input(3);
  const tensor* pv = ctx.input(4);
  const tensor* seqlens = ctx.input(5);
  const tensor* total = ctx.input(6);
  const tensor* cos_t = helpers::optional_input(ctx, 7);
  const tensor* sin_t = helpers::optional_input(ctx, 8);
  const tensor* pos_ids = helpers::optional_input(ctx, 9);
  const tensor* attn_bias = helpers::optional_input(ctx, 10);
  const tensor* head_sink = helpers::optional_input(ctx, 11);
  if (!seqlens || !total) return ctx.fail("seqlens_k and total_sequence_length are required");
  const int64_t N = nd.attr_int("num_heads", 0), Nkv = nd.attr_int("kv_num_heads", 0);
  if (N <= 0 || Nkv <= 0 || N % Nkv != 0)
    return ctx.fail("num_heads {} must be a positive multiple of kv_num_heads {}", N, Nkv);
  for (const tensor* t : {&Q, Kt, Vt}) GG_RETURN_IF_ERROR(check_float(ctx, t, "query, key and value"));
  if (Q.rank() != 3) return ctx.fail("query must be [batch, sequence, hidden], got {}", shape_str(Q.shape()));
  if ((Kt == nullptr) != (Vt == nullptr)) return ctx.fail("key and value must be given together");
  const int64_t B = Q.dim(0), S = Q.dim(1);
  const bool packed = Kt == nullptr;
  const int64_t H = packed ? Q.dim(2) / (N + 2 * Nkv) : Q.dim(2) / N;
  if (H <= 0 || (packed ? Q.dim(2) != (N + 2 * Nkv) * H : Q.dim(2) != N * H))
    return ctx.fail("query's hidden size {} is not a whole number of heads", Q.dim(2));
  if (!packed && (Kt->shape() != shape_t{B, S, Nkv * H} || Vt->shape() != shape_t{B, S, Nkv * H}))
    return ctx.fail("key {} and value {} must be [{}, {}, {}]", shape_str(Kt->shape()), shape_str(Vt->shape()), B, S,
                    Nkv * H);
  const bool has_past = pk && pk->defined() && pv && pv->defined();
  int64_t P = 0;
  if (has_past) {
    GG_RETURN_IF_ERROR(check_float(ctx, pk, "past_key"));
    GG_RETURN_IF_ERROR(check_float(ctx, pv, "past_value"));
    if (pk->rank() != 4 || pk->dim(0) != B || pk->dim(1) != Nkv || pk->dim(3) != H || pv->shape() != pk->shape())
      return ctx.fail("past_key {} and past_value {} must be [{}, {}, P, {}]", shape_str(pk->shape()),
                      shape_str(pv->shape()), B, Nkv, H);
    P = pk->dim(2);
  }
  if (seqlens->type() != dtype::i32 || seqlens->numel() != B)
    return ctx.fail("seqlens_k must be {} int32 values", B);
  if (total->type() != dtype::i32 || total->numel() != 1) return ctx.fail("total_sequence_length must be one int32");
  const int64_t total_len = total->as_int64(0);
  if (total_len < S || total_len > (int64_t{1} << 24))
    return ctx.fail("total_sequence_length {} is below the sequence length {} or too large", total_len, S);
  const int64_t T = std::max(P, total_len);
  int64_t cache_elems = 0;
  if (!checked_num_elements({B, Nkv, T, H}, max_tensor_bytes / 4, &cache_elems))
    return ctx.fail("a KV cache of [{}, {}, {}, {}] is too large", B, Nkv, T, H);
  std::vector<int64_t> past_len(B), seq_total(B);
  for (int64_t b = 0; b < B; ++b) {
    seq_total[b] = seqlens->as_int64(b) + 1;
    if (seq_total[b] < 1 || seq_total[b] > T)
      return ctx.fail("seqlens_k[{}] = {} is outside [0, {})", b, seq_total[b] - 1, T);
    past_len[b] = std::max<int64_t>(0, seq_total[b] - S);
    if (past_len[b] > P && has_past) return ctx.fail("seqlens_k[{}] needs {} past positions, past_key has {}", b, past_len[b], P);
    if (!has_past) past_len[b] = 0;
  }
  const bool rotary = nd.attr_int("do_rotary", 0) != 0;
  int64_t rot = 0;
  if (rotary) GG_RETURN_IF_ERROR(check_caches(ctx, cos_t, sin_t, H, &rot));
  if (pos_ids && pos_ids->numel() != B * S) return ctx.fail("position_ids must have {} values", B * S);
  const bool interleaved = nd.attr_int("rotary_interleaved", 0) != 0;
  float scale = nd.attr_float("scale", 0.f);
  if (scale == 0.f) scale = 1.f / std::sqrt(static_cast<float>(H));
  const int64_t window = nd.attr_int("local_window_size", -1);

  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, Q.type(), shape_t{B, S, N * H}));
  std::vector<float> qb, kb, vb, cb, sb;
  const float* q_in = dense::as_float(Q, &qb);
  const int64_t qrow = Q.dim(2);
  // Q in [B, S, N*H] (rotated), K/V caches in [B, Nkv, T, H].
  std::vector<float> q(static_cast<size_t>(B * S * N * H));
  const float* k_in = packed ? q_in + N * H : dense::as_float(*Kt, &kb);
  const float* v_in = packed ? q_in + (N + Nkv) * H : dense::as_float(*Vt, &vb);
  const int64_t kvrow = packed ? qrow : Nkv * H;
  // float caches: the present outputs are the attention's K/V buffers, written directly (in
  // place over past_key/past_value when the executor allows it and the past buffer already
  // holds every position: onnxruntime-genai's share-buffer mode). Caches of other types
  // (float16, bfloat16) stay in their type: the new positions are converted into them (in place
  // likewise), and the attention reads float copies of only the positions in use, so a decode
  // step's work follows the sequence length, not the cache's size.
  const bool direct = Q.type() == dtype::f32 && (!has_past || (pk->type() == dtype::f32 && pv->type() == dtype::f32));
  const shape_t present = {B, Nkv, T, H};
  float* kc = nullptr;
  float* vc = nullptr;
  bool k_in_place = false, v_in_place = false;
  tensor k_scratch, v_scratch;   // typed caches whose present output is not wanted
  tensor* kt = nullptr;          // typed caches: the present tensors (or the scratch)
  tensor* vt = nullptr;
  auto cache_for = [&](size_t out_i, size_t in_i, const tensor* past, float** dst, tensor** typed, tensor* scratch,
                       bool* in_place) -> status {
    const bool wanted = ctx.num_outputs() > out_i && ctx.output_wanted(out_i);
    if (direct) {
      if (!wanted) {
        *scratch = tensor::zeros(dtype::f32, present);
        if (!scratch->raw()) return ctx.fail("out of memory for a KV cache of {}", shape_str(present));
        *dst = scratch->data<float>();
        return status::ok();
      }
      tensor* t = nullptr;
      if (has_past && P == T) {
        GG_ASSIGN_OR_RETURN(t, ctx.output_reusing(out_i, in_i, dtype::f32, present));
        *in_place = t->data<float>() == past->data<float>();
      } else {
        GG_ASSIGN_OR_RETURN(t, ctx.output_for_overwrite(out_i, dtype::f32, present));
      }
      *dst = t->data<float>();
      return status::ok();
    }
    const dtype ct = has_past ? past->type() : Q.type();
    if (!wanted) {
      *scratch = tensor::zeros(ct, present);
      if (!scratch->raw()) return ctx.fail("out of memory for a KV cache of {}", shape_str(present));
      *typed = scratch;
    } else if (has_past && P == T) {
      GG_ASSIGN_OR_RETURN(*typed, ctx.output_reusing(out_i, in_i, ct, present));
      *in_place = (*typed)->raw() == past->raw();
    } else {
      GG_ASSIGN_OR_RETURN(*typed, ctx.output(out_i, ct, present));  // zero-filled
    }
    return status::ok();
  };
  GG_RETURN_IF_ERROR(cache_for(1, 3, pk, &kc, &kt, &k_scratch, &k_in_place));
  GG_RETURN_IF_ERROR(cache_for(2, 4, pv, &vc, &vt, &v_scratch, &v_in_place));
  const float* pkf = direct && has_past && !k_in_place ? pk->data<float>() : nullptr;
  const float* pvf = direct && has_past && !v_in_place ? pv->data<float>() : nullptr;
  int64_t rows = 0;
  if (rotary)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t p = pos_ids ? pos_ids->as_int64(b * S + s) : past_len[b] + s;
        if (p < 0 || p >= cos_t->dim(0))
          return ctx.fail("position {} is outside the rotary caches' {} positions", p, cos_t->dim(0));
        rows = std::max(rows, p + 1);
      }
  const float* cs = rotary ? cache_rows(*cos_t, rows, &cb) : nullptr;
  const float* sn = rotary ? cache_rows(*sin_t, rows, &sb) : nullptr;
  // Typed caches not written in place: the past positions copied as they are.
  auto copy_past = [&](const tensor* past, tensor* t, bool in_place) {
    if (direct || !has_past || in_place) return;
    const size_t es = dtype_size(past->type());
    const std::byte* src = static_cast<const std::byte*>(past->raw());
    std::byte* dst = static_cast<std::byte*>(t->raw());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Nkv; ++h)
        std::copy(src + (b * Nkv + h) * P * H * es, src + ((b * Nkv + h) * P + past_len[b]) * H * es,
                  dst + (b * Nkv + h) * T * H * es);
  };
  copy_past(pk, kt, k_in_place);
  copy_past(pv, vt, v_in_place);
  std::vector<float> krow(static_cast<size_t>(H));
  for (int64_t b = 0; b < B; ++b) {
    if (direct)
      for (int64_t h = 0; h < Nkv; ++h) {
        const int64_t base = (b * Nkv + h) * T * H;
        if (pkf) std::copy(pkf + (b * Nkv + h) * P * H, pkf + ((b * Nkv + h) * P + past_len[b]) * H, kc + base);
        if (pvf) std::copy(pvf + (b * Nkv + h) * P * H, pvf + ((b * Nkv + h) * P + past_len[b]) * H, vc + base);
        // Positions past this sequence's end: zero, unless the past buffer is written in place.
        const int64_t end = std::max(seq_total[b], past_len[b] + S);
        if (!k_in_place) std::fill(kc + base + std::min(end, T) * H, kc + base + T * H, 0.f);
        if (!v_in_place) std::fill(vc + base + std::min(end, T) * H, vc + base + T * H, 0.f);
      }
    for (int64_t s = 0; s < S; ++s) {
      const int64_t abs_pos = past_len[b] + s;
      if (abs_pos >= T) return ctx.fail("sequence {} does not fit {} cache positions", b, T);
      int64_t p = pos_ids ? pos_ids->as_int64(b * S + s) : abs_pos;
      if (rotary && (p < 0 || p >= cos_t->dim(0)))
        return ctx.fail("position {} is outside the rotary caches' {} positions", p, cos_t->dim(0));
      std::copy(q_in + (b * S + s) * qrow, q_in + (b * S + s) * qrow + N * H, q.data() + (b * S + s) * N * H);
      for (int64_t h = 0; h < Nkv; ++h) {
        const int64_t at = ((b * Nkv + h) * T + abs_pos) * H;
        const float* ks = k_in + (b * S + s) * kvrow + h * H;
        const float* vs = v_in + (b * S + s) * kvrow + h * H;
        float* kd = direct ? kc + at : krow.data();
        std::copy(ks, ks + H, kd);
        if (rotary) rotate(kd, rot, cs + p * (rot / 2), sn + p * (rot / 2), interleaved);
        if (direct) {
          std::copy(vs, vs + H, vc + at);
        } else {
          dense::store_float(*kt, at, kd, H);
          dense::store_float(*vt, at, vs, H);
        }
      }
      if (rotary)
        for (int64_t h = 0; h < N; ++h)
          rotate(q.data() + ((b * S + s) * N + h) * H, rot, cs + p * (rot / 2), sn + p * (rot / 2), interleaved);
    }
  }
  // Typed caches: float copies of the positions each sequence uses (Tu of them at most).
  int64_t Ta = T;
  std::vector<float> kf, vf;
  if (!direct) {
    Ta = 0;
    for (int64_t b = 0; b < B; ++b) Ta = std::max(Ta, std::min(T, std::max(seq_total[b], past_len[b] + S)));
    kf.resize(static_cast<size_t>(B * Nkv * Ta * H));
    vf.resize(kf.size());
    for (int64_t b = 0; b < B; ++b) {
      const int64_t used = std::min(T, std::max(seq_total[b], past_len[b] + S));
      for (int64_t h = 0; h < Nkv; ++h) {
        dense::load_float(*kt, (b * Nkv + h) * T * H, kf.data() + (b * Nkv + h) * Ta * H, used * H);
        dense::load_float(*vt, (b * Nkv + h) * T * H, vf.data() + (b * Nkv + h) * Ta * H, used * H);
      }
    }
    kc = kf.data();
    vc = vf.data();
  }
  attention_problem ap;
  ap.B = B, ap.N = N, ap.Nkv = Nkv, ap.S = S, ap.T = Ta, ap.H = H, ap.Hv = H;
  ap.q = {q.data(), S * N * H, H, N * H};
  ap.k = {kc, Nkv * Ta * H, Ta * H, H};
  ap.v = {vc, Nkv * Ta * H, Ta * H, H};
  std::vector<float> o(static_cast<size_t>(B * S * N * H));
  ap.out = o.data(), ap.out_b = S * N * H, ap.out_h = H, ap.out_row = N * H;
  ap.scale = scale;
  ap.softcap = nd.attr_float("softcap", 0.f);
  ap.smooth = nd.attr_int("smooth_softmax", 0) != 0;
  std::vector<float> sink_buf;
  if (head_sink) {
    GG_RETURN_IF_ERROR(check_float(ctx, head_sink, "head_sink"));
    if (head_sink->numel() != N) return ctx.fail("head_sink has {} values for {} heads", head_sink->numel(), N);
    ap.sink = dense::as_float(*head_sink, &sink_buf);
  }
  std::vector<float> abuf;
  if (attn_bias) {
    GG_RETURN_IF_ERROR(check_float(ctx, attn_bias, "attention_bias"));
    const tensor& ab = *attn_bias;
    if (ab.rank() != 4 || (ab.dim(0) != B && ab.dim(0) != 1) || (ab.dim(1) != N && ab.dim(1) != 1) || ab.dim(2) != S ||
        ab.dim(3) != total_len)
      return ctx.fail("attention_bias {} must be [{} or 1, {} or 1, {}, {}]", shape_str(ab.shape()), B, N, S, total_len);
    const float* abf = dense::as_float(ab, &abuf);
    const int64_t sb = ab.dim(0) == 1 ? 0 : ab.dim(1) * S * total_len, sn = ab.dim(1) == 1 ? 0 : S * total_len;
    ap.add = [abf, sb, sn, S, total_len, Ta](int64_t b, int64_t n, int64_t s, float* row) {
      const float* br = abf + b * sb + n * sn + s * total_len;
      for (int64_t t = 0; t < std::min(total_len, Ta); ++t) row[t] += br[t];
    };
  }
  ap.range = [&](int64_t b, int64_t s, int64_t* lo, int64_t* hi) {
    const int64_t p = past_len[b] + s;
    *hi = std::min(p + 1, seq_total[b]);
    *lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;  // the last `window` keys, this one included (as onnxruntime 1.31+)
  };
  attend(ctx, ap);
  dense::store_float(*out, 0, o.data(), B * S * N * H);
  return status::ok();
}

// The part MultiHeadAttention and Attention share once Q [B, S, N*H] and the new K [B, L, N*H]
// and V [B, L, N*Hv] are floats: the KV cache, masks, the product and the present outputs.
struct mha_inputs {
  int64_t B = 0, S = 0, L = 0, N = 0, H = 0, Hv = 0;
  const float* q = nullptr;  // rows of q_row elements
  int64_t q_row = 0;
  const float* k = nullptr;
  int64_t k_row = 0;
  bool kv_bnsh = false;  // k and v are [B, N, L, H] / [B, N, L, Hv] instead of rows
  const float* v = nullptr;
  int64_t v_row = 0;
  const tensor* mask = nullptr;      // [B] lengths, [B, T] or [B, S, T] 0/1
  const tensor* attn_bias = nullptr; // [B|1, N|1, S, T]
  const float* past_k = nullptr;     // [B, N, P, H]
  const float* past_v = nullptr;
  int64_t P = 0;
  bool causal = false;
  float scale = 0.f, mask_value = -10000.f;
};

status mha_run(kernel_context& ctx, const mha_inputs& in, tensor* out, tensor* present_k, tensor* present_v,
               std::vector<float>* kc, std::vector<float>* vc) {
  const int64_t B = in.B, S = in.S, N = in.N, H = in.H, Hv = in.Hv, T = in.P + in.L;
  if (in.mask) {
    const tensor& m = *in.mask;
    const bool ok = (m.rank() == 1 && m.dim(0) == B) || (m.rank() == 2 && m.shape() == shape_t{B, T}) ||
                    (m.rank() == 3 && m.shape() == shape_t{B, S, T});
    if (!ok || (m.type() != dtype::i32 && m.type() != dtype::i64 && m.type() != dtype::boolean))
      return ctx.fail("the mask {} must be int32 [{}], [{}, {}] or [{}, {}, {}]", shape_str(m.shape()), B, B, T, B, S, T);
  }
  std::vector<float> bias_buf;
  const float* bias = nullptr;
  int64_t bias_b = 0, bias_n = 0;
  if (in.attn_bias) {
    const tensor& ab = *in.attn_bias;
    GG_RETURN_IF_ERROR(check_float(ctx, &ab, "attention_bias"));
    if (ab.rank() != 4 || (ab.dim(0) != B && ab.dim(0) != 1) || (ab.dim(1) != N && ab.dim(1) != 1) || ab.dim(2) != S ||
        ab.dim(3) != T)
      return ctx.fail("attention_bias {} must be [{} or 1, {} or 1, {}, {}]", shape_str(ab.shape()), B, N, S, T);
    bias = dense::as_float(ab, &bias_buf);
    bias_b = ab.dim(0) == 1 ? 0 : ab.dim(1) * S * T;
    bias_n = ab.dim(1) == 1 ? 0 : S * T;
  }
  kc->assign(static_cast<size_t>(B * N * T * H), 0.f);
  vc->assign(static_cast<size_t>(B * N * T * Hv), 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < N; ++h) {
      if (in.P > 0) {
        std::copy(in.past_k + (b * N + h) * in.P * H, in.past_k + (b * N + h + 1) * in.P * H, kc->data() + (b * N + h) * T * H);
        std::copy(in.past_v + (b * N + h) * in.P * Hv, in.past_v + (b * N + h + 1) * in.P * Hv,
                  vc->data() + (b * N + h) * T * Hv);
      }
      for (int64_t l = 0; l < in.L; ++l) {
        const float* ks = in.kv_bnsh ? in.k + ((b * N + h) * in.L + l) * H : in.k + (b * in.L + l) * in.k_row + h * H;
        const float* vs = in.kv_bnsh ? in.v + ((b * N + h) * in.L + l) * Hv : in.v + (b * in.L + l) * in.v_row + h * Hv;
        std::copy(ks, ks + H, kc->data() + ((b * N + h) * T + in.P + l) * H);
        std::copy(vs, vs + Hv, vc->data() + ((b * N + h) * T + in.P + l) * Hv);
      }
    }
  attention_problem ap;
  ap.B = B, ap.N = N, ap.Nkv = N, ap.S = S, ap.T = T, ap.H = H, ap.Hv = Hv;
  ap.q = {in.q, S * in.q_row, H, in.q_row};
  ap.k = {kc->data(), N * T * H, T * H, H};
  ap.v = {vc->data(), N * T * Hv, T * Hv, Hv};
  std::vector<float> o(static_cast<size_t>(B * S * N * Hv));
  ap.out = o.data(), ap.out_b = S * N * Hv, ap.out_h = Hv, ap.out_row = N * Hv;
  ap.scale = in.scale != 0.f ? in.scale : 1.f / std::sqrt(static_cast<float>(H));
  const tensor* mask = in.mask;
  const float mv = in.mask_value;
  const bool causal = in.causal;
  const int64_t P = in.P;
  ap.add = [&, mask, mv, causal, P](int64_t b, int64_t n, int64_t s, float* row) {
    if (bias) {
      const float* br = bias + b * bias_b + n * bias_n + s * T;
      for (int64_t t = 0; t < T; ++t) row[t] += br[t];
    }
    if (mask) {
      if (mask->rank() == 1) {
        const int64_t len = mask->as_int64(b);
        for (int64_t t = std::max<int64_t>(0, len); t < T; ++t) row[t] += mv;
      } else {
        const int64_t base = mask->rank() == 2 ? b * T : (b * S + s) * T;
        for (int64_t t = 0; t < T; ++t)
          if (mask->as_int64(base + t) == 0) row[t] += mv;
      }
    }
    if (causal)
      for (int64_t t = P + s + 1; t < T; ++t) row[t] += mv;
  };
  attend(ctx, ap);
  dense::store_float(*out, 0, o.data(), B * S * N * Hv);
  if (present_k) dense::store_float(*present_k, 0, kc->data(), B * N * T * H);
  if (present_v) dense::store_float(*present_v, 0, vc->data(), B * N * T * Hv);
  return status::ok();
}

status multi_head_attention(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 1, 10, 1));
  const node& nd = ctx.op();
  const tensor& Q = *ctx.input(0);
  const tensor* Kt = helpers::optional_input(ctx, 1);
  const tensor* Vt = helpers::optional_input(ctx, 2);
  const tensor* bias = helpers::optional_input(ctx, 3);
  const tensor* mask = helpers::optional_input(ctx, 4);
  const tensor* ab = helpers::optional_input(ctx, 5);
  const tensor* pk = helpers::optional_input(ctx, 6);
  const tensor* pv = helpers::optional_input(ctx, 7);
  if (helpers::optional_input(ctx, 9)) return ctx.fail("cache_indirection (beam search) is not supported");
  const int64_t N = nd.attr_int("num_heads", 0);
  if (N <= 0) return ctx.fail("num_heads must be positive");
  for (const tensor* t : {&Q, Kt, Vt, bias, pk, pv}) GG_RETURN_IF_ERROR(check_float(ctx, t, "query, key, value, bias and past"));
  // Packed inputs (onnxruntime's fused layouts): query [B, S, N, 3, H] holding Q, K and V, or
  // key [B, L, N, 2, H] holding K and V. They are split into [B, S|L, N*H] rows here.
  tensor q_split, k_split, v_split;
  if (!Kt && !Vt && Q.rank() == 5 && Q.dim(2) == N && Q.dim(3) == 3) {
    if (bias) return ctx.fail("bias is not supported with packed QKV");
    const int64_t b_ = Q.dim(0), s_ = Q.dim(1), h_ = Q.dim(4);
    std::vector<float> buf;
    const float* src = dense::as_float(Q, &buf);
    q_split = tensor::zeros(dtype::f32, {b_, s_, N * h_});
    k_split = tensor::zeros(dtype::f32, {b_, s_, N * h_});
    v_split = tensor::zeros(dtype::f32, {b_, s_, N * h_});
    for (int64_t r = 0; r < b_ * s_; ++r)
      for (int64_t h = 0; h < N; ++h)
        for (int64_t part = 0; part < 3; ++part) {
          tensor& dst = part == 0 ? q_split : part == 1 ? k_split : v_split;
          const float* from = src + ((r * N + h) * 3 + part) * h_;
          std::copy(from, from + h_, dst.data<float>() + (r * N + h) * h_);
        }
    Kt = &k_split;
    Vt = &v_split;
  } else if (Kt && !Vt && Kt->rank() == 5 && Kt->dim(2) == N && Kt->dim(3) == 2) {
    if (bias) return ctx.fail("bias is not supported with packed KV");
    const int64_t b_ = Kt->dim(0), l_ = Kt->dim(1), h_ = Kt->dim(4);
    std::vector<float> buf;
    const float* src = dense::as_float(*Kt, &buf);
    k_split = tensor::zeros(dtype::f32, {b_, l_, N * h_});
    v_split = tensor::zeros(dtype::f32, {b_, l_, N * h_});
    for (int64_t r = 0; r < b_ * l_; ++r)
      for (int64_t h = 0; h < N; ++h) {
        const float* from = src + (r * N + h) * 2 * h_;
        std::copy(from, from + h_, k_split.data<float>() + (r * N + h) * h_);
        std::copy(from + h_, from + 2 * h_, v_split.data<float>() + (r * N + h) * h_);
      }
    Kt = &k_split;
    Vt = &v_split;
  }
  const tensor& Qv = q_split.defined() ? q_split : Q;
  if (!Kt || !Vt) return ctx.fail("key and value are required unless query is packed [B, S, N, 3, H]");
  // key / value as [B, L, D] rows, or already split into heads [B, N, L, H] (cross-attention
  // caches, as encoder-decoder exports pass them).
  const bool bnsh = Kt->rank() == 4;
  if (Qv.rank() != 3 || (Kt->rank() != 3 && !bnsh) || Vt->rank() != Kt->rank())
    return ctx.fail("query must be 3-D and key/value 3-D or 4-D (got {}, {}, {})", shape_str(Qv.shape()),
                    shape_str(Kt->shape()), shape_str(Vt->shape()));
  const int64_t B = Qv.dim(0), S = Qv.dim(1), D = Qv.dim(2);
  const int64_t L = bnsh ? Kt->dim(2) : Kt->dim(1), Dv = bnsh ? Vt->dim(1) * Vt->dim(3) : Vt->dim(2);
  if (D % N != 0 || Dv % N != 0) return ctx.fail("hidden sizes {} and {} are not multiples of {} heads", D, Dv, N);
  const bool shapes_ok = bnsh ? (Kt->shape() == shape_t{B, N, L, D / N} && Vt->dim(0) == B && Vt->dim(1) == N && Vt->dim(2) == L)
                              : (Kt->dim(0) == B && Kt->dim(2) == D && Vt->dim(0) == B && Vt->dim(1) == L);
  if (!shapes_ok)
    return ctx.fail("key {} and value {} do not match query {} with {} heads", shape_str(Kt->shape()), shape_str(Vt->shape()),
                    shape_str(Qv.shape()), N);
  if (bnsh && (bias || helpers::optional_input(ctx, 6)))
    return ctx.fail("bias and past_key are not supported with 4-D key/value");
  if (bias && bias->numel() != 2 * D + Dv) return ctx.fail("bias has {} values, expected {}", bias->numel(), 2 * D + Dv);
  const int64_t H = D / N, Hv = Dv / N;
  int64_t P = 0;
  if ((pk == nullptr) != (pv == nullptr)) return ctx.fail("past_key and past_value must be given together");
  if (pk) {
    if (pk->rank() != 4 || pk->dim(0) != B || pk->dim(1) != N || pk->dim(3) != H || pv->rank() != 4 ||
        pv->dim(0) != B || pv->dim(1) != N || pv->dim(2) != pk->dim(2) || pv->dim(3) != Hv)
      return ctx.fail("past_key {} / past_value {} must be [{}, {}, P, {}] / [{}, {}, P, {}]", shape_str(pk->shape()),
                      shape_str(pv->shape()), B, N, H, B, N, Hv);
    P = pk->dim(2);
  }
  std::vector<float> qb, kb, vb, bb, pkb, pvb;
  const float* q = dense::as_float(Qv, &qb);
  const float* k = dense::as_float(*Kt, &kb);
  const float* v = dense::as_float(*Vt, &vb);
  std::vector<float> qq, kk, vv;
  if (bias) {
    const float* bi = dense::as_float(*bias, &bb);
    qq.assign(q, q + Qv.numel());
    kk.assign(k, k + Kt->numel());
    vv.assign(v, v + Vt->numel());
    for (int64_t i = 0; i < Qv.numel(); ++i) qq[i] += bi[i % D];
    for (int64_t i = 0; i < Kt->numel(); ++i) kk[i] += bi[D + i % D];  // (3-D key/value only)
    for (int64_t i = 0; i < Vt->numel(); ++i) vv[i] += bi[2 * D + i % Dv];
    q = qq.data(), k = kk.data(), v = vv.data();
  }
  mha_inputs in;
  in.B = B, in.S = S, in.L = L, in.N = N, in.H = H, in.Hv = Hv;
  in.q = q, in.q_row = D, in.k = k, in.k_row = D, in.v = v, in.v_row = Dv;
  in.kv_bnsh = bnsh;
  in.mask = mask, in.attn_bias = ab, in.P = P;
  in.past_k = pk ? dense::as_float(*pk, &pkb) : nullptr;
  in.past_v = pv ? dense::as_float(*pv, &pvb) : nullptr;
  in.causal = nd.attr_int("unidirectional", 0) != 0;
  in.scale = nd.attr_float("scale", 0.f);
  in.mask_value = nd.attr_float("mask_filter_value", -10000.f);
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, Q.type(), shape_t{B, S, Dv}));
  tensor *prk = nullptr, *prv = nullptr;
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(prk, ctx.output_for_overwrite(1, Q.type(), shape_t{B, N, P + L, H}));
  }
  if (ctx.num_outputs() > 2 && ctx.output_wanted(2)) {
    GG_ASSIGN_OR_RETURN(prv, ctx.output_for_overwrite(2, Q.type(), shape_t{B, N, P + L, Hv}));
  }
  std::vector<float> kc, vc;
  return mha_run(ctx, in, out, prk, prv, &kc, &vc);
}

status attention(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(helpers::check_inputs(ctx, 2, 7, 2));
  const node& nd = ctx.op();
  const tensor& X = *ctx.input(0);
  const tensor& W = *ctx.input(1);
  const tensor* bias = helpers::optional_input(ctx, 2);
  const tensor* mask = helpers::optional_input(ctx, 3);
  const tensor* past = helpers::optional_input(ctx, 4);
  const tensor* ab = helpers::optional_input(ctx, 5);
  if (nd.attr_int("do_rotary", 0)) return ctx.fail("do_rotary is not supported");
  const int64_t N = nd.attr_int("num_heads", 0);
  if (N <= 0) return ctx.fail("num_heads must be positive");
  for (const tensor* t : {&X, &W, bias, past}) GG_RETURN_IF_ERROR(check_float(ctx, t, "input, weights, bias and past"));
  if (X.rank() != 3 || W.rank() != 2 || W.dim(0) != X.dim(2))
    return ctx.fail("input {} and weights {} must be [B, S, Din] and [Din, Dq+Dk+Dv]", shape_str(X.shape()),
                    shape_str(W.shape()));
  const int64_t B = X.dim(0), S = X.dim(1), Din = X.dim(2), Dall = W.dim(1);
  std::vector<int64_t> sizes = nd.attr_ints("qkv_hidden_sizes");
  if (sizes.empty()) {
    if (Dall % 3 != 0) return ctx.fail("weights' {} columns are not 3 equal parts", Dall);
    sizes = {Dall / 3, Dall / 3, Dall / 3};
  }
  if (sizes.size() != 3 || sizes[0] + sizes[1] + sizes[2] != Dall || sizes[0] != sizes[1] || sizes[0] % N != 0 ||
      sizes[2] % N != 0 || sizes[0] <= 0)
    return ctx.fail("qkv_hidden_sizes do not split the weights' {} columns into heads", Dall);
  if (bias && bias->numel() != Dall) return ctx.fail("bias has {} values, expected {}", bias->numel(), Dall);
  const int64_t D = sizes[0], Dv = sizes[2], H = D / N, Hv = Dv / N;
  int64_t P = 0;
  if (past) {
    if (past->rank() != 5 || past->dim(0) != 2 || past->dim(1) != B || past->dim(2) != N || past->dim(4) != H || H != Hv)
      return ctx.fail("past {} must be [2, {}, {}, P, {}]", shape_str(past->shape()), B, N, H);
    P = past->dim(3);
  }
  std::vector<float> xb, wb, bb, pb;
  const float* x = dense::as_float(X, &xb);
  const float* w = dense::as_float(W, &wb);
  const float* bi = bias ? dense::as_float(*bias, &bb) : nullptr;
  std::vector<float> qkv(static_cast<size_t>(B * S * Dall));
  if (B * S > 0 && !dense::matmul(&ctx.pool(), B * S, Dall, Din, x, Din, w, Dall, false, qkv.data(), Dall, 1.f, bi))
    return ctx.fail("out of memory");
  mha_inputs in;
  in.B = B, in.S = S, in.L = S, in.N = N, in.H = H, in.Hv = Hv;
  in.q = qkv.data(), in.q_row = Dall, in.k = qkv.data() + D, in.k_row = Dall, in.v = qkv.data() + 2 * D, in.v_row = Dall;
  in.mask = mask, in.attn_bias = ab, in.P = P;
  const float* pf = past ? dense::as_float(*past, &pb) : nullptr;
  in.past_k = pf;
  in.past_v = pf ? pf + B * N * P * H : nullptr;
  in.causal = nd.attr_int("unidirectional", 0) != 0;
  in.scale = nd.attr_float("scale", 0.f);
  in.mask_value = nd.attr_float("mask_filter_value", -10000.f);
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output_for_overwrite(0, X.type(), shape_t{B, S, Dv}));
  std::vector<float> kc, vc;
  tensor* present = nullptr;
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    GG_ASSIGN_OR_RETURN(present, ctx.output_for_overwrite(1, X.type(), shape_t{2, B, N, P + S, H}));
  }
  GG_RETURN_IF_ERROR(mha_run(ctx, in, out, nullptr, nullptr, &kc, &vc));
  if (present) {
    dense::store_float(*present, 0, kc.data(), B * N * (P + S) * H);
    dense::store_float(*present, B * N * (P + S) * H, vc.data(), B * N * (P + S) * H);
  }
  return status::ok();
}

}  // namespace

void register_contrib_attention_ops(op_registry& r) {
  const std::string ms = "com.microsoft";
  r.add("RotaryEmbedding", simple_kernel(rotary_embedding), ms);
  r.add("GroupQueryAttention", simple_kernel(group_query_attention), ms);
  r.add("MultiHeadAttention", simple_kernel(multi_head_attention), ms);
  r.add("Attention", simple_kernel(attention), ms);
}

}  // namespace gpugrid::cpu
