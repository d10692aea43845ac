// Model folders: manifests over a folder's files, and a provider's store that rebuilds the
// folder from content-addressed files.
#include "actors/model_folder.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace gpugrid;
using namespace gpugrid::grid;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  explicit temp_dir(const std::string& name) {
    path = fs::temp_directory_path() / ("gg-folder-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& bytes) const { std::ofstream(path / name, std::ios::binary) << bytes; }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("a folder's manifest covers every file's name, bytes and size", "[grid][gen]") {
  temp_dir d("manifest");
  d.write("model.onnx", "weights");
  d.write("tokenizer.json", "{}");
  d.write(".hidden", "skipped");
  fs::create_directories(d.path / "sub");
  auto m = read_folder_manifest(d.path.string(), 1 << 20);
  REQUIRE(m.has_value());
  REQUIRE(m->files.size() == 2);
  CHECK(m->files[0].name == "model.onnx");
  CHECK(m->files[0].hash == ledger::blake2b_256("weights"));
  CHECK(m->total_bytes == 9);
  CHECK(m->hash == manifest_hash(m->files));
  auto swapped = m->files;
  std::swap(swapped[0], swapped[1]);
  CHECK(manifest_hash(swapped) == m->hash);  // order does not matter
  swapped[0].name = "other.json";
  CHECK(manifest_hash(swapped) != m->hash);

  d.write("model.onnx", "weightz");
  CHECK(read_folder_manifest(d.path.string(), 1 << 20)->hash != m->hash);
  auto big = read_folder_manifest(d.path.string(), 4);
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error().message().find("model.onnx") != std::string::npos);
  d.write("bad name.txt", "x");
  CHECK_FALSE(read_folder_manifest(d.path.string(), 1 << 20).has_value());
  CHECK_FALSE(read_folder_manifest((d.path / "sub").string(), 1 << 20).has_value());  // empty
  CHECK_FALSE(read_folder_manifest((d.path / "missing").string(), 1 << 20).has_value());
}

TEST_CASE("a provider's store rebuilds a folder once every file arrived", "[grid][gen]") {
  temp_dir src("src"), store_dir("store");
  src.write("model.onnx", "weights");
  src.write("config.json", "{\"a\": 1}");
  auto m = read_folder_manifest(src.path.string(), 1 << 20);
  REQUIRE(m.has_value());
  auto store = folder_store::open(store_dir.path.string(), 1 << 20);
  REQUIRE(store.has_value());
  auto& s = **store;
  CHECK_FALSE(s.has_all(m->hash, m->files));
  auto missing = s.folder(m->hash, m->files);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().kind() == error_kind::no_provider);
  CHECK_FALSE(s.put_file(m->files[0].hash, "not the bytes").is_ok());
  REQUIRE(s.put_file(ledger::blake2b_256("weights"), "weights").is_ok());
  REQUIRE(s.put_file(ledger::blake2b_256("{\"a\": 1}"), "{\"a\": 1}").is_ok());
  CHECK(s.has_all(m->hash, m->files));
  auto dir = s.folder(m->hash, m->files);
  REQUIRE(dir.has_value());
  CHECK(read(fs::path(*dir) / "model.onnx") == "weights");
  CHECK(read(fs::path(*dir) / "config.json") == "{\"a\": 1}");
  auto wrong = m->files;
  wrong[0].size = 99;
  CHECK(s.folder(m->hash, wrong).error().kind() == error_kind::invalid_input);

  auto local = folder_store::local_only();
  local->add_local(m->hash, src.path.string());
  CHECK(local->has_all(m->hash, {}));
  CHECK(*local->folder(m->hash, {}) == src.path.string());
  CHECK_FALSE(local->put_file(m->files[0].hash, "weights").is_ok());
}
