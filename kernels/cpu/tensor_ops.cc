// CPU tensor-manipulation and shape ops: registration, shared helpers, and the ops that are
// views or generators (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Shape, Size,
// Constant, ConstantOfShape, Range, EyeLike).
//
// Copying ops live in tensor_ops_copy.cc, index-driven ops in tensor_ops_index.cc and
// Quantize/DequantizeLinear in tensor_ops_quant.cc.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/tensor_ops_internal.h"

namespace gpugrid::cpu {

namespace tops {

// ---------------------------------------------------------------------------------------------
// Shared helpers

namespace {
class checked_fn_kernel final : public kernel {
 public:
  explicit checked_fn_kernel(simple_kernel_fn fn) : fn_(std::move(fn)) {}
  status run(kernel_context& ctx) override { return fn_(ctx); }

 private:
  simple_kernel_fn fn_;
};
}  // namespace

kernel_factory checked_kernel(std::function<status(const node&)> check, simple_kernel_fn fn) {
  return [check = std::move(check), fn = std::move(fn)](const node& n) -> expected<std::unique_ptr<kernel>> {
    if (check) {
      status s = check(n);
      if (!s.is_ok()) return s;
    }
    return std::unique_ptr<kernel>(std::make_unique<checked_fn_kernel>(fn));
  };
}

status check_input_count(const kernel_context& ctx, size_t lo, size_t hi) {
  size_t n = ctx.num_inputs();
  if (n < lo || n > hi) {
    if (lo == hi) return ctx.fail("takes {} input{}, got {}", lo, lo == 1 ? "" : "s", n);
    return ctx.fail("takes {} to {} inputs, got {}", lo, hi, n);
  }
  return status::ok();
}

static status check_tensor(const kernel_context& ctx, size_t i, const tensor& t) {
  if (t.device() != device_kind::cpu) return ctx.fail("input {} is not in CPU memory", i);
  if (dtype_size(t.type()) == 0)
    return ctx.fail("input {} has unsupported type {}", i, dtype_name(t.type()));
  if (!t.storage() && t.numel() != 0) return ctx.fail("input {} has no data", i);
  return status::ok();
}

status require_input(const kernel_context& ctx, size_t i, const tensor** out) {
  const tensor* t = ctx.input(i);
  if (!t || !t->defined()) return ctx.fail("required input {} is missing", i);
  GG_RETURN_IF_ERROR(check_tensor(ctx, i, *t));
  *out = t;
  return status::ok();
}

status optional_input(const kernel_context& ctx, size_t i, const tensor** out) {
  const tensor* t = ctx.input(i);
  *out = nullptr;
  if (!t || !t->defined()) return status::ok();
  GG_RETURN_IF_ERROR(check_tensor(ctx, i, *t));
  *out = t;
  return status::ok();
}

status read_ints(const kernel_context& ctx, const tensor& t, const char* what, std::vector<int64_t>* out) {
  if (t.rank() > 1) return ctx.fail("{} must be a 1-D tensor, got shape {}", what, shape_str(t.shape()));
  const int64_t n = t.numel();
  return with_index_type(ctx, t, what, [&](const auto* p) -> status {
    out->assign(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; ++i) (*out)[static_cast<size_t>(i)] = static_cast<int64_t>(p[i]);
    return status::ok();
  });
}

status read_int_scalar(const kernel_context& ctx, const tensor& t, const char* what, int64_t* out) {
  if (t.numel() != 1) return ctx.fail("{} must be a scalar, got shape {}", what, shape_str(t.shape()));
  return with_index_type(ctx, t, what, [&](const auto* p) -> status {
    *out = static_cast<int64_t>(p[0]);
    return status::ok();
  });
}

status normalize_axis(const kernel_context& ctx, int64_t axis, int64_t rank, const char* what, int64_t* out) {
  if (axis < -rank || axis >= rank)
    return ctx.fail("{} {} is out of range for rank {}", what, axis, rank);
  *out = axis < 0 ? axis + rank : axis;
  return status::ok();
}

status normalize_axes(const kernel_context& ctx, std::vector<int64_t>* axes, int64_t rank, const char* what) {
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(rank, 0)), false);
  for (auto& a : *axes) {
    GG_RETURN_IF_ERROR(normalize_axis(ctx, a, rank, what, &a));
    if (seen[static_cast<size_t>(a)]) return ctx.fail("{} repeats axis {}", what, a);
    seen[static_cast<size_t>(a)] = true;
  }
  return status::ok();
}

