// NonMaxSuppression (opset 10/11): boxes [B, S, 4], scores [B, C, S], optional scalars
// max_output_boxes_per_class (int64, default 0: select nothing), iou_threshold (float, default
// 0) and score_threshold (float, none by default) -> selected_indices [K, 3] int64 rows of
// (batch, class, box).
//
// As onnxruntime: per batch and class, candidates whose score is above score_threshold are
// taken by descending score (ties: lower box index first); a candidate is dropped when its IoU
// with an already selected box exceeds iou_threshold; at most max_output_boxes_per_class are
// kept. center_point_box 0: boxes are two corners in either order [y1, x1, y2, x2];
// 1: [x_center, y_center, width, height]. Boxes with no area never suppress anything.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernel_helpers.h"

namespace gpugrid::cpu {
namespace {

using helpers::check_inputs;

struct corners { double y1, x1, y2, x2; };

corners box_at(const tensor& boxes, int64_t i, bool center) {
  const double a = boxes.as_double(i * 4), b = boxes.as_double(i * 4 + 1), c = boxes.as_double(i * 4 + 2),
               d = boxes.as_double(i * 4 + 3);
  if (center) return {b - d / 2, a - c / 2, b + d / 2, a + c / 2};
  return {std::min(a, c), std::min(b, d), std::max(a, c), std::max(b, d)};
}

bool suppresses(const corners& p, const corners& q, double iou_threshold) {
  const double ih = std::min(p.y2, q.y2) - std::max(p.y1, q.y1);
  const double iw = std::min(p.x2, q.x2) - std::max(p.x1, q.x1);
  if (ih <= 0 || iw <= 0) return false;
  const double inter = ih * iw;
  const double ap = (p.y2 - p.y1) * (p.x2 - p.x1), aq = (q.y2 - q.y1) * (q.x2 - q.x1);
  const double uni = ap + aq - inter;
  if (ap <= 0 || aq <= 0 || uni <= 0) return false;
  return inter / uni > iou_threshold;
}

status run_nms(kernel_context& ctx, bool center) {
  GG_RETURN_IF_ERROR(check_inputs(ctx, 2, 5, 2));
  const tensor& boxes = *ctx.input(0);
  const tensor& scores = *ctx.input(1);
  if (!is_float(boxes.type()) || !is_float(scores.type()))
    return ctx.fail("boxes and scores must be float tensors, got {} and {}", dtype_name(boxes.type()),
                    dtype_name(scores.type()));
  if (boxes.rank() != 3 || boxes.dim(2) != 4)
    return ctx.fail("boxes must be [batch, spatial, 4], got {}", shape_str(boxes.shape()));
  if (scores.rank() != 3 || scores.dim(0) != boxes.dim(0) || scores.dim(2) != boxes.dim(1))
    return ctx.fail("scores must be [batch, classes, spatial] = [{}, C, {}], got {}", boxes.dim(0), boxes.dim(1),
                    shape_str(scores.shape()));
  auto scalar = [&](size_t i, const char* what, double* out) -> status {
    const tensor* t = ctx.input(i);
    if (!t || !t->defined()) return status::ok();
    if (t->numel() != 1) return ctx.fail("{} must hold one value, got shape {}", what, shape_str(t->shape()));
    *out = t->as_double(0);
    return status::ok();
  };
  double max_out = 0, iou = 0, score_thr = -INFINITY;
  GG_RETURN_IF_ERROR(scalar(2, "max_output_boxes_per_class", &max_out));
  GG_RETURN_IF_ERROR(scalar(3, "iou_threshold", &iou));
  const bool has_score_thr = ctx.input(4) && ctx.input(4)->defined();
  GG_RETURN_IF_ERROR(scalar(4, "score_threshold", &score_thr));
  if (std::isnan(iou) || iou < 0 || iou > 1) return ctx.fail("iou_threshold {} is outside [0, 1]", iou);
  const int64_t B = boxes.dim(0), S = boxes.dim(1), C = scores.dim(1);
  const int64_t limit = max_out <= 0 ? 0 : static_cast<int64_t>(std::min<double>(max_out, double(S)));
  std::vector<int64_t> selected;  // flattened (b, c, i) triples
  std::vector<corners> cs(static_cast<size_t>(S));
  std::vector<int64_t> order, kept;
  for (int64_t b = 0; b < B && limit > 0; ++b) {
    for (int64_t i = 0; i < S; ++i) cs[i] = box_at(boxes, b * S + i, center);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = (b * C + c) * S;
      order.clear();
      for (int64_t i = 0; i < S; ++i) {
        const double s = scores.as_double(base + i);
        if (!has_score_thr || s > score_thr) order.push_back(i);
      }
      std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) {
        return scores.as_double(base + p) > scores.as_double(base + q);
      });
      kept.clear();
      for (int64_t i : order) {
        if (static_cast<int64_t>(kept.size()) >= limit) break;
        bool drop = false;
        for (int64_t k : kept)
          if (suppresses(cs[k], cs[i], iou)) { drop = true; break; }
        if (drop) continue;
        kept.push_back(i);
        selected.insert(selected.end(), {b, c, i});
      }
    }
  }
  const int64_t k = static_cast<int64_t>(selected.size() / 3);
  GG_ASSIGN_OR_RETURN(tensor * y, ctx.output_for_overwrite(0, dtype::i64, {k, 3}));
  std::copy(selected.begin(), selected.end(), y->data<int64_t>());
  return status::ok();
}

}  // namespace

void register_nms_ops(op_registry& r) {
  r.add("NonMaxSuppression", [](const node& n) -> expected<std::unique_ptr<kernel>> {
    const int64_t cpb = n.attr_int("center_point_box", 0);
    if (cpb != 0 && cpb != 1)
      return invalid_input("{}: center_point_box must be 0 or 1, got {}", n.describe(), cpb);
    return simple_kernel([cpb](kernel_context& ctx) { return run_nms(ctx, cpb == 1); })(n);
  });
}

}  // namespace gpugrid::cpu
