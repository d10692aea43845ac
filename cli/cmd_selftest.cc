// gpugrid selftest: runs ONNX backend node test cases on a backend.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "base/json.h"
#include "cli/commands.h"
#include "engine/backend.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "engine/tensor_compare.h"
#include "engine/tensor_io.h"

namespace gpugrid::cli {

namespace {

namespace fs = std::filesystem;

enum class outcome { passed, failed, skipped };

struct case_result {
  std::string name;
  outcome result = outcome::passed;
  std::string reason;
};

bool read_file(const fs::path& p, std::string* out) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// Files named prefix_N.pb in dir, ordered by N.
std::vector<fs::path> numbered(const fs::path& dir, const std::string& prefix) {
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".pb") continue;
    std::string num = name.substr(prefix.size(), name.size() - prefix.size() - 3);
    if (num.empty() || !std::all_of(num.begin(), num.end(), ::isdigit)) continue;
    found.push_back({std::stoi(num), e.path()});
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [n, p] : found) out.push_back(p);
  return out;
}

bool is_unsupported(const status& st) {
  const std::string& m = st.message();
  return m.find("unsupported") != std::string::npos || m.find("not supported") != std::string::npos;
}

case_result run_case(const fs::path& dir, int threads, const std::string& device, bool allow_tf32) {
  case_result r;
  r.name = dir.filename().string();
  auto model = load_model_file((dir / "model.onnx").string());
  if (!model) {
    r.result = is_unsupported(model.error()) ? outcome::skipped : outcome::failed;
    r.reason = model.error().message();
    return r;
  }
  session_options opt;
  opt.threads = threads;
  opt.device = device;
  opt.allow_tf32 = allow_tf32;
  auto sess = session::create(*model, opt);
  if (!sess) {
    r.result = is_unsupported(sess.error()) ? outcome::skipped : outcome::failed;
    r.reason = sess.error().message();
    return r;
  }
  std::vector<fs::path> sets;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) {
    r.result = outcome::skipped;
    r.reason = "no test_data_set_* folders";
    return r;
  }
  for (const auto& set : sets) {
    std::vector<tensor> inputs, expected_outputs;
    const graph& declared = (*sess)->model();
    // The .pb bytes do not say whether they hold a TensorProto, SequenceProto or OptionalProto
    // (each parses as the others): the model's declaration of that input or output decides.
    auto read_value = [&](const std::string& bytes, const fs::path& p, const std::vector<int>& ids, size_t i,
                          std::string* name) -> expected<tensor> {
      if (i < ids.size()) {
        const value_info& v = declared.values[ids[i]];
        if (v.optional) return read_optional_proto(bytes, p.string(), name);
        if (v.sequence) return read_sequence_proto(bytes, p.string(), name);
      }
      return read_tensor_proto(bytes, p.string(), name);
    };
    const auto in_files = numbered(set, "input_");
    for (size_t fi = 0; fi < in_files.size(); ++fi) {
      const fs::path& p = in_files[fi];
      std::string bytes, name;
      if (!read_file(p, &bytes)) { r.result = outcome::failed; r.reason = "cannot read " + p.string(); return r; }
      auto t = read_value(bytes, p, declared.inputs, fi, &name);
      if (!t) {
        r.result = is_unsupported(t.error()) ? outcome::skipped : outcome::failed;
        r.reason = t.error().message();
        return r;
      }
      inputs.push_back(std::move(t).value());
    }
    const auto out_files = numbered(set, "output_");
    for (size_t fi = 0; fi < out_files.size(); ++fi) {
      const fs::path& p = out_files[fi];
      std::string bytes, name;
      if (!read_file(p, &bytes)) { r.result = outcome::failed; r.reason = "cannot read " + p.string(); return r; }
      auto t = read_value(bytes, p, declared.outputs, fi, &name);
      if (!t) {
        r.result = is_unsupported(t.error()) ? outcome::skipped : outcome::failed;
        r.reason = t.error().message();
        return r;
      }
      expected_outputs.push_back(std::move(t).value());
    }
    // onnx 1.12 stores bfloat16 test data as uint16 tensors: read those bits as bfloat16.
    const graph& model_graph = (*sess)->model();
    for (size_t i = 0; i < inputs.size() && i < model_graph.inputs.size(); ++i)
      if (inputs[i].type() == dtype::u16 && model_graph.values[model_graph.inputs[i]].type == dtype::bf16)
        inputs[i] = tensor(dtype::bf16, inputs[i].shape(), inputs[i].storage());
    auto out = (*sess)->run(inputs);
    if (!out) {
      r.result = is_unsupported(out.error()) ? outcome::skipped : outcome::failed;
      r.reason = out.error().message();
      return r;
    }
    if (out->size() < expected_outputs.size()) {
      r.result = outcome::failed;
      r.reason = fmt::format("{} outputs, expected {}", out->size(), expected_outputs.size());
      return r;
    }
    for (size_t i = 0; i < expected_outputs.size(); ++i) {
      if (expected_outputs[i].type() == dtype::u16 && (*out)[i].type() == dtype::bf16)
        expected_outputs[i] = tensor(dtype::bf16, expected_outputs[i].shape(), expected_outputs[i].storage());
      std::string why;
      if (!tensors_close((*out)[i], expected_outputs[i], tolerance{1e-3, 1e-7}, &why)) {
        r.result = outcome::failed;
        r.reason = fmt::format("{}: output {} ('{}'): {}", set.filename().string(), i,
                               (*sess)->output_names()[i], why);
        return r;
      }
    }
  }
  return r;
}

}  // namespace

