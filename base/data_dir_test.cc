#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>

#include "base/data_dir.h"

using namespace gpugrid;

TEST_CASE("a data dir is held by one offer at a time", "[data_dir]") {
  auto dir = (std::filesystem::temp_directory_path() / ("gg-datadir-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  {
    auto offer = data_dir_lock::acquire(dir, "gpugrid offer");
    REQUIRE(offer.has_value());
    auto second = data_dir_lock::acquire(dir, "gpugrid offer");
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().kind() == error_kind::invalid_input);
    CHECK(second.error().message().find("in use") != std::string::npos);
    CHECK(second.error().message().find("gpugrid offer, pid " + std::to_string(::getpid())) != std::string::npos);
    data_dir_lock moved = std::move(offer).value();
    CHECK_FALSE(data_dir_lock::acquire(dir, "gpugrid identity new").has_value());
  }
  auto later = data_dir_lock::acquire(dir, "gpugrid offer");
  CHECK(later.has_value());
  std::filesystem::remove_all(dir);
}
