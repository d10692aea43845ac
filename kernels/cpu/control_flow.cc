// If, Loop and Scan (see control_flow.h).
#include "kernels/cpu/control_flow.h"

#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::cpu {

expected<std::unique_ptr<session>> make_subgraph_session(const node& n, const std::string& key,
                                                         size_t formal_inputs) {
  auto g = n.attr_graph(key);
  if (!g) return invalid_input("{}: the graph attribute '{}' is missing", n.describe(), key);
  if (g->captured_inputs != n.implicit_inputs || g->inputs.size() < static_cast<size_t>(g->captured_inputs))
    return internal_error("{} {}: captured inputs do not match the node's", n.describe(), key);
  size_t formal = g->inputs.size() - static_cast<size_t>(g->captured_inputs);
  if (formal != formal_inputs)
    return invalid_input("{}: its {} takes {} input(s), but {} expected", n.describe(), key, formal, formal_inputs);
  session_options o;
  o.subgraph = true;
  auto s = session::create(g, o);
  if (!s) return status(s.error().kind(), n.describe() + " " + key + ": " + s.error().message());
  return s;
}

std::vector<tensor> captured_inputs(const kernel_context& ctx) {
  std::vector<tensor> out;
  const node& n = ctx.op();
  for (size_t k = n.explicit_inputs(); k < n.inputs.size(); ++k) {
    const tensor* t = ctx.input(k);
    out.push_back(t ? *t : tensor());
  }
  return out;
}

expected<std::vector<tensor>> run_body(const kernel_context& ctx, session& body, const std::string& key,
                                       const std::vector<tensor>& inputs) {
  auto r = body.run_subgraph(inputs, &const_cast<kernel_context&>(ctx).pool());
  if (!r) return status(r.error().kind(), ctx.op().describe() + " " + key + ": " + r.error().message());
  return r;
}

tensor slice_along(const tensor& t, int64_t axis, int64_t i) {
  shape_t shape = t.shape();
  const int64_t len = shape[axis];
  shape.erase(shape.begin() + axis);
  const size_t es = dtype_size(t.type());
  int64_t inner = 1, outer = 1;
  for (size_t d = axis + 1; d < t.rank(); ++d) inner *= t.dim(d);
  for (int64_t d = 0; d < axis; ++d) outer *= t.dim(d);
  const size_t block = static_cast<size_t>(inner) * es;
  if (axis == 0 && t.device() == device_kind::cpu) {
    std::byte* base = const_cast<std::byte*>(reinterpret_cast<const std::byte*>(t.raw()));
    return tensor(t.type(), std::move(shape), std::shared_ptr<std::byte>(t.storage(), base + i * block));
  }
  tensor out = tensor::zeros(t.type(), std::move(shape));
  const auto* src = static_cast<const std::byte*>(t.raw());
  auto* dst = static_cast<std::byte*>(out.raw());
  for (int64_t o = 0; o < outer; ++o)
    if (block) std::memcpy(dst + o * block, src + (o * len + i) * block, block);
  return out;
}

namespace {

status check_parts(const kernel_context& ctx, const std::vector<tensor>& parts) {
  for (const tensor& p : parts) {
    if (p.is_sequence() || p.is_none()) return ctx.fail("a sequence or empty optional cannot be an element here");
    if (p.device() != device_kind::cpu) return ctx.fail("expects CPU tensors");
    if (dtype_size(p.type()) == 0) return ctx.fail("{} tensors are not supported here", dtype_name(p.type()));
    if (p.type() != parts[0].type())
      return ctx.fail("parts have different types ({} and {})", dtype_name(parts[0].type()), dtype_name(p.type()));
  }
  return status::ok();
}

}  // namespace