int selftest_command(const selftest_options& o) {
  std::error_code ec;
  fs::path suite(o.suite);
  if (o.suite.empty()) {
    fmt::print(stderr,
               "gpugrid: selftest: give --suite DIR, a folder of ONNX backend test cases (python3 "
               "tests/node_suite/generate.py DIR writes one)\n");
    return 2;
  }
  if (!fs::is_directory(suite, ec)) {
    fmt::print(stderr, "gpugrid: selftest: suite folder '{}' does not exist\n", o.suite);
    return 2;
  }
  if (o.device != "cpu") {
    auto dev = open_device(o.device == "auto" ? "cuda" : o.device);
    if (!dev && o.device != "auto") {
      fmt::print(stderr, "gpugrid: selftest: {}\n", dev.error().message());
      return 2;
    }
  }
  std::vector<fs::path> cases;
  if (fs::exists(suite / "model.onnx")) {
    cases.push_back(suite);
  } else {
    for (auto& e : fs::directory_iterator(suite, ec)) {
      std::string name = e.path().filename().string();
      if (e.is_directory() && name.rfind("test_", 0) == 0 && fs::exists(e.path() / "model.onnx") &&
          (o.filter.empty() || name.find(o.filter) != std::string::npos))
        cases.push_back(e.path());
    }
  }
  std::sort(cases.begin(), cases.end());
  if (cases.empty()) {
    fmt::print(stderr, "gpugrid: selftest: no test cases (test_*/model.onnx) under '{}'\n", o.suite);
    return 2;
  }
  set_blas_threads(o.threads);
  int passed = 0, failed = 0, skipped = 0;
  std::vector<case_result> results;
  for (const auto& dir : cases) {
    case_result r;
    try {
      r = run_case(dir, o.threads, o.device, o.precision == "tf32");
    } catch (const std::exception& e) {
      r.name = dir.filename().string();
      r.result = outcome::failed;
      r.reason = std::string("exception: ") + e.what();
    }
    if (r.result == outcome::passed) ++passed;
    if (r.result == outcome::failed) ++failed;
    if (r.result == outcome::skipped) ++skipped;
    if (!o.json) {
      if (r.result == outcome::failed) fmt::print("FAIL {}: {}\n", r.name, r.reason);
      else if (o.verbose && r.result == outcome::skipped) fmt::print("SKIP {}: {}\n", r.name, r.reason);
      else if (o.verbose) fmt::print("ok   {}\n", r.name);
      std::fflush(stdout);
    }
    results.push_back(std::move(r));
  }
  if (o.json) {
    json cases = json::array();
    for (const auto& r : results) {
      json c{{"name", r.name},
             {"result", r.result == outcome::passed ? "passed" : r.result == outcome::failed ? "failed" : "skipped"}};
      if (!r.reason.empty()) c["reason"] = r.reason;
      cases.push_back(std::move(c));
    }
    json j{{"device", o.device}, {"passed", passed}, {"failed", failed}, {"skipped", skipped}, {"cases", std::move(cases)}};
    fmt::print("{}\n", dump_json(j));
  } else {
    fmt::print("{} passed, {} failed, {} skipped\n", passed, failed, skipped);
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace gpugrid::cli
