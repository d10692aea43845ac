#include "cli/batch_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace gpugrid::cli {

namespace {

std::string stem_of(const std::string& arg) {
  std::string file = arg.substr(arg.find('=') == std::string::npos ? 0 : arg.find('=') + 1);
  std::string name = std::filesystem::path(file).filename().string();
  size_t dot = name.rfind('.');
  if (dot != std::string::npos && dot > 0) name = name.substr(0, dot);
  return name;
}

std::string safe_id(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 120)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    out += ok ? c : '_';
  }
  if (out.empty() || out[0] == '.') out = "job" + out;
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string resolve(const std::string& base_dir, const std::string& file) {
  if (file.empty() || file[0] == '/' || file == "-" || base_dir.empty()) return file;
  return (std::filesystem::path(base_dir) / file).string();
}

}  // namespace

void assign_batch_ids(std::vector<batch_job>* jobs) {
  std::set<std::string> used;
  for (auto& j : *jobs) {
    std::string base = safe_id(j.id.empty() && !j.inputs.empty() ? stem_of(j.inputs[0]) : j.id);
    std::string id = base;
    for (int n = 2; used.count(id); ++n) id = base + "-" + std::to_string(n);
    used.insert(id);
    j.id = id;
  }
}

expected<std::vector<batch_job>> parse_batch_list(const std::string& text, const std::string& base_dir,
                                                  const std::string& what) {
  std::vector<batch_job> jobs;
  auto lines = lines_of(text);
  for (size_t n = 0; n < lines.size(); ++n) {
    std::istringstream words(lines[n]);
    batch_job j;
    std::string w;
    while (words >> w) {
      if (j.inputs.empty() && w[0] == '#') break;
      size_t eq = w.find('=');
      if (eq != std::string::npos) {
        if (eq == 0 || eq + 1 == w.size()) return invalid_input("{}:{}: '{}' is not FILE or NAME=FILE", what, n + 1, w);
        j.inputs.push_back(w.substr(0, eq + 1) + resolve(base_dir, w.substr(eq + 1)));
      } else {
        j.inputs.push_back(resolve(base_dir, w));
      }
    }
    if (j.inputs.empty()) continue;
    if (std::find(j.inputs.begin(), j.inputs.end(), "-") != j.inputs.end())
      return invalid_input("{}:{}: a batch job cannot read stdin ('-')", what, n + 1);
    jobs.push_back(std::move(j));
  }
  assign_batch_ids(&jobs);
  return jobs;
}

expected<std::vector<batch_job>> parse_batch_ndjson(const std::string& text, const std::string& what) {
  using json = nlohmann::json;
  std::vector<batch_job> jobs;
  auto lines = lines_of(text);
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& line = lines[n];
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json doc = json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object())
      return invalid_input("{}:{}: not a JSON object mapping input names to files", what, n + 1);
    batch_job j;
    for (const auto& [k, v] : doc.items()) {
      if (!v.is_string() || v.get<std::string>().empty())
        return invalid_input("{}:{}: '{}' must map to a file name (a string)", what, n + 1, k.substr(0, 60));
      if (k == "id") {
        j.id = v.get<std::string>();
        continue;
      }
      if (v.get<std::string>() == "-") return invalid_input("{}:{}: a batch job cannot read stdin ('-')", what, n + 1);
      j.inputs.push_back(k + "=" + v.get<std::string>());
    }
    if (j.inputs.empty()) return invalid_input("{}:{}: the job names no inputs", what, n + 1);
    jobs.push_back(std::move(j));
  }
  assign_batch_ids(&jobs);
  return jobs;
}

expected<std::vector<batch_job>> read_batch_source(const std::string& source, const std::string& stdin_text,
                                                   size_t model_inputs) {
  if (source == "-") return parse_batch_ndjson(stdin_text, "stdin");
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) return invalid_input("--batch '{}' does not exist", source);
  if (S_ISDIR(st.st_mode)) {
    if (model_inputs != 1)
      return invalid_input("--batch '{}' is a folder, which holds one input per job, but the model has {} inputs; "
                           "use a list file or NDJSON", source, model_inputs);
    std::vector<std::string> files;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(source, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      if (!it->is_regular_file(ec)) continue;
      files.push_back(it->path().string());
    }
    if (ec) return invalid_input("--batch '{}' cannot be read: {}", source, ec.message());
    std::sort(files.begin(), files.end());
    std::vector<batch_job> jobs;
    for (auto& f : files) jobs.push_back({"", {f}});
    assign_batch_ids(&jobs);
    return jobs;
  }
  if (st.st_size > (int64_t{256} << 20)) return invalid_input("--batch '{}' is over 256 MiB", source);
  std::ifstream f(source, std::ios::binary);
  if (!f) return invalid_input("--batch '{}' cannot be read", source);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string base = std::filesystem::path(source).parent_path().string();
  return parse_batch_list(ss.str(), base, source);
}

}  // namespace gpugrid::cli
