// TfIdfVectorizer (opset 9) over integer tokens: X [C] or [N, C] int32/int64 -> [out] or
// [N, out] float, out = max(ngram_indexes) + 1.
//
// As onnxruntime: the pool (pool_int64s) holds ngram_counts[k]..ngram_counts[k+1] as the
// (k+1)-grams; pool n-gram number i adds to output ngram_indexes[i]. In each row, n-grams of
// min_gram_length..max_gram_length tokens are gathered with every skip distance 1 ..
// max_skip_count + 1 (tokens skip - 1 apart); unigrams count once. mode TF gives the counts,
// IDF weights[i] where the count is positive (1 without weights), TFIDF counts times weights.
// String pools and inputs are not supported.
#include <algorithm>
#include <map>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cpu {
namespace {

enum class tfidf_mode { tf, idf, tfidf };

struct tfidf_attrs {
  tfidf_mode mode = tfidf_mode::tf;
  int64_t min_n = 1, max_n = 1, max_skip = 0, out_size = 0;
  std::map<std::vector<int64_t>, int64_t> pool;  // n-gram -> output index
  std::vector<float> weights;
};

expected<tfidf_attrs> parse_tfidf(const node& n) {
  auto bad = [&](const std::string& m) { return invalid_input("{}: {}", n.describe(), m); };
  tfidf_attrs a;
  const std::string mode = n.attr_string("mode", "");
  if (mode == "TF") a.mode = tfidf_mode::tf;
  else if (mode == "IDF") a.mode = tfidf_mode::idf;
  else if (mode == "TFIDF") a.mode = tfidf_mode::tfidf;
  else return bad("mode must be TF, IDF or TFIDF, got '" + mode + "'");
  if (n.has_attr("pool_strings")) return bad("string pools are not supported");
  a.min_n = n.attr_int("min_gram_length", 0);
  a.max_n = n.attr_int("max_gram_length", 0);
  a.max_skip = n.attr_int("max_skip_count", 0);
  if (a.min_n < 1 || a.max_n < a.min_n || a.max_n > 64)
    return bad(fmt::format("need 1 <= min_gram_length {} <= max_gram_length {} <= 64", a.min_n, a.max_n));
  if (a.max_skip < 0 || a.max_skip > 4096) return bad(fmt::format("max_skip_count {} is outside [0, 4096]", a.max_skip));
  const std::vector<int64_t> pool = n.attr_ints("pool_int64s");
  const std::vector<int64_t> counts = n.attr_ints("ngram_counts");
  const std::vector<int64_t> indexes = n.attr_ints("ngram_indexes");
  a.weights = n.attr_floats("weights");
  if (counts.empty() || counts[0] != 0) return bad("ngram_counts must start with 0");
  int64_t ngram = 0;
  for (size_t k = 0; k < counts.size(); ++k) {
    const int64_t len = static_cast<int64_t>(k) + 1;
    const int64_t b = counts[k], e = k + 1 < counts.size() ? counts[k + 1] : static_cast<int64_t>(pool.size());
    if (b > e || e > static_cast<int64_t>(pool.size()) || (e - b) % len != 0)
      return bad(fmt::format("ngram_counts[{}] = {} does not fit a pool of {} with {}-grams", k, b, pool.size(), len));
    for (int64_t p = b; p < e; p += len, ++ngram) {
      if (ngram >= static_cast<int64_t>(indexes.size()))
        return bad(fmt::format("ngram_indexes has {} entries but the pool holds more n-grams", indexes.size()));
      if (indexes[ngram] < 0 || indexes[ngram] >= (int64_t{1} << 24))
        return bad(fmt::format("ngram_indexes[{}] = {} is outside [0, 2^24)", ngram, indexes[ngram]));
      a.pool[std::vector<int64_t>(pool.begin() + p, pool.begin() + p + len)] = indexes[ngram];
      a.out_size = std::max(a.out_size, indexes[ngram] + 1);
    }
  }
  if (!a.weights.empty() && static_cast<int64_t>(a.weights.size()) < a.out_size)
    return bad(fmt::format("weights has {} entries for {} outputs", a.weights.size(), a.out_size));
  return a;
}

status run_tfidf(kernel_context& ctx, const tfidf_attrs& a) {
  if (ctx.num_inputs() != 1 || !ctx.input(0) || !ctx.input(0)->defined()) return ctx.fail("expects 1 input");
  const tensor& x = *ctx.input(0);
  if (x.type() != dtype::i32 && x.type() != dtype::i64)
    return ctx.fail("input must be int32 or int64 tokens, got {}", dtype_name(x.type()));
  if (x.rank() != 1 && x.rank() != 2) return ctx.fail("input must be [C] or [N, C], got {}", shape_str(x.shape()));
  const int64_t rows = x.rank() == 2 ? x.dim(0) : 1, len = x.dim(x.rank() - 1);
  shape_t out_shape = x.rank() == 2 ? shape_t{rows, a.out_size} : shape_t{a.out_size};
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output(0, dtype::f32, out_shape));
  float* out = y->data<float>();
  std::vector<int64_t> gram;
  for (int64_t r = 0; r < rows; ++r) {
    float* row_out = out + r * a.out_size;
    for (int64_t skip = 1; skip <= a.max_skip + 1; ++skip) {
      const int64_t first_n = skip == 1 ? a.min_n : std::max<int64_t>(a.min_n, 2);
      for (int64_t s = 0; s < len; ++s) {
        gram.clear();
        for (int64_t k = 0; k < a.max_n && s + k * skip < len; ++k) {
          gram.push_back(x.as_int64(r * len + s + k * skip));
          if (static_cast<int64_t>(gram.size()) < first_n) continue;
          auto it = a.pool.find(gram);
          if (it != a.pool.end()) row_out[it->second] += 1;
        }
      }
    }
    for (int64_t i = 0; i < a.out_size; ++i) {
      const float w = a.weights.empty() ? 1.f : a.weights[i];
      if (a.mode == tfidf_mode::idf) row_out[i] = row_out[i] > 0 ? w : 0.f;
      else if (a.mode == tfidf_mode::tfidf) row_out[i] *= w;
    }
  }
  return status::ok();
}

}  // namespace

void register_text_ops(op_registry& r) {
  r.add("TfIdfVectorizer", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    auto a = parse_tfidf(n);
    if (!a) return a.error();
    auto shared = std::make_shared<const tfidf_attrs>(std::move(a).value());
    return simple_kernel([shared](kernel_context& ctx) { return run_tfidf(ctx, *shared); })(n);
  });
}

}  // namespace gpugrid::cpu