status checked_product(const kernel_context& ctx, const shape_t& shape, int64_t* out) {
  if (!checked_num_elements(shape, max_tensor_bytes, out))
    return ctx.fail("shape {} is negative or too large", shape_str(shape));
  return status::ok();
}

std::vector<int64_t> contiguous_strides(const shape_t& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) s[d - 1] = s[d] * shape[d];
  return s;
}

void parallel_memcpy(kernel_context& ctx, void* dst, const void* src, size_t n) {
  constexpr size_t chunk = 256 * 1024;
  if (n == 0) return;
  if (n <= 4 * chunk || ctx.pool().size() <= 1) {
    std::memcpy(dst, src, n);
    return;
  }
  const int64_t chunks = static_cast<int64_t>((n + chunk - 1) / chunk);
  auto* d = static_cast<std::byte*>(dst);
  auto* s = static_cast<const std::byte*>(src);
  ctx.pool().parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    size_t lo = static_cast<size_t>(b) * chunk;
    size_t hi = std::min(n, static_cast<size_t>(e) * chunk);
    std::memcpy(d + lo, s + lo, hi - lo);
  });
}

void copy_rows(kernel_context& ctx, std::byte* dst, int64_t dst_stride, const std::byte* src,
               int64_t src_stride, int64_t rows, int64_t row_bytes) {
  if (rows <= 0 || row_bytes <= 0) return;
  if (rows == 1) {
    parallel_memcpy(ctx, dst, src, static_cast<size_t>(row_bytes));
    return;
  }
  if (dst_stride == row_bytes && src_stride == row_bytes) {
    parallel_memcpy(ctx, dst, src, static_cast<size_t>(rows * row_bytes));
    return;
  }
  if (row_bytes >= (int64_t{1} << 20) && rows < 4 * ctx.pool().size()) {
    for (int64_t r = 0; r < rows; ++r)
      parallel_memcpy(ctx, dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(row_bytes));
    return;
  }
  const size_t rb = static_cast<size_t>(row_bytes);
  parallel(ctx, rows, grain_for(row_bytes, 128 * 1024), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) std::memcpy(dst + r * dst_stride, src + r * src_stride, rb);
  });
}

void fill_elements(std::byte* dst, int64_t n, const void* value, size_t esize) {
  dispatch_size(esize, [&](auto tag) {
    using U = decltype(tag);
    U v;
    std::memcpy(&v, value, sizeof(U));
    U* p = reinterpret_cast<U*>(dst);
    std::fill(p, p + n, v);
  });
}

void strided_copy(kernel_context& ctx, const std::byte* src, std::byte* dst, size_t esize,
                  const shape_t& shape, const std::vector<int64_t>& strides) {
  // Drop size-1 dims and merge dims that are contiguous in the source.
  std::vector<int64_t> d, s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return;
    if (shape[i] == 1) continue;
    if (!d.empty() && s.back() == strides[i] * shape[i]) {
      d.back() *= shape[i];
      s.back() = strides[i];
    } else {
      d.push_back(shape[i]);
      s.push_back(strides[i]);
    }
  }
  if (d.empty()) {
    std::memcpy(dst, src, esize);
    return;
  }
  const size_t m = d.size();
  const int64_t inner = d[m - 1];
  const int64_t inner_stride = s[m - 1];
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < m; ++i) rows *= d[i];
  const int64_t row_bytes = inner * static_cast<int64_t>(esize);
  const int64_t es = static_cast<int64_t>(esize);

  if (m == 1 && inner_stride == 1) {
    parallel_memcpy(ctx, dst, src, static_cast<size_t>(row_bytes));
    return;
  }
  if (m == 2 && inner_stride == 1) {
    copy_rows(ctx, dst, row_bytes, src, s[0] * es, rows, row_bytes);
    return;
  }

  auto run_rows = [&](int64_t b, int64_t e) {
    // Source offset (in elements) of row b.
    std::vector<int64_t> idx(m - 1, 0);
    int64_t rem = b, off = 0;
    for (size_t k = m - 1; k-- > 0;) {
      idx[k] = rem % d[k];
      rem /= d[k];
      off += idx[k] * s[k];
    }
    std::byte* out = dst + b * row_bytes;
    dispatch_size(esize, [&](auto tag) {
      using U = decltype(tag);
      for (int64_t r = b; r < e; ++r) {
        const std::byte* in = src + off * es;
        if (inner_stride == 1) {
          std::memcpy(out, in, static_cast<size_t>(row_bytes));
        } else {
          U* o = reinterpret_cast<U*>(out);
          if (inner_stride == 0) {
            U v;
            std::memcpy(&v, in, sizeof(U));
            std::fill(o, o + inner, v);
          } else {
            const U* p = reinterpret_cast<const U*>(in);
            for (int64_t j = 0; j < inner; ++j) o[j] = p[j * inner_stride];
          }
        }
        out += row_bytes;
        for (size_t k = m - 1; k-- > 0;) {
          off += s[k];
          if (++idx[k] < d[k]) break;
          off -= s[k] * d[k];
          idx[k] = 0;
        }
      }
    });
  };
  parallel(ctx, rows, grain_for(row_bytes, 64 * 1024), run_rows);
}

