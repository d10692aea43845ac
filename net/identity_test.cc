// Node identity: key files, node ids, signatures; BLAKE2b and hex helpers; `gpugrid identity`.
#include "net/identity.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "cli/commands.h"
#include "net/hash.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

// A fresh folder under $TMPDIR, removed at the end of the test.
struct temp_dir {
  std::string path;
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/gg-identity-XXXXXX";
    char* p = mkdtemp(tmpl.data());
    REQUIRE(p != nullptr);
    path = p;
  }
  ~temp_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("BLAKE2b-256 and hex", "[net][hash]") {
  CHECK(to_hex(blake2b_256("")) == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  CHECK(to_hex(blake2b_256("abc")) == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  blake2b_hasher h;
  h.update("a");
  h.update("bc");
  CHECK(h.finish() == blake2b_256("abc"));
  auto back = from_hex<32>(to_hex(blake2b_256("abc")), "digest");
  REQUIRE(back.has_value());
  CHECK(*back == blake2b_256("abc"));
  CHECK_FALSE(from_hex<2>("abc", "x").has_value());
  auto bad = from_hex<2>("zz00", "the key");
  REQUIRE_FALSE(bad.has_value());
  CHECK_THAT(bad.error().message(), Catch::Contains("the key"));
  CHECK(from_hex<2>("ABcd", "x").value() == std::array<uint8_t, 2>{0xab, 0xcd});
}

TEST_CASE("identities sign, verify and print as node ids", "[net][identity]") {
  identity a = identity::generate();
  identity b = identity::generate();
  CHECK(a.public_key() != b.public_key());
  sig64 s = a.sign("message");
  CHECK(verify_signature(a.public_key(), "message", s));
  CHECK_FALSE(verify_signature(a.public_key(), "messagf", s));
  CHECK_FALSE(verify_signature(b.public_key(), "message", s));

  std::string id = a.node_id();
  CHECK(id.size() == 34);
  CHECK(id.rfind("gg", 0) == 0);
  CHECK(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567", 2) == std::string::npos);
  CHECK(id == node_id_of(a.public_key()));
  CHECK(a.node_id() != b.node_id());

  // Seeds are deterministic; the secret key is seed || public key.
  std::array<uint8_t, 32> seed{};
  seed[0] = 1;
  identity s1 = identity::from_seed(seed), s2 = identity::from_seed(seed);
  CHECK(s1.public_key() == s2.public_key());
  CHECK(std::equal(s1.public_key().begin(), s1.public_key().end(), s1.secret_key().begin() + 32));
  auto again = identity::from_secret_key(s1.secret_key(), "test");
  REQUIRE(again.has_value());
  CHECK(again->public_key() == s1.public_key());
  secret_key64 corrupt = s1.secret_key();
  corrupt[40] ^= 1;
  auto bad = identity::from_secret_key(corrupt, "test key");
  REQUIRE_FALSE(bad.has_value());
  CHECK_THAT(bad.error().message(), Catch::Contains("corrupt"));
}

TEST_CASE("key files: created once, private, atomic, and refused when wrong", "[net][identity]") {
  temp_dir dir;
  std::string data = dir.path + "/data";  // does not exist yet
  bool created = false;
  auto first = load_or_create_identity(data, &created);
  REQUIRE(first.has_value());
  CHECK(created);
  std::string path = identity_path(data);
  CHECK(mode_of(path) == 0600);
  CHECK(mode_of(data) == 0700);
  auto second = load_or_create_identity(data, &created);
  REQUIRE(second.has_value());
  CHECK_FALSE(created);
  CHECK(second->public_key() == first->public_key());

  SECTION("readable by others") {
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    auto r = identity::load(path);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message(), Catch::Contains("0644") && Catch::Contains("chmod 600"));
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    CHECK_FALSE(load_or_create_identity(data).has_value());  // never silently replaced
  }
  SECTION("wrong size") {
    { std::ofstream(path, std::ios::app) << "x"; }
    auto r = identity::load(path);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message(), Catch::Contains("65 bytes") && Catch::Contains("exactly 64"));
  }
  SECTION("corrupt public half") {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(50);
    f.put('\x55');
    f.close();
    auto r = identity::load(path);
    if (first->secret_key()[50] != 0x55) {
      REQUIRE_FALSE(r.has_value());
      CHECK_THAT(r.error().message(), Catch::Contains("corrupt"));
    }
  }
  SECTION("save never clobbers unless asked") {
    identity other = identity::generate();
    CHECK_FALSE(other.save(path).is_ok());
    CHECK(identity::load(path)->public_key() == first->public_key());
    CHECK(other.save(path, /*replace=*/true).is_ok());
    CHECK(identity::load(path)->public_key() == other.public_key());
    CHECK(mode_of(path) == 0600);
  }
  SECTION("rotation keeps the old key") {
    std::string old_path;
    auto fresh = rotate_identity(data, &old_path);
    REQUIRE(fresh.has_value());
    CHECK(fresh->public_key() != first->public_key());
    REQUIRE_FALSE(old_path.empty());
    CHECK(old_path.find("identity.key.old-") != std::string::npos);
    CHECK(identity::load(old_path)->public_key() == first->public_key());
    CHECK(identity::load(path)->public_key() == fresh->public_key());
    // Twice in the same second: a second, distinct backup.
    std::string old2;
    REQUIRE(rotate_identity(data, &old2).has_value());
    CHECK(old2 != old_path);
    CHECK(identity::load(old2)->public_key() == fresh->public_key());
  }
}

TEST_CASE("gpugrid identity show and new", "[net][identity][cli]") {
  temp_dir dir;
  cli::identity_options o;
  o.data_dir = dir.path;
  o.action = "show";
  CHECK(cli::identity_command(o) == 2);  // show only reads: no key yet, none made
  CHECK(::access(identity_path(dir.path).c_str(), F_OK) != 0);
  o.action = "new";
  CHECK(cli::identity_command(o) == 0);
  auto id = identity::load(identity_path(dir.path));
  REQUIRE(id.has_value());
  o.action = "show";
  o.json = true;
  CHECK(cli::identity_command(o) == 0);
  o.action = "new";
  CHECK(cli::identity_command(o) == 0);
  CHECK(identity::load(identity_path(dir.path))->public_key() != id->public_key());
  o.action = "bogus";
  CHECK(cli::identity_command(o) == 2);
  REQUIRE(::chmod(identity_path(dir.path).c_str(), 0644) == 0);
  o.action = "show";
  CHECK(cli::identity_command(o) == 2);
}
