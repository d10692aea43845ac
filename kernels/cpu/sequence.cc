// The sequence ops: SequenceEmpty/Construct/At/Insert/Erase/Length, SplitToSequence,
// ConcatFromSequence and SequenceMap. A sequence is an immutable tensor::sequence value; ops
// that "modify" one make a new sequence sharing the element tensors.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/control_flow.h"
#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cpu {

namespace {

status need_sequence(const kernel_context& ctx, size_t i, const tensor** out) {
  const tensor* t = ctx.input(i);
  if (!t || !t->is_sequence()) return ctx.fail("input {} must be a sequence", i);
  *out = t;
  return status::ok();
}

status need_tensor(const kernel_context& ctx, size_t i, const tensor** out) {
  const tensor* t = ctx.input(i);
  if (!t || t->is_sequence()) return ctx.fail("input {} must be a tensor", i);
  if (t->device() != device_kind::cpu) return ctx.fail("input {} must be in host memory", i);
  *out = t;
  return status::ok();
}

// The position input i (a single integer; absent: `dflt`), checked against [lo, hi] and made
// non-negative by adding `size`.
status read_position(const kernel_context& ctx, size_t i, int64_t dflt, int64_t size, int64_t hi, int64_t* out) {
  const tensor* p = ctx.input(i);
  int64_t v = dflt;
  if (p) {
    if (p->is_sequence() || p->numel() != 1 || !is_integer(p->type())) return ctx.fail("the position must be one integer");
    v = p->as_int64(0);
  }
  if (v < -size || v > hi) return ctx.fail("position {} is out of range for a sequence of {}", v, size);
  *out = v < 0 ? v + size : v;
  return status::ok();
}

status check_element(const kernel_context& ctx, const tensor& seq, const tensor& t) {
  if (seq.type() != dtype::undefined && t.type() != seq.type())
    return ctx.fail("cannot put a {} tensor into a sequence of {}", dtype_name(t.type()), dtype_name(seq.type()));
  return status::ok();
}

status sequence_empty(kernel_context& ctx) {
  dtype t = dtype::f32;
  int64_t code = ctx.op().attr_int("dtype", 1);
  if (!dtype_from_onnx(static_cast<int32_t>(code), &t)) return ctx.fail("dtype {} is not a known type", code);
  ctx.set_output(0, tensor::sequence(t, {}));
  return status::ok();
}

status sequence_construct(kernel_context& ctx) {
  if (ctx.num_inputs() == 0) return ctx.fail("needs at least one input");
  std::vector<tensor> items;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const tensor* t;
    GG_RETURN_IF_ERROR(need_tensor(ctx, i, &t));
    if (t->type() != ctx.input(0)->type())
      return ctx.fail("inputs have different types ({} and {})", dtype_name(ctx.input(0)->type()), dtype_name(t->type()));
    items.push_back(*t);
  }
  const dtype type = items[0].type();
  ctx.set_output(0, tensor::sequence(type, std::move(items)));
  return status::ok();
}

status sequence_at(kernel_context& ctx) {
  const tensor* s;
  GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s));
  const int64_t n = static_cast<int64_t>(s->items().size());
  if (!ctx.input(1)) return ctx.fail("the position is missing");
  int64_t pos;
  GG_RETURN_IF_ERROR(read_position(ctx, 1, 0, n, n - 1, &pos));
  ctx.set_output(0, s->items()[pos]);
  return status::ok();
}

status sequence_insert(kernel_context& ctx) {
  const tensor *s, *t;
  GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s));
  GG_RETURN_IF_ERROR(need_tensor(ctx, 1, &t));
  GG_RETURN_IF_ERROR(check_element(ctx, *s, *t));
  const int64_t n = static_cast<int64_t>(s->items().size());
  int64_t pos;
  GG_RETURN_IF_ERROR(read_position(ctx, 2, n, n, n, &pos));
  std::vector<tensor> items = s->items();
  items.insert(items.begin() + pos, *t);
  ctx.set_output(0, tensor::sequence(t->type(), std::move(items)));
  return status::ok();
}

status sequence_erase(kernel_context& ctx) {
  const tensor* s;
  GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s));
  const int64_t n = static_cast<int64_t>(s->items().size());
  if (n == 0) return ctx.fail("cannot erase from an empty sequence");
  int64_t pos;
  GG_RETURN_IF_ERROR(read_position(ctx, 1, -1, n, n - 1, &pos));
  std::vector<tensor> items = s->items();
  items.erase(items.begin() + pos);
  ctx.set_output(0, tensor::sequence(s->type(), std::move(items)));
  return status::ok();
}

status sequence_length(kernel_context& ctx) {
  const tensor* s;
  GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s));
  ctx.set_output(0, tensor::scalar<int64_t>(static_cast<int64_t>(s->items().size())));
  return status::ok();
}