// Writes the value 1 of type t into dst.
static void write_one(dtype t, std::byte* dst) {
  dispatch_all(t, [&](auto tag) {
    using T = decltype(tag);
    T v = static_cast<T>(1.0f);
    std::memcpy(dst, &v, sizeof(T));
  });
}

// ---------------------------------------------------------------------------------------------
// Views

static status reshape_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *shape_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &shape_in));
  if (shape_in->rank() != 1)
    return ctx.fail("shape input must be 1-D, got shape {}", shape_str(shape_in->shape()));
  std::vector<int64_t> req;
  GG_RETURN_IF_ERROR(read_ints(ctx, *shape_in, "shape", &req));
  const bool allowzero = ctx.op().opset >= 14 && ctx.op().attr_int("allowzero", 0) != 0;
  shape_t out(req.size());
  int64_t unknown = -1;
  bool has_zero = false;
  for (size_t i = 0; i < req.size(); ++i) {
    int64_t v = req[i];
    if (v == -1) {
      if (unknown >= 0) return ctx.fail("shape {} has more than one -1", shape_str(req));
      unknown = static_cast<int64_t>(i);
      out[i] = 1;
    } else if (v == 0 && !allowzero) {
      if (i >= x->rank())
        return ctx.fail("shape {} copies dim {} (0) but the input {} has rank {}", shape_str(req), i,
                        shape_str(x->shape()), x->rank());
      out[i] = x->dim(i);
    } else if (v < 0) {
      return ctx.fail("shape {} has invalid dim {}", shape_str(req), v);
    } else {
      out[i] = v;
      if (v == 0) has_zero = true;
    }
  }
  if (allowzero && has_zero && unknown >= 0)
    return ctx.fail("shape {} has both 0 (with allowzero=1) and -1", shape_str(req));
  const int64_t numel = x->numel();
  int64_t known = 0;
  if (!checked_num_elements(out, std::numeric_limits<int64_t>::max(), &known))
    return ctx.fail("cannot reshape {} to {}: size overflows", shape_str(x->shape()), shape_str(req));
  if (unknown >= 0) {
    if (known == 0 || numel % known != 0)
      return ctx.fail("cannot reshape {} ({} elements) to {}", shape_str(x->shape()), numel, shape_str(req));
    out[static_cast<size_t>(unknown)] = numel / known;
  } else if (known != numel) {
    return ctx.fail("cannot reshape {} ({} elements) to {} ({} elements)", shape_str(x->shape()), numel,
                    shape_str(out), known);
  }
  ctx.set_output(0, x->reshaped(std::move(out)));
  return status::ok();
}

static status flatten_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  const int64_t r = static_cast<int64_t>(x->rank());
  int64_t axis = ctx.op().attr_int("axis", 1);
  if (axis < -r || axis > r) return ctx.fail("axis {} is out of range for rank {}", axis, r);
  if (axis < 0) axis += r;
  int64_t a = 1, b = 1;
  for (int64_t i = 0; i < r; ++i) (i < axis ? a : b) *= x->dim(static_cast<size_t>(i));
  ctx.set_output(0, x->reshaped({a, b}));
  return status::ok();
}

