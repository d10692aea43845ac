#include "base/secret_file.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

using namespace gpugrid;

namespace {

struct secret_temp_dir {
  std::string path;
  secret_temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gpugrid-secret-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~secret_temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void write_plain(const std::string& path, const std::string& text, mode_t mode) {
  { std::ofstream(path, std::ios::binary) << text; }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

}  // namespace

TEST_CASE("secret files round trip with mode 0600 and no clobber", "[base][secret_file]") {
  secret_temp_dir d;
  std::string p = d.path + "/k.key";
  const std::string a = "0123456789abcdef", b = "fedcba9876543210";
  REQUIRE(write_secret_file(p, "test key file", a.data(), a.size(), false).is_ok());
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  auto r = read_secret_file(p, "test key file", a.size(), "it has 16");
  REQUIRE(r);
  CHECK(std::string(reinterpret_cast<const char*>(r->data()), r->size()) == a);

  status s = write_secret_file(p, "test key file", b.data(), b.size(), false);
  CHECK(s.kind() == error_kind::io);
  CHECK_THAT(s.message(), Catch::Contains("test key file") && Catch::Contains("already exists"));
  REQUIRE(write_secret_file(p, "test key file", b.data(), b.size(), true).is_ok());
  auto r2 = read_secret_file(p, "test key file", b.size(), "it has 16");
  REQUIRE(r2);
  CHECK(std::string(reinterpret_cast<const char*>(r2->data()), r2->size()) == b);
  // no temp file is left behind
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path)) (void)e, ++n;
  CHECK(n == 1);
}

TEST_CASE("secret files readable by group or others are refused", "[base][secret_file]") {
  secret_temp_dir d;
  std::string p = d.path + "/k.key";
  write_plain(p, "0123456789abcdef", 0644);
  auto r = read_secret_file(p, "test key file", 16, "it has 16");
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == error_kind::invalid_input);
  CHECK_THAT(r.error().message(),
             Catch::Contains("test key file") && Catch::Contains("0644") && Catch::Contains("chmod 600"));
}

TEST_CASE("secret files of the wrong size are refused", "[base][secret_file]") {
  secret_temp_dir d;
  std::string p = d.path + "/k.key";
  write_plain(p, "0123456789abcdef!", 0600);
  auto r = read_secret_file(p, "test key file", 16, "it has exactly 16");
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == error_kind::invalid_input);
  CHECK_THAT(r.error().message(), Catch::Contains("17 bytes") && Catch::Contains("it has exactly 16"));
}

TEST_CASE("secret files behind a symlink or not regular are refused", "[base][secret_file]") {
  secret_temp_dir d;
  std::string real = d.path + "/real.key", link = d.path + "/link.key";
  write_plain(real, "0123456789abcdef", 0600);
  REQUIRE(::symlink(real.c_str(), link.c_str()) == 0);
  auto r = read_secret_file(link, "test key file", 16, "it has 16");
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == error_kind::io);
  CHECK_THAT(r.error().message(), Catch::Contains("cannot open test key file"));

  REQUIRE(::chmod(d.path.c_str(), 0700) == 0);
  auto dir = read_secret_file(d.path, "test key file", 16, "it has 16");
  REQUIRE_FALSE(dir);
  CHECK(dir.error().kind() == error_kind::invalid_input);
  CHECK_THAT(dir.error().message(), Catch::Contains("not a regular file"));

  // write refuses to go through a symlink planted at the temp path
  std::string target = d.path + "/out.key", victim = d.path + "/victim";
  write_plain(victim, "untouched", 0600);
  REQUIRE(::symlink(victim.c_str(), (target + ".tmp-" + std::to_string(::getpid())).c_str()) == 0);
  status s = write_secret_file(target, "test key file", "x", 1, false);
  CHECK(s.kind() == error_kind::io);
  std::ifstream in(victim);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == "untouched");
}

TEST_CASE("secret_file: the old file is kept under a new name each time, never overwritten", "[base][secret_file]") {
  secret_temp_dir d;
  std::string path = d.path + "/k";
  auto none = keep_old_secret_file(path, "key file");
  REQUIRE(none);
  CHECK(none->empty());
  const char a[4] = {'a', 'a', 'a', 'a'};
  REQUIRE(write_secret_file(path, "key file", a, sizeof a, false).is_ok());
  auto first = keep_old_secret_file(path, "key file");
  auto second = keep_old_secret_file(path, "key file");  // same second: a "-N" suffix
  REQUIRE(first);
  REQUIRE(second);
  CHECK(*first != *second);
  CHECK(first->rfind(path + ".old-", 0) == 0);
  auto kept = read_secret_file(*second, "key file", 4, "four");
  REQUIRE(kept);
  CHECK(std::memcmp(kept->data(), a, 4) == 0);
}
