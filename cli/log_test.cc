#include "cli/log.h"

#include <cstdio>
#include <regex>
#include <string>

#include <catch2/catch.hpp>

using namespace gpugrid::cli;

namespace {

std::string slurp(std::FILE* f) {
  std::string s;
  std::rewind(f);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  return s;
}

std::string logged(log::verbosity v) {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  log::configure(f, v);
  log::note("a note with {} and braces {{}}", 1);
  log::warning("a warning");
  log::debug("a debug line");
  log::event_line("job_done job=ab");
  log::configure(stderr, log::verbosity::normal);
  std::string text = slurp(f);
  std::fclose(f);
  return text;
}

}  // namespace

TEST_CASE("log: notes, warnings, events and debug lines by verbosity", "[log]") {
  std::string normal = logged(log::verbosity::normal);
  CHECK(normal.find("gpugrid: a note with 1 and braces {}\n") != std::string::npos);
  CHECK(normal.find("gpugrid: warning: a warning\n") != std::string::npos);
  CHECK(normal.find("debug") == std::string::npos);
  CHECK(std::regex_search(normal, std::regex(R"(\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z gpugrid: job_done job=ab\n)")));

  std::string quiet = logged(log::verbosity::quiet);
  CHECK(quiet == "gpugrid: warning: a warning\n");

  std::string verbose = logged(log::verbosity::verbose);
  CHECK(verbose.find("gpugrid: debug: a debug line\n") != std::string::npos);
  CHECK(verbose.find("gpugrid: a note with 1") != std::string::npos);
}

TEST_CASE("log: utc_timestamp is ISO 8601 with milliseconds", "[log]") {
  CHECK(std::regex_match(log::utc_timestamp(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
}