static status squeeze_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 2));
  const tensor *x, *axes_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(optional_input(ctx, 1, &axes_in));
  const int64_t r = static_cast<int64_t>(x->rank());
  std::vector<bool> drop(static_cast<size_t>(r), false);
  if (axes_in) {
    std::vector<int64_t> axes;
    GG_RETURN_IF_ERROR(read_ints(ctx, *axes_in, "axes", &axes));
    GG_RETURN_IF_ERROR(normalize_axes(ctx, &axes, r, "axes"));
    for (int64_t a : axes) {
      if (x->dim(static_cast<size_t>(a)) != 1)
        return ctx.fail("cannot squeeze axis {} of shape {}: its size is not 1", a, shape_str(x->shape()));
      drop[static_cast<size_t>(a)] = true;
    }
  } else {
    for (int64_t i = 0; i < r; ++i) drop[static_cast<size_t>(i)] = x->dim(static_cast<size_t>(i)) == 1;
  }
  shape_t out;
  for (int64_t i = 0; i < r; ++i)
    if (!drop[static_cast<size_t>(i)]) out.push_back(x->dim(static_cast<size_t>(i)));
  ctx.set_output(0, x->reshaped(std::move(out)));
  return status::ok();
}

static status unsqueeze_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 2, 2));
  const tensor *x, *axes_in;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &axes_in));
  std::vector<int64_t> axes;
  GG_RETURN_IF_ERROR(read_ints(ctx, *axes_in, "axes", &axes));
  const int64_t out_rank = static_cast<int64_t>(x->rank() + axes.size());
  GG_RETURN_IF_ERROR(normalize_axes(ctx, &axes, out_rank, "axes"));
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : axes) inserted[static_cast<size_t>(a)] = true;
  shape_t out;
  size_t k = 0;
  for (int64_t i = 0; i < out_rank; ++i) out.push_back(inserted[static_cast<size_t>(i)] ? 1 : x->dim(k++));
  ctx.set_output(0, x->reshaped(std::move(out)));
  return status::ok();
}

static status identity_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* seq = ctx.input(0);
  if (seq && (seq->is_sequence() || seq->is_none())) {  // sequences and empty optionals pass through
    ctx.set_output(0, *seq);
    return status::ok();
  }
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  ctx.set_output(0, *x);
  return status::ok();
}

static status dropout_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 3));
  const node& n = ctx.op();
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  if (n.opset >= 12) {
    const tensor *ratio, *training;
    GG_RETURN_IF_ERROR(optional_input(ctx, 1, &ratio));
    GG_RETURN_IF_ERROR(optional_input(ctx, 2, &training));
    if (training) {
      if (training->numel() != 1 || training->type() != dtype::boolean)
        return ctx.fail("training_mode must be a bool scalar");
      if (training->data<bool>()[0]) {
        double rv = 0.5;
        if (ratio) {
          if (ratio->numel() != 1 || !is_float(ratio->type())) return ctx.fail("ratio must be a float scalar");
          rv = ratio->as_double(0);
        }
        if (rv != 0.0) return ctx.fail("training-mode Dropout (random masking) is not supported");
      }
    }
  } else if (n.opset < 7 && n.attr_int("is_test", 0) == 0) {
    return ctx.fail("training-mode Dropout (is_test=0) is not supported");
  }
  ctx.set_output(0, *x);
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    dtype mt = n.opset >= 10 ? dtype::boolean : x->type();
    GG_ASSIGN_OR_RETURN(tensor * mask, ctx.output(1, mt, x->shape()));
    std::byte one[8] = {};
    write_one(mt, one);
    fill_elements(static_cast<std::byte*>(mask->raw()), mask->numel(), one, dtype_size(mt));
  }
  return status::ok();
}

// ---------------------------------------------------------------------------------------------
// Shape queries and generators

static status shape_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x = ctx.input(0);
  if (!x || !x->defined()) return ctx.fail("required input 0 is missing");
  const int64_t r = static_cast<int64_t>(x->rank());
  int64_t start = ctx.op().attr_int("start", 0);
  int64_t end = ctx.op().has_attr("end") ? ctx.op().attr_int("end", r) : r;
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, 0, r);
  const int64_t len = std::max<int64_t>(0, end - start);
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, dtype::i64, {len}));
  for (int64_t i = 0; i < len; ++i) out->data<int64_t>()[i] = x->dim(static_cast<size_t>(start + i));
  return status::ok();
}

static status size_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x = ctx.input(0);
  if (!x || !x->defined()) return ctx.fail("required input 0 is missing");
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, dtype::i64, {}));
  out->data<int64_t>()[0] = x->numel();
  return status::ok();
}

static status constant_check(const node& n) {
  int count = 0;
  for (const char* k : {"value", "value_float", "value_floats", "value_int", "value_ints", "value_string",
                        "value_strings", "sparse_value"})
    count += n.has_attr(k) ? 1 : 0;
  if (count != 1)
    return invalid_input("{}: needs exactly one value attribute, got {}", n.describe(), count);
  if (n.has_attr("sparse_value")) return invalid_input("{}: sparse constants are not supported", n.describe());
  if (n.has_attr("value_string") || n.has_attr("value_strings"))
    return invalid_input("{}: string constants are not supported", n.describe());
  if (n.has_attr("value")) {
    const tensor* t = n.attr_tensor("value");
    if (!t || dtype_size(t->type()) == 0)
      return invalid_input("{}: value attribute is not a tensor of a supported type", n.describe());
  }
  return status::ok();
}

