// Einsum on the CPU: the general form (repeated labels / traces, ellipsis broadcasting,
// implicit output, any number of operands).
//
// Each operand is first seen as a strided view over its distinct labels (a repeated label's
// strides add up, which walks the diagonal; a broadcast ellipsis dim gets stride 0). Operands are
// folded left to right: each pairwise step sums out labels no later operand or the output needs,
// lays both sides out as [batch, free, contracted] / [batch, contracted, free] and runs a batched
// GEMM (BLAS for floats). The last result is permuted into the output's label order.
#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/sgemm.h"

namespace gpugrid::cpu {

void register_einsum_op(op_registry& r);

namespace {

constexpr int num_letters = 52;
int letter_label(char c) { return c >= 'a' && c <= 'z' ? c - 'a' + 26 : c - 'A'; }  // A..Z, a..z: ASCII order

struct term {
  std::vector<int> letters;  // label per explicit letter, in order; -1 marks the ellipsis position
  bool ellipsis = false;
};

bool parse_term(const std::string& s, term* t, std::string* err) {
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '.') {
      if (s.compare(i, 3, "...") != 0) { *err = "a '.' that is not part of '...'"; return false; }
      if (t->ellipsis) { *err = "more than one '...' in a term"; return false; }
      t->ellipsis = true;
      t->letters.push_back(-1);
      i += 3;
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      t->letters.push_back(letter_label(c));
      ++i;
    } else {
      *err = std::string("invalid character '") + c + "'";
      return false;
    }
  }
  return true;
}

// A strided view over distinct labels.
template <typename T>
struct view {
  const T* data = nullptr;
  std::vector<int> labels;
  std::vector<int64_t> strides;
};

// A compact row-major tensor over distinct labels.
template <typename T>
struct dense {
  std::vector<int> labels;
  std::vector<T> data;
  view<T> as_view(const std::vector<int64_t>& size) const {
    view<T> v;
    v.data = data.data();
    v.labels = labels;
    v.strides.assign(labels.size(), 1);
    for (size_t i = labels.size(); i-- > 1;) v.strides[i - 1] = v.strides[i] * size[labels[i]];
    return v;
  }
};

template <typename T>
inline T add(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else return a + b;
}
template <typename T>
inline T mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else return a * b;
}

// out[keep...] = sum over the view's other labels of v. keep must be a subset of v.labels.
template <typename T>
dense<T> gather_sum(const view<T>& v, const std::vector<int>& keep, const std::vector<int64_t>& size) {
  dense<T> out;
  out.labels = keep;
  std::vector<int64_t> kdim, kstr, sdim, sstr;
  int64_t nout = 1, nsum = 1;
  for (int l : keep) {
    auto it = std::find(v.labels.begin(), v.labels.end(), l);
    kdim.push_back(size[l]);
    kstr.push_back(v.strides[static_cast<size_t>(it - v.labels.begin())]);
    nout *= size[l];
  }
  for (size_t i = 0; i < v.labels.size(); ++i) {
    if (std::find(keep.begin(), keep.end(), v.labels[i]) != keep.end()) continue;
    sdim.push_back(size[v.labels[i]]);
    sstr.push_back(v.strides[i]);
    nsum *= size[v.labels[i]];
  }
  out.data.assign(static_cast<size_t>(nout), T(0));
  if (nout == 0) return out;
  std::vector<int64_t> ki(kdim.size(), 0), si(sdim.size(), 0);
  int64_t koff = 0;
  for (int64_t o = 0; o < nout; ++o) {
    T acc = T(0);
    if (nsum > 0) {
      int64_t soff = 0;
      std::fill(si.begin(), si.end(), 0);
      const int64_t inner = sdim.empty() ? 1 : sdim.back();
      const int64_t istr = sstr.empty() ? 0 : sstr.back();
      for (int64_t s = 0; s < nsum; s += inner) {
        const T* p = v.data + koff + soff;
        for (int64_t j = 0; j < inner; ++j) acc = add(acc, p[j * istr]);
        // Advance the odometer over all but the innermost summed dim.
        for (size_t d = sdim.size() - (sdim.empty() ? 0 : 1); d-- > 0;) {
          ++si[d];
          soff += sstr[d];
          if (si[d] < sdim[d]) break;
          soff -= sstr[d] * si[d];
          si[d] = 0;
        }
      }
    }
    out.data[static_cast<size_t>(o)] = acc;
    for (size_t d = kdim.size(); d-- > 0;) {
      ++ki[d];
      koff += kstr[d];
      if (ki[d] < kdim[d]) break;
      koff -= kstr[d] * ki[d];
      ki[d] = 0;
    }
  }
  return out;
}