expected<tensor> stack_tensors(const kernel_context& ctx, const std::vector<tensor>& parts, int64_t axis,
                               bool reverse) {
  if (parts.empty()) return ctx.fail("nothing to stack");
  GG_RETURN_IF_ERROR(check_parts(ctx, parts));
  const shape_t& s0 = parts[0].shape();
  for (const tensor& p : parts)
    if (p.shape() != s0)
      return ctx.fail("parts to stack have different shapes ({} and {})", shape_str(s0), shape_str(p.shape()));
  if (axis < 0 || axis > static_cast<int64_t>(s0.size())) return ctx.fail("axis {} is out of range", axis);
  shape_t shape = s0;
  shape.insert(shape.begin() + axis, static_cast<int64_t>(parts.size()));
  int64_t total = 0;
  const size_t es = dtype_size(parts[0].type());
  if (!checked_num_elements(shape, max_tensor_bytes / static_cast<int64_t>(es), &total))
    return ctx.fail("the stacked result {} is too large", shape_str(shape));
  tensor out = tensor::zeros(parts[0].type(), shape);
  int64_t inner = 1, outer = 1;
  for (size_t d = axis; d < s0.size(); ++d) inner *= s0[d];
  for (int64_t d = 0; d < axis; ++d) outer *= s0[d];
  const size_t block = static_cast<size_t>(inner) * es;
  const int64_t n = static_cast<int64_t>(parts.size());
  auto* dst = static_cast<std::byte*>(out.raw());
  for (int64_t k = 0; k < n; ++k) {
    const auto* src = static_cast<const std::byte*>(parts[reverse ? n - 1 - k : k].raw());
    for (int64_t o = 0; o < outer; ++o)
      if (block) std::memcpy(dst + (o * n + k) * block, src + o * block, block);
  }
  return out;
}

expected<tensor> concat_tensors(const kernel_context& ctx, const std::vector<tensor>& parts, int64_t axis) {
  if (parts.empty()) return ctx.fail("nothing to concatenate");
  GG_RETURN_IF_ERROR(check_parts(ctx, parts));
  const size_t rank = parts[0].rank();
  if (axis < 0 || axis >= static_cast<int64_t>(rank)) return ctx.fail("axis {} is out of range for rank {}", axis, rank);
  shape_t shape = parts[0].shape();
  shape[axis] = 0;
  for (const tensor& p : parts) {
    if (p.rank() != rank) return ctx.fail("parts have different ranks ({} and {})", rank, p.rank());
    for (size_t d = 0; d < rank; ++d)
      if (static_cast<int64_t>(d) != axis && p.dim(d) != parts[0].dim(d))
        return ctx.fail("parts have incompatible shapes ({} and {})", shape_str(parts[0].shape()), shape_str(p.shape()));
    shape[axis] += p.dim(axis);
  }
  const size_t es = dtype_size(parts[0].type());
  int64_t total = 0;
  if (!checked_num_elements(shape, max_tensor_bytes / static_cast<int64_t>(es), &total))
    return ctx.fail("the concatenated result {} is too large", shape_str(shape));
  tensor out = tensor::zeros(parts[0].type(), shape);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < rank; ++d) inner *= shape[d];
  auto* dst = static_cast<std::byte*>(out.raw());
  const size_t row = static_cast<size_t>(shape[axis] * inner) * es;
  size_t at = 0;
  for (const tensor& p : parts) {
    const size_t chunk = static_cast<size_t>(p.dim(axis) * inner) * es;
    const auto* src = static_cast<const std::byte*>(p.raw());
    for (int64_t o = 0; o < outer; ++o)
      if (chunk) std::memcpy(dst + o * row + at, src + o * chunk, chunk);
    at += chunk;
  }
  return out;
}