status split_to_sequence(kernel_context& ctx) {
  const tensor* x;
  GG_RETURN_IF_ERROR(need_tensor(ctx, 0, &x));
  if (dtype_size(x->type()) == 0) return ctx.fail("{} tensors are not supported", dtype_name(x->type()));
  const int64_t r = static_cast<int64_t>(x->rank());
  int64_t axis = ctx.op().attr_int("axis", 0);
  if (axis < -r || axis >= r) return ctx.fail("axis {} is out of range for rank {}", axis, r);
  if (axis < 0) axis += r;
  const int64_t len = x->dim(axis);
  std::vector<int64_t> sizes;
  const tensor* split = ctx.input(1);
  bool squeeze = false;
  if (!split) {
    sizes.assign(static_cast<size_t>(len), 1);
    squeeze = ctx.op().attr_int("keepdims", 1) == 0;
  } else {
    if (split->is_sequence() || !is_integer(split->type()) || split->rank() > 1)
      return ctx.fail("split must be an integer scalar or 1-D tensor");
    if (split->rank() == 0) {
      int64_t c = split->as_int64(0);
      if (c <= 0) return ctx.fail("split {} must be positive", c);
      for (int64_t at = 0; at < len; at += c) sizes.push_back(std::min(c, len - at));
    } else {
      sizes = split->to_int64_vector();
      int64_t sum = 0;
      for (int64_t v : sizes) {
        if (v < 0) return ctx.fail("split sizes must not be negative");
        sum += v;
      }
      if (sum != len) return ctx.fail("split sizes add up to {}, but the axis has {}", sum, len);
    }
  }
  const size_t es = dtype_size(x->type());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x->dim(d);
  for (int64_t d = axis + 1; d < r; ++d) inner *= x->dim(d);
  std::vector<tensor> items;
  int64_t at = 0;
  const auto* src = static_cast<const std::byte*>(x->raw());
  for (int64_t size : sizes) {
    shape_t shape = x->shape();
    shape[axis] = size;
    tensor part = tensor::zeros(x->type(), shape);
    const size_t chunk = static_cast<size_t>(size * inner) * es;
    auto* dst = static_cast<std::byte*>(part.raw());
    for (int64_t o = 0; o < outer; ++o)
      if (chunk) std::memcpy(dst + o * chunk, src + (o * len + at) * inner * es, chunk);
    if (squeeze) {
      shape.erase(shape.begin() + axis);
      part = part.reshaped(shape);
    }
    items.push_back(std::move(part));
    at += size;
  }
  ctx.set_output(0, tensor::sequence(x->type(), std::move(items)));
  return status::ok();
}

status concat_from_sequence(kernel_context& ctx) {
  const tensor* s;
  GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s));
  if (s->items().empty()) return ctx.fail("the sequence is empty");
  const bool new_axis = ctx.op().attr_int("new_axis", 0) != 0;
  if (!ctx.op().has_attr("axis")) return ctx.fail("the axis attribute is missing");
  int64_t axis = ctx.op().attr_int("axis", 0);
  const int64_t r = static_cast<int64_t>(s->items()[0].rank()) + (new_axis ? 1 : 0);
  if (axis < -r || axis >= r) return ctx.fail("axis {} is out of range for rank {}", axis, r);
  if (axis < 0) axis += r;
  auto out = new_axis ? stack_tensors(ctx, s->items(), axis, false) : concat_tensors(ctx, s->items(), axis);
  if (!out) return out.error();
  ctx.set_output(0, std::move(out).value());
  return status::ok();
}

class sequence_map_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n) {
    auto k = std::make_unique<sequence_map_kernel>();
    if (n.explicit_inputs() < 1) return invalid_input("{}: SequenceMap needs an input sequence", n.describe());
    GG_ASSIGN_OR_RETURN(k->body_, make_subgraph_session(n, "body", n.explicit_inputs()));
    if (k->body_->model().outputs.size() != n.outputs.size())
      return invalid_input("{}: its body has {} output(s), the node {}", n.describe(), k->body_->model().outputs.size(),
                           n.outputs.size());
    return std::unique_ptr<kernel>(std::move(k));
  }
  status run(kernel_context& ctx) override {
    const tensor* s0;
    GG_RETURN_IF_ERROR(need_sequence(ctx, 0, &s0));
    const size_t explicit_n = ctx.op().explicit_inputs();
    const size_t len = s0->items().size();
    for (size_t j = 1; j < explicit_n; ++j) {
      const tensor* t = ctx.input(j);
      if (!t) return ctx.fail("input {} is missing", j);
      if (t->is_sequence() && t->items().size() != len)
        return ctx.fail("input sequences have different lengths ({} and {})", len, t->items().size());
    }
    const std::vector<tensor> captured = captured_inputs(ctx);
    std::vector<std::vector<tensor>> results(ctx.num_outputs());
    for (size_t i = 0; i < len; ++i) {
      std::vector<tensor> ins;
      for (size_t j = 0; j < explicit_n; ++j) {
        const tensor* t = ctx.input(j);
        ins.push_back(t->is_sequence() ? t->items()[i] : *t);
      }
      ins.insert(ins.end(), captured.begin(), captured.end());
      GG_ASSIGN_OR_RETURN(auto outs, run_body(ctx, *body_, "body", ins));
      for (size_t o = 0; o < outs.size(); ++o) {
        if (!outs[o].defined() || outs[o].is_sequence() || outs[o].is_none()) return ctx.fail("body output {} is not a tensor", o);
        results[o].push_back(std::move(outs[o]));
      }
    }
    for (size_t o = 0; o < results.size(); ++o) {
      const graph& b = body_->model();
      dtype t = results[o].empty() ? b.values[b.outputs[o]].type : results[o][0].type();
      ctx.set_output(o, tensor::sequence(t, std::move(results[o])));
    }
    return status::ok();
  }

 private:
  std::unique_ptr<session> body_;
};

}  // namespace

void register_sequence_ops(op_registry& r) {
  r.add("SequenceEmpty", simple_kernel(sequence_empty));
  r.add("SequenceConstruct", simple_kernel(sequence_construct));
  r.add("SequenceAt", simple_kernel(sequence_at));
  r.add("SequenceInsert", simple_kernel(sequence_insert));
  r.add("SequenceErase", simple_kernel(sequence_erase));
  r.add("SequenceLength", simple_kernel(sequence_length));
  r.add("SplitToSequence", simple_kernel(split_to_sequence));
  r.add("ConcatFromSequence", simple_kernel(concat_from_sequence));
  r.add("SequenceMap", &sequence_map_kernel::make);
}

}  // namespace gpugrid::cpu