static status constant_run(kernel_context& ctx) {
  const node& n = ctx.op();
  tensor t;
  if (const tensor* v = n.attr_tensor("value")) {
    if (dtype_size(v->type()) == 0 || (!v->storage() && v->numel() != 0))
      return ctx.fail("value attribute has unsupported type {}", dtype_name(v->type()));
    GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, v->type(), v->shape()));
    if (v->bytes()) std::memcpy(out->raw(), v->raw(), v->bytes());
    return status::ok();
  }
  if (n.has_attr("value_float")) {
    t = tensor::scalar<float>(n.attr_float("value_float", 0));
  } else if (n.has_attr("value_int")) {
    t = tensor::scalar<int64_t>(n.attr_int("value_int", 0));
  } else if (n.has_attr("value_floats")) {
    auto v = n.attr_floats("value_floats");
    t = tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v);
  } else if (n.has_attr("value_ints")) {
    auto v = n.attr_ints("value_ints");
    t = tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v);
  } else {
    GG_RETURN_IF_ERROR(constant_check(n));
    return ctx.fail("has no supported value attribute");
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, t.type(), t.shape()));
  if (t.bytes()) std::memcpy(out->raw(), t.raw(), t.bytes());
  return status::ok();
}

static status constant_of_shape_check(const node& n) {
  if (n.has_attr("value")) {
    const tensor* t = n.attr_tensor("value");
    if (!t || dtype_size(t->type()) == 0 || t->numel() != 1)
      return invalid_input("{}: value must be a one-element tensor of a supported type", n.describe());
  }
  return status::ok();
}

static status constant_of_shape_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* s;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &s));
  std::vector<int64_t> dims;
  GG_RETURN_IF_ERROR(read_ints(ctx, *s, "shape", &dims));
  for (int64_t d : dims)
    if (d < 0) return ctx.fail("shape {} has a negative dim", shape_str(dims));
  dtype type = dtype::f32;
  std::byte value[8] = {};
  if (const tensor* v = ctx.op().attr_tensor("value")) {
    if (dtype_size(v->type()) == 0 || v->numel() != 1 || !v->storage())
      return ctx.fail("value must be a one-element tensor of a supported type");
    type = v->type();
    std::memcpy(value, v->raw(), dtype_size(type));
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, type, dims));
  fill_elements(static_cast<std::byte*>(out->raw()), out->numel(), value, dtype_size(type));
  return status::ok();
}

template <typename T>
static status range_typed(kernel_context& ctx, const tensor& s, const tensor& l, const tensor& d) {
  const T start = s.data<T>()[0], limit = l.data<T>()[0], delta = d.data<T>()[0];
  int64_t n = 0;
  if constexpr (std::is_floating_point_v<T>) {
    if (delta == 0) return ctx.fail("delta must not be zero");
    if (!std::isfinite(start) || !std::isfinite(limit) || !std::isfinite(delta))
      return ctx.fail("start, limit and delta must be finite");
    double c = std::ceil((static_cast<double>(limit) - static_cast<double>(start)) / static_cast<double>(delta));
    if (!(c <= static_cast<double>(max_tensor_bytes))) return ctx.fail("the range has too many elements ({})", c);
    n = c > 0 ? static_cast<int64_t>(c) : 0;
  } else {
    if (delta == 0) return ctx.fail("delta must not be zero");
    __int128 diff = static_cast<__int128>(limit) - static_cast<__int128>(start);
    __int128 dl = static_cast<__int128>(delta);
    __int128 q = diff / dl;
    if (q * dl != diff) q += 1;  // ceil when the signs agree (else q <= 0 anyway)
    if (q > static_cast<__int128>(max_tensor_bytes)) return ctx.fail("the range has too many elements");
    n = q > 0 ? static_cast<int64_t>(q) : 0;
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, dtype_of<T>::value, {n}));
  T* o = out->data<T>();
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_floating_point_v<T>) {
      o[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    } else {
      o[i] = static_cast<T>(static_cast<__int128>(start) + static_cast<__int128>(i) * delta);
    }
  }
  return status::ok();
}