namespace {

bool truth(const tensor& t) { return t.as_double(0) != 0; }

status read_flag(const kernel_context& ctx, const tensor* t, const char* what, bool* out) {
  if (!t || t->is_sequence() || t->is_none() || t->numel() != 1 || t->device() != device_kind::cpu)
    return ctx.fail("{} must be a single element", what);
  *out = truth(*t);
  return status::ok();
}

tensor bool_scalar(bool v) {
  tensor t = tensor::zeros(dtype::boolean, {});
  *t.data<bool>() = v;
  return t;
}

// An empty scan output (no iterations): [0] followed by the body output's declared dims when
// they are all known, of its declared type (float when undeclared).
tensor empty_scan_output(const graph& body, size_t output_index, int64_t axis) {
  const value_info& v = body.values[body.outputs[output_index]];
  shape_t shape;
  if (v.shape) {
    for (const auto& d : *v.shape) shape.push_back(d.value >= 0 ? d.value : 0);
  }
  if (axis < 0 || axis > static_cast<int64_t>(shape.size())) axis = 0;
  shape.insert(shape.begin() + axis, 0);
  return tensor::zeros(v.type == dtype::undefined || v.type == dtype::string ? dtype::f32 : v.type, shape);
}

class if_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n) {
    auto k = std::make_unique<if_kernel>();
    if (n.explicit_inputs() != 1) return invalid_input("{}: If takes one input (the condition)", n.describe());
    GG_ASSIGN_OR_RETURN(k->then_, make_subgraph_session(n, "then_branch", 0));
    GG_ASSIGN_OR_RETURN(k->else_, make_subgraph_session(n, "else_branch", 0));
    for (auto* s : {k->then_.get(), k->else_.get()})
      if (s->model().outputs.size() != n.outputs.size())
        return invalid_input("{}: a branch has {} output(s), the node {}", n.describe(), s->model().outputs.size(),
                             n.outputs.size());
    return std::unique_ptr<kernel>(std::move(k));
  }
  status run(kernel_context& ctx) override {
    bool cond = false;
    GG_RETURN_IF_ERROR(read_flag(ctx, ctx.input(0), "the condition", &cond));
    GG_ASSIGN_OR_RETURN(auto outs, run_body(ctx, cond ? *then_ : *else_, cond ? "then_branch" : "else_branch",
                                            captured_inputs(ctx)));
    for (size_t i = 0; i < outs.size(); ++i) ctx.set_output(i, std::move(outs[i]));
    return status::ok();
  }

 private:
  std::unique_ptr<session> then_, else_;
};

class loop_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n) {
    auto k = std::make_unique<loop_kernel>();
    if (n.explicit_inputs() < 2) return invalid_input("{}: Loop takes at least 2 inputs (M and cond)", n.describe());
    k->carried_ = n.explicit_inputs() - 2;
    GG_ASSIGN_OR_RETURN(k->body_, make_subgraph_session(n, "body", k->carried_ + 2));
    const size_t body_outputs = k->body_->model().outputs.size();
    if (body_outputs < k->carried_ + 1)
      return invalid_input("{}: its body has {} output(s), fewer than cond and {} loop-carried value(s)", n.describe(),
                           body_outputs, k->carried_);
    k->scans_ = body_outputs - 1 - k->carried_;
    if (n.outputs.size() != k->carried_ + k->scans_)
      return invalid_input("{}: has {} output(s), but its body makes {} loop-carried and {} scan output(s)",
                           n.describe(), n.outputs.size(), k->carried_, k->scans_);
    return std::unique_ptr<kernel>(std::move(k));
  }

  status run(kernel_context& ctx) override {
    const tensor* m = ctx.input(0);
    const tensor* c = ctx.input(1);
    int64_t trips = -1;  // -1: no trip count
    if (m) {
      if (m->is_sequence() || m->is_none() || m->numel() != 1 || !is_integer(m->type()))
        return ctx.fail("the trip count M must be one integer");
      trips = m->as_int64(0);
      if (trips < 0) return ctx.fail("the trip count {} is negative", trips);
      if (trips > max_loop_iterations && !c)
        return ctx.fail("the trip count {} is more than the limit of {} iterations", trips, max_loop_iterations);
    }
    bool cond = true;
    if (c) GG_RETURN_IF_ERROR(read_flag(ctx, c, "the loop condition", &cond));
    std::vector<tensor> carried;
    for (size_t i = 0; i < carried_; ++i) {
      const tensor* t = ctx.input(2 + i);
      if (!t) return ctx.fail("loop-carried input {} is missing", i);
      carried.push_back(*t);
    }
    const std::vector<tensor> captured = captured_inputs(ctx);
    std::vector<std::vector<tensor>> scans(scans_);
    int64_t scan_bytes = 0;
    for (int64_t i = 0; (trips < 0 || i < trips) && cond; ++i) {
      if (i >= max_loop_iterations) return ctx.fail("ran into the limit of {} iterations", max_loop_iterations);
      std::vector<tensor> ins;
      ins.reserve(2 + carried_ + captured.size());
      ins.push_back(tensor::scalar<int64_t>(i));
      ins.push_back(bool_scalar(cond));
      for (auto& t : carried) ins.push_back(std::move(t));
      ins.insert(ins.end(), captured.begin(), captured.end());
      GG_ASSIGN_OR_RETURN(auto outs, run_body(ctx, *body_, "body", ins));
      if (c) GG_RETURN_IF_ERROR(read_flag(ctx, &outs[0], "the body's condition output", &cond));
      carried.assign(std::make_move_iterator(outs.begin() + 1), std::make_move_iterator(outs.begin() + 1 + carried_));
      for (size_t k = 0; k < scans_; ++k) {
        tensor& t = outs[1 + carried_ + k];
        if (!t.defined() || t.is_sequence()) return ctx.fail("scan output {} of the body is not a tensor", k);
        scan_bytes += static_cast<int64_t>(t.bytes());
        if (scan_bytes > max_tensor_bytes) return ctx.fail("its scan outputs grow past {} bytes", max_tensor_bytes);
        scans[k].push_back(std::move(t));
      }
    }
    for (size_t i = 0; i < carried_; ++i) ctx.set_output(i, std::move(carried[i]));
    for (size_t k = 0; k < scans_; ++k) {
      if (scans[k].empty()) {
        ctx.set_output(carried_ + k, empty_scan_output(body_->model(), 1 + carried_ + k, 0));
        continue;
      }
      GG_ASSIGN_OR_RETURN(tensor t, stack_tensors(ctx, scans[k], 0, false));
      ctx.set_output(carried_ + k, std::move(t));
    }
    return status::ok();
  }

 private:
  std::unique_ptr<session> body_;
  size_t carried_ = 0, scans_ = 0;
};