// C[b, m, n] = sum_k A[b, m, k] * B[b, k, n], all row-major.
template <typename T>
bool batched_gemm(thread_pool* pool, const T* a, const T* b, T* c, int64_t batch, int64_t m, int64_t n, int64_t k) {
  if (m == 0 || n == 0 || batch == 0) return true;
  if (k == 0) {
    std::fill(c, c + batch * m * n, T(0));
    return true;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm::available()) {
      // Every item at once on the engine's threads.
      sgemm::problem q;
      q.m = m;
      q.n = n;
      q.k = k;
      q.a.v = {a, k, 1};
      q.b.v = {b, n, 1};
      q.c = c;
      q.ldc = n;
      q.batch = batch;
      q.offsets = [&](int64_t i, int64_t* ao, int64_t* bo, int64_t* co) {
        *ao = i * m * k;
        *bo = i * k * n;
        *co = i * m * n;
      };
      return sgemm::run(pool, q);
    }
  }
  for (int64_t t = 0; t < batch; ++t) {
    const T* at = a + t * m * k;
    const T* bt = b + t * k * n;
    T* ct = c + t * m * n;
    constexpr int64_t blas_max = int64_t{1} << 30;
    bool done = false;
    if (m < blas_max && n < blas_max && k < blas_max) {
      const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
      (void)im, (void)in, (void)ik;
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, im, in, ik, 1.0f, at, ik, bt, in, 0.0f, ct, in);
        done = true;
      } else if constexpr (std::is_same_v<T, double>) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, im, in, ik, 1.0, at, ik, bt, in, 0.0, ct, in);
        done = true;
      }
    }
    if (!done) {
      std::fill(ct, ct + m * n, T(0));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p) {
          const T av = at[i * k + p];
          const T* br = bt + p * n;
          T* cr = ct + i * n;
          for (int64_t j = 0; j < n; ++j) cr[j] = add(cr[j], mul(av, br[j]));
        }
    }
  }
  return true;
}

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

struct plan {
  std::vector<std::vector<int>> op_labels;       // per operand, per dim: label
  std::vector<int> out_labels;
  std::vector<int64_t> size;                     // per label
};

// False when the labels' sizes multiply to more elements than one tensor may hold.
template <typename T>
bool fits(const std::vector<int>& labels, const std::vector<int64_t>& size) {
  shape_t s;
  for (int l : labels) s.push_back(size[static_cast<size_t>(l)]);
  int64_t n = 0;
  return checked_num_elements(s, max_tensor_bytes / static_cast<int64_t>(sizeof(T)), &n);
}