static status range_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 3, 3));
  const tensor *s, *l, *d;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &s));
  GG_RETURN_IF_ERROR(require_input(ctx, 1, &l));
  GG_RETURN_IF_ERROR(require_input(ctx, 2, &d));
  if (s->type() != l->type() || s->type() != d->type())
    return ctx.fail("start, limit and delta must have one type, got {}, {}, {}", dtype_name(s->type()),
                    dtype_name(l->type()), dtype_name(d->type()));
  if (s->numel() != 1 || l->numel() != 1 || d->numel() != 1)
    return ctx.fail("start, limit and delta must be scalars");
  switch (s->type()) {
    case dtype::f32: return range_typed<float>(ctx, *s, *l, *d);
    case dtype::f64: return range_typed<double>(ctx, *s, *l, *d);
    case dtype::i16: return range_typed<int16_t>(ctx, *s, *l, *d);
    case dtype::i32: return range_typed<int32_t>(ctx, *s, *l, *d);
    case dtype::i64: return range_typed<int64_t>(ctx, *s, *l, *d);
    case dtype::u8: return range_typed<uint8_t>(ctx, *s, *l, *d);
    case dtype::i8: return range_typed<int8_t>(ctx, *s, *l, *d);
    case dtype::u16: return range_typed<uint16_t>(ctx, *s, *l, *d);
    case dtype::u32: return range_typed<uint32_t>(ctx, *s, *l, *d);
    default: return ctx.fail("unsupported type {}", dtype_name(s->type()));
  }
}

static status eyelike_check(const node& n) {
  if (n.has_attr("dtype")) {
    dtype t;
    if (!dtype_from_onnx(static_cast<int32_t>(n.attr_int("dtype", 0)), &t) || dtype_size(t) == 0)
      return invalid_input("{}: unsupported dtype {}", n.describe(), n.attr_int("dtype", 0));
  }
  return status::ok();
}

static status eyelike_run(kernel_context& ctx) {
  GG_RETURN_IF_ERROR(check_input_count(ctx, 1, 1));
  const tensor* x;
  GG_RETURN_IF_ERROR(require_input(ctx, 0, &x));
  if (x->rank() != 2) return ctx.fail("input must be 2-D, got shape {}", shape_str(x->shape()));
  dtype t = x->type();
  if (ctx.op().has_attr("dtype")) {
    if (!dtype_from_onnx(static_cast<int32_t>(ctx.op().attr_int("dtype", 0)), &t) || dtype_size(t) == 0)
      return ctx.fail("unsupported dtype {}", ctx.op().attr_int("dtype", 0));
  }
  GG_ASSIGN_OR_RETURN(tensor * out, ctx.output(0, t, x->shape()));
  const int64_t rows = x->dim(0), cols = x->dim(1);
  // Diagonals beyond the matrix are empty: clamping keeps the arithmetic in range.
  const int64_t k = std::clamp<int64_t>(ctx.op().attr_int("k", 0), -(rows + 1), cols + 1);
  const size_t es = dtype_size(t);
  std::byte* o = static_cast<std::byte*>(out->raw());
  std::memset(o, 0, out->bytes());
  std::byte one[8] = {};
  write_one(t, one);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t j = i + k;
    if (j < 0 || j >= cols) continue;
    std::memcpy(o + (i * cols + j) * static_cast<int64_t>(es), one, es);
  }
  return status::ok();
}

void register_view_ops(op_registry& r) {
  r.add("Reshape", simple_kernel(reshape_run));
  r.add("Flatten", simple_kernel(flatten_run));
  r.add("Squeeze", simple_kernel(squeeze_run));
  r.add("Unsqueeze", simple_kernel(unsqueeze_run));
  r.add("Identity", simple_kernel(identity_run));
  r.add("Dropout", simple_kernel(dropout_run));
  r.add("Shape", simple_kernel(shape_run));
  r.add("Size", simple_kernel(size_run));
  r.add("Constant", checked_kernel(constant_check, constant_run));
  r.add("ConstantOfShape", checked_kernel(constant_of_shape_check, constant_of_shape_run));
  r.add("Range", simple_kernel(range_run));
  r.add("EyeLike", checked_kernel(eyelike_check, eyelike_run));
}

}  // namespace tops

void register_tensor_ops(op_registry& r) {
  tops::register_view_ops(r);
  tops::register_copy_ops(r);
  tops::register_index_ops(r);
  tops::register_quant_ops(r);
}

}  // namespace gpugrid::cpu