class scan_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> make(const node& n) {
    if (n.opset < 9)
      return invalid_input("{}: Scan before opset 9 (with a batch axis and sequence_lens) is not supported",
                           n.describe());
    auto k = std::make_unique<scan_kernel>();
    const int64_t m = n.attr_int("num_scan_inputs", -1);
    if (m < 1 || static_cast<size_t>(m) > n.explicit_inputs())
      return invalid_input("{}: num_scan_inputs {} does not fit its {} input(s)", n.describe(), m, n.explicit_inputs());
    k->scan_in_ = static_cast<size_t>(m);
    k->states_ = n.explicit_inputs() - k->scan_in_;
    GG_ASSIGN_OR_RETURN(k->body_, make_subgraph_session(n, "body", k->states_ + k->scan_in_));
    const size_t body_outputs = k->body_->model().outputs.size();
    if (body_outputs < k->states_ || n.outputs.size() != body_outputs)
      return invalid_input("{}: its body has {} output(s) for {} state value(s) and the node {} output(s)",
                           n.describe(), body_outputs, k->states_, n.outputs.size());
    k->scan_out_ = body_outputs - k->states_;
    k->in_dirs_ = n.attr_ints("scan_input_directions", std::vector<int64_t>(k->scan_in_, 0));
    k->out_dirs_ = n.attr_ints("scan_output_directions", std::vector<int64_t>(k->scan_out_, 0));
    k->in_axes_ = n.attr_ints("scan_input_axes", std::vector<int64_t>(k->scan_in_, 0));
    k->out_axes_ = n.attr_ints("scan_output_axes", std::vector<int64_t>(k->scan_out_, 0));
    if (k->in_dirs_.size() != k->scan_in_ || k->in_axes_.size() != k->scan_in_)
      return invalid_input("{}: scan_input_directions/axes must have {} entries", n.describe(), k->scan_in_);
    if (k->out_dirs_.size() != k->scan_out_ || k->out_axes_.size() != k->scan_out_)
      return invalid_input("{}: scan_output_directions/axes must have {} entries", n.describe(), k->scan_out_);
    for (auto* v : {&k->in_dirs_, &k->out_dirs_})
      for (int64_t d : *v)
        if (d != 0 && d != 1) return invalid_input("{}: a scan direction must be 0 or 1, not {}", n.describe(), d);
    return std::unique_ptr<kernel>(std::move(k));
  }

  status run(kernel_context& ctx) override {
    std::vector<tensor> states;
    for (size_t i = 0; i < states_; ++i) {
      const tensor* t = ctx.input(i);
      if (!t) return ctx.fail("state input {} is missing", i);
      states.push_back(*t);
    }
    std::vector<const tensor*> scan_ins;
    std::vector<int64_t> axes;
    int64_t len = -1;
    for (size_t j = 0; j < scan_in_; ++j) {
      const tensor* t = ctx.input(states_ + j);
      if (!t || t->is_sequence() || t->rank() == 0 || t->device() != device_kind::cpu)
        return ctx.fail("scan input {} must be a tensor of rank 1 or more", j);
      if (dtype_size(t->type()) == 0) return ctx.fail("scan input {} is {}, which is not supported", j, dtype_name(t->type()));
      int64_t r = static_cast<int64_t>(t->rank());
      int64_t a = in_axes_[j] < 0 ? in_axes_[j] + r : in_axes_[j];
      if (a < 0 || a >= r) return ctx.fail("scan_input_axes {} is out of range for rank {}", in_axes_[j], r);
      if (len >= 0 && t->dim(a) != len)
        return ctx.fail("scan inputs have different lengths ({} and {})", len, t->dim(a));
      len = t->dim(a);
      scan_ins.push_back(t);
      axes.push_back(a);
    }
    const std::vector<tensor> captured = captured_inputs(ctx);
    std::vector<std::vector<tensor>> outs_k(scan_out_);
    int64_t bytes = 0;
    for (int64_t it = 0; it < len; ++it) {
      std::vector<tensor> ins;
      for (auto& s : states) ins.push_back(std::move(s));
      for (size_t j = 0; j < scan_in_; ++j)
        ins.push_back(slice_along(*scan_ins[j], axes[j], in_dirs_[j] ? len - 1 - it : it));
      ins.insert(ins.end(), captured.begin(), captured.end());
      GG_ASSIGN_OR_RETURN(auto outs, run_body(ctx, *body_, "body", ins));
      states.assign(std::make_move_iterator(outs.begin()), std::make_move_iterator(outs.begin() + states_));
      for (size_t k = 0; k < scan_out_; ++k) {
        tensor& t = outs[states_ + k];
        if (!t.defined() || t.is_sequence()) return ctx.fail("scan output {} of the body is not a tensor", k);
        bytes += static_cast<int64_t>(t.bytes());
        if (bytes > max_tensor_bytes) return ctx.fail("its scan outputs grow past {} bytes", max_tensor_bytes);
        outs_k[k].push_back(std::move(t));
      }
    }
    for (size_t i = 0; i < states_; ++i) ctx.set_output(i, std::move(states[i]));
    for (size_t k = 0; k < scan_out_; ++k) {
      if (outs_k[k].empty()) {
        ctx.set_output(states_ + k, empty_scan_output(body_->model(), states_ + k, std::max<int64_t>(out_axes_[k], 0)));
        continue;
      }
      int64_t r = static_cast<int64_t>(outs_k[k][0].rank()) + 1;
      int64_t a = out_axes_[k] < 0 ? out_axes_[k] + r : out_axes_[k];
      if (a < 0 || a >= r) return ctx.fail("scan_output_axes {} is out of range for rank {}", out_axes_[k], r);
      GG_ASSIGN_OR_RETURN(tensor t, stack_tensors(ctx, outs_k[k], a, out_dirs_[k] != 0));
      ctx.set_output(states_ + k, std::move(t));
    }
    return status::ok();
  }

 private:
  std::unique_ptr<session> body_;
  size_t states_ = 0, scan_in_ = 0, scan_out_ = 0;
  std::vector<int64_t> in_dirs_, out_dirs_, in_axes_, out_axes_;
};

}  // namespace

void register_control_flow_ops(op_registry& r) {
  r.add("If", &if_kernel::make);
  r.add("Loop", &loop_kernel::make);
  r.add("Scan", &scan_kernel::make);
}

}  // namespace gpugrid::cpu