template <typename T>
bool einsum_typed(thread_pool* pool, const std::vector<const tensor*>& in, const plan& p, tensor* out) {
  const size_t nops = in.size();
  // Distinct-label views of the inputs.
  std::vector<view<T>> views(nops);
  for (size_t k = 0; k < nops; ++k) {
    const tensor& t = *in[k];
    const auto& labels = p.op_labels[k];
    std::vector<int64_t> st(labels.size(), 1);
    for (size_t d = labels.size(); d-- > 1;) st[d - 1] = st[d] * t.dim(d);
    view<T>& v = views[k];
    v.data = t.data<T>();
    for (size_t d = 0; d < labels.size(); ++d) {
      const int64_t s = (t.dim(d) == 1 && p.size[labels[d]] != 1) ? 0 : st[d];  // broadcast
      auto it = std::find(v.labels.begin(), v.labels.end(), labels[d]);
      if (it == v.labels.end()) {
        v.labels.push_back(labels[d]);
        v.strides.push_back(s);
      } else {
        v.strides[static_cast<size_t>(it - v.labels.begin())] += s;
      }
    }
  }
  // Labels needed after operand k: in any later operand or in the output.
  auto needed_after = [&](size_t k) {
    std::vector<int> need = p.out_labels;
    for (size_t j = k + 1; j < nops; ++j)
      for (int l : views[j].labels)
        if (!contains(need, l)) need.push_back(l);
    return need;
  };
  dense<T> cur;
  if (nops == 1) {
    cur = gather_sum(views[0], p.out_labels, p.size);
  } else {
    view<T> left = views[0];
    dense<T> left_store;
    for (size_t k = 1; k < nops; ++k) {
      const view<T>& right = views[k];
      const std::vector<int> need = needed_after(k);
      std::vector<int> batch, lfree, rfree, con;
      for (int l : left.labels) {
        const bool in_r = contains(right.labels, l), needed = contains(need, l);
        if (in_r && needed) batch.push_back(l);
        else if (in_r) con.push_back(l);
        else if (needed) lfree.push_back(l);
        // else: only in left and needed nowhere: summed out by the gather below
      }
      for (int l : right.labels)
        if (!contains(left.labels, l) && contains(need, l)) rfree.push_back(l);
      std::vector<int> lkeep = batch, rkeep = batch;
      lkeep.insert(lkeep.end(), lfree.begin(), lfree.end());
      lkeep.insert(lkeep.end(), con.begin(), con.end());
      rkeep.insert(rkeep.end(), con.begin(), con.end());
      rkeep.insert(rkeep.end(), rfree.begin(), rfree.end());
      std::vector<int> ckeep = batch;
      ckeep.insert(ckeep.end(), lfree.begin(), lfree.end());
      ckeep.insert(ckeep.end(), rfree.begin(), rfree.end());
      if (!fits<T>(lkeep, p.size) || !fits<T>(rkeep, p.size) || !fits<T>(ckeep, p.size)) return false;
      dense<T> a = gather_sum(left, lkeep, p.size);
      dense<T> b = gather_sum(right, rkeep, p.size);
      int64_t nb = 1, m = 1, n = 1, kk = 1;
      for (int l : batch) nb *= p.size[l];
      for (int l : lfree) m *= p.size[l];
      for (int l : rfree) n *= p.size[l];
      for (int l : con) kk *= p.size[l];
      dense<T> c;
      c.labels = ckeep;
      c.data.assign(static_cast<size_t>(nb * m * n), T(0));
      if (!batched_gemm<T>(pool, a.data.data(), b.data.data(), c.data.data(), nb, m, n, kk)) return false;
      left_store = std::move(c);
      left = left_store.as_view(p.size);
    }
    cur = gather_sum(left, p.out_labels, p.size);
  }
  if (!cur.data.empty()) std::memcpy(out->raw(), cur.data.data(), cur.data.size() * sizeof(T));
  return true;
}

