#include "actors/batcher.h"

#include <cstring>

namespace gpugrid::grid {

namespace {

bool mergeable(const tensor& t) {
  return !t.is_sequence() && t.device() == device_kind::cpu && t.rank() >= 1 && dtype_size(t.type()) > 0;
}

}  // namespace

int64_t batch_rows(const std::vector<tensor>& inputs) {
  return inputs.empty() || inputs[0].rank() == 0 ? 0 : inputs[0].dim(0);
}

std::optional<batch_signature> batch_signature_of(const digest32& model, const std::vector<tensor>& inputs) {
  if (inputs.empty()) return std::nullopt;
  batch_signature s;
  s.model = model;
  int64_t rows = -1;
  for (const auto& t : inputs) {
    if (!mergeable(t)) return std::nullopt;
    if (rows < 0) rows = t.dim(0);
    if (t.dim(0) != rows || rows <= 0) return std::nullopt;
    s.inputs.emplace_back(t.type(), shape_t(t.shape().begin() + 1, t.shape().end()));
  }
  return s;
}

bool model_allows_batching(const graph& g) {
  if (g.inputs.empty() || g.outputs.empty()) return false;
  for (int id : g.inputs) {
    const value_info& v = g.values[static_cast<size_t>(id)];
    if (v.sequence || !v.shape || v.shape->empty()) return false;
    if ((*v.shape)[0].value >= 0) return false;  // a fixed first dim
  }
  for (int id : g.outputs) {
    const value_info& v = g.values[static_cast<size_t>(id)];
    if (v.sequence) return false;
    // A declared output whose first dim is a fixed number cannot follow the batch.
    if (v.shape && (v.shape->empty() || (*v.shape)[0].value >= 0)) return false;
  }
  return true;
}

expected<std::vector<tensor>> merge_inputs(const std::vector<const std::vector<tensor>*>& jobs) {
  if (jobs.empty()) return invalid_input("no jobs to merge");
  auto first = batch_signature_of(digest32{}, *jobs[0]);
  if (!first) return invalid_input("the first job's inputs cannot be batched");
  int64_t total = 0;
  for (const auto* j : jobs) {
    auto s = batch_signature_of(digest32{}, *j);
    if (!s || !(*s == *first)) return invalid_input("jobs with different input shapes or dtypes cannot be merged");
    total += batch_rows(*j);
  }
  std::vector<tensor> merged;
  merged.reserve(jobs[0]->size());
  for (size_t i = 0; i < jobs[0]->size(); ++i) {
    shape_t shape = (*jobs[0])[i].shape();
    shape[0] = total;
    int64_t numel = 0;
    if (!checked_num_elements(shape, int64_t{1} << 40, &numel)) return invalid_input("merged input {} is too large", i);
    tensor out = tensor::zeros((*jobs[0])[i].type(), shape);
    auto* dst = static_cast<std::byte*>(out.raw());
    for (const auto* j : jobs) {
      const tensor& t = (*j)[i];
      if (t.bytes() > 0) std::memcpy(dst, t.raw(), t.bytes());
      dst += t.bytes();
    }
    merged.push_back(std::move(out));
  }
  return merged;
}

std::optional<std::vector<std::vector<tensor>>> split_outputs(const std::vector<tensor>& outputs,
                                                              const std::vector<int64_t>& rows) {
  int64_t total = 0;
  for (int64_t r : rows) {
    if (r < 0) return std::nullopt;
    total += r;
  }
  for (const auto& t : outputs)
    if (!mergeable(t) || t.dim(0) != total) return std::nullopt;
  std::vector<std::vector<tensor>> out(rows.size());
  for (const auto& t : outputs) {
    size_t row_bytes = total > 0 ? t.bytes() / static_cast<size_t>(total) : 0;
    size_t offset = 0;
    for (size_t k = 0; k < rows.size(); ++k) {
      shape_t shape = t.shape();
      shape[0] = rows[k];
      // A view into the merged output: the jobs share its storage, no copy.
      std::shared_ptr<std::byte> part(t.storage(), t.storage().get() + offset);
      out[k].emplace_back(t.type(), std::move(shape), std::move(part));
      offset += row_bytes * static_cast<size_t>(rows[k]);
    }
  }
  return out;
}

size_t batch_size_bucket(int64_t jobs) {
  size_t i = 0;
  for (int bound : kBatchSizeBounds) {
    if (jobs <= bound) return i;
    ++i;
  }
  return i;
}

}  // namespace gpugrid::grid

namespace gpugrid::grid {

batch_run_report run_batch(const std::vector<const std::vector<tensor>*>& jobs,
                           const std::function<expected<std::vector<tensor>>(const std::vector<tensor>&)>& run_merged,
                           const std::function<expected<std::vector<tensor>>(size_t)>& run_single) {
  batch_run_report rep;
  if (jobs.size() >= 2) {
    auto merged = merge_inputs(jobs);
    if (merged) {
      auto out = run_merged(*merged);
      if (out) {
        std::vector<int64_t> rows;
        rows.reserve(jobs.size());
        for (const auto* j : jobs) rows.push_back(batch_rows(*j));
        if (auto parts = split_outputs(*out, rows)) {
          for (auto& p : *parts) rep.results.emplace_back(std::move(p));
          rep.merged = true;
          return rep;
        }
      }
    }
    rep.fell_back = true;
  }
  for (size_t k = 0; k < jobs.size(); ++k) rep.results.push_back(run_single(k));
  return rep;
}

}  // namespace gpugrid::grid