status run_einsum(kernel_context& ctx) {
  const size_t nin = ctx.num_inputs();
  if (nin < 1) return ctx.fail("expects at least 1 input, got 0");
  std::vector<const tensor*> in;
  for (size_t i = 0; i < nin; ++i) {
    const tensor* t = ctx.input(i);
    if (!t || !t->defined()) return ctx.fail("input {} is required but missing", i);
    if (t->device() != device_kind::cpu) return ctx.fail("input {} is not in CPU memory", i);
    if (!in.empty() && t->type() != in[0]->type())
      return ctx.fail("all inputs must have the same type: input 0 is {}, input {} is {}", dtype_name(in[0]->type()),
                      i, dtype_name(t->type()));
    in.push_back(t);
  }
  const dtype ty = in[0]->type();
  if (ty != dtype::f32 && ty != dtype::f64 && ty != dtype::i32 && ty != dtype::i64 && ty != dtype::u32 &&
      ty != dtype::u64)
    return ctx.fail("does not support input type {}", dtype_name(ty));
  std::string eq;
  for (char c : ctx.op().attr_string("equation", ""))
    if (!std::isspace(static_cast<unsigned char>(c))) eq += c;
  if (eq.empty()) return ctx.fail("missing the 'equation' attribute");
  std::string lhs = eq, rhs;
  const bool explicit_out = eq.find("->") != std::string::npos;
  if (explicit_out) {
    const size_t pos = eq.find("->");
    lhs = eq.substr(0, pos);
    rhs = eq.substr(pos + 2);
    if (rhs.find("->") != std::string::npos) return ctx.fail("equation '{}' has more than one '->'", eq);
  }
  std::vector<term> terms;
  std::string err;
  size_t start = 0;
  for (;;) {
    size_t comma = lhs.find(',', start);
    term t;
    if (!parse_term(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start), &t, &err))
      return ctx.fail("equation '{}': {}", eq, err);
    terms.push_back(std::move(t));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != nin)
    return ctx.fail("equation '{}' has {} operand terms but the node has {} inputs", eq, terms.size(), nin);
  // Ellipsis rank: the broadcast of all operands' ellipsis dims.
  int64_t erank = 0;
  std::vector<int64_t> op_erank(nin, 0);
  for (size_t k = 0; k < nin; ++k) {
    const int64_t nletters = static_cast<int64_t>(terms[k].letters.size()) - (terms[k].ellipsis ? 1 : 0);
    const int64_t r = static_cast<int64_t>(in[k]->rank());
    if (terms[k].ellipsis) {
      if (r < nletters)
        return ctx.fail("equation '{}': operand {} has rank {} but its term names {} dims", eq, k, r, nletters);
      op_erank[k] = r - nletters;
      erank = std::max(erank, op_erank[k]);
    } else if (r != nletters) {
      return ctx.fail("equation '{}': operand {} has rank {} but its term names {} dims", eq, k, r, nletters);
    }
  }
  plan p;
  p.size.assign(static_cast<size_t>(num_letters + erank), -1);
  p.op_labels.resize(nin);
  std::vector<int> count(static_cast<size_t>(num_letters), 0);
  for (size_t k = 0; k < nin; ++k) {
    std::vector<int>& labels = p.op_labels[k];
    for (int l : terms[k].letters) {
      if (l < 0) {
        for (int64_t i = 0; i < op_erank[k]; ++i) labels.push_back(static_cast<int>(num_letters + erank - op_erank[k] + i));
      } else {
        labels.push_back(l);
        ++count[static_cast<size_t>(l)];
      }
    }
    for (size_t d = 0; d < labels.size(); ++d) {
      const int l = labels[d];
      const int64_t dim = in[k]->dim(d);
      int64_t& s = p.size[static_cast<size_t>(l)];
      if (s < 0 || s == dim) {
        s = dim;
      } else if (l >= num_letters && (s == 1 || dim == 1)) {
        s = std::max(s, dim);  // ellipsis dims broadcast
      } else {
        return ctx.fail("equation '{}': label dimension mismatch ({} vs {}) for operand {} dim {}", eq, s, dim, k, d);
      }
    }
  }
  if (explicit_out) {
    term t;
    if (!parse_term(rhs, &t, &err)) return ctx.fail("equation '{}': output term: {}", eq, err);
    for (int l : t.letters) {
      if (l < 0) {
        for (int64_t i = 0; i < erank; ++i) p.out_labels.push_back(static_cast<int>(num_letters + i));
        continue;
      }
      if (contains(p.out_labels, l)) return ctx.fail("equation '{}': output repeats a label", eq);
      if (count[static_cast<size_t>(l)] == 0) return ctx.fail("equation '{}': output label is not in any input", eq);
      p.out_labels.push_back(l);
    }
  } else {
    for (int64_t i = 0; i < erank; ++i) p.out_labels.push_back(static_cast<int>(num_letters + i));
    for (int l = 0; l < num_letters; ++l)
      if (count[static_cast<size_t>(l)] == 1) p.out_labels.push_back(l);
  }
  for (auto& s : p.size)
    if (s < 0) s = 1;
  shape_t out_shape;
  for (int l : p.out_labels) out_shape.push_back(p.size[static_cast<size_t>(l)]);
  GG_ASSIGN_OR_RETURN(tensor* Y, ctx.output(0, ty, out_shape));
  bool ok = true;
  switch (ty) {
    case dtype::f32: ok = einsum_typed<float>(&ctx.pool(), in, p, Y); break;
    case dtype::f64: ok = einsum_typed<double>(&ctx.pool(), in, p, Y); break;
    case dtype::i32: ok = einsum_typed<int32_t>(&ctx.pool(), in, p, Y); break;
    case dtype::i64: ok = einsum_typed<int64_t>(&ctx.pool(), in, p, Y); break;
    case dtype::u32: ok = einsum_typed<uint32_t>(&ctx.pool(), in, p, Y); break;
    case dtype::u64: ok = einsum_typed<uint64_t>(&ctx.pool(), in, p, Y); break;
    default: break;
  }
  if (!ok) return ctx.fail("equation '{}' needs an intermediate result that is too large", eq);
  return status::ok();
}

}  // namespace

void register_einsum_op(op_registry& r) { r.add("Einsum", simple_kernel(run_einsum)); }

}  // namespace gpugrid::cpu
